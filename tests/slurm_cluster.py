"""Start and stop a real, local, single-node SLURM cluster for tests.

Usage::

    from slurm_cluster import local_slurm, slurm_available

    ok, reason = slurm_available()
    if not ok:
        pytest.skip(reason)
    with local_slurm(tmp_path / "slurm") as cluster:
        # SLURM_CONF is exported in os.environ while the block runs
        job_id = cluster.run("sbatch", "--parsable", "--wrap", "true").stdout.strip()
        assert cluster.wait_job(job_id) == "COMPLETED"  # (sbatch --wait polls every ~10 s)

Needs root and Debian's ``slurm-wlm`` and ``munge`` packages
(``apt-get install -y slurm-wlm munge``).  Everything the cluster writes
(config, state, spool, logs, pid files) lives under ``tmp_dir``; the daemons
listen on free loopback ports picked at start-up, so a system SLURM (if any)
is not touched.

The daemons run in the foreground (``-D`` / ``-F``) as children of this
process, so they are stopped by their ``Popen`` handle and never by name.  On
exit: every job still in the queue is cancelled, ``scontrol shutdown`` stops
the daemons (SIGTERM then SIGKILL after a grace period if they hang),
leftover ``slurmstepd`` / job processes that were started by *this* cluster
(found by a tag in their environment) are killed, munged is stopped only if
this helper started it, and ``os.environ`` is restored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "SlurmStartError",
    "LocalSlurm",
    "local_slurm",
    "slurm_available",
    "REQUIRED_BINARIES",
    "DEFAULT_CONF",
]

# binaries that must exist for local_slurm() to work
REQUIRED_BINARIES = (
    "slurmctld",
    "slurmd",
    "munged",
    "munge",
    "sbatch",
    "srun",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)
INSTALL_HINT = "apt-get install -y slurm-wlm munge"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
TAG_VAR = "MANIFOLD_LAB_LOCAL_SLURM_TAG"  # marks processes spawned by our daemons

# Settings that make a one-node test cluster snappy.  Any of them can be
# overridden through local_slurm(..., extra_conf={...}).
DEFAULT_CONF: dict[str, str] = {
    "ClusterName": "manifoldlab",
    "AuthType": "auth/munge",
    "CredType": "cred/munge",
    "ProctrackType": "proctrack/linuxproc",
    "TaskPlugin": "task/none",
    "SelectType": "select/cons_tres",
    "SelectTypeParameters": "CR_Core",
    "SchedulerType": "sched/backfill",
    # schedule right after each submit / job end; no batching delay; main
    # and backfill passes every second (slurm defaults: 60 s and 30 s)
    "SchedulerParameters": (
        "batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1,default_queue_depth=100"
    ),
    # a requeued job (timeout/preemption) waits cred_expire seconds (slurm
    # default 120, minimum accepted 5) before it may start again
    "AuthInfo": "cred_expire=5",
    "MailProg": "/bin/true",
    "ReturnToService": "2",
    "MpiDefault": "none",
    "JobCompType": "jobcomp/none",
    "JobAcctGatherType": "jobacct_gather/none",
    "AccountingStorageType": "accounting_storage/none",
    # declared CPUs / memory win over what slurmd detects (no DRAIN when
    # cpus= is larger than the machine)
    "SlurmdParameters": "config_overrides",
    "MessageTimeout": "10",
    "KillWait": "2",  # SIGTERM -> SIGKILL delay at time limit / scancel
    "OverTimeLimit": "0",
    "MinJobAge": "10",  # finished jobs stay in squeue/scontrol for ~10 s
    "InactiveLimit": "0",
    "Waittime": "0",
    "SlurmctldTimeout": "10",
    "SlurmdTimeout": "30",
    "TCPTimeout": "2",
    "SlurmctldDebug": "info",
    "SlurmdDebug": "info",
}


class SlurmStartError(RuntimeError):
    """The local cluster could not be started (the message has log tails)."""


def _which(name: str) -> str | None:
    # daemons live in /usr/sbin, which is not always on a non-root PATH
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(name, path=path)


def _missing_binaries() -> list[str]:
    return [b for b in REQUIRED_BINARIES if _which(b) is None]


def slurm_available() -> tuple[bool, str]:
    """Whether local_slurm() can run here, and if not, why (for pytest.skip)."""
    if not os.name == "posix" or not Path("/proc").is_dir():
        return False, "local SLURM needs Linux"
    if os.geteuid() != 0:
        return False, "local SLURM needs root (slurmd and munged run as root)"
    missing = _missing_binaries()
    if missing:
        return False, f"SLURM/munge not installed (missing {', '.join(missing)}); run: {INSTALL_HINT}"
    if not MUNGE_KEY.exists() and not _munge_running():
        return False, f"no munge key at {MUNGE_KEY}; run: {INSTALL_HINT} (it creates the key)"
    return True, ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


def _munge_running() -> bool:
    munge = _which("munge")
    if munge is None or not MUNGE_SOCKET.exists():
        return False
    try:
        r = subprocess.run([munge, "-n"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _stop_popen(proc: subprocess.Popen, grace_s: float) -> None:
    """Wait for proc to exit; SIGTERM then SIGKILL if it does not."""
    for sig, wait_s in ((None, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if sig is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """preexec_fn: the daemon gets SIGTERM if the test process dies (kill -9)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the daemons are stopped by the fixture only
        pass


