"""ImageNet study figures: our FID beside the paper's (Tables 2, 3, 4 and Fig. 4; values in manifold_lab.paper).

Each reads the study's summary (metric ``fid``, one row per point) and draws the paper's number for the same
setting next to ours. A study run with the ``tiny`` feature extractor (the tests) is labelled: its numbers are
no FIDs. A point not yet run is simply missing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from manifold_lab import paper
from manifold_lab.plots import register
from manifold_lab.plots.style import PRED_COLORS, PRED_ORDER, theme


def _runs(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per point: its parameters and its fid (model_args parsed back from JSON)."""
    runs = summary[summary["metric"] == "fid"].copy()
    if "model_args" in runs:
        runs["model_args"] = runs["model_args"].map(lambda s: json.loads(s) if isinstance(s, str) else (s or {}))
    return runs.rename(columns={"value": "fid"})


def _ours_label(summary: pd.DataFrame) -> str:
    kinds = set(summary.get("feature_extractor", pd.Series(["inception"])).dropna())
    return "ours" if kinds <= {"inception"} else "ours (tiny stand-in extractor: not an FID)"


def _resolution(config: str) -> int:
    m = re.search(r"_in(\d+)", str(config))
    return int(m.group(1)) if m else 0


@register("imagenet_pred_loss")
@theme("white")
def fig_imagenet_pred_loss(summary: pd.DataFrame, study_dir: Path):
    """Table 2: one heatmap per resolution, rows loss space, columns target; 'ours / paper' in each cell."""
    runs = _runs(summary)
    runs["img"] = runs["config"].map(_resolution)
    sizes = sorted(runs["img"].unique(), reverse=True) or [256]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.6), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        sub = runs[runs["img"] == size].groupby(["loss", "pred"])["fid"].mean().unstack()
        ours = sub.reindex(index=PRED_ORDER, columns=PRED_ORDER)
        text = ours.copy().astype(object)
        for r in PRED_ORDER:
            for c in PRED_ORDER:
                p = paper.TABLE2.get((size, r, c))
                o = ours.loc[r, c]
                text.loc[r, c] = f"{'-' if pd.isna(o) else f'{o:.2f}'}\n({p})" if p is not None else ""
        sns.heatmap(np.log10(ours.astype(float)), annot=text, fmt="", cbar=False, cmap="magma_r", ax=ax)
        ax.set(title=f"{size} px: {_ours_label(summary)} (paper)", xlabel="prediction target", ylabel="loss space")
    fig.suptitle("Prediction target x loss space on ImageNet (Table 2), FID", y=1.02)
    fig.tight_layout()
    return fig


def _beside_paper(ax, theirs: dict, ours: pd.Series, color, label: str, ours_label: str) -> None:
    """The paper's values ({x: FID}, dashed) and ours (a Series indexed by x, solid with dots) on one axis."""
    xs = sorted(theirs)
    ax.plot(xs, [theirs[x] for x in xs], "--", color=color, alpha=0.6, label=f"{label}paper")
    if len(ours):
        ax.plot(ours.index, ours.values, "o-", color=color, label=f"{label}{ours_label}")


