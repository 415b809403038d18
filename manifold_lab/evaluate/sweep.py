"""The paper's evaluation protocol: choose CFG scale and EMA on 8K samples, then evaluate the best on 50K.

    python -m manifold_lab sweep --checkpoint runs/b16 --ref stats/in256.npz --cfg-scales 2.5:3.5:0.1 \\
        --emas ema1 ema2 --out runs/b16/sweep
    torchrun --nproc_per_node=8 -m manifold_lab sweep ...          (sampling split across ranks)

Writes ``sweep.csv`` / ``sweep.parquet`` (one row per evaluated choice: stage, ema, decay, cfg_scale,
n_samples, fid, is_mean, is_std) and ``sweep.png``. Resumable: choices already in the table are skipped,
and a half-written sample folder is completed. Sample folders are deleted after evaluation unless
``--keep-samples``.
"""
from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.config import (
    add_config_flags,
    check_numbers,
    config_from_values,
    config_to_flags,
    overrides_from_args,
)
from manifold_lab.evaluate.features import EXTRACTORS, fidelity_kwargs
from manifold_lab.evaluate.fid import evaluate_folder
from manifold_lab.evaluate.generate import (
    add_checkpoint_flag,
    generate_samples,
    net_for_sampling,
    resolve_sampling,
    sampling_from_args,
)
from manifold_lab.evaluate.ref_stats import describe_ref_stats, load_ref_stats
from manifold_lab.io import check_writable_dir, save_figure, save_table, write_json
from manifold_lab.plots.sweep import plot_sweep
from manifold_lab.sample import SamplingConfig, check_ema
from manifold_lab.train import checkpoint as ckpt_mod
from manifold_lab.train import distributed as dist_mod

COLUMNS = ["stage", "ema", "decay", "cfg_scale", "n_samples", "fid", "is_mean", "is_std"]
COLUMNS += ["precision", "recall"]   # Table 13, with prc_ref (evaluate/prc.py); empty without
SEARCHED = ("ema", "cfg_scale", "n_samples")   # the sampling fields the sweep sets itself


def parse_scales(text: str) -> list[float]:
    """"2.0,2.5,3" or an inclusive range "start:stop:step" -> a list of scales (rounded to 4 decimals)."""
    try:
        if ":" in text:
            a, b, s = (float(v) for v in text.split(":"))
            if not (s > 0 and b >= a and math.isfinite(a + b + s)):
                raise ValueError
            return [round(a + k * s, 4) for k in range(int(np.floor((b - a) / s + 1e-6)) + 1)]
        return [round(float(v), 4) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"cfg_scales takes 'a,b,c' or 'start:stop:step' (start <= stop, step > 0), "
                          f"got {text!r}") from None


@dataclass
class SweepConfig:
    """The paper's evaluation: every (EMA, CFG scale) on ``search_samples``, then the best on ``final_samples``."""

    checkpoint: str = ""        # checkpoint file, or a run folder (its checkpoint-last.pth)
    ref: str = ""               # reference statistics npz (prepare-ref, or the official fid_stats/jit_in256_stats.npz)
    out: str = ""               # sweep folder (table, plot, temporary samples)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # everything but ema, cfg_scale, n_samples
    cfg_scales: str | list = "1.0:4.0:0.1"  # 'a,b,c', 'start:stop:step' or a list (paper: 1.0-4.0)
    emas: list = field(default_factory=lambda: ["ema1", "ema2"])  # the weights searched: ema1, ema2, model, a decay
    search_samples: int = 8000  # samples per searched choice (the paper: 8K)
    final_samples: int = 50000  # samples of the best choice's final evaluation (0: skip it)
    keep_samples: bool = False  # keep the sample folders after evaluation
    feature_extractor: str = "inception"  # inception (the paper's FID), or tiny (a test stand-in, not a FID)
    inception_weights: str = ""  # local Inception weights file (or MANIFOLD_LAB_INCEPTION_WEIGHTS)
    fid_batch_size: int = 64    # feature-extraction batch
    prc_ref: str = ""           # reference features npz (prepare-ref --prc-out): also precision and recall (Table 13)
    resize: int = 0             # resize samples to this many px before measuring (Table 12; 0: as generated)

    def __post_init__(self):
        check_numbers(self)
        if self.resize < 0:
            raise ConfigError(f"resize must be an integer >= 0 (0: as generated), got {self.resize!r}")
        if isinstance(self.cfg_scales, str):
            self.cfg_scales = parse_scales(self.cfg_scales)
        scales = self.cfg_scales
        if not (isinstance(scales, list) and scales and all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                for w in scales)):
            raise ConfigError(f"cfg_scales must be finite numbers >= 0, got {scales!r}")
        if not isinstance(self.emas, list) or not self.emas:
            raise ConfigError(f"emas must be a list such as [ema1, ema2], got {self.emas!r}")
        self.emas = [check_ema(e, "emas") for e in self.emas]
        check_positive("search_samples", self.search_samples, integer=True)
        check_positive("fid_batch_size", self.fid_batch_size, integer=True)
        if self.final_samples < 0:
            raise ConfigError(f"final_samples must be an integer >= 0 (0: skip), got {self.final_samples!r}")
        check_choice("feature extractor", self.feature_extractor, EXTRACTORS)

    def check_paths(self) -> None:
        """The checkpoint, ref and out are given and out is a writable folder (before any work)."""
        for name in ("checkpoint", "ref", "out"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"--{name} is required")
        check_writable_dir(self.out, "--out")


