"""fbp's annotations hold: mypy (configured in pyproject.toml) finds no
error in the package. fbp ships py.typed, so its users' type checkers read
these annotations too."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mypy_finds_no_error_in_fbp(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout
    assert os.path.isfile(os.path.join(ROOT, "fbp", "py.typed"))
