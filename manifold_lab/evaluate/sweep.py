"""The paper's evaluation protocol: choose CFG scale and EMA on 8K samples, then evaluate the best on 50K.

    python -m manifold_lab sweep --checkpoint runs/b16 --ref stats/in256.npz --cfg-scales 2.5:3.5:0.1 \\
        --emas ema1 ema2 --out runs/b16/sweep
    torchrun --nproc_per_node=8 -m manifold_lab sweep ...          (sampling split across ranks)

Writes ``sweep.csv`` / ``sweep.parquet`` (one row per evaluated choice: stage, ema, decay, cfg,
num_samples, fid, is_mean, is_std) and ``sweep.png``. Resumable: choices already in the table are skipped,
and a half-written sample folder is completed. Sample folders are deleted after evaluation unless
``--keep-samples``.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from manifold_lab.checks import ConfigError
from manifold_lab.evaluate.fid import (add_extractor_flags, describe_ref_stats, evaluate_folder, fidelity_kwargs,
                                       load_ref_stats)
from manifold_lab.evaluate.generate import add_sampling_flags, generate_samples, net_for_sampling, resolve_sampling
from manifold_lab.io import save_figure, save_table, write_json
from manifold_lab.plots.sweep import plot_sweep
from manifold_lab.train import checkpoint as ckpt_mod
from manifold_lab.train import distributed as dist_mod

COLUMNS = ["stage", "ema", "decay", "cfg", "num_samples", "fid", "is_mean", "is_std"]
COLUMNS += ["precision", "recall"]   # Table 13, with --prc-ref (evaluate/prc.py); empty without


def parse_scales(text: str) -> list[float]:
    """"2.0,2.5,3" or an inclusive range "start:stop:step" -> a list of scales (rounded to 4 decimals)."""
    try:
        if ":" in text:
            a, b, s = (float(v) for v in text.split(":"))
            if s <= 0 or b < a:
                raise ValueError
            return [round(a + k * s, 4) for k in range(int(np.floor((b - a) / s + 1e-6)) + 1)]
        return [round(float(v), 4) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--cfg-scales takes 'a,b,c' or 'start:stop:step' (start <= stop, step > 0), "
                          f"got {text!r}") from None


def _ema_decay(state_cfg: dict, ema: str) -> float | str:
    decays = state_cfg.get("ema_decays", [])
    if ema.startswith("ema") and ema[3:].isdigit() and int(ema[3:]) - 1 < len(decays):
        return float(decays[int(ema[3:]) - 1])
    return "none" if ema == "model" else ema


def _inputs(args, info: dist_mod.DistInfo):
    """(reference stats, checkpoint state, its file), checked before any sampling; unset sampling flags
    filled from the checkpoint's recommendations (official args) or the defaults, and said."""
    ref = load_ref_stats(args.ref)
    fidelity_kwargs(args.feature_extractor, args.inception_weights)   # the weights file exists
    state, path = ckpt_mod.load_checkpoint(args.checkpoint)           # read (and checked) once
    state.pop("optimizer", None)
    line = resolve_sampling(args, state["meta"]["sampling"], names=("interval", "sample_steps", "solver"))
    if info.is_main:
        for note in state["meta"]["notes"]:
            print(f"note: {note}")
        print(f"checkpoint {path}; reference {describe_ref_stats(args.ref)}; {line}", flush=True)
    return ref, state, path


