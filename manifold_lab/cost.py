"""Expected cost of a full-scale ImageNet point, from the one measured throughput.

Measured (README, one H100 80GB, compiled, bf16, batch 128, synthetic data): JiT-B/16 trains at 1,668-1,699
img/s. Every other model is an ESTIMATE scaled by its forward MACs (all models have 256 tokens, so the MACs
ratio is the cost ratio if utilisation stays the same; G-MACs from manifold_lab.nets.jit's registry
comments). Evaluation (about 15 minutes for B/16: 14 CFG x EMA choices on 8K samples and 50K final samples)
is not included.
"""
from __future__ import annotations

IMAGENET_TRAIN = 1_281_167                # images per epoch
B16_IMG_S = (1668.0, 1699.0)              # measured per H100 (README)
GMACS = {"jit_b16_in256": 25, "jit_b32_in512": 26, "jit_b64_in1024": 30, "jit_b4_in64": 25,
         "jit_l16_in256": 88, "jit_l32_in512": 89, "jit_h16_in256": 182, "jit_h32_in512": 183,
         "jit_g16_in256": 383, "jit_g32_in512": 384}


def point_hours(config: str, epochs: int, gpus: int = 8) -> tuple[float, float, bool]:
    """(low, high) training hours of ``epochs`` on ``gpus`` H100s, and whether it is measured (B/16 only).

    An unknown config (e.g. the tiny CPU one) gives (nan, nan, False).
    """
    if config not in GMACS:
        return float("nan"), float("nan"), False
    scale = GMACS[config] / GMACS["jit_b16_in256"]
    lo, hi = sorted(epochs * IMAGENET_TRAIN * scale / (rate * gpus) / 3600 for rate in B16_IMG_S)
    return lo, hi, config == "jit_b16_in256"


def cost_label(config: str, epochs: int, gpus: int = 8) -> str:
    """'5.2-5.3 h on 8 H100 (measured)' or '... (estimate)'; '' for a config without a known cost."""
    lo, hi, measured = point_hours(config, epochs, gpus)
    if lo != lo:
        return ""
    return f"{lo:.1f}-{hi:.1f} h on {gpus} H100 ({'measured rate' if measured else 'estimate'})"
