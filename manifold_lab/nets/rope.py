"""2-D rotary position embedding (EVA / LightningDiT "VisionRotaryEmbeddingFast" layout).

For a head of dimension hd, let half = hd / 2. The first ``half`` channels rotate with the token's
**row** index and the last ``half`` with its **column** index. Within a half, frequency
w_j = 1 / 10000^(2j / half), j = 0 .. half/2 - 1, is repeated for the adjacent channel pair
(2j, 2j + 1), and a pair rotates as (x_2j, x_2j+1) -> (x_2j cos - x_2j+1 sin, x_2j+1 cos + x_2j sin).
So hd must be divisible by 4. One table serves all heads and layers (no learned frequencies).

Prefix tokens (JiT's in-context class tokens) get cos = 1, sin = 0: they are not rotated.
"""
from __future__ import annotations

import torch


def rope_tables(head_dim: int, grid: int, prefix: int = 0, theta: float = 10000.0):
    """(cos, sin), each (prefix + grid*grid, head_dim) float32; tokens in raster order after the prefix."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    half = head_dim // 2
    freqs = 1.0 / theta ** (torch.arange(0, half, 2, dtype=torch.float64) / half)   # (half/2,)
    pos = torch.arange(grid, dtype=torch.float64)
    ang = (pos[:, None] * freqs[None]).repeat_interleave(2, dim=-1)                 # (grid, half)
    rows = ang[:, None, :].expand(grid, grid, half)
    cols = ang[None, :, :].expand(grid, grid, half)
    ang = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)
    ang = torch.cat([torch.zeros(prefix, head_dim, dtype=torch.float64), ang])      # angle 0: identity
    return ang.cos().float(), ang.sin().float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Pairwise (x_2i, x_2i+1) -> (-x_2i+1, x_2i) over the last dim."""
    x = x.unflatten(-1, (-1, 2))
    return torch.stack([-x[..., 1], x[..., 0]], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """x: (B, H, N, hd); cos, sin: (N, hd). Returns x rotated, computed in fp32, cast to ``dtype``
    (default: x's dtype)."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(dtype or x.dtype)
