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
# Table 10: pre-conditioners, JiT-B/16 at 256 px, the Table 2 settings (200 epochs, CFG); key: (loss, pred).
# "edm" is the EDM-style pre-conditioner, "linear" c_skip = t, c_out = 1 - t; the x column is Table 2's.
TABLE10 = {
    ("x", "x"): 10.14, ("x", "edm"): 28.94, ("x", "linear"): 39.50,
    ("eps", "x"): 10.45, ("eps", "edm"): 72.05, ("eps", "linear"): 67.56,
    ("v", "x"): 8.62, ("v", "edm"): 35.49, ("v", "linear"): 46.25,
}
TABLE10_PREDS = ("x", "edm", "linear")

# Table 5: resolution at fixed sequence length (256 tokens), JiT-B, 200 epochs, CFG interval; key: config.
TABLE5 = {"jit_b16_in256": 4.37, "jit_b32_in512": 4.64, "jit_b64_in1024": 4.82}

# Table 6: scale, CFG interval; key: (config, epochs) -> FID. The G "600-epoch" entries are the
# early-stopped models (about 320 epochs), as the paper states.
TABLE6 = {
    ("jit_b16_in256", 200): 4.37, ("jit_b16_in256", 600): 3.66,
    ("jit_l16_in256", 200): 2.79, ("jit_l16_in256", 600): 2.36,
    ("jit_h16_in256", 200): 2.29, ("jit_h16_in256", 600): 1.86,
    ("jit_g16_in256", 200): 2.15, ("jit_g16_in256", 600): 1.82,
    ("jit_b32_in512", 200): 4.64, ("jit_b32_in512", 600): 4.02,
    ("jit_l32_in512", 200): 3.06, ("jit_l32_in512", 600): 2.53,
    ("jit_h32_in512", 200): 2.51, ("jit_h32_in512", 600): 1.94,
    ("jit_g32_in512", 200): 2.11, ("jit_g32_in512", 600): 1.78,
}

# Tables 7, 8 and 13: system-level results at 600 epochs; key: config -> (FID, IS, precision, recall).
# Precision and recall (Table 13) are given for the /16 models only (None elsewhere).
TABLE7_8 = {
    "jit_b16_in256": (3.66, 275.1, 0.82, 0.50), "jit_l16_in256": (2.36, 298.5, 0.80, 0.59),
    "jit_h16_in256": (1.86, 303.4, 0.78, 0.62), "jit_g16_in256": (1.82, 292.6, 0.79, 0.62),
    "jit_b32_in512": (4.02, 271.0, None, None), "jit_l32_in512": (2.53, 299.9, None, None),
    "jit_h32_in512": (1.94, 309.1, None, None), "jit_g32_in512": (1.78, 306.8, None, None),
}

# Table 11: an extra classification loss, 200 epochs, CFG interval; key: config -> (without, with) FID.
TABLE11 = {"jit_b16_in256": (4.37, 4.14), "jit_l16_in256": (2.79, 2.50)}

# Table 12: cross-resolution; key: (config, evaluated at px) -> FID. Native rows repeat Table 6 (600 ep).
TABLE12 = {
    ("jit_g16_in256", 256): 1.82, ("jit_g32_in512", 256): 1.84,
    ("jit_g16_in256", 512): 2.45, ("jit_g32_in512", 512): 1.78,
}

# Fig. 6: JiT-L/16, 600 epochs, FID against the CFG scale (axis 1.0-3.0); only the best values are printed.
FIG6_BEST = {"without interval": 2.88, "with interval": 2.36}