def _ema_decay(state_cfg: dict, ema: str) -> float | str:
    decays = state_cfg.get("ema_decays", [])
    if ema.startswith("ema") and ema[3:].isdigit() and int(ema[3:]) - 1 < len(decays):
        return float(decays[int(ema[3:]) - 1])
    return "none" if ema == "model" else ema


def _inputs(cfg: SweepConfig, info: dist_mod.DistInfo, use: Iterable[str]):
    """(reference stats, checkpoint state, its file, the sampling config), checked before any sampling; the
    sampling fields of ``use`` filled from the checkpoint's recommendations (official args), and said."""
    cfg.check_paths()
    ref = load_ref_stats(cfg.ref)
    fidelity_kwargs(cfg.feature_extractor, cfg.inception_weights or None)   # the weights file exists
    state, path = ckpt_mod.load_checkpoint(cfg.checkpoint)           # read (and checked) once
    state.pop("optimizer", None)
    scfg, line = resolve_sampling(cfg.sampling, state["meta"]["sampling"], [n for n in use if n not in SEARCHED])
    if info.is_main:
        for note in state["meta"]["notes"]:
            print(f"note: {note}")
        print(f"checkpoint {path}; reference {describe_ref_stats(cfg.ref)}; {line}", flush=True)
    return ref, state, path, scfg


class _Sweep:
    """The state of one sweep: its inputs and the table rows done so far (resumed from sweep.csv)."""

    def __init__(self, cfg: SweepConfig, info, use: Iterable[str], progress: bool):
        import pandas as pd

        self.cfg, self.info, self.progress, self.out = cfg, info, progress, Path(cfg.out)
        self.ref, self.state, self.path, self.sampling = _inputs(cfg, info, use)
        table = self.out / "sweep.csv"
        self.rows = pd.read_csv(table).to_dict("records") if table.exists() else []

    def done(self, stage: str, ema: str, w: float, n: int) -> bool:
        return any(r["stage"] == stage and r["ema"] == ema and np.isclose(r["cfg_scale"], w) and r["n_samples"] == n
                   for r in self.rows)

    def evaluate(self, stage: str, ema: str, w: float, n: int) -> None:
        """Sample ``n`` with weights ``ema`` at scale ``w``, score them, add the row (skipped if done)."""
        if self.done(stage, ema, w, n):
            return
        import pandas as pd

        cfg, info = self.cfg, self.info
        net, den, ncfg = net_for_sampling(self.state, ema, info.device, self.path)
        folder = self.out / f"samples-{stage}-{ema}-cfg{w:.2f}-n{n}"
        if info.is_main:
            print(f"[{stage}] {ema} cfg_scale {w}: sampling {n} from {self.path}", flush=True)
        scfg = SamplingConfig(**{**vars(self.sampling), "ema": ema, "cfg_scale": w, "n_samples": n})
        generate_samples(net, den, scfg, out_dir=folder, img_size=ncfg.img_size,
                         num_classes=None if ncfg.unconditional else ncfg.num_classes, info=info,
                         progress=self.progress)
        row = None
        if info.is_main:
            m = evaluate_folder(folder, self.ref, kind=cfg.feature_extractor, weights=cfg.inception_weights or None,
                                batch_size=cfg.fid_batch_size, prc_ref=cfg.prc_ref or None, resize=cfg.resize or None)
            row = dict(stage=stage, ema=ema, decay=str(_ema_decay(ncfg.to_dict(), ema)), cfg_scale=w, n_samples=n,
                       fid=m["fid"], is_mean=m["is_mean"], is_std=m["is_std"],
                       precision=m.get("precision"), recall=m.get("recall"))
            print(f"[{stage}] {ema} cfg_scale {w}: FID {m['fid']:.3f} IS {m['is_mean']:.1f}", flush=True)
            self.rows.append(row)
            save_table(self.out / "sweep.csv", pd.DataFrame(self.rows, columns=COLUMNS))
            if not cfg.keep_samples:
                shutil.rmtree(folder, ignore_errors=True)
        row = dist_mod.broadcast_object(row, info)
        if not info.is_main:
            self.rows.append(row)
        dist_mod.barrier(info)


