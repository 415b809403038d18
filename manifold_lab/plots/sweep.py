"""The figure of the CFG x EMA sweep (``python -m manifold_lab sweep``): FID and IS against the CFG scale."""
from __future__ import annotations

import matplotlib.pyplot as plt


def plot_sweep(df):
    """FID and IS against the CFG scale, one line per EMA (search stage); the final point starred."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    search, final = df[df.stage == "search"], df[df.stage == "final"]
    for ema, g in search.groupby("ema"):
        g = g.sort_values("cfg_scale")
        label = f"{ema} ({g.decay.iloc[0]})"
        axes[0].plot(g.cfg_scale, g.fid, marker="o", label=label)
        axes[1].plot(g.cfg_scale, g.is_mean, marker="o", label=label)
    for _, r in final.iterrows():
        axes[0].plot([r.cfg_scale], [r.fid], "k*", ms=12,
                     label=f"final {r.ema} cfg_scale {r.cfg_scale} ({int(r.n_samples)})")
        axes[1].plot([r.cfg_scale], [r.is_mean], "k*", ms=12)
    n = int(search.n_samples.iloc[0]) if len(search) else 0
    axes[0].set(xlabel="CFG scale", ylabel=f"FID ({n} samples)")
    axes[1].set(xlabel="CFG scale", ylabel="IS")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