@register("imagenet_noise_shift")
@theme("whitegrid")
def fig_imagenet_noise_shift(summary: pd.DataFrame, study_dir: Path):
    """Table 3: FID against the noise shift p_mean, one colour per target; ours solid, the paper dashed."""
    runs = _runs(summary)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for pred in PRED_ORDER:
        _beside_paper(ax, {m: v for (m, p), v in paper.TABLE3.items() if p == pred},
                      runs[runs["pred"] == pred].groupby("p_mean")["fid"].mean(), PRED_COLORS[pred],
                      f"{pred}-pred, ", _ours_label(summary))
    ax.set(yscale="log", xlabel="p_mean (logit-normal mean of t; more negative = noisier)", ylabel="FID",
           title="Noise shift on ImageNet (Table 3)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


@register("imagenet_bottleneck")
@theme("whitegrid")
def fig_imagenet_bottleneck(summary: pd.DataFrame, study_dir: Path):
    """Fig. 4: FID against the bottleneck d' (no bottleneck drawn at 768, the patch dimension)."""
    runs = _runs(summary)
    runs["d"] = runs["model_args"].map(lambda a: a.get("bottleneck_dim") or 768)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    _beside_paper(ax, {(d or 768): v for d, v in paper.FIG4.items() if v is not None},
                  runs.groupby("d")["fid"].mean(), PRED_COLORS["x"], "", _ours_label(summary))
    ax.set(xscale="log", xlabel="bottleneck d' (768: none, a plain linear embedding)", ylabel="FID",
           title="Bottleneck patch embedding on ImageNet (Fig. 4)")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _rung(row) -> tuple[str, str]:
    a = row["model_args"]
    model = {"jit_l16_in256": "JiT-L/16"}.get(row["config"], "JiT-B/16")
    rung = "in_context" if a.get("in_context_len") else "rope_qknorm" if a.get("rope") else "baseline"
    return model, rung


@register("imagenet_ablation")
@theme("whitegrid")
def fig_imagenet_ablation(summary: pd.DataFrame, study_dir: Path):
    """Table 4: one pair of bars per rung of the ladder, ours beside the paper's (with the CFG interval)."""
    runs = _runs(summary)
    ours = {_rung(r): r["fid"] for _, r in runs.iterrows()}
    keys = list(paper.TABLE4)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.bar(x - 0.2, [paper.TABLE4[k][1] for k in keys], 0.4, color="0.6", label="paper (with CFG interval)")
    ax.bar(x + 0.2, [ours.get(k, np.nan) for k in keys], 0.4, color=PRED_COLORS["x"], label=_ours_label(summary))
    ax.set_xticks(x, [f"{m}\n{r.replace('_', ' + ').replace('qknorm', 'qk-norm')}" for m, r in keys], fontsize=8)
    ax.set(ylabel="FID", title="The Table 4 ladder on ImageNet")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@register("imagenet_preconditioner")
def fig_imagenet_preconditioner(summary: pd.DataFrame, study_dir: Path):
    """Table 10: our FID per (loss, parameterisation) beside the paper's, as two heatmaps."""
    from manifold_lab.plots.precond import precond_figure

    runs = _runs(summary).rename(columns={"fid": "value"})
    return precond_figure(runs, [(f"{_ours_label(summary)}: FID", runs)], "Pre-conditioners on ImageNet (Table 10)")


# ---- Tables 5-8, 11-13 and Fig. 6 ------------------------------------------------------------------------
def _points(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per point: its parameters and every metric as a column (fid, is_mean, precision, ...)."""
    wide = summary.pivot_table(index="run_id", columns="metric", values="value", aggfunc="first")
    params = summary.drop_duplicates("run_id").set_index("run_id").drop(columns=["metric", "value"], errors="ignore")
    params = params.drop(columns=[c for c in params if c in wide])   # the measured value wins (num_samples)
    out = params.join(wide).reset_index()
    if "model_args" in out:
        out["model_args"] = out["model_args"].map(lambda s: json.loads(s) if isinstance(s, str) else (s or {}))
    return out


def _model(config: str) -> str:
    """jit_l16_in256 -> L/16."""
    m = re.match(r"jit_([a-z])(\d+)_in\d+", str(config))
    return f"{m.group(1).upper()}/{m.group(2)}" if m else str(config)


def _paper_epochs(config: str, epochs) -> int:
    """The paper's column of a point: G's early-stopped 320 epochs are its '600-epoch' entries."""
    return 600 if str(config).startswith("jit_g") and int(epochs) == 320 else int(epochs)


def _ours_value(pts: pd.DataFrame, metric: str, **match) -> float:
    sel = pts
    for k, v in match.items():
        sel = sel[sel[k].astype(str) == str(v)]
    return float(sel[metric].mean()) if len(sel) and metric in sel else np.nan


def _paired_bars(ax, labels, theirs, ours, ours_label: str, ylabel: str = "FID") -> None:
    x = np.arange(len(labels))
    ax.bar(x - 0.2, theirs, 0.4, color="0.6", label="paper")
    ax.bar(x + 0.2, ours, 0.4, color=PRED_COLORS["x"], label=ours_label)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


@register("imagenet_resolution")
@theme("whitegrid", 0.9)
def fig_imagenet_resolution(summary: pd.DataFrame, study_dir: Path):
    """Table 5: FID of JiT-B at 256/512/1024 px (same 256 tokens), ours beside the paper's; cost per point."""
    from manifold_lab.cost import cost_label

    pts = _points(summary)
    keys = list(paper.TABLE5)
    labels = [f"{_model(k)} @{_resolution(k)}\n{cost_label(k, 200)}" for k in keys]
    fig, ax = plt.subplots(figsize=(7.6, 4.0))
    _paired_bars(ax, labels, [paper.TABLE5[k] for k in keys], [_ours_value(pts, "fid", config=k) for k in keys],
                 _ours_label(summary))
    for i, k in enumerate(keys):
        is_ = _ours_value(pts, "is_mean", config=k)
        if not np.isnan(is_):
            ax.annotate(f"IS {is_:.1f}", (i + 0.2, _ours_value(pts, "fid", config=k)), ha="center", va="bottom",
                        fontsize=7)
    ax.set_title("Resolution at 256 tokens, 200 epochs, CFG interval (Table 5)")
    fig.tight_layout()
    return fig


def _short_cost(config: str) -> str:
    """'5-5 h/200 ep\nmeasured' style tick text (manifold_lab.cost: 8 H100s)."""
    from manifold_lab.cost import point_hours

    lo, hi, measured = point_hours(config, 200)
    if np.isnan(lo):
        return ""
    return f"{lo:.0f}-{hi:.0f} h / 200 ep\n{'measured rate' if measured else 'estimate'}"


def _scale_panel(ax, pts, patch: int, ours_label: str) -> None:
    sizes = "blhg"
    px = 256 if patch == 16 else 512
    configs = [f"jit_{s}{patch}_in{px}" for s in sizes]
    for epochs, color in ((200, "#fdae61"), (600, "#2c7bb6")):
        ax.plot(range(4), [paper.TABLE6[(c, epochs)] for c in configs], "--", color=color, alpha=0.7,
                label=f"paper {epochs} ep")
        ours = [_ours_value(pts, "fid", config=c, epochs=320 if epochs == 600 and c.startswith("jit_g") else epochs)
                for c in configs]
        ax.plot(range(4), ours, "o-", color=color, label=f"{ours_label} {epochs} ep")
    ax.set_xticks(range(4), [f"{_model(c)}\n{_short_cost(c)}" for c in configs], fontsize=7)
    ax.set(ylabel="FID", title=f"/{patch} at {px} px (Table 6)")
    ax.legend(fontsize=6)


@register("imagenet_scale")
@theme("whitegrid", 0.85)
def fig_imagenet_scale(summary: pd.DataFrame, study_dir: Path):
    """Tables 6-8 and 13: FID against model size at 256 and 512 px (200 and 600 epochs; G: 320), IS and
    precision/recall at 600 epochs, ours beside the paper's. Tick labels give the training cost per 200 epochs."""
    pts, label = _points(summary), _ours_label(summary)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4))
    _scale_panel(axes[0], pts, 16, label)
    _scale_panel(axes[1], pts, 32, label)
    keys = list(paper.TABLE7_8)
    ours_is = [_ours_value(pts[pts["epochs"].map(lambda e: int(e) in (320, 600))], "is_mean", config=k) for k in keys]
    _paired_bars(axes[2], [_model(k) for k in keys], [paper.TABLE7_8[k][1] for k in keys], ours_is, label, "IS")
    lines = ["precision / recall (Table 13)   paper     ours"]
    for k in keys:
        p, r = paper.TABLE7_8[k][2:]
        ours_pr = [_ours_value(pts[pts["epochs"].map(lambda e: int(e) in (320, 600))], m, config=k)
                   for m in ("precision", "recall")]
        lines.append(f"{_model(k):>5}   {'-' if p is None else f'{p:.2f} / {r:.2f}':>11}   "
                     f"{'-' if ours_pr[0] != ours_pr[0] else f'{ours_pr[0]:.2f} / {ours_pr[1]:.2f}':>11}")
    axes[2].text(1.03, 0.5, "\n".join(lines), transform=axes[2].transAxes, fontsize=7, family="monospace",
                 va="center")
    axes[2].set_title("600 epochs (G: 320): IS (Tables 7, 8)")
    fig.suptitle("Scale on ImageNet, CFG interval", y=1.01)
    fig.tight_layout()
    return fig


