"""The one tiny JiT of the tests: the network of configs/jit_tiny_cpu.yaml (width 32, depth 2, 2 heads,
bottleneck 8, 4 in-context tokens from block 1), read from that file so the CPU smoke config and the tests
cannot drift apart.

- ``TINY_MODEL_ARGS``: its ``model_args`` (patch 4 on the config's 16-px images: 16 tokens), for ImageNetConfig.
- ``TINY_JIT``: keyword arguments of ``JiT(...)`` for the same network on 8-px images with patch 2 (the same
  16 tokens), 3 channels, 4 classes: what the network-level tests build directly.
"""
from __future__ import annotations

from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "jit_tiny_cpu.yaml"
TINY_MODEL_ARGS: dict = dict(yaml.safe_load(CONFIG.read_text())["model_args"])
TINY_JIT: dict = {**TINY_MODEL_ARGS, "img_size": 8, "patch_size": 2, "in_channels": 3, "num_classes": 4}
