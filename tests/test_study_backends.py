"""Study backends without SLURM: claims, two runners at once on one study, --status, files and the umask.

The points run a tiny notebook (no torch) that logs each execution to a shared file, so a point that ran
twice would show.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from manifold_lab.studies import claims, results

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOK_CODE = """import json, os, pathlib, time
time.sleep(sleep_s)
with open(log, "a") as f:
    f.write(f"{x} {os.getpid()}\\n")
if fail:
    raise RuntimeError(f"asked to fail at x={x}")
pathlib.Path(out_dir, "metrics.json").write_text(json.dumps({"y": x * x}))"""


def make_notebook(path: Path) -> Path:
    """A thin study notebook: parameters x, sleep_s, fail, log, out_dir, threads; writes metrics {y: x^2}."""
    nb = nbformat.v4.new_notebook()
    params = 'x: int = 0\nsleep_s: float = 0.0\nfail: bool = False\nlog: str = "runs.log"\nout_dir: str = "."\nthreads: int = 0'
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(NOTEBOOK_CODE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def make_study(tmp: Path, xs, *, sleep_s=0.0, extra: str = "") -> Path:
    nb = make_notebook(tmp / "square.ipynb")
    path = tmp / "square.yaml"
    path.write_text(f"study: square\nnotebook: {nb}\nrun_id: 'x{{x:02d}}'\nbase: {{sleep_s: {sleep_s}, log: "
                    f"{tmp / 'runs.log'}}}\ngrid: {{x: {list(xs)}}}\nworkers: 2\n{extra}")
    return path


def study(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "manifold_lab", "study", *map(str, args), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def executions(tmp: Path) -> list[int]:
    log = tmp / "runs.log"
    return sorted(int(line.split()[0]) for line in log.read_text().splitlines()) if log.exists() else []


# ---- claims ---------------------------------------------------------------------------------------------------
def test_a_claim_is_exclusive_and_only_a_dead_one_is_taken_over(tmp_path):
    a, b = claims.this_owner(), claims.this_owner()
    assert claims.try_claim(tmp_path, "p", a) and claims.try_claim(tmp_path, "p", a)   # its own: kept
    assert not claims.try_claim(tmp_path, "p", b)                                       # live (this pid)
    claims.release(tmp_path, "p", b)                                                    # not b's: untouched
    assert claims.claim_path(tmp_path, "p").exists()
    claims.release(tmp_path, "p", a)
    assert not claims.claim_path(tmp_path, "p").exists()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = {**claims.this_owner(), "pid": int(dead.stdout), "pid_start": "1"}      # a process that has exited
    assert claims.try_claim(tmp_path, "q", gone) and claims.try_claim(tmp_path, "q", b)   # taken over
    assert claims.read_claim(claims.claim_path(tmp_path, "q"))["token"] == b["token"]

    far = {**claims.this_owner(), "host": "another-host"}                           # heartbeat only
    assert claims.try_claim(tmp_path, "r", far) and not claims.try_claim(tmp_path, "r", a)
    old = time.time() - claims.STALE_S - 5
    os.utime(claims.claim_path(tmp_path, "r"), (old, old))                          # the heartbeat stopped
    assert claims.try_claim(tmp_path, "r", a)


def test_a_requeued_job_retakes_its_own_claim(tmp_path, monkeypatch):
    submitter = claims.this_owner()
    assert claims.try_claim(tmp_path, "p", submitter)
    monkeypatch.setattr(claims, "job_alive", lambda job: True)                     # the job is in the queue
    claims.assign_job(tmp_path, "p", submitter, "7_1")
    task = claims.this_owner(job_id="7_1")                                          # a new process, same job
    assert claims.try_claim(tmp_path, "p", task)
    assert not claims.try_claim(tmp_path, "p", claims.this_owner(job_id="8_0"))
    monkeypatch.setattr(claims, "job_alive", lambda job: False)                    # cancelled: dead
    assert claims.try_claim(tmp_path, "p", claims.this_owner(job_id="8_0"))


# ---- runners ---------------------------------------------------------------------------------------------------
def test_two_local_runners_at_once_run_every_point_once(tmp_path):
    spec = make_study(tmp_path, range(6), sleep_s=1.0)
    a = study(spec, "--results-dir", tmp_path / "results", "--workers", "2")
    time.sleep(1.0)                                          # the second one starts while the first runs
    b = study(spec, "--results-dir", tmp_path / "results", "--workers", "2")
    outs = [p.communicate(timeout=300) for p in (a, b)]
    assert [a.returncode, b.returncode] == [0, 0], outs
    assert executions(tmp_path) == list(range(6))            # each point ran exactly once
    assert not any(p.name.endswith((".claim", ".partial")) for p in (tmp_path / "results" / "square").iterdir())
    for out, _ in outs:
        assert "failed 0" in out
    summary = pd.read_csv(tmp_path / "results" / "square" / "summary.csv")
    measured = summary[~summary["metric"].isin(results.RUN_TIMING)]   # beside the runner's wall_s, sgemm_gflops
    assert len(measured) == 6 and summary["run_id"].nunique() == 6    # both wrote the whole study


def test_a_points_kernel_is_stopped_at_once_when_its_notebook_is_done(tmp_path):
    """The runner kills a finished point's kernel instead of asking it to exit (kernels.py: a clean exit
    after importing torch costs about 1.2 s a point): the kernel is gone when run_point returns, its
    atexit handlers never ran, and what its cells wrote is all there."""
    from manifold_lab.studies import execute

    nb = make_notebook(tmp_path / "square.ipynb")
    pid_file, exit_file = tmp_path / "kernel.pid", tmp_path / "clean-exit"
    nb_json = nbformat.read(nb, as_version=4)
    nb_json.cells.append(nbformat.v4.new_code_cell(
        f"import atexit, os, pathlib\npathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
        f"atexit.register(pathlib.Path({str(exit_file)!r}).touch)"))
    nbformat.write(nb_json, nb)
    study_dir = tmp_path / "square"
    study_dir.mkdir()
    assert execute.run_point(nb, study_dir, "x03", {"x": 3, "log": str(tmp_path / "runs.log")}) == execute.RAN
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)                                       # gone (and reaped) when run_point returned
    assert not exit_file.exists()                             # killed, not asked to exit
    assert json.loads((results.run_dir(study_dir, "x03") / "metrics.json").read_text()) == {"y": 9}
    assert executions(tmp_path) == [3]


def test_status_shows_every_point(tmp_path, capsys):
    from manifold_lab.cli import main

    spec = make_study(tmp_path, range(4), extra="")
    results = tmp_path / "results"
    assert main(["study", str(spec), "--results-dir", str(results), "--set", "x=[0,1]", "--no-progress"]) == 0
    assert main(["study", str(spec), "--results-dir", str(results), "--set", "x=[2]", "--set", "fail=true",
                 "--no-progress"]) == 1
    owner = {**claims.this_owner(), "host": "node7", "pid": 4242}
    assert claims.try_claim(results / "square", "x03", owner)       # a live runner elsewhere holds x03
    capsys.readouterr()
    assert main(["study", str(spec), "--results-dir", str(results), "--status"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    lines = dict(line.split(None, 1) for line in out[:-1])
    walls = [float(lines[r].split()[1]) for r in ("x00", "x01")]       # "done  <wall_s> s", from run.json
    assert [lines[r].split()[0] for r in ("x00", "x01")] == ["done", "done"] and min(walls) >= 0
    assert out[-1].startswith("2 done, 1 failed, 1 running") and "h of run time" in out[-1]
    assert lines["x02"].startswith("failed") and "asked to fail at x=2" in lines["x02"]
    assert "notebook.ipynb" in lines["x02"]
    assert lines["x03"].startswith("running") and "node7:4242" in lines["x03"]
    assert main(["study", str(spec), "--results-dir", str(results), "--set", "x=[0, 1, 2]",
                 "--no-progress"]) == 0                                   # the failed point reruns, alone
    assert executions(tmp_path) == [0, 1, 2, 2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_respect_the_umask(tmp_path):
    import torch

    from manifold_lab import io

    for umask in (0o022, 0o002, 0o027):
        old = os.umask(umask)
        try:
            io.write_json(tmp_path / f"a{umask:o}.json", {"x": 1})
            io.save_torch(tmp_path / f"b{umask:o}.pt", {"w": torch.zeros(2)})
        finally:
            os.umask(old)
        for name in (f"a{umask:o}.json", f"b{umask:o}.pt"):
            assert _mode(tmp_path / name) == 0o666 & ~umask, name
    spec = make_study(tmp_path, [1])                       # a whole study run under a umask of 027
    proc = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0o027); "
                           "from manifold_lab.cli import main; sys.exit(main(sys.argv[1:]))",
                           "study", str(spec), "--results-dir", str(tmp_path / "r"), "--no-progress"], cwd=ROOT)
    assert proc.returncode == 0
    study_dir = tmp_path / "r" / "square"
    for path in (study_dir / "summary.csv", study_dir / "summary.parquet", study_dir / "x01" / "run.json",
                 study_dir / "x01" / "notebook.ipynb"):
        assert _mode(path) == 0o640, path


def test_resources_are_checked(tmp_path):
    from manifold_lab.checks import ConfigError
    from manifold_lab.studies.backends import check_resources

    assert check_resources({"cpus_per_task": 4}, "s")["cpus_per_task"] == 4
    with pytest.raises(ConfigError, match="unknown key.*'gpus'"):
        check_resources({"gpus": 1}, "s")
    with pytest.raises(ConfigError, match="timeout_min=1 must exceed"):
        check_resources({"timeout_min": 1}, "s")
    assert socket.gethostname()
    from manifold_lab.studies.spec import load_study

    spec = load_study(make_study(tmp_path, [1], extra="resources: {cpus_per_task: 2}\n"))
    spec.override(["resources.mem_gb=8", "resources.sbatch={qos: high}"])
    assert spec.resources == {"cpus_per_task": 2, "mem_gb": 8, "sbatch": {"qos": "high"}}
    assert json.loads(json.dumps(spec.resources))
