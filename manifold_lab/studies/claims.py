"""Claims: a grid point is claimed before it runs, so that two runners (a relaunched ``study``, a local pool
beside a SLURM array, a requeued job) never run the same point or touch each other's partial folders.

A claim is the file ``<study>/.<run_id>.claim``, JSON: the owner (a random token, host, pid and the pid's
start time, the SLURM job id if any), ``since`` and the point's parameter values (``params``), so a runner
asked for other values refuses a point another runner holds alive (:func:`params_conflict`) instead of
overwriting it. Its mtime is the heartbeat: the owner touches it every
:data:`HEARTBEAT_S` seconds while the point runs. A claim is created with ``O_CREAT | O_EXCL``, so exactly
one creator wins. It is **dead** when

* its SLURM job is no longer in the queue (``squeue``), or else
* its process is gone (same host: no such pid, or a pid with another start time), or else
* its heartbeat is older than :data:`STALE_S` (another host, or a hung owner), or
* it is empty or not a JSON mapping (damaged) and older than :data:`WRITE_GRACE_S` (its creator writes it
  right after creating it; one warning line names the file).

A dead claim is taken over under an exclusive lock on ``<study>/.claims.lock`` (re-read, check dead,
remove, create anew), so two runners never take over the same claim. A live claim is never touched.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

HEARTBEAT_S = 15.0      # the owner touches its claim this often
STALE_S = 120.0         # a claim untouched this long is dead (used where no pid or job can be checked)
WRITE_GRACE_S = 5.0     # an empty or damaged claim this old is dead (a new claim is written at once)
ALIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED", "RESIZING",
                "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


def claim_path(study_dir: Path, run_id: str) -> Path:
    return Path(study_dir) / f".{run_id}.claim"


def _pid_start(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot, /proc/<pid>/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def slurm_job_id() -> str | None:
    """This process's SLURM job id as squeue spells it (``A_i`` for an array task), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def this_owner(job_id: str | None = None) -> dict:
    """A new owner record for this process (``job_id``: the SLURM job it runs as, default: its own)."""
    pid = os.getpid()
    return {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": pid, "pid_start": _pid_start(pid),
            "job_id": job_id or slurm_job_id()}


def read_claim(path: Path) -> dict | None:
    """The claim at ``path`` plus its heartbeat time (``mtime``); None if absent. An empty, unreadable or
    malformed claim (being written, or damaged) reads as ``{"damaged": why, "mtime": ...}``. Never raises."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        return {"damaged": f"unreadable: {type(e).__name__}", "mtime": 0.0, "path": str(path)}
    try:
        info = json.loads(text)
    except ValueError:
        return {"damaged": "empty" if not text.strip() else "not JSON", "mtime": mtime, "path": str(path)}
    if not isinstance(info, dict):
        return {"damaged": "not a mapping", "mtime": mtime, "path": str(path)}
    return {**info, "mtime": mtime}


# ---- liveness --------------------------------------------------------------------------------------------
_QUEUE: dict = {"at": -1e9, "jobs": None}
_QUEUE_LOCK = threading.Lock()


def slurm_queue(max_age: float = 2.0) -> dict[str, str] | None:
    """{job id: state} of every job in the SLURM queue (array tasks one by one), cached for ``max_age`` s;
    None where SLURM cannot be asked (no squeue, or no controller)."""
    with _QUEUE_LOCK:
        if time.monotonic() - _QUEUE["at"] > max_age:
            try:
                out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True,
                                     timeout=30)
                jobs = dict(ln.split()[:2] for ln in out.stdout.splitlines() if ln.strip()) \
                    if out.returncode == 0 else None
            except (OSError, subprocess.TimeoutExpired):
                jobs = None
            _QUEUE.update(at=time.monotonic(), jobs=jobs)
        return _QUEUE["jobs"]


def forget_queue() -> None:
    """Drop the cached queue (after a submission, the next question asks SLURM again)."""
    with _QUEUE_LOCK:
        _QUEUE["at"] = -1e9


def job_alive(job_id: str) -> bool | None:
    """Whether SLURM job ``job_id`` is pending, running or finishing (None: SLURM cannot be asked)."""
    queue = slurm_queue()
    return None if queue is None else queue.get(str(job_id)) in ALIVE_STATES


def is_alive(info: dict, now: float | None = None) -> bool:
    """Whether the owner of a claim (as read by :func:`read_claim`) is still at work."""
    now = time.time() if now is None else now
    if info.get("damaged"):
        if now - info.get("mtime", 0.0) < WRITE_GRACE_S:
            return True                                    # probably still being written
        from manifold_lab.io import warn_once

        warn_once(f"claim {info.get('path', '?')} is damaged ({info['damaged']}); treated as dead (its point is "
                  "free to run)")
        return False
    if info.get("job_id"):
        alive = job_alive(info["job_id"])
        if alive is not None:
            return alive
    if info.get("pid") and info.get("host") == socket.gethostname():
        start = _pid_start(int(info["pid"]))
        return start is not None and (info.get("pid_start") is None or start == info["pid_start"])
    return now - info.get("mtime", 0.0) < STALE_S


def same_owner(info: dict, owner: dict) -> bool:
    """The claim is ``owner``'s: the same token, or the same SLURM job (a requeued job re-takes its claim)."""
    return info.get("token") == owner["token"] or bool(owner.get("job_id") and info.get("job_id") == owner["job_id"])


