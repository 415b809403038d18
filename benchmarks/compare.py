"""Compare two result files: every figure both hold, A, B and B / A (e.g. a GPU run before and after).

    python -m benchmarks compare before/step.json after/step.json
"""
from __future__ import annotations

import math

from benchmarks import _harness as H


def add_arguments(p) -> None:
    p.add_argument("a", help="the baseline result (JSON)")
    p.add_argument("b", help="the result to compare with it")


def flatten(d: dict, prefix: str = "") -> dict[str, float]:
    """{"m": {"step_ms": 3}} -> {"m.step_ms": 3.0}; numbers only (bools and lists left out)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def ratios(a: dict, b: dict) -> list[tuple[str, float, float, float]]:
    """(figure, A, B, B / A) for every numeric figure the two results share, in A's order."""
    fa, fb = flatten(a["figures"]), flatten(b["figures"])
    return [(k, fa[k], fb[k], fb[k] / fa[k] if fa[k] else math.nan) for k in fa if k in fb]


def run(a) -> int:
    ra, rb = H.read_result(a.a), H.read_result(a.b)
    if ra["subject"] != rb["subject"]:
        from manifold_lab.checks import ConfigError
        raise ConfigError(f"{a.a} is a {ra['subject']!r} result, {a.b} a {rb['subject']!r} one; compare like with like")
    for tag, r in (("A", ra), ("B", rb)):
        e = r["env"]
        print(f"{tag}: {e['device']} | {e['cpu']} | torch {e['torch']} | commit {e['commit'][:12] or '-'} | "
              f"{e['threads']} thread(s) | load {e['load_avg']} | {e['time_utc']}")
    for key in ("device", "cpu", "torch", "threads"):
        if ra["env"][key] != rb["env"][key]:
            print(f"note: {key} differs ({ra['env'][key]} vs {rb['env'][key]})")
    rows = ratios(ra, rb)
    if not rows:
        print("the two results share no figure")
        return 1
    width = max(len(k) for k, *_ in rows)
    print(f"{'figure':<{width}}  {'A':>12}  {'B':>12}  {'B/A':>7}")
    for k, va, vb, r in rows:
        print(f"{k:<{width}}  {va:12.4g}  {vb:12.4g}  {r:7.3f}")
    return 0
