"""What each grid point of a study is doing, read from the files alone (any runner, any machine).

done      the run folder is complete and was made with these parameters (its wall time shown, from run.json)
stale     the run folder is complete but its parameters changed (it will run again)
running   a live owner holds its claim (host and pid, or a SLURM job that is running)
queued    its claim belongs to a SLURM job still waiting in the queue
failed    its partial folder holds error.json (the last error line) and the executed notebook; an unreadable
          or malformed error.json still counts as failed ("error.json damaged")
pending   none of these (a dead claim left by a killed job counts as pending: the next run redoes it); the
          reason its run folder is not done, where one exists ("metrics.json damaged", "no samples.npz")

A damaged file never stops ``--status``: it is named in one warning line and its point shown as above.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from manifold_lab import io
from manifold_lab.studies import claims, results


@dataclass
class PointState:
    kind: str          # done, stale, running, queued, failed, pending
    detail: str = ""   # owner and since; the error line and the kept notebook; a dead claim's last owner
    wall_s: float | None = None   # done: the seconds its run took (run.json), None where not recorded


def _owner_text(info: dict) -> str:
    if info.get("damaged"):
        return f"its claim is damaged: {info['damaged']}"
    who = f"job {info['job_id']}" if info.get("job_id") else f"{info.get('host', '?')}:{info.get('pid', '?')}"
    since = time.strftime("%H:%M:%S", time.localtime(info["since"])) if info.get("since") else "?"
    return f"{who}, since {since}"


def run_wall_s(run: Path) -> float | None:
    """Seconds the runner spent on a finished point (``wall_s`` of its run.json), None if not recorded."""
    record = io.read_json_or_warn(Path(run) / "run.json", consequence="its wall time is not shown")
    wall = (record or {}).get("wall_s")
    return float(wall) if isinstance(wall, (int, float)) else None


def _failed(partial: Path) -> PointState:
    """A failed point: the last error line of its error.json (or that error.json is damaged)."""
    err = io.read_json_or_warn(partial / "error.json", consequence="its point is shown as failed")
    why = "error.json damaged" if err is None else err.get("error", "?")
    return PointState("failed", f"{why} (notebook kept in {partial / 'notebook.ipynb'})")


def _not_done_reason(final: Path, params: dict) -> str:
    """Why a run folder that exists is not done ('' if no folder): the whole contract of the run kind its
    config.json declares (results.done_reason)."""
    if not final.is_dir():
        return ""
    return results.done_reason(final, params=params) or ""


def point_state(study_dir: Path, run_id: str, params: dict) -> PointState:
    """The state of one point (see the module docstring)."""
    final, partial = results.run_dir(study_dir, run_id), results.partial_dir(study_dir, run_id)
    if results.is_current(final, params):
        wall = run_wall_s(final)
        return PointState("done", "" if wall is None else f"{wall:.0f} s", wall)
    info = claims.read_claim(claims.claim_path(study_dir, run_id))
    if info is not None and claims.is_alive(info):
        queued = info.get("job_id") and (claims.slurm_queue() or {}).get(str(info["job_id"])) == "PENDING"
        return PointState("queued" if queued else "running", _owner_text(info))
    if (partial / "error.json").exists():
        return _failed(partial)
    reason = _not_done_reason(final, params)
    if results.is_complete(final) and reason in ("", "parameters changed since it ran"):
        return PointState("stale", "parameters changed since it ran")
    dead = f"the last attempt ({_owner_text(info)}) ended without a result" if info is not None else ""
    return PointState("pending", "; ".join(x for x in (reason, dead) if x))


def study_status(study_dir: Path, points: list[tuple[str, dict]]) -> list[tuple[str, PointState]]:
    return [(rid, point_state(study_dir, rid, p)) for rid, p in points]


def format_status(rows: list[tuple[str, PointState]]) -> str:
    """One line per point, then the counts and the summed wall time of the done points."""
    width = max((len(r) for r, _ in rows), default=0)
    lines = [f"{rid:<{width}}  {st.kind:<8} {st.detail}".rstrip() for rid, st in rows]
    counts: dict[str, int] = {}
    for _, st in rows:
        counts[st.kind] = counts.get(st.kind, 0) + 1
    total = ", ".join(f"{n} {k}" for k, n in counts.items())
    done_wall_s = sum(st.wall_s or 0.0 for _, st in rows if st.kind == "done")
    if done_wall_s > 0:
        total += (f"; the done points took {done_wall_s / 3600:.2f} h of run time in all "
                  "(the sum over points: divide by the runs that ran at once for the wall time)")
    return "\n".join(lines + [total])


def format_kept_aside(study_dir: Path) -> str:
    """One line naming the run folders a rerun with other parameters kept aside ('' if none)."""
    kept = results.kept_aside(study_dir)
    if not kept:
        return ""
    return (f"kept aside ({len(kept)}: runs replaced by a rerun with other parameters, not deleted): "
            + ", ".join(p.name for p in kept))
