"""A real single-node SLURM (tests/slurm_cluster.py): sbatch and submitit on it.

Skipped where SLURM cannot run: not root, or slurm-wlm/munge not installed
(``apt-get install -y slurm-wlm munge``).
"""
import os
import socket
import sys

import pytest
from slurm_cluster import local_slurm, slurm_available


def square_plus(x, offset=0):
    """Runs inside a SLURM job (pickled by value: the job cannot import this test module)."""
    return {"value": x * x + offset, "array_task": os.environ.get("SLURM_ARRAY_TASK_ID")}


@pytest.fixture
def slurm(tmp_path):
    ok, reason = slurm_available()
    if not ok:
        pytest.skip(reason)
    with local_slurm(tmp_path / "slurm") as cluster:
        yield cluster
    assert cluster.leftover_pids() == []


def test_sbatch_and_submitit_map_array(slurm, tmp_path):
    assert os.environ["SLURM_CONF"] == str(slurm.conf)

    # a plain sbatch job
    out = tmp_path / "wrap.out"
    job_id = slurm.run("sbatch", "--parsable", "-o", str(out), "--wrap", "echo hello from $SLURM_JOB_ID").stdout
    job_id = job_id.strip()
    assert slurm.wait_job(job_id, timeout=60) == "COMPLETED"
    assert out.read_text().strip() == f"hello from {job_id}"

    # submitit: an array of 3 tiny jobs
    submitit = pytest.importorskip("submitit")
    cloudpickle = pytest.importorskip("cloudpickle")
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j")
        assert executor.cluster == "slurm"
        executor.update_parameters(
            slurm_partition=slurm.partition,
            timeout_min=10,  # keep >> signal_delay_s (90 s) + 60 s, or the job gets USR2 early
            cpus_per_task=1,
            mem_gb=0.25,
            slurm_array_parallelism=2,
        )
        jobs = executor.map_array(square_plus, [1, 2, 3], [10, 10, 10])
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert [j.job_id for j in jobs] == [f"{jobs[0].job_id.split('_')[0]}_{i}" for i in range(3)]
    results = [j.result() for j in jobs]
    assert [r["value"] for r in results] == [11, 14, 19]
    assert [r["array_task"] for r in results] == ["0", "1", "2"]
    assert all(j.done() for j in jobs)
    assert all(j.paths.stdout.exists() for j in jobs)


def test_local_slurm_restarts_and_cleans_up(tmp_path):
    ok, reason = slurm_available()
    if not ok:
        pytest.skip(reason)
    before = os.environ.get("SLURM_CONF")
    for i in range(2):
        with local_slurm(tmp_path / f"slurm{i}") as cluster:
            r = cluster.run("sinfo", "-h", "-o", "%P %T")
            assert r.stdout.split() == [f"{cluster.partition}*", "idle"]
        assert os.environ.get("SLURM_CONF") == before
        assert cluster.leftover_pids() == []
        assert all(p.returncode is not None for p in cluster.procs.values())
    # nothing listens on the cluster's ports any more
    for port in (cluster.ctld_port, cluster.slurmd_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