@register("imagenet_cls_loss")
@theme("whitegrid", 0.9)
def fig_imagenet_cls_loss(summary: pd.DataFrame, study_dir: Path):
    """Table 11: FID without and with the classification loss, B/16 and L/16, ours beside the paper's."""
    pts = _points(summary)
    pts["head"] = pts["model_args"].map(lambda a: int(bool(a.get("cls_head_after"))))
    keys = [(k, h) for k in paper.TABLE11 for h in (0, 1)]
    labels = [f"{_model(k)}\n{'+ cls loss' if h else 'baseline'}" for k, h in keys]
    ours = [_ours_value(pts, "fid", config=k, head=h) for k, h in keys]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    _paired_bars(ax, labels, [paper.TABLE11[k][h] for k, h in keys], ours, _ours_label(summary))
    ax.set_title("Extra classification loss, 200 epochs, CFG interval (Table 11)")
    fig.tight_layout()
    return fig


@register("imagenet_cross_res")
@theme("whitegrid", 0.9)
def fig_imagenet_cross_res(summary: pd.DataFrame, study_dir: Path):
    """Table 12: G/16 and G/32 each measured at 256 and 512 px, ours beside the paper's."""
    pts = _points(summary)
    pts["px"] = [int(e) or _resolution(c) for e, c in zip(pts.get("eval_size", 0), pts["config"])]
    keys = list(paper.TABLE12)
    labels = [f"{_model(c)}@{_resolution(c)}\n-> {px}" if _resolution(c) != px else f"{_model(c)}@{px}" for c, px in keys]
    ours = [_ours_value(pts, "fid", config=c, px=px) for c, px in keys]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    _paired_bars(ax, labels, [paper.TABLE12[k] for k in keys], ours, _ours_label(summary))
    ax.set_title("Cross-resolution (Table 12; resize: PIL bicubic, antialiased)")
    fig.tight_layout()
    return fig