def run_sweep(cfg: SweepConfig, info: dist_mod.DistInfo | None = None, *, use_recommended: Iterable[str] = (),
              progress: bool = True):
    """Search every (EMA, CFG scale) of ``cfg`` on search_samples, then the best on final_samples; write
    sweep.csv / .parquet, sweep.png and best.json into cfg.out; returns the table. ``use_recommended``: the
    sampling fields (interval, sample_steps, solver) the checkpoint's recommended settings may set."""
    import pandas as pd

    info = info or dist_mod.setup()
    sw = _Sweep(cfg, info, use_recommended, progress)
    for ema in cfg.emas:
        for w in cfg.cfg_scales:
            sw.evaluate("search", ema, w, cfg.search_samples)
    df = pd.DataFrame(sw.rows, columns=COLUMNS)
    search = df[(df.stage == "search") & df.ema.isin(cfg.emas) & df.cfg_scale.isin(cfg.cfg_scales)]
    best = search.loc[search.fid.astype(float).idxmin()]
    if info.is_main:
        print(f"best on {cfg.search_samples}: {best.ema} cfg_scale {best.cfg_scale} (FID {best.fid:.3f})", flush=True)
    if cfg.final_samples:
        sw.evaluate("final", str(best.ema), float(best.cfg_scale), cfg.final_samples)
    df = pd.DataFrame(sw.rows, columns=COLUMNS)
    if info.is_main:
        save_table(sw.out / "sweep.parquet", df)
        save_figure(sw.out / "sweep.png", plot_sweep(df))
        final = df[df.stage == "final"]
        write_json(sw.out / "best.json", {"search": {k: best[k] for k in COLUMNS},
                                          "final": final.iloc[-1].to_dict() if len(final) else None})
    return df


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="CFG x EMA sweep on 8K samples, then the best on 50K (FID/IS)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)
    add_checkpoint_flag(p)
    add_config_flags(p, SweepConfig, title="sweep (SweepConfig fields)", skip=("checkpoint", "sampling"))
    add_config_flags(p, SamplingConfig, title="sampling (SamplingConfig fields; interval, sample-steps and solver "
                     "unset: the checkpoint's recommendation, else the default)", skip=SEARCHED)
    p.set_defaults(func=main)


def sweep_argv(cfg: SweepConfig) -> list[str]:
    """``cfg`` as the ``sweep`` command's argv (for a torchrun of the sweep), the inverse of sweep_from_args."""
    return ["sweep", "--checkpoint", cfg.checkpoint, *config_to_flags(cfg, skip=("checkpoint", "sampling")),
            *config_to_flags(cfg.sampling, skip=SEARCHED)]


def sweep_from_args(args) -> tuple[SweepConfig, list[str]]:
    """(the SweepConfig of the flags, the sampling fields left to the checkpoint's recommendation)."""
    sampling, use = sampling_from_args(args, skip=SEARCHED)
    values = overrides_from_args(args, SweepConfig) | {"checkpoint": args.checkpoint, "sampling": sampling}
    return config_from_values(SweepConfig, values, "flags"), use


def main(args) -> int:
    cfg, use = sweep_from_args(args)
    cfg.check_paths()
    info = dist_mod.setup()
    try:
        df = run_sweep(cfg, info, use_recommended=use, progress=not args.no_progress)
        if info.is_main:
            print(df.to_string(index=False))
    finally:
        dist_mod.cleanup(info)
    return 0
