"""The paper's ImageNet numbers (FID-50K, Li & He 2025, arXiv 2511.13720), for figures that put ours beside them.

Every value is copied from the paper's tables (see ../shared/reference/jit-method.md §5). Fig. 4 is only a
plot: its no-bottleneck (8.62), best (7.35, at d' = 64 by its label position) and d' = 128 (7.48, equal to the
Table 4 baseline) and d' = 16 (9.40) values are read from it; the labels 8.38, 8.15 and 7.89 belong to
d' in {32, 256, 512} in an order the plot does not settle, so those three are left out (None).
"""
from __future__ import annotations

# Table 2: JiT-B/16 at 256 px (768-d patches) and JiT-B/4 at 64 px (48-d patches), 200 epochs, CFG.
# key: (img_size, loss, pred)
TABLE2 = {
    (256, "x", "x"): 10.14, (256, "x", "eps"): 379.21, (256, "x", "v"): 107.55,
    (256, "eps", "x"): 10.45, (256, "eps", "eps"): 394.58, (256, "eps", "v"): 126.88,
    (256, "v", "x"): 8.62, (256, "v", "eps"): 372.38, (256, "v", "v"): 96.53,
    (64, "x", "x"): 5.76, (64, "x", "eps"): 6.20, (64, "x", "v"): 6.12,
    (64, "eps", "x"): 3.56, (64, "eps", "eps"): 4.02, (64, "eps", "v"): 3.76,
    (64, "v", "x"): 3.55, (64, "v", "eps"): 3.63, (64, "v", "v"): 3.46,
}

# Table 3: JiT-B/16, 256 px, 200 epochs, CFG; key: (p_mean, pred). (-0.8, eps) is 372.38 in Table 2.
TABLE3 = {
    (0.0, "x"): 14.44, (0.0, "eps"): 464.25, (0.0, "v"): 120.03,
    (-0.4, "x"): 9.79, (-0.4, "eps"): 372.91, (-0.4, "v"): 109.93,
    (-0.8, "x"): 8.62, (-0.8, "eps"): 372.36, (-0.8, "v"): 96.53,
    (-1.2, "x"): 8.99, (-1.2, "eps"): 355.25, (-1.2, "v"): 106.85,
}

# Fig. 4: JiT-B/16, 256 px, 200 epochs, CFG, x-prediction with the v-loss; key: d' (None = no bottleneck).
FIG4 = {None: 8.62, 16: 9.40, 32: None, 64: 7.35, 128: 7.48, 256: None, 512: None}

# Table 4: /16 at 256 px, 128-d bottleneck, 200 epochs; key: (model, rung) -> (FID with CFG, with CFG interval).
TABLE4 = {
    ("JiT-B/16", "baseline"): (7.48, 6.32),
    ("JiT-B/16", "rope_qknorm"): (6.69, 5.44),
    ("JiT-B/16", "in_context"): (5.49, 4.37),
    ("JiT-L/16", "in_context"): (3.39, 2.79),
}