def _sweep_table(run: Path) -> pd.DataFrame:
    """A point's sweep table with the CFG column named cfg whatever the sweep version wrote."""
    df = pd.read_csv(run / "sweep" / "sweep.csv")
    return df.rename(columns={"cfg_scale": "cfg", "n_samples": "num_samples"})


@register("imagenet_cfg_curve")
@theme("whitegrid", 0.9)
def fig_imagenet_cfg_curve(summary: pd.DataFrame, study_dir: Path):
    """Fig. 6: FID against the CFG scale from each point's sweep table (search stage), one line per CFG interval
    and EMA; the paper's best values (2.88 without, 2.36 with the interval; JiT-L/16, 600 ep) as lines."""
    fig, ax = plt.subplots(figsize=(5.6, 3.9))
    for (name, best), color in zip(paper.FIG6_BEST.items(), ("#d7191c", "#2c7bb6")):
        ax.axhline(best, ls="--", color=color, alpha=0.7, label=f"paper best {name}: {best}")
    for run_id in summary["run_id"].unique():
        run = Path(study_dir) / run_id
        interval = json.loads((run / "config.json").read_text()).get("interval", [0.0, 1.0])
        df = _sweep_table(run)
        with_interval = float(interval[0]) > 0 or float(interval[1]) < 1
        for ema, g in df[df["stage"] == "search"].groupby("ema"):
            g = g.sort_values("cfg")
            ax.plot(g["cfg"], g["fid"], "o-", ms=3, color="#2c7bb6" if with_interval else "#d7191c",
                    label=f"{_ours_label(summary)}, interval {tuple(interval)}, {ema}")
    ax.set(xlabel="CFG scale", ylabel="FID", title="FID against CFG scale (Fig. 6)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