# ---- taking and giving back --------------------------------------------------------------------------------
@contextlib.contextmanager
def _takeover_lock(study_dir: Path):
    with open(Path(study_dir) / ".claims.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _create(path: Path, owner: dict, params: dict | None = None) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({**owner, "since": time.time(), **({"params": params} if params is not None else {})}, f,
                  default=str)
    return True


def params_conflict(info: dict | None, params: dict | None) -> str:
    """'' if a claim (as read) was made for ``params`` (or records none); else the differing values, e.g.
    "lr: 0.01 there, 0.003 here"."""
    theirs = (info or {}).get("params")
    if params is None or not isinstance(theirs, dict):
        return ""
    ours = json.loads(json.dumps(params, default=str))
    diff = [k for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
    return "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in diff[:3])


def try_claim(study_dir: Path, run_id: str, owner: dict, params: dict | None = None) -> bool:
    """Claim a point for ``owner`` (recording ``params``, its parameter values): True if it is now
    ``owner``'s (new, already its own, or taken over from a dead owner), False if another owner holds it alive."""
    path = claim_path(study_dir, run_id)
    if _create(path, owner, params):
        return True
    with _takeover_lock(study_dir):
        info = read_claim(path)
        if info is not None and same_owner(info, owner):
            rewrite(path, {**info, **{k: v for k, v in owner.items() if k != "token"}})
            return True
        if info is not None and is_alive(info):
            return False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()                                  # dead: taken over
        return _create(path, owner, params)


def rewrite(path: Path, info: dict) -> None:
    """Replace a claim's content atomically (the owner keeps its token)."""
    from manifold_lab.io import write_json

    write_json(path, {k: v for k, v in info.items() if k != "mtime"})


def assign_job(study_dir: Path, run_id: str, owner: dict, job_id: str) -> None:
    """Hand ``owner``'s claim over to SLURM job ``job_id`` (the submitter claims, then submits, then assigns)."""
    path = claim_path(study_dir, run_id)
    info = read_claim(path)
    if info is not None and info.get("token") == owner["token"]:
        rewrite(path, {**info, "job_id": str(job_id)})


def release(study_dir: Path, run_id: str, owner: dict) -> None:
    """Remove ``owner``'s claim (never another owner's)."""
    path = claim_path(study_dir, run_id)
    info = read_claim(path)
    if info is not None and same_owner(info, owner):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def heartbeat(study_dir: Path, run_id: str, every: float = HEARTBEAT_S):
    """Touch the point's claim every ``every`` seconds while the block runs."""
    path, stop = claim_path(study_dir, run_id), threading.Event()

    def beat():
        while not stop.wait(every):
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)
    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat {run_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
