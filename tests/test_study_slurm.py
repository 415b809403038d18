"""The SLURM backend against a real single-node SLURM (tests/slurm_cluster.py starts and stops it).

Skipped where SLURM cannot run here (not root, or Debian's slurm-wlm/munge missing: .ci/run installs them).
The points run the tiny notebook of tests/test_study_backends.py, which logs every execution.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
from slurm_cluster import STUDY_SLURM_FLAGS, cluster_fixture
from test_study_backends import executions, make_study, study

from manifold_lab.studies import claims
from manifold_lab.studies.results import RUN_TIMING

ROOT = Path(__file__).resolve().parents[1]
SLURM = STUDY_SLURM_FLAGS
cluster = cluster_fixture(cpus=4)


def finish(*procs, timeout=300):
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [p.returncode for p in procs], outs


def wait_for(pred, timeout=120, every=0.5, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the study ended first (exit {proc.returncode}): {proc.communicate()}")
        time.sleep(every)
    raise TimeoutError("condition not met in time")


def test_slurm_backend_runs_the_study_like_the_local_one(cluster, tmp_path):
    """A shrunken toy study: the same metric values from the local backend and from SLURM job arrays."""
    tiny = ["--set", "D=[2,16]", "--set", "pred=[x]", "--set", "steps=20", "--set", "n_samples=200",
            "--set", "sample_steps=4", "--set", "batch_size=64"]
    local = study(ROOT / "studies/toy_fig2.yaml", "--results-dir", tmp_path / "local", *tiny)
    remote = study(ROOT / "studies/toy_fig2.yaml", "--results-dir", tmp_path / "slurm", *tiny, *SLURM)
    codes, outs = finish(local, remote)
    assert codes == [0, 0], outs
    assert "submitted 2 point(s) as SLURM job array" in outs[1][0]
    a = pd.read_csv(tmp_path / "local/toy_fig2/summary.csv")
    b = pd.read_csv(tmp_path / "slurm/toy_fig2/summary.csv")
    def quality(df):   # the measured values, without times and the runner's matmul rate (they differ run to run)
        return df[~df.metric.str.endswith("_s") & ~df.metric.isin(RUN_TIMING)].value.tolist()

    assert quality(a) == quality(b)
    run = tmp_path / "slurm/toy_fig2/D0016-spiral-d2-mlp-w256-xpred-vloss-s0"
    record = json.loads((run / "run.json").read_text())
    assert record["job_id"] and "_" in record["job_id"]                     # ran as an array task
    assert any(p.name.endswith("_log.out") for p in run.iterdir())          # its stdout sits in the run folder


def test_a_cancelled_job_is_redone_alone_by_the_next_run(cluster, tmp_path):
    spec = make_study(tmp_path, range(3))
    results = tmp_path / "results"
    codes, outs = finish(study(spec, "--results-dir", results, *SLURM, "--set", "x=[0,1]"))
    assert codes == [0], outs
    slow = study(spec, "--results-dir", results, *SLURM, "--set", "x=[2]", "--set", "sleep_s=600")
    claim = claims.claim_path(results / "square", "x02")
    wait_for(lambda: (claims.read_claim(claim) or {}).get("host") is not None and
             (claims.read_claim(claim) or {}).get("job_id") and
             (claims.slurm_queue(0) or {}).get(claims.read_claim(claim)["job_id"]) == "RUNNING")
    cluster.run("scancel", claims.read_claim(claim)["job_id"])               # killed mid-run
    codes, outs = finish(slow)
    assert codes == [1] and "x02 failed" in outs[0][1] and "ended without a result" in outs[0][1]
    codes, outs = finish(study(spec, "--results-dir", results, *SLURM))
    assert codes == [0], outs
    assert "ran 1, skipped 2 finished" in outs[0][0]                        # only the killed point again
    assert executions(tmp_path) == [0, 1, 2]                             # (the killed run never got to log)


def test_a_slurm_runner_and_a_local_runner_at_once(cluster, tmp_path):
    spec = make_study(tmp_path, range(6), sleep_s=2.0)
    results = tmp_path / "results"
    remote = study(spec, "--results-dir", results, *SLURM, "--workers", "3")
    time.sleep(0.5)
    local = study(spec, "--results-dir", results, "--workers", "2")
    codes, outs = finish(remote, local)
    assert codes == [0, 0], outs
    assert executions(tmp_path) == list(range(6))                          # every point exactly once
    assert "failed 0" in outs[0][0] and "failed 0" in outs[1][0]


def test_no_wait_submits_and_a_later_call_collects(cluster, tmp_path):
    spec = make_study(tmp_path, range(3), sleep_s=3.0)
    results = tmp_path / "results"
    codes, outs = finish(study(spec, "--results-dir", results, *SLURM, "--no-wait"))
    assert codes == [0] and "submitted 3" in outs[0][0], outs
    codes, outs = finish(study(spec, "--results-dir", results, "--status"))
    states = [line.split()[1] for line in outs[0][0].strip().splitlines()[:-1]]
    assert codes == [0] and set(states) <= {"queued", "running", "done"} and "job " in outs[0][0]
    codes, outs = finish(study(spec, "--results-dir", results, *SLURM))     # waits for the jobs, submits none
    assert codes == [0], outs
    assert "submitted 0" in outs[0][0] and executions(tmp_path) == [0, 1, 2]
    summary = pd.read_csv(results / "square" / "summary.csv")
    assert len(summary[~summary["metric"].isin(RUN_TIMING)]) == 3


def test_a_requeued_imagenet_point_resumes_from_its_checkpoint(cluster, tmp_path):
    """A shrunken ImageNet point is preempted (SIGUSR2, what SLURM sends before a time limit) after its
    first checkpoints: submitit requeues the task, which resumes training from the last checkpoint."""
    from imagenet_helpers import TINY_MODEL_ARGS, make_image_folder

    data = make_image_folder(tmp_path / "data", classes=3, per_class=4)
    results = tmp_path / "results"
    args = [ROOT / "studies/imagenet_pred_loss.yaml", "--results-dir", results, *SLURM,
            "--set", "resources.gpus_per_node=0", "--set", "resources.cpus_per_task=1",
            "--set", "config=[jit_tiny_cpu]", "--set", "loss=[v]", "--set", "pred=[x]", "--set", f"data_path={data}",
            "--set", "epochs=150", "--set", f"model_args={json.dumps(TINY_MODEL_ARGS)}",
            "--set", "overrides={save_every_steps: 5, num_workers: 0, batch_size: 4}", "--set", "nproc=1",
            "--set", "search_samples=6", "--set", "n_samples=6", "--set", "sample_steps=2",
            "--set", "cfg_scales=[1.0]", "--set", "emas=[ema1]", "--set", "feature_extractor=tiny"]
    proc = study(*args)
    partial = results / "imagenet_pred_loss" / ".jit_tiny_cpu-xpred-vloss-e150.partial"
    wait_for(lambda: (partial / "run" / "checkpoint-last.pth").is_file(), timeout=180, proc=proc)
    job = claims.read_claim(claims.claim_path(results / "imagenet_pred_loss", partial.name[1:-8]))["job_id"]
    cluster.run("scancel", "--signal=USR2", job)                            # preempted: requeue, same job id
    codes, outs = finish(proc, timeout=600)
    assert codes == [0], outs
    run = results / "imagenet_pred_loss" / "jit_tiny_cpu-xpred-vloss-e150"
    metrics = json.loads((run / "metrics.json").read_text())
    steps = json.loads((run / "config.json").read_text())["derived"]["steps"]  # a setting, not a metric
    assert metrics["resumed_from_step"] > 0 and steps == 450                    # 150 epochs x 3 steps
    log = pd.read_csv(run / "run" / "log.csv")
    assert log.step.tolist() == list(range(1, 451))                            # no step lost, none twice
    assert json.loads((run / "run.json").read_text())["job_id"] == job