# ---- the paper map: every numbered figure and table -> the study that regenerates it ------------------------
# cpu: a study that runs on a laptop (its results under results/<study> where committed); full: a cluster study
# (8-GPU points; `python -m manifold_lab study studies/<full>.yaml --backend slurm --set data_path=TRAIN`);
# cost: the expected full-scale cost (manifold_lab.cost: B/16 from the measured rate, others estimates);
# none: why a side has no study. tests/test_paper_map.py checks every named study loads and draws.
PAPER_MAP = [
    dict(item="Table 1", what="the nine (prediction, loss) pairs: targets and weights", cpu="toy_pred_loss",
         full="imagenet_pred_loss", cost="see Table 2",
         none="the algebra itself is manifold_lab.param, tested pair by pair (tests/test_param.py)"),
    dict(item="Fig. 2", what="toy: 2-D spiral in D dims, x/eps/v-prediction with the v-loss", cpu="toy_fig2",
         full=None, cost="", none="a toy: the CPU study is the full experiment"),
    dict(item="Table 2", what="prediction x loss at 256 px (768-d patches) and 64 px (48-d)", cpu="image_pred_loss",
         full="imagenet_pred_loss", cost="18 points x 5.2-5.3 h on 8 H100 (measured rate) + ~15 min eval each"),
    dict(item="Table 3", what="noise shift mu", cpu="image_noise_shift", full="imagenet_noise_shift",
         cost="12 points x 5.2-5.3 h on 8 H100 (measured rate)"),
    dict(item="Fig. 4", what="bottleneck dimension d'", cpu="image_bottleneck", full="imagenet_bottleneck",
         cost="7 points x 5.2-5.3 h on 8 H100 (measured rate)"),
    dict(item="Table 4", what="the 'Just Advanced' ladder (RoPE, qk-norm, in-context tokens)", cpu=None,
         full="imagenet_ablation", cost="3 x 5.2-5.3 h (measured rate) + 1 x 18-19 h (L/16, estimate) on 8 H100",
         none="no CPU analogue: the rungs are architecture refinements with no laptop-scale signal claimed"),
    dict(item="Table 5", what="resolution at 256 tokens: B/16@256, B/32@512, B/64@1024", cpu="image_patch",
         full="imagenet_resolution", cost="5.2-5.3 h (measured rate), 5.4-5.5 h and 6.3-6.4 h (estimates) on 8 H100",
         none="CPU side: image_patch varies the patch (token dimension) at fixed token count"),
    dict(item="Table 6", what="scale B/L/H/G at /16@256 and /32@512, 200 and 600 epochs", cpu="image_width",
         full="imagenet_scale", cost="16 points, about 1,100 h of an 8-H100 node (B/16 measured, rest estimates)",
         none="CPU side: image_width varies the width at fixed tokens"),
    dict(item="Table 7", what="system-level 256 px (FID, IS), 600 epochs", cpu=None, full="imagenet_scale",
         cost="the 600-epoch /16 points of imagenet_scale", none="needs ImageNet and Inception: no CPU analogue"),
    dict(item="Table 8", what="system-level 512 px (FID, IS), 600 epochs", cpu=None, full="imagenet_scale",
         cost="the 600-epoch /32 points of imagenet_scale", none="needs ImageNet and Inception: no CPU analogue"),
    dict(item="Table 9", what="model sizes and training recipe", cpu=None, full=None, cost="",
         none="configuration, not a result: configs/jit_*.yaml and manifold_lab.nets.jit.JIT_SIZES"),
    dict(item="Table 10", what="pre-conditioners (EDM-style, linear) x loss", cpu="toy_preconditioner",
         full="imagenet_preconditioner", cost="9 points x 5.2-5.3 h on 8 H100 (measured rate)",
         none="a second CPU study: image_preconditioner (192-d tokens)"),
    dict(item="Table 11", what="extra classification loss", cpu=None, full="imagenet_cls_loss",
         cost="2 x 5.2-5.3 h (measured rate) + 2 x 18-19 h (estimate) on 8 H100",
         none="the CPU image studies are unconditional: no classes to classify"),
    dict(item="Table 12", what="cross-resolution evaluation (G/16, G/32 at 256 and 512)", cpu=None,
         full="imagenet_cross_res", cost="evaluation only, about 4 h per point on 8 H100 (estimate)",
         none="needs finished G points of imagenet_scale"),
    dict(item="Table 13", what="precision and recall", cpu=None, full="imagenet_scale",
         cost="set prc_ref (prepare-ref --prc-out) on the 600-epoch /16 points",
         none="needs Inception features of ImageNet: no CPU analogue (metric tested in tests/test_prc.py)"),
    dict(item="Fig. 6", what="FID against CFG scale, without and with the interval", cpu=None,
         full="imagenet_cfg_curve", cost="evaluation only, about 3 h on 8 H100 (estimate)",
         none="the CPU image studies are unconditional: no CFG"),
    dict(item="Fig. 7", what="training loss of x-, eps-, v-prediction under the v-loss", cpu="image_pred_loss",
         full="imagenet_pred_loss", cost="see Table 2 (each point's run/log.csv)",
         none="drawn by image_curves at CPU scale; at full scale the loss is in each point's log, no figure"),
]
