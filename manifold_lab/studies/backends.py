"""Where a study's points run: ``local`` (a pool on this machine) or ``slurm`` (one submitit job array).

Both hand each point to :func:`manifold_lab.studies.execute.run_point` (a SLURM task through
:class:`~manifold_lab.studies.execute.PointJob`), which claims it first. A point held alive by another
runner is waited for, not run again; when its owner dies, the point is run here (local) or reported
(slurm: the next ``study`` call redoes it). Reports: {"ran", "skipped", "elsewhere", "failed", "submitted"}.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from manifold_lab import io
from manifold_lab.checks import ConfigError
from manifold_lab.studies import claims, interrupt
from manifold_lab.studies.execute import (
    HELD,
    RAN,
    REFUSED,
    STOPPED,
    PointJob,
    last_error_line,
    refusal,
    run_point,
)
from manifold_lab.studies.status import point_state

POLL_S = 2.0
BACKENDS = ("local", "slurm")
RESOURCE_DEFAULTS = {"cpus_per_task": 1, "gpus_per_node": 0, "nodes": 1, "mem_gb": 4, "timeout_min": 60,
                     "partition": None, "account": None, "signal_delay_s": 90, "sbatch": {}}


def new_report() -> dict:
    return {"ran": [], "skipped": [], "elsewhere": [], "failed": [], "submitted": [], "interrupted": [], "refused": []}


def _say_failed(rid: str, why: str, study_dir: Path) -> None:
    print(f"run {rid} failed: {why} (partial folder kept in {Path(study_dir) / f'.{rid}.partial'})", file=sys.stderr)


# ---- local ------------------------------------------------------------------------------------------------
def gpu_slots(points: list) -> list[str]:
    """The GPUs local workers share when a point asks for ``device`` cuda: CUDA_VISIBLE_DEVICES' entries, else
    every GPU torch sees; [] otherwise (the kernels then inherit the environment unchanged)."""
    if not any(str(p.get("device", "")).startswith("cuda") for _, p in points):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def slot_gpu(slot: int, gpus: list[str]) -> str | None:
    """The GPU of worker slot ``slot``: round-robin over ``gpus`` (None without GPUs). With W workers and G
    GPUs, slots i, i+G, i+2G, ... share GPU i: ``--workers`` runs that many small points at once, about
    W/G on each GPU, memory permitting."""
    return gpus[slot % len(gpus)] if gpus else None


def run_local(notebook: Path, study_dir: Path, points: list, *, workers: int, threads: int, bar=None) -> dict:
    """Run ``points`` [(run_id, params)] on a pool of ``workers`` threads (each point a papermill kernel; with
    ``device=cuda``, each worker slot's kernel sees one GPU, :func:`slot_gpu`).
    After Ctrl-C nothing more is launched and the running points are stopped (``interrupted``)."""
    rep, owner, gpus = new_report(), claims.this_owner(), gpu_slots(points)
    todo, held, futures = list(points), [], {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while todo or held or futures:
            if interrupt.requested():
                rep["interrupted"] += [rid for rid, _ in todo + held]
                todo, held = [], []
            while todo and len(futures) < workers:
                rid, p = todo.pop(0)
                slot = min(set(range(workers)) - {s for _, _, s in futures.values()})
                fut = pool.submit(run_point, notebook, study_dir, rid, p, threads=threads, owner=owner,
                                  gpu=slot_gpu(slot, gpus))
                futures[fut] = (rid, p, slot)
            if futures:
                finished, _ = wait(futures, timeout=POLL_S, return_when=FIRST_COMPLETED)
            else:                                  # only points other runners hold: wait for them
                finished = set()
                time.sleep(POLL_S)
            for fut in finished:
                rid, p, _ = futures.pop(fut)
                _record(fut, rid, p, rep, held, study_dir, bar)
            todo, held = _recheck(study_dir, held, rep, bar, todo)
    return rep


def _record(fut, rid: str, p: dict, rep: dict, held: list, study_dir: Path, bar) -> None:
    """Enter one finished point's outcome in the report (HELD points go back to ``held``)."""
    try:
        outcome = fut.result()
    except Exception as e:  # noqa: BLE001 - any failure of a point: keep going, report at the end
        rep["failed"].append(rid)
        _say_failed(rid, last_error_line(e), study_dir)
        bar and bar.update(1)
        return
    if outcome == HELD:
        held.append((rid, p))
    elif outcome == STOPPED:
        rep["interrupted"].append(rid)
    elif outcome == REFUSED:
        rep["refused"].append(rid)
        print(refusal(study_dir, rid, p) or f"refused {rid}: held with other parameter values", file=sys.stderr)
    else:
        rep["ran" if outcome == RAN else "elsewhere"].append(rid)
        bar and bar.update(1)


def _recheck(study_dir: Path, held: list, rep: dict, bar, todo: list) -> tuple[list, list]:
    """Points held by another owner: done there -> 'elsewhere'; owner gone -> back to the to-do list."""
    still = []
    for rid, p in held:
        kind = point_state(study_dir, rid, p).kind
        if kind == "done":
            rep["elsewhere"].append(rid)
            bar and bar.update(1)
        elif kind in ("running", "queued"):
            still.append((rid, p))
        else:
            todo.append((rid, p))
    return todo, still


# ---- slurm ------------------------------------------------------------------------------------------------
def check_resources(resources: dict, where: str) -> dict:
    """The study's ``resources:`` over the defaults; unknown keys and a too-short time limit are errors."""
    from manifold_lab.checks import check_keys

    check_keys(f"resources of {where}", resources, RESOURCE_DEFAULTS)
    r = {**RESOURCE_DEFAULTS, **resources}
    if r["timeout_min"] * 60 <= r["signal_delay_s"] + 60:
        raise ConfigError(f"resources.timeout_min={r['timeout_min']} must exceed signal_delay_s "
                          f"({r['signal_delay_s']} s) + 60 s, or every job is signalled as timed out at once")
    if r["nodes"] != 1:
        raise ConfigError(f"resources.nodes={r['nodes']}: a study point runs on one node (several GPUs of a "
                          "node run as torchrun processes); for more nodes run `train` under torchrun yourself")
    return r


def make_executor(study_dir: Path, name: str, resources: dict, workers: int):
    """A submitit executor on SLURM: logs in <study>/.slurm/<job id>/, ``workers`` tasks at once."""
    import submitit

    logging.getLogger("submitit").setLevel(logging.ERROR)    # without accounting, sacct warns on every poll
    r = resources
    ex = submitit.AutoExecutor(folder=Path(study_dir) / ".slurm" / "%j", cluster="slurm")
    extra = dict(r["sbatch"] or {}) | ({"account": r["account"]} if r["account"] else {})
    ex.update_parameters(timeout_min=r["timeout_min"], cpus_per_task=r["cpus_per_task"], mem_gb=r["mem_gb"],
                         nodes=1, gpus_per_node=r["gpus_per_node"], slurm_array_parallelism=workers,
                         slurm_signal_delay_s=r["signal_delay_s"], slurm_job_name=f"study-{name}",
                         slurm_setup=[f"export OMP_NUM_THREADS={r['cpus_per_task']}"],
                         **({"slurm_partition": r["partition"]} if r["partition"] else {}),
                         **({"slurm_additional_parameters": extra} if extra else {}))
    return ex


def submit_slurm(notebook: Path, study_dir: Path, name: str, points: list, *, workers: int, resources: dict
                 ) -> tuple[list, list]:
    """Claim every free point, submit the claimed ones as one job array, hand each claim to its task.
    Returns (submitted points, points held by other live owners)."""
    owner, mine, held = claims.this_owner(), [], []
    for rid, p in points:
        if claims.try_claim(study_dir, rid, owner, p):
            mine.append((rid, p))
        elif (line := refusal(study_dir, rid, p)):
            print(line, file=sys.stderr)                   # not waited for, not overwritten
        else:
            held.append((rid, p))
    if not mine:
        return [], held
    job = PointJob(str(notebook), str(study_dir), threads=resources["cpus_per_task"], claim_token=owner["token"])
    try:
        jobs = make_executor(study_dir, name, resources, workers).map_array(job, mine)
    except Exception:
        for rid, _ in mine:
            claims.release(study_dir, rid, owner)
        raise
    for j, (rid, _) in zip(jobs, mine):
        claims.assign_job(study_dir, rid, owner, j.job_id)
    claims.forget_queue()
    interrupt.slurm_submitted({rid: j.job_id for j, (rid, _) in zip(jobs, mine)})
    log = Path(study_dir) / ".slurm" / "submitted.json"
    old = io.read_json_or_warn(log, expect=list, consequence="a new log is started") or []
    io.write_json(log, old + [{"time": time.time(), "jobs": {rid: j.job_id for j, (rid, _) in zip(jobs, mine)}}])
    print(f"submitted {len(mine)} point(s) as SLURM job array {jobs[0].job_id.split('_')[0]}", flush=True)
    return mine, held


def wait_slurm(study_dir: Path, submitted: list, held: list, rep: dict, bar=None) -> dict:
    """Wait until every submitted or held point is done, failed, or lost its owner (a cancelled job); after
    Ctrl-C, stop waiting (the jobs keep running; the points left are ``interrupted``)."""
    ours = {rid for rid, _ in submitted}
    waiting = list(submitted) + list(held)
    while waiting:
        if interrupt.requested():
            rep["interrupted"] += [rid for rid, _ in waiting]
            break
        still = []
        for rid, p in waiting:
            st = point_state(study_dir, rid, p)
            if st.kind in ("running", "queued"):
                still.append((rid, p))
                continue
            if st.kind == "done":
                rep["ran" if rid in ours else "elsewhere"].append(rid)
            else:
                rep["failed"].append(rid)
                _say_failed(rid, st.detail or st.kind, study_dir)
            bar and bar.update(1)
        waiting = still
        if waiting and not interrupt.requested():
            time.sleep(POLL_S)
    return rep
