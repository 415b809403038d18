"""Building blocks of the JiT network: norms, MLPs, attention with qk-norm and RoPE, embedders.

Shapes: tokens are (B, N, D); the conditioning vector c is (B, D); t is (B,) with t = 1 clean.
Every layer is device-agnostic (no ``.cuda()``; tables are buffers that follow ``.to()``) and works
under bf16 autocast, with the numerically sensitive parts (norms, attention logits) in fp32.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from manifold_lab.checks import check_choice
from manifold_lab.nets.rope import apply_rope

ATTN_IMPLS = ("sdpa", "math")
MLP_KINDS = ("swiglu", "gelu")
PATCH_IO = ("conv", "matmul")


def timestep_features(t: torch.Tensor, dim: int = 64, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t: (B,) -> (B, dim), laid out [cos | sin], periods up to ``max_period``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim; computed in fp32 and cast back (eps 1e-6, weight init 1)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight.float()).to(x.dtype)


def make_norm(kind: str, dim: int, *, affine: bool) -> nn.Module:
    """The norm of an MLP family: RMSNorm (learnable weight) for "swiglu", LayerNorm for "gelu".

    ``affine`` only matters for LayerNorm: the block/final norms are affine-free (DiT: adaLN supplies
    scale and shift); qk-norm LayerNorms are affine (timm).
    """
    check_choice("mlp", kind, MLP_KINDS)
    if kind == "swiglu":
        return RMSNorm(dim)
    return nn.LayerNorm(dim, eps=1e-6, elementwise_affine=affine)


def swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """SwiGLU hidden width h = int(int(mlp_ratio * D) * 2 / 3) (2048 for D = 768: equal params to a 4D MLP)."""
    return int(int(mlp_ratio * dim) * 2 / 3)


class SwiGLU(nn.Module):
    """One fused Linear(D, 2h) split into (a, b); SiLU(a) * b; dropout; Linear(h, D). All with bias."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.drop = nn.Dropout(drop)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(self.drop(F.silu(a) * b))


class GeluMLP(nn.Module):
    """The plain ViT/DiT MLP: Linear(D, h), GELU (tanh), dropout, Linear(h, D)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x), approximate="tanh")))


def _autocast_off(device_type: str):
    """A context with autocast disabled on ``device_type`` (a no-op where autocast does not exist, e.g. meta)."""
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, drop: float = 0.0) -> torch.Tensor:
    """Plain softmax(q k^T / sqrt(hd)) v with the logits and softmax in fp32 (autocast off).

    q, k, v: (B, H, N, hd). Returns (B, H, N, hd) in v's dtype. The reference for the fused path.
    """
    scale = q.shape[-1] ** -0.5
    with _autocast_off(q.device.type):
        logits = (q.float() * scale) @ k.float().transpose(-2, -1)
        probs = logits.softmax(dim=-1)
    probs = F.dropout(probs, p=drop) if drop > 0 else probs
    return probs.to(v.dtype) @ v


class Attention(nn.Module):
    """Multi-head self-attention: qkv Linear(D, 3D) with bias, qk-norm, then 2-D RoPE, then attention.

    ``impl``: "sdpa" uses torch's fused ``scaled_dot_product_attention``; "math" the explicit version
    with q k^T and the softmax in fp32 (autocast off), as the paper's code. Without autocast both give
    the same numbers (tested). Under bf16 autocast, q and k leave the bf16 qkv projection and qk-norm
    either way; "math" keeps the RoPE output in fp32, "sdpa" rounds it to bf16 so that the flash kernels
    run (they too accumulate q k^T and the softmax in fp32). The two then differ by that rounding only.
    On the CPU, "sdpa" under bf16 attends in fp32 (autocast off): torch's bf16 flash kernels are slower
    there than fp32 at every size the studies use (3x at 16 tokens, head dim 16).
    """

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool = True, norm_kind: str = "swiglu",
                 attn_drop: float = 0.0, proj_drop: float = 0.0, impl: str = "sdpa"):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.impl = check_choice("attn_impl", impl, ATTN_IMPLS)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = make_norm(norm_kind, self.head_dim, affine=True) if qk_norm else nn.Identity()
        self.k_norm = make_norm(norm_kind, self.head_dim, affine=True) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, N, D); rope: (cos, sin) tables of shape (N, head_dim) or None. Returns (B, N, D)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)          # qk-norm before RoPE
        if rope is not None:
            # "math" keeps the rotated q, k in fp32 for the fp32 logits; "sdpa" feeds the kernel q, k, v
            # in one dtype (bf16 under autocast, so the fused flash kernels apply)
            dtype = torch.float32 if self.impl == "math" else v.dtype
            q, k = apply_rope(q, *rope, dtype=dtype), apply_rope(k, *rope, dtype=dtype)
        drop = self.attn_drop if self.training else 0.0
        if self.impl == "sdpa" and v.device.type == "cpu" and v.dtype == torch.bfloat16:
            with _autocast_off("cpu"):                  # CPU: the bf16 flash kernels are ~3x slower than fp32
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=drop).to(v.dtype)
        elif self.impl == "sdpa":
            out = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, dropout_p=drop)
        else:
            out = attention_math(q, k, v, drop)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, with shift/scale (B, D) broadcast over the N tokens of x (B, N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Raw t in [0, 1] (not x1000) -> 256 sinusoidal features [cos | sin] -> Linear, SiLU, Linear -> (B, D)."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.freq_dim))


class LabelEmbedder(nn.Module):
    """Class table with num_classes + 1 rows; row ``num_classes`` is the null class of guidance.

    Label dropout is the Denoiser's job (it swaps labels for the null index), not this module's.
    ``y=None`` means the null class for every sample (an unconditional pass of a conditional net).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        return self.embedding_table(y)


class BottleneckPatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, D) in raster order. p x p stride-p conv C -> d' (no bias), then 1x1 conv d' -> D.

    ``bottleneck_dim=None`` gives the plain patch embedding: one p x p stride-p conv C -> D with bias
    (a Linear(C p^2, D) on each patch). Both forms are linear maps of each patch.

    ``io="matmul"`` computes the same maps as matmuls on channel-major patch vectors (:func:`patchify_cpq`,
    each patch flattened (C, p, p), the order of a conv weight's flattened input), with the convs' own
    weights: same parameters and state_dict, same function, other float rounding. A compiler fuses that
    layout well on the CPU (no channels-last copy of z for the conv; see :class:`manifold_lab.nets.jit.JiT`).
    """

    def __init__(self, patch_size: int, in_channels: int, dim: int, bottleneck_dim: int | None,
                 io: str = "conv"):
        super().__init__()
        p = patch_size
        self.patch_size = p
        self.io = check_choice("patch_io", io, PATCH_IO)
        if bottleneck_dim is None:
            self.proj1 = nn.Conv2d(in_channels, dim, p, stride=p, bias=True)
            self.proj2 = nn.Identity()
        else:
            self.proj1 = nn.Conv2d(in_channels, bottleneck_dim, p, stride=p, bias=False)
            self.proj2 = nn.Conv2d(bottleneck_dim, dim, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.io == "matmul":
            out = F.linear(patchify_cpq(x, self.patch_size), self.proj1.weight.flatten(1), self.proj1.bias)
            if isinstance(self.proj2, nn.Conv2d):
                out = F.linear(out, self.proj2.weight.flatten(1), self.proj2.bias)
            return out
        return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)

    def reset_parameters(self) -> None:
        """Xavier-uniform on the flattened (out, in*k*k) view of each conv; zero bias."""
        for conv in (self.proj1, self.proj2):
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)


def patchify_cpq(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C*p*p): patches in raster order, each flattened channel-major (C, p, p)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed MAE/DiT 2-D sin-cos position embedding: (grid*grid, dim), tokens in raster order (row outer).

    The first dim/2 channels encode the column index, the last dim/2 the row index (MAE's layout, so
    official checkpoints line up); each half is [sin | cos] of pos * w_k, w_k = 1/10000^(k/(dim/4)).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs hidden_size divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                                torch.arange(grid, dtype=torch.float64), indexing="ij")

    def one_axis(pos):
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([one_axis(cols), one_axis(rows)], dim=1).float()


def init_linear_(module: nn.Module) -> None:
    """Xavier-uniform weight and zero bias for every nn.Linear inside ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def zero_(module: nn.Module) -> None:
    """Zero every parameter of ``module`` (the adaLN-Zero and output layers)."""
    for p in module.parameters():
        nn.init.zeros_(p)


__all__ = ["timestep_features", "RMSNorm", "SwiGLU", "GeluMLP", "Attention", "attention_math", "TimestepEmbedder",
           "LabelEmbedder", "BottleneckPatchEmbed", "patchify_cpq", "sincos_pos_embed_2d",
           "modulate", "make_norm", "swiglu_hidden", "init_linear_", "zero_"]
