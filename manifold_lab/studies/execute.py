"""One grid point, run the same way by every backend: claim it, execute the notebook with papermill into
the hidden partial folder, rename the folder on success, give the claim back.

A local worker calls :func:`run_point`; a SLURM array task runs :class:`PointJob`, which calls it too (and is
requeued by submitit on a time limit or preemption: the same job re-takes its own claim and runs the point
again in the partial folder it left, where an ImageNet point finds its checkpoint and resumes).
A failed point keeps its partial folder with the executed notebook and an ``error.json`` (the last error
line), which ``study --status`` shows.
"""
from __future__ import annotations

import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from manifold_lab import io
from manifold_lab.runs.registry import kind_of_notebook
from manifold_lab.studies import claims, interrupt, results
from manifold_lab.studies.plan import sgemm_gflops

# what run_point did: ran it, found it done, found it held by another owner, stopped it (Ctrl-C), refused
# it (another runner holds it alive with other parameter values: :func:`refusal`)
RAN, DONE, HELD, STOPPED, REFUSED = "ran", "done", "held", "stopped", "refused"


def refusal(study_dir: Path, run_id: str, params: dict) -> str:
    """The one line a runner prints when another runner holds ``run_id`` alive with other parameter values
    ('' when the values agree or the claim records none)."""
    info = claims.read_claim(claims.claim_path(study_dir, run_id))
    diff = claims.params_conflict(info, params)
    if not diff:
        return ""
    who = f"job {info['job_id']}" if info.get("job_id") else f"{info.get('host', '?')}:{info.get('pid', '?')}"
    return (f"refused {run_id}: another runner ({who}) is running it with other parameter values ({diff}); "
            "not overwritten: run again with these values once it is done (its run is then kept aside)")


def _papermill(notebook: Path, partial: Path, params: dict, threads: int, run_id: str, gpu: str | None) -> float:
    import papermill

    from manifold_lab.studies.kernels import for_point

    start = time.perf_counter()
    papermill.execute_notebook(str(notebook), str(partial / "notebook.ipynb"),
                               parameters={**params, "out_dir": str(partial.resolve()), "threads": threads},
                               kernel_name="python3", progress_bar=False, cwd=str(Path.cwd()),
                               kernel_manager_class=for_point(run_id, gpu),   # quiet (IPC), stoppable, its GPU
                               shutdown_kernel="immediate")   # see kernels.py: what a point wrote is written
    return time.perf_counter() - start


def last_error_line(exc: BaseException) -> str:
    """The last line of an error's message (papermill puts the kernel's traceback in it)."""
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[-1][:300]}"


def run_point(notebook: Path, study_dir: Path, run_id: str, params: dict, *, threads: int = 0,
              owner: dict | None = None, logs: tuple = (), requeued=lambda: False, gpu: str | None = None) -> str:
    """Run one point unless it is done or held alive by another owner. Returns RAN, DONE, HELD or STOPPED
    (Ctrl-C: :mod:`~manifold_lab.studies.interrupt`; no error.json, partial folder kept); raises the
    notebook's error (after writing ``error.json`` into the kept partial folder) if it failed.
    ``logs``: files to copy into the run folder before it is finalised (a SLURM job's stdout/stderr).
    ``requeued()``: True when the run is being stopped to be requeued; the claim is then kept.
    ``gpu``: the kernel's ``CUDA_VISIBLE_DEVICES`` (a local worker's GPU; None: inherited)."""
    study_dir, final = Path(study_dir), results.run_dir(study_dir, run_id)
    owner = owner or claims.this_owner()
    kind = getattr(kind_of_notebook(notebook), "name", None)   # done = the kind's whole contract
    if results.is_current(final, params, kind):
        return DONE
    if interrupt.requested():
        return STOPPED
    interrupt.point_started(study_dir, run_id, owner)       # before the claim: a second Ctrl-C releases it
    if not claims.try_claim(study_dir, run_id, owner, params):
        interrupt.point_ended(run_id)
        return REFUSED if refusal(study_dir, run_id, params) else HELD
    partial = results.partial_dir(study_dir, run_id)
    try:
        if results.is_current(final, params, kind):      # finished by another runner meanwhile
            return DONE
        partial.mkdir(parents=True, exist_ok=True)         # a requeued or taken-over point reuses it
        (partial / "error.json").unlink(missing_ok=True)
        with claims.heartbeat(study_dir, run_id):
            rate = sgemm_gflops()                         # the machine's speed, beside wall_s (study --plan)
            wall = _papermill(notebook, partial, params, threads, run_id, gpu)
        io.write_json(partial / "run.json", {"run_id": run_id, "wall_s": wall, "threads": threads, "params": params,
                                             "host": owner["host"], "job_id": owner.get("job_id"),
                                             "sgemm_gflops": rate, "gpu": gpu})
        for log in logs:
            if Path(log).is_file():
                shutil.copyfile(log, partial / Path(log).name)
        aside = results.finalize(partial, final)
        if aside is not None:
            print(f"{run_id}: the run it replaces (other parameters) is kept in {aside}", file=sys.stderr)
        return RAN
    except BaseException as e:
        if requeued():
            raise
        if interrupt.requested():                          # stopped by Ctrl-C: not a failure
            return STOPPED
        if partial.is_dir():
            io.write_json(partial / "error.json", {"error": last_error_line(e), "time": time.time(),
                                                   "job_id": owner.get("job_id"), "host": owner["host"],
                                                   "traceback": traceback.format_exc()[-4000:]})
        raise
    finally:
        if not requeued():
            claims.release(study_dir, run_id, owner)
        interrupt.point_ended(run_id)


@dataclass
class PointJob:
    """What a SLURM array task runs: ``PointJob(...)((run_id, params))``, through submitit.

    A submitit ``Checkpointable``: on a time limit or preemption (SIGUSR2) submitit requeues the task under the
    same job id, which re-takes its claim. Its stdout/stderr are copied into the run folder. ``claim_token``:
    the submitter's, so a task that starts before its claim names its job id still owns the claim.
    """

    notebook: str
    study_dir: str
    threads: int = 0
    claim_token: str | None = None
    requeued: bool = False

    def __call__(self, point: tuple[str, dict]) -> str:
        import submitit

        self.requeued = False
        run_id, params = point
        env = submitit.JobEnvironment()
        owner = claims.this_owner(job_id=claims.slurm_job_id() or str(env.job_id))
        owner["token"] = self.claim_token or owner["token"]
        logs = (env.paths.stdout, env.paths.stderr)
        return run_point(Path(self.notebook), Path(self.study_dir), run_id, params, threads=self.threads,
                         owner=owner, logs=logs, requeued=lambda: self.requeued)

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on SIGUSR2 (time limit or preemption), then requeues the task and exits: the
        claim stays with the job, and the rerun finds the partial folder as it was left."""
        import submitit

        self.requeued = True
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