def _wait_until(pred, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _tagged_pids(tag: str, steps: bool = True) -> list[int]:
    """Pids of live processes whose environment carries our tag.

    Only slurmstepd (if steps) and job processes (SLURM_JOB_ID in their
    environment), never other children of the test process.  Zombies are
    skipped (PID 1 reaps orphaned slurmstepd a moment after they exit).
    """
    me = os.getpid()
    needle = f"{TAG_VAR}={tag}".encode()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle not in env:
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        if stat[stat.rfind(")") + 2 :].startswith("Z"):
            continue
        if comm.startswith("slurmstepd"):
            if steps:
                pids.append(int(entry.name))
        elif any(e.startswith(b"SLURM_JOB_ID=") for e in env):
            pids.append(int(entry.name))
    return pids


@dataclass
class LocalSlurm:
    """A running local cluster (what local_slurm() yields)."""

    root: Path  # tmp_dir
    conf: Path  # slurm.conf (also in os.environ["SLURM_CONF"])
    hostname: str  # NodeName of the single node
    partition: str  # the default partition ("debug")
    cpus: int
    mem_mb: int
    ctld_port: int
    slurmd_port: int
    log_dir: Path
    tag: str
    started_munge: bool = False
    startup_s: float = 0.0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses that talk to this cluster."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a SLURM client command (sbatch, squeue, ...) against this cluster."""
        return subprocess.run(
            list(args), env=self.env, check=check, timeout=timeout,
            capture_output=True, text=True,
        )

    def job_state(self, job_id: int | str) -> str | None:
        """SLURM state of a job (PENDING, RUNNING, COMPLETED, ...), None once purged."""
        r = self.run("squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T", check=False)
        states = r.stdout.split()
        return states[0] if r.returncode == 0 and states else None

    def wait_job(self, job_id: int | str, timeout: float = 120) -> str:
        """Poll until the job has left PENDING/RUNNING/...; return its final state.

        Faster than ``sbatch --wait`` (which polls every ~10 s).  Returns
        "PURGED" if the job is already gone (older than MinJobAge).
        """
        live = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state is None:
                return "PURGED"
            if state not in live:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {state} after {timeout}s\n{self.logs()}")
            time.sleep(0.1)

    def leftover_pids(self) -> list[int]:
        """Processes of this cluster still alive (daemons, slurmstepd, jobs); [] after exit."""
        pids = [p.pid for p in self.procs.values() if p.poll() is None]
        return pids + _tagged_pids(self.tag)

    def queued_job_ids(self) -> list[str]:
        r = self.run("squeue", "-h", "-o", "%i", check=False)
        return r.stdout.split() if r.returncode == 0 else []

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until no job is pending/running/completing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.queued_job_ids():
                return
            time.sleep(0.2)
        raise TimeoutError(f"jobs still queued after {timeout}s: {self.queued_job_ids()}")

    def logs(self, n: int = 30) -> str:
        """Tails of the daemon logs (for error messages)."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munged.log"):
            p = self.log_dir / name
            if p.exists():
                parts.append(f"--- {p} (last {n} lines) ---\n{_tail(p, n)}")
        return "\n".join(parts)


def _write_conf(c: LocalSlurm, state: Path, spool: Path, extra: Mapping[str, object]) -> None:
    h = c.hostname
    conf: dict[str, str] = {
        "SlurmctldHost": f"{h}(127.0.0.1)",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "SlurmctldPort": str(c.ctld_port),
        "SlurmdPort": str(c.slurmd_port),
        "StateSaveLocation": str(state),
        "SlurmdSpoolDir": str(spool),
        "SlurmctldPidFile": str(c.root / "slurmctld.pid"),
        "SlurmdPidFile": str(c.root / "slurmd.pid"),
        "SlurmctldLogFile": str(c.log_dir / "slurmctld.log"),
        "SlurmdLogFile": str(c.log_dir / "slurmd.log"),
    }
    conf.update(DEFAULT_CONF)
    conf.update({k: str(v) for k, v in extra.items()})
    lines = [f"# written by tests/slurm_cluster.py ({c.tag})"]
    lines += [f"{k}={v}" for k, v in conf.items()]
    lines.append(
        f"NodeName={h} NodeAddr=127.0.0.1 NodeHostname={h} CPUs={c.cpus} "
        f"RealMemory={c.mem_mb} State=UNKNOWN"
    )
    lines.append(f"PartitionName={c.partition} Nodes={h} Default=YES MaxTime=INFINITE State=UP")
    c.conf.write_text("\n".join(lines) + "\n")


def _default_mem_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return max(256, int(int(line.split()[1]) / 1024 * 0.8))
    return 1024


@contextlib.contextmanager
def local_slurm(
    tmp_dir: str | os.PathLike,
    cpus: int | None = None,
    mem_mb: int | None = None,
    *,
    extra_conf: Mapping[str, object] | None = None,
    start_timeout: float = 30.0,
    stop_timeout: float = 20.0,
    clear_state: bool = False,
) -> Iterator[LocalSlurm]:
    """Start munge (if needed), slurmctld and slurmd; yield a LocalSlurm; stop all.

    tmp_dir: folder for slurm.conf, state, spool, logs (created if missing).
      Reusing a folder keeps slurmctld's saved state: job ids go on counting
      (no id reuse across restarts); clear_state=True starts from job id 1.
    cpus: CPUs of the node (default: os.cpu_count()); may exceed the real count.
    mem_mb: RealMemory of the node (default: 80% of MemTotal).
    extra_conf: slurm.conf keys that override DEFAULT_CONF (e.g. {"MinJobAge": 300}).
    start_timeout: seconds to wait for the node to be idle (SlurmStartError after).
    stop_timeout: seconds to wait for each daemon after ``scontrol shutdown``.

    Raises SlurmStartError (with the daemons' log tails) when the cluster
    cannot start; check slurm_available() first to skip instead.
    """
    ok, reason = slurm_available()
    if not ok:
        raise SlurmStartError(reason)
    root = Path(tmp_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    log_dir = root / "log"
    state = root / "state"
    if clear_state:
        shutil.rmtree(state, ignore_errors=True)
    for d in (log_dir, state):
        d.mkdir(exist_ok=True)
    # slurmd puts unix sockets (<host>_<jobid>.<step>) in its spool dir: keep
    # the path short (sun_path is 108 bytes) when tmp_dir is deep.
    short_spool: str | None = None
    if len(str(root)) > 50:
        short_spool = tempfile.mkdtemp(prefix="mlslurmd-", dir="/tmp")
        spool = Path(short_spool)
    else:
        spool = root / "spool"
        spool.mkdir(exist_ok=True)

    c = LocalSlurm(
        root=root,
        conf=root / "slurm.conf",
        hostname=socket.gethostname().split(".")[0],
        partition="debug",
        cpus=int(cpus or os.cpu_count() or 1),
        mem_mb=int(mem_mb or _default_mem_mb()),
        ctld_port=_free_port(),
        slurmd_port=_free_port(),
        log_dir=log_dir,
        tag=uuid.uuid4().hex,
    )
    while c.slurmd_port == c.ctld_port:
        c.slurmd_port = _free_port()
    _write_conf(c, state, spool, extra_conf or {})

    saved_env = {k: os.environ.get(k) for k in ("SLURM_CONF", TAG_VAR)}
    daemon_env = dict(os.environ)
    daemon_env["SLURM_CONF"] = str(c.conf)
    daemon_env[TAG_VAR] = c.tag
    t0 = time.monotonic()
    try:
        # -- munge ---------------------------------------------------------
        if not _munge_running():
            MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
            out = open(log_dir / "munged.out", "ab")
            c.procs["munged"] = subprocess.Popen(
                [_which("munged"), "--force", "--foreground",
                 f"--log-file={log_dir / 'munged.log'}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=daemon_env, start_new_session=True, preexec_fn=_die_with_parent,
            )
            out.close()
            c.started_munge = True
            _wait_for(lambda: _munge_running(), 10, "munged to answer", c)

        # -- slurmctld, slurmd -----------------------------------------------
        for name in ("slurmctld", "slurmd"):
            out = open(log_dir / f"{name}.out", "ab")
            c.procs[name] = subprocess.Popen(
                [_which(name), "-D", "-f", str(c.conf)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=daemon_env, start_new_session=True, cwd=str(root),
                preexec_fn=_die_with_parent,
            )
            out.close()

        os.environ["SLURM_CONF"] = str(c.conf)
        os.environ[TAG_VAR] = c.tag  # jobs submitted from here carry it too

        def node_idle() -> bool:
            r = c.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=15)
            return r.returncode == 0 and r.stdout.strip().rstrip("*") == "idle"

        _wait_for(node_idle, start_timeout, "the node to be idle in sinfo", c)
        c.startup_s = time.monotonic() - t0
        yield c
    finally:
        try:
            _shutdown(c, stop_timeout)
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            if short_spool:
                shutil.rmtree(short_spool, ignore_errors=True)


def _wait_for(pred, timeout: float, what: str, c: LocalSlurm) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name, p in c.procs.items():
            if p.poll() is not None:
                raise SlurmStartError(
                    f"{name} exited with code {p.returncode} while waiting for {what}\n{c.logs()}"
                )
        if pred():
            return
        if time.monotonic() > deadline:
            extra = ""
            with contextlib.suppress(Exception):
                extra = c.run("sinfo", "-N", "-l", check=False, timeout=10).stdout
                extra += c.run("scontrol", "show", "node", check=False, timeout=10).stdout
            raise SlurmStartError(f"timed out after {timeout}s waiting for {what}\n{extra}\n{c.logs()}")
        time.sleep(0.1)


def _shutdown(c: LocalSlurm, timeout: float) -> None:
    ctld = c.procs.get("slurmctld")
    slurmd = c.procs.get("slurmd")
    grace = 0.0  # no controller to relay the shutdown: signal the daemons at once
    if ctld is not None and ctld.poll() is None:
        grace = timeout
        # cancel whatever is left so no job outlives the cluster.  A job
        # that runs its work under srun (submitit's default) stays COMPLETING
        # for ~7.5 s after scancel; killing its processes cuts that to ~2.5 s.
        with contextlib.suppress(Exception):
            ids = c.queued_job_ids()
            if ids:
                # (not by id: a pending array shows as 5_[2-3%4], which scancel refuses)
                c.run("scancel", f"--partition={c.partition}", check=False, timeout=15)
                if not _wait_until(lambda: not c.queued_job_ids(), 1.0):
                    _kill(_tagged_pids(c.tag, steps=False))
                    _wait_until(lambda: not c.queued_job_ids(), 8.0)
        with contextlib.suppress(Exception):
            c.run("scontrol", "shutdown", check=False, timeout=15)
    for p in (slurmd, ctld):
        if p is not None:
            _stop_popen(p, grace)
    # slurmstepd and job processes started by this cluster's slurmd
    for _ in range(5):
        pids = _tagged_pids(c.tag)
        if not pids:
            break
        _kill(pids)
        time.sleep(0.2)
    munged = c.procs.get("munged")
    if munged is not None:
        _stop_popen(munged, 0.0)  # SIGTERM right away, then SIGKILL


# ---- for the study tests ------------------------------------------------------------------------------
# `study` flags that send a study to the local cluster with small limits
STUDY_SLURM_FLAGS = ["--backend", "slurm", "--set", "resources.timeout_min=10", "--set", "resources.mem_gb=0.5"]


def cluster_fixture(cpus: int):
    """A module-scoped pytest fixture ``cluster``: a local SLURM with ``cpus`` CPUs for the module's tests
    (skipped with the reason where SLURM cannot run here); no process of it is left afterwards."""
    import pytest

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        ok, reason = slurm_available()
        if not ok:
            pytest.skip(reason)
        with local_slurm(tmp_path_factory.mktemp("slurm"), cpus=cpus) as c:
            yield c
        assert c.leftover_pids() == []

    return cluster
