"""Ctrl-C on `study --backend slurm` against a real single-node SLURM (tests/slurm_cluster.py): the jobs
keep running (they are the cluster's), the message names the scancel command, exit 130."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from slurm_cluster import STUDY_SLURM_FLAGS, cluster_fixture
from test_study_backends import ROOT, make_study

from manifold_lab.studies import claims

SLURM = STUDY_SLURM_FLAGS
cluster = cluster_fixture(cpus=2)


def test_ctrl_c_leaves_the_jobs_running_and_names_scancel(cluster, tmp_path):
    spec, results = make_study(tmp_path, [0]), tmp_path / "results"
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "manifold_lab", "study", str(spec), "--results-dir",
                                 str(results), *SLURM, "--set", "sleep_s=600", "--no-progress"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    claim = claims.claim_path(results / "square", "x00")
    deadline = time.time() + 120
    while not ((claims.read_claim(claim) or {}).get("job_id") and
               (claims.slurm_queue(0) or {}).get(claims.read_claim(claim)["job_id"]) == "RUNNING"):
        assert time.time() < deadline and proc.poll() is None, (tmp_path / "err.txt").read_text()
        time.sleep(0.5)
    job = claims.read_claim(claim)["job_id"]
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    while "Ctrl-C" not in (tmp_path / "err.txt").read_text():
        assert time.monotonic() - t0 < 5
        time.sleep(0.05)
    assert time.monotonic() - t0 < 1.0
    out, _ = proc.communicate(timeout=60)
    text = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 130 and "Traceback" not in text, (out, text)
    assert f"scancel {job.split('_')[0]}" in text and "keep running" in text
    assert (claims.slurm_queue(0) or {}).get(job) == "RUNNING"              # the job is the cluster's
    cluster.run("scancel", job.split("_")[0])
    cluster.wait_idle()
