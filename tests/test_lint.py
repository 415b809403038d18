"""The linter's rules ([tool.ruff] in pyproject.toml) hold over the whole tree: code, tests, benchmarks and the
notebooks. A finding fails the test with ruff's own report (file:line, rule, message)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    if shutil.which("ruff"):
        return [shutil.which("ruff")]
    pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")


def test_ruff_finds_nothing():
    r = subprocess.run([*ruff(), "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_ruff_catches_a_planted_finding(tmp_path):
    """The check can fail: an unused import and an unsorted import block in a file under the same rules."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nprint(os.sep)\n")
    r = subprocess.run([*ruff(), "check", "--no-cache", "--output-format", "concise",
                        "--config", str(ROOT / "pyproject.toml"), str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "F401" in r.stdout and "I001" in r.stdout, r.stdout + r.stderr
