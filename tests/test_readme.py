"""The README's Python examples marked as tested run as written."""

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
MARK = "<!-- tested: tests/test_readme.py runs this block -->"


def marked_blocks():
    text = open(README, encoding="utf-8").read()
    return re.findall(re.escape(MARK) + r"\s*```python\n(.*?)```", text, flags=re.S)


def test_the_marked_readme_examples_run(tmp_path):
    blocks = marked_blocks()
    assert blocks, f"no block marked {MARK!r} in the README"
    for code in blocks:
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, f"README example failed:\n{code}\n{proc.stderr}"
    assert (tmp_path / "runs" / "digits.npz").exists()
    assert (tmp_path / "runs" / "digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_readme_reaches_a_heading():
    text = open(README, encoding="utf-8").read()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # a "# comment" in a code block is no heading
    anchors = {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", prose, flags=re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) > 10 and not [link for link in links if link not in anchors]