def run_sweep(args, info: dist_mod.DistInfo) -> "object":
    import pandas as pd

    out = Path(args.out)
    table = out / "sweep.csv"
    ref, state, path = _inputs(args, info)
    scales = parse_scales(args.cfg_scales)
    done = pd.read_csv(table) if table.exists() else pd.DataFrame(columns=COLUMNS)
    rows = done.to_dict("records")

    def evaluate(stage: str, ema: str, w: float, n: int) -> None:
        if any(r["stage"] == stage and r["ema"] == ema and np.isclose(r["cfg"], w) and r["num_samples"] == n
               for r in rows):
            return
        net, den, cfg = net_for_sampling(state, ema, info.device, path)
        folder = out / f"samples-{stage}-{ema}-cfg{w:.2f}-n{n}"
        if info.is_main:
            print(f"[{stage}] {ema} cfg {w}: sampling {n} from {path}", flush=True)
        generate_samples(net, den, out_dir=folder, num_samples=n, img_size=cfg.img_size,
                         num_classes=None if cfg.unconditional else cfg.num_classes, batch_size=args.batch_size,
                         cfg=w, interval=args.interval, sample_steps=args.sample_steps, solver=args.solver,
                         seed=args.seed, precision=args.precision, info=info, progress=not args.no_progress)
        row = None
        if info.is_main:
            m = evaluate_folder(folder, ref, kind=args.feature_extractor, weights=args.inception_weights,
                                batch_size=args.fid_batch_size, prc_ref=args.prc_ref, resize=args.resize)
            row = dict(stage=stage, ema=ema, decay=str(_ema_decay(cfg.to_dict(), ema)), cfg=w, num_samples=n,
                       fid=m["fid"], is_mean=m["is_mean"], is_std=m["is_std"],
                       precision=m.get("precision"), recall=m.get("recall"))
            print(f"[{stage}] {ema} cfg {w}: FID {m['fid']:.3f} IS {m['is_mean']:.1f}", flush=True)
            rows.append(row)
            save_table(table, pd.DataFrame(rows, columns=COLUMNS))
            if not args.keep_samples:
                shutil.rmtree(folder, ignore_errors=True)
        row = dist_mod.broadcast_object(row, info)
        if not info.is_main:
            rows.append(row)
        dist_mod.barrier(info)

    for ema in args.emas:
        for w in scales:
            evaluate("search", ema, w, args.search_samples)
    df = pd.DataFrame(rows, columns=COLUMNS)
    search = df[(df.stage == "search") & df.ema.isin(args.emas) & df.cfg.isin(scales)]
    best = search.loc[search.fid.astype(float).idxmin()]
    if info.is_main:
        print(f"best on {args.search_samples}: {best.ema} cfg {best.cfg} (FID {best.fid:.3f})", flush=True)
    if args.final_samples:
        evaluate("final", str(best.ema), float(best.cfg), args.final_samples)
    df = pd.DataFrame(rows, columns=COLUMNS)
    if info.is_main:
        save_table(out / "sweep.parquet", df)
        save_figure(out / "sweep.png", plot_sweep(df))
        final = df[df.stage == "final"]
        write_json(out / "best.json", {"search": {k: best[k] for k in COLUMNS},
                                       "final": final.iloc[-1].to_dict() if len(final) else None})
    return df


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="CFG x EMA sweep on 8K samples, then the best on 50K (FID/IS)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)
    add_sampling_flags(p)
    p.add_argument("--ref", required=True, help="reference statistics npz (from prepare-ref, or the official "
                   "fid_stats/jit_in256_stats.npz / jit_in512_stats.npz)")
    p.add_argument("--cfg-scales", default="1.0:4.0:0.1", help="'a,b,c' or 'start:stop:step' (paper: 1.0-4.0)")
    p.add_argument("--emas", nargs="+", default=["ema1", "ema2"], help="ema1, ema2, model, ...")
    p.add_argument("--search-samples", type=int, default=8000)
    p.add_argument("--final-samples", type=int, default=50000, help="0: skip the final evaluation")
    p.add_argument("--out", required=True, help="sweep folder (table, plot, temporary samples)")
    p.add_argument("--keep-samples", action="store_true")
    p.add_argument("--prc-ref", default=None, help="reference features npz (prepare-ref --prc-out): also "
                   "precision and recall")
    p.add_argument("--resize", type=int, default=None, help="resize samples to this many px before measuring "
                   "(cross-resolution, Table 12; the --ref statistics must be at that size)")
    add_extractor_flags(p)
    p.set_defaults(func=main)


def main(args) -> int:
    info = dist_mod.setup()
    try:
        df = run_sweep(args, info)
        if info.is_main:
            print(df.to_string(index=False))
    finally:
        dist_mod.cleanup(info)
    return 0
