"""Ctrl-C on `study`: the first stops it cleanly (message at once, summary of what finished, exit 130, no
claim left), the second at once. A real `study` subprocess on a tiny notebook (no torch) gets SIGINT."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

CODE = """import json, os, pathlib, signal, time
if os.environ.get("IGNORE_SIGTERM"):                # a kernel that the first Ctrl-C cannot stop at once
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(out_dir, "started").touch()
time.sleep(slow_s if x >= 2 else 0.0)
pathlib.Path(out_dir, "metrics.json").write_text(json.dumps({"y": x * x}))"""


def make_study(tmp: Path) -> Path:
    """Points x = 0..3: x0 and x1 finish at once, x2 and x3 sleep ``slow_s`` (2 workers)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('x: int = 0\nslow_s: float = 0.0\nout_dir: str = "."\nthreads: int = 0',
                                          metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(CODE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp / "slow.ipynb")
    path = tmp / "slow.yaml"
    path.write_text(f"study: slow\nnotebook: {tmp / 'slow.ipynb'}\nrun_id: 'x{{x}}'\nbase: {{slow_s: 300}}\n"
                    "grid: {x: [0, 1, 2, 3]}\nworkers: 2\n")
    return path


def start(tmp: Path, spec: Path, **env):
    with open(tmp / "stderr.txt", "w") as err:     # the child keeps its own handle
        proc = subprocess.Popen([sys.executable, "-m", "manifold_lab", "study", str(spec), "--results-dir",
                                 str(tmp / "results"), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=err, text=True, env={**os.environ, **env})
    return proc, tmp / "stderr.txt"


def wait_for(cond, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``cond()`` held (fails the test after ``timeout``)."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(step)
    return time.monotonic() - t0


@pytest.mark.slow              # two study subprocesses, six kernel starts: about 20-80 s
def test_first_ctrl_c_stops_cleanly_and_summarises(tmp_path):
    spec, study = make_study(tmp_path), tmp_path / "results" / "slow"
    proc, err = start(tmp_path, spec)
    wait_for(lambda: (study / "x0" / "metrics.json").exists() and (study / "x1" / "metrics.json").exists()
             and all((study / f".x{i}.partial" / "started").exists() for i in (2, 3)), 120)
    proc.send_signal(signal.SIGINT)
    said = wait_for(lambda: "Ctrl-C" in err.read_text(), 5)
    assert said < 1.0, f"the message took {said:.2f} s"
    print(f"first Ctrl-C: message after {said:.3f} s")           # shown with pytest -s
    message = err.read_text()
    assert "x2" in message and "x3" in message and "Press Ctrl-C again to stop at once" in message
    out, _ = proc.communicate(timeout=60)                    # stopped, not waited for (they sleep 300 s)
    assert proc.returncode == 130, (out, err.read_text())
    assert "Traceback" not in err.read_text() and "KeyboardInterrupt" not in err.read_text()
    assert "ran 2" in out and "2 not finished" in out
    rows = (study / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and {r.split(",")[1] for r in rows[1:]} == {"x0", "x1"}
    assert not list(study.glob(".*.claim"))
    assert not (study / "x2").exists() and not (study / ".x2.partial" / "error.json").exists()
    for i in (2, 3):
        (study / f".x{i}.partial" / "started").unlink()

    proc, err = start(tmp_path, spec, IGNORE_SIGTERM="1")   # again: x2, x3 run, ignore SIGTERM; two Ctrl-C
    wait_for(lambda: all((study / f".x{i}.partial" / "started").exists() for i in (2, 3)), 120)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "Ctrl-C" in err.read_text(), 5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    print(f"second Ctrl-C: exit after {time.monotonic() - t0:.3f} s")
    assert time.monotonic() - t0 < 2.0 and proc.returncode == 130
    assert "stopped at once" in err.read_text() and "Traceback" not in err.read_text()
    assert not list(study.glob(".*.claim"))
