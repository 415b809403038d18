"""Ctrl-C during ``study``: the first stops the study cleanly, the second at once.

**First Ctrl-C** (within a second, one message on stderr naming what is being stopped): no new point is
launched, points held by other runners are no longer waited for, and the points this runner is running are
**stopped, not waited for** (a point can take hours): their kernels are terminated (SIGTERM to the kernel's
process group; a kernel still there after :data:`KILL_AFTER_S` is killed). SIGTERM rather than an interrupt:
it stops a kernel at any moment, also one still starting (where an interrupt prints an import traceback),
and every file a run writes is written atomically, so nothing half-written is left. A stopped point writes
no ``error.json`` (it did not fail: ``--status`` shows it pending), gives its claim back and keeps its partial
folder, which the next ``study`` call reuses (an ImageNet point resumes from the checkpoint in it). Then the
runner writes the summary and figures of what finished, prints its count line and exits 130.
With ``--backend slurm`` the submitted jobs keep running (they are the cluster's); the message names the
``scancel`` command that stops them, and a later ``study``/``--status`` collects what they finish.

**Second Ctrl-C:** the kernels are killed, this runner's claims removed, the partial folders named, and the
process exits 130 at once.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

KILL_AFTER_S = 15.0     # a kernel still there this long after the first Ctrl-C is killed

_lock = threading.Lock()
_stop = threading.Event()
_state: dict = {"count": 0, "backend": "local", "jobs": {}, "active": False}
_points: dict[str, dict] = {}   # run id -> {"study_dir", "owner", "pid", "pgid"} of the points running here


def requested() -> bool:
    """True once the user pressed Ctrl-C: launch nothing more, stop what runs."""
    return _stop.is_set()


def point_started(study_dir: Path, run_id: str, owner: dict) -> None:
    """A point is about to be claimed and run by this process (so a second Ctrl-C can release it)."""
    with _lock:
        _points[run_id] = {"study_dir": Path(study_dir), "owner": owner, "pid": None, "pgid": None}


def kernel_started(run_id: str, pid: int | None, pgid: int | None, sockets: str | None = None) -> None:
    """The kernel of a running point is up (its process and process group, to stop or kill; the folder of
    its IPC sockets, removed by a second Ctrl-C)."""
    with _lock:
        if run_id in _points:
            _points[run_id].update(pid=pid, pgid=pgid, sockets=sockets)


def point_ended(run_id: str) -> None:
    with _lock:
        _points.pop(run_id, None)


def slurm_submitted(jobs: dict[str, str]) -> None:
    """{run id: SLURM job id} of the points this runner submitted (named in the Ctrl-C message)."""
    with _lock:
        _state["jobs"].update(jobs)


def scancel_hint() -> str:
    """``scancel <array ids>`` for the jobs this runner submitted ('' if none)."""
    arrays = sorted({str(j).split("_")[0] for j in _state["jobs"].values()})
    return f"scancel {' '.join(arrays)}" if arrays else ""


@contextlib.contextmanager
def sigint_stops(backend: str = "local"):
    """Install the two-stage Ctrl-C handler for the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _stop.clear()
    _state.update(count=0, backend=backend, jobs={}, active=True)
    old = signal.signal(signal.SIGINT, _on_sigint)
    papermill_log = logging.getLogger("papermill")
    papermill_log.addFilter(_expected_deaths)
    try:
        yield
    finally:
        _state["active"] = False
        signal.signal(signal.SIGINT, old)
        papermill_log.removeFilter(_expected_deaths)


def _expected_deaths(record: logging.LogRecord) -> bool:
    """Drop papermill's "Kernel died ..." line for the kernels a Ctrl-C terminated (the message said so)."""
    return not (_stop.is_set() and "Kernel died" in record.getMessage())


def _say(text: str) -> None:
    os.write(2, (text + "\n").encode())   # not print: the handler may interrupt a write to stderr (tqdm)


def _on_sigint(signum, frame) -> None:
    _state["count"] += 1
    if _state["count"] > 1:
        _exit_now()
    _stop.set()
    _say(_first_message())
    if _state["backend"] == "local":
        threading.Thread(target=_stop_kernels, daemon=True, name="stop kernels").start()


def _first_message() -> str:
    again = "Press Ctrl-C again to stop at once."
    if _state["backend"] == "slurm":
        hint = scancel_hint()
        how = f"cancel them with `{hint}`" if hint else "cancel them with `scancel <job id>` (squeue lists them)"
        return (f"\nCtrl-C: no longer waiting for SLURM. The submitted jobs keep running (they are the cluster's): "
                f"{how}; a later `study` or `study --status` collects what they finish. Writing the summary of "
                f"what finished. {again}")
    with _lock:
        running = [f"{rid} ({p['owner'].get('host', '?')}:{p['owner'].get('pid', '?')})" for rid, p in _points.items()]
    if not running:
        return f"\nCtrl-C: launching no more points; none is running here. Writing the summary of what finished. {again}"
    return (f"\nCtrl-C: launching no more points; stopping the {len(running)} running here (their kernels are "
            f"terminated; partial folders kept for the next `study` call to redo them): {', '.join(running)}. "
            f"Then the summary of what finished is written. {again}")


def _signal(info: dict, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if info.get("pgid"):
            os.killpg(info["pgid"], sig)
        elif info.get("pid"):
            os.kill(info["pid"], sig)


def _stop_kernels() -> None:
    """Terminate every running kernel, once a second (a kernel started meanwhile gets it too); kill those
    still there after KILL_AFTER_S."""
    start = time.monotonic()
    while _state["active"]:
        sig = signal.SIGKILL if time.monotonic() - start > KILL_AFTER_S else signal.SIGTERM
        with _lock:
            running = [dict(p) for p in _points.values()]
        for info in running:
            _signal(info, sig)
        time.sleep(1.0)


def _exit_now() -> None:
    """The second Ctrl-C: kill the kernels, remove this runner's claims, name the partial folders, exit 130."""
    from manifold_lab.studies import claims, results

    with _lock:
        running = dict(_points)
    partials = []
    for rid, info in running.items():
        _signal(info, signal.SIGKILL)
        if info.get("sockets"):
            shutil.rmtree(info["sockets"], ignore_errors=True)
        with contextlib.suppress(OSError):
            claims.release(info["study_dir"], rid, info["owner"])
        partial = results.partial_dir(info["study_dir"], rid)
        if partial.exists():
            partials.append(str(partial))
    kept = f"; partial folders left (the next `study` call redoes them): {', '.join(partials)}" if partials else ""
    jobs = f"; the SLURM jobs keep running: `{scancel_hint()}` cancels them" if scancel_hint() else ""
    _say(f"\nCtrl-C again: stopped at once, this runner's claims removed{kept}{jobs}.")
    os._exit(130)
