"""Multiply-accumulates of a JiT forward pass, analytic from its config (the paper's "Gflops").

The paper (like DiT) reports MACs per forward pass of one image and calls them Gflops; one MAC is two
floating-point operations. Counted here: every Linear / conv (patch embedding, qkv, projection, MLP,
adaLN modulations, timestep MLP, output layer) and the two attention matmuls (q k^T and attn v, each
N^2 * D per block, with N = 256 + 32 tokens once the in-context tokens are in). Not counted: norms,
softmax, RoPE, activations, embeddings lookups and additions (well under 1% at every paper size).
``tests/test_jit.py`` checks this count against torch's FlopCounterMode on a real forward pass.

JiT-B/64: this count gives 27.9 G against the paper's 30. The paper's figure is matched (29.9 G, and
26.2 G for B/32 against its 26) if the patch embedding is counted as a full Linear(C p^2, D) instead of
the 128-d bottleneck: at p = 64 that is 256 * 12288 * 768 = 2.42 G against 256 * (12288 * 128 +
128 * 768) = 0.43 G. At p = 16 the two differ by 0.1 G, invisible at 25 G. The remaining large term at
B/64 is the output layer, 256 * 768 * 12288 = 2.42 G, which has no bottleneck in either count.
"""
from __future__ import annotations

from torch import nn

from manifold_lab.nets.layers import swiglu_hidden


def count_macs(model: nn.Module, batch: int = 1) -> int:
    """Forward MACs of ``model`` (a :class:`manifold_lab.nets.jit.JiT`) for ``batch`` images."""
    cfg = getattr(model, "config", None)
    if cfg is None or "bottleneck_dim" not in cfg:
        raise TypeError(f"count_macs needs a JiT (with .config), got {type(model).__name__}")
    d, p, ch = cfg["hidden_size"], cfg["patch_size"], cfg["in_channels"]
    n_img = (cfg["img_size"] // p) ** 2
    patch_in = ch * p * p
    bott = cfg["bottleneck_dim"]

    macs = n_img * (patch_in * d if bott is None else patch_in * bott + bott * d)   # patch embedding
    macs += 256 * d + d * d                                                          # timestep MLP
    if cfg["mlp"] == "swiglu":
        mlp_per_token = 3 * d * swiglu_hidden(d, cfg["mlp_ratio"])                  # D -> 2h, h -> D
    else:
        mlp_per_token = 2 * d * int(d * cfg["mlp_ratio"])
    for i in range(cfg["depth"]):
        n = n_img + (cfg["in_context_len"] if cfg["in_context_len"] and i >= cfg["in_context_start"] else 0)
        macs += 6 * d * d                                   # adaLN modulation (once per image)
        macs += n * (4 * d * d + mlp_per_token)             # qkv (3 D^2) + projection (D^2) + MLP
        macs += 2 * n * n * d                               # q k^T and attn v over all heads
    macs += 2 * d * d + n_img * d * patch_in                # final adaLN + output Linear D -> p^2 C
    return int(batch * macs)


def count_params(model: nn.Module, trainable: bool = True) -> int:
    """Number of parameters (only those with requires_grad if ``trainable``); works on the meta device."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
