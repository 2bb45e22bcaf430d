"""The README's Python examples marked as tested run as written."""

import os
import re
import subprocess
import sys

from training_helpers import compiling_fast

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
MARK = "<!-- tested: tests/test_readme.py runs this block -->"


def marked_blocks():
    text = open(README, encoding="utf-8").read()
    return re.findall(re.escape(MARK) + r"\s*```python\n(.*?)```", text, flags=re.S)


def test_the_marked_readme_examples_run(tmp_path):
    blocks = marked_blocks()
    assert blocks, f"no block marked {MARK!r} in the README"
    for code in blocks:  # compiling fast: what is checked is that they run (36 s at XLA's defaults, 17 s so)
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                              env=compiling_fast())
        assert proc.returncode == 0, f"README example failed:\n{code}\n{proc.stderr}"
    assert (tmp_path / "runs" / "digits.npz").exists()
    assert (tmp_path / "runs" / "digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: str) -> set:
    prose = re.sub(r"```.*?```", "", open(path, encoding="utf-8").read(), flags=re.S)  # a "# comment" is no heading
    return {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", prose, flags=re.M)}


def test_every_link_to_a_section_of_the_readmes_reaches_a_heading():
    """The links to #sections in README.md, experiments/README.md and
    benchmarks/README.md, within a page or from one to another."""
    root = os.path.dirname(README)
    checked, broken = 0, []
    for page in ("README.md", "experiments/README.md", "benchmarks/README.md"):
        here = os.path.dirname(os.path.join(root, page))
        text = open(os.path.join(root, page), encoding="utf-8").read()
        for target, anchor in re.findall(r"\]\(([\w./-]*)#([^)]+)\)", text):
            path = os.path.normpath(os.path.join(here, target)) if target else os.path.join(root, page)
            checked += 1
            if not os.path.exists(path) or anchor not in _anchors(path):
                broken.append(f"{page}: {target}#{anchor}")
    assert checked > 10 and not broken, broken
