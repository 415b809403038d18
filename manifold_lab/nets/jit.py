"""JiT: the plain pixel-space diffusion Transformer of "Back to Basics" (Li & He, arXiv 2511.13720).

``JiT(z, t, y) -> tensor shaped like z``. The net is dumb: whether its output is read as x, eps or v is
the :class:`manifold_lab.denoiser.Denoiser`'s choice (the paper's JiT is x-prediction + v-loss).
Convention: t in [0, 1] with t = 1 clean; z = t x + (1 - t) eps; images (B, C, H, W).

Forward pass (paper §3 / reference §1.2):
  patch embed (bottleneck p x p -> d' -> D) + fixed 2-D sin-cos position embedding -> tokens (B, N, D)
  c = t_emb(raw t) + y_emb(y)  drives adaLN-Zero of every block and of the final layer
  blocks 0 .. depth-1; just before block ``in_context_start``, prepend ``in_context_len`` class tokens
      (y_emb + a learned per-slot embedding; RoPE leaves them unrotated; no sin-cos embedding)
  drop the in-context tokens, final adaLN layer, Linear D -> p*p*C, unpatchify (channel-last in a patch)

``patch_io="matmul"`` (the small studies' compiled CPU runs) computes the same function with the same
parameters in another memory layout: the patch embedding as patchify + matmul, the output Linear's rows
taken in channel-major (C, p, p) order so that unpatchify moves runs of p contiguous pixels. Measured on an
AVX2 CPU (width 64, 16 tokens of 192-d, batch 128, fp32 compiled, with ``attn_impl="math"``): 77 -> 62 ms
a training step; inductor otherwise stores z channels-last for the conv and vectorises the loss over C = 3.

Classification loss (the paper's Table 11, off by default): with ``cls_head_after = k`` > 0 a global-average-
pool + Linear(D, num_classes) head reads the image tokens after block k (the paper: 4 for B, 8 for L) and
``forward(..., return_cls=True)`` also returns its logits (B, num_classes); the Denoiser adds
``cls_weight`` (the paper's lambda, e.g. 100) times their cross-entropy with the TRUE labels to the l2 loss.
Class conditioning is off in every block before the head, as the paper states: blocks 0 .. k-1 are modulated
by the timestep embedding alone and in-context class tokens may enter only at or after block k. Where the
paper is silent we chose: no norm between the pool and the linear layer; the pool averages the image tokens
only; the head is zero-initialised (CE starts at log num_classes); it is trained at every t of the logit-
normal draw on the noisy z; the final layer is conditioned as usual.

Unconditional models (``num_classes=None``): c = t_emb, y is ignored, and the in-context tokens are the
learned per-slot embeddings alone (register-like tokens). In a conditional model ``y=None`` means the
null class ``num_classes`` for every sample.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from manifold_lab.checks import ConfigError, check_choice, check_keys, check_positive
from manifold_lab.nets.layers import (
    ATTN_IMPLS,
    MLP_KINDS,
    PATCH_IO,
    Attention,
    BottleneckPatchEmbed,
    GeluMLP,
    LabelEmbedder,
    SwiGLU,
    TimestepEmbedder,
    init_linear_,
    make_norm,
    modulate,
    sincos_pos_embed_2d,
    swiglu_hidden,
    zero_,
)
from manifold_lab.nets.rope import rope_tables


class JiTBlock(nn.Module):
    """adaLN-Zero pre-norm block: x += g1 * Attn(mod(norm(x))); x += g2 * MLP(mod(norm(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, mlp: str, qk_norm: bool,
                 attn_drop: float, proj_drop: float, attn_impl: str):
        super().__init__()
        self.norm1 = make_norm(mlp, dim, affine=False)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, norm_kind=mlp, attn_drop=attn_drop,
                              proj_drop=proj_drop, impl=attn_impl)
        self.norm2 = make_norm(mlp, dim, affine=False)
        if mlp == "swiglu":
            self.mlp = SwiGLU(dim, swiglu_hidden(dim, mlp_ratio), drop=proj_drop)
        else:
            self.mlp = GeluMLP(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope=None) -> torch.Tensor:
        """x: (B, N, D); c: (B, D); rope: (cos, sin) of shape (N, head_dim) or None."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """norm, modulate with (shift, scale) = Linear(SiLU(c)) (no gate), Linear D -> p*p*C."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, mlp: str):
        super().__init__()
        self.norm_final = make_norm(mlp, dim, affine=False)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, D) tokens, c: (B, D). rows: the output Linear's rows in the order to emit (None: as
        stored, (p, p, C) per patch). Returns (B, N, p*p*C)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        h = modulate(self.norm_final(x), shift, scale)
        if rows is None:
            return self.linear(h)
        return F.linear(h, self.linear.weight[rows], self.linear.bias[rows])


def _check_rate(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


class JiT(nn.Module):
    """The JiT network. All arguments are keyword-only; defaults are JiT-B/16 (see ``JiT_models``).

    bottleneck_dim: d' of the bottleneck patch embedding, None = plain linear patch embedding.
    rope / qk_norm: 2-D RoPE and qk-norm on or off. in_context_len (0 = off) class tokens are inserted
    before block in_context_start. mlp: "swiglu" (SwiGLU + RMSNorm) or "gelu" (GELU MLP + LayerNorm).
    attn_drop / proj_drop act only in the middle half of the blocks (depth//4 <= i < 3*depth//4).
    attn_impl: "sdpa" (fused) or "math" (explicit fp32 logits). compile: torch.compile each block and
    the final layer (see :meth:`compile_blocks`). patch_io: "conv" (the paper's code) or "matmul" (the same
    function and parameters in a layout a compiler fuses better on the CPU; module docstring).
    """

    def __init__(self, *, img_size: int = 256, patch_size: int = 16, in_channels: int = 3,
                 hidden_size: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 num_classes: int | None = 1000, bottleneck_dim: int | None = 128, rope: bool = True,
                 qk_norm: bool = True, in_context_len: int = 32, in_context_start: int = 4,
                 mlp: str = "swiglu", attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attn_impl: str = "sdpa", compile: bool = False, cls_head_after: int = 0,
                 cls_weight: float = 0.0, patch_io: str = "conv"):
        super().__init__()
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self._validate(**self.config)
        self.img_size, self.patch_size, self.in_channels = img_size, patch_size, in_channels
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        self.num_classes, self.grid = num_classes, img_size // patch_size
        self.in_context_len, self.in_context_start = in_context_len, in_context_start
        head_dim = hidden_size // num_heads

        self.x_embedder = BottleneckPatchEmbed(patch_size, in_channels, hidden_size, bottleneck_dim, io=patch_io)
        self.patch_io = patch_io
        rows = None                # "matmul": the output Linear's rows, (p, p, C) per patch as stored, read (C, p, p)
        if patch_io == "matmul":
            rows = torch.arange(patch_size * patch_size * in_channels).reshape(patch_size, patch_size, in_channels)
            rows = rows.permute(2, 0, 1).flatten()
        self.register_buffer("out_rows_cpq", rows, persistent=False)
        # fixed (requires_grad=False in the paper's code); a persistent buffer so checkpoints carry it
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden_size, self.grid)[None])
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size) if num_classes is not None else None
        if in_context_len:
            self.in_context_posemb = nn.Parameter(torch.zeros(1, in_context_len, hidden_size))
        if rope:
            cos, sin = rope_tables(head_dim, self.grid, prefix=in_context_len)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.use_rope = rope

        lo, hi = depth // 4, 3 * depth // 4   # dropout only in the middle half of the blocks
        self.blocks = nn.ModuleList([
            JiTBlock(hidden_size, num_heads, mlp_ratio, mlp=mlp, qk_norm=qk_norm, attn_impl=attn_impl,
                     attn_drop=attn_drop if lo <= i < hi else 0.0,
                     proj_drop=proj_drop if lo <= i < hi else 0.0)
            for i in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, in_channels, mlp)
        self.cls_head_after, self.cls_weight = cls_head_after, float(cls_weight)
        self.cls_head = nn.Linear(hidden_size, num_classes) if cls_head_after else None
        self.initialize_weights()
        if compile:
            self.compile_blocks()

    @staticmethod
    def _validate(*, img_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio,
                  num_classes, bottleneck_dim, rope, qk_norm, in_context_len, in_context_start, mlp,
                  attn_drop, proj_drop, attn_impl, compile, cls_head_after=0, cls_weight=0.0,
                  patch_io="conv") -> None:
        for name, value in [("img_size", img_size), ("patch_size", patch_size), ("in_channels", in_channels),
                            ("hidden_size", hidden_size), ("depth", depth), ("num_heads", num_heads)]:
            check_positive(name, value, integer=True)
        check_positive("mlp_ratio", mlp_ratio)
        if num_classes is not None:
            check_positive("num_classes (None = unconditional)", num_classes, integer=True)
        if bottleneck_dim is not None:
            check_positive("bottleneck_dim (None = plain patch embedding)", bottleneck_dim, integer=True)
        check_choice("mlp", mlp, MLP_KINDS)
        check_choice("attn_impl", attn_impl, ATTN_IMPLS)
        check_choice("patch_io", patch_io, PATCH_IO)
        _check_rate("attn_drop", attn_drop)
        _check_rate("proj_drop", proj_drop)
        if img_size % patch_size:
            raise ConfigError(f"patch_size {patch_size} does not divide img_size {img_size}")
        if hidden_size % num_heads:
            raise ConfigError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if hidden_size % 4:
            raise ConfigError(f"hidden_size {hidden_size} must be divisible by 4 (2-D sin-cos position embedding)")
        head_dim = hidden_size // num_heads
        if rope and head_dim % 4:
            raise ConfigError(f"head dim {head_dim} (= hidden_size {hidden_size} / num_heads {num_heads}) "
                              f"must be divisible by 4 for 2-D RoPE (half per axis, in channel pairs)")
        if not (isinstance(in_context_len, int) and in_context_len >= 0):
            raise ConfigError(f"in_context_len must be an integer >= 0 (0 = off), got {in_context_len!r}")
        if in_context_len and not (isinstance(in_context_start, int) and 0 <= in_context_start < depth):
            raise ConfigError(f"in_context_start {in_context_start!r} must be in [0, depth={depth}) "
                              f"(or set in_context_len=0)")
        JiT._validate_cls(cls_head_after, cls_weight, depth, num_classes, in_context_len, in_context_start)

    @staticmethod
    def _validate_cls(cls_head_after, cls_weight, depth, num_classes, in_context_len, in_context_start) -> None:
        """The classification head: after a block in [1, depth), a conditional model, no class tokens before it."""
        if not (isinstance(cls_head_after, int) and 0 <= cls_head_after < depth):
            raise ConfigError(f"cls_head_after must be an integer in [0, depth={depth}) (0 = no classification "
                              f"head), got {cls_head_after!r}")
        if not (isinstance(cls_weight, (int, float)) and cls_weight >= 0):
            raise ConfigError(f"cls_weight must be a number >= 0, got {cls_weight!r}")
        if bool(cls_head_after) != bool(cls_weight):
            raise ConfigError(f"cls_head_after ({cls_head_after}) and cls_weight ({cls_weight}) go together: set "
                              "both (a head after block k, weighted by lambda) or neither")
        if cls_head_after and num_classes is None:
            raise ConfigError("cls_head_after needs a class-conditional model (num_classes), got num_classes=None")
        if cls_head_after and in_context_len and in_context_start < cls_head_after:
            raise ConfigError(f"in_context_start {in_context_start} puts class tokens before the classification head "
                              f"after block {cls_head_after}; conditioning must be off before the head")

    # ---- initialisation -----------------------------------------------------------------------
    def initialize_weights(self) -> None:
        """The paper's init: Xavier Linear/patch convs, N(0, 0.02^2) embeddings, zeroed adaLN and output.

        The zeroed layers make the untrained network output exactly 0.
        """
        init_linear_(self)
        self.x_embedder.reset_parameters()
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.in_context_len:
            nn.init.normal_(self.in_context_posemb, std=0.02)
        for block in self.blocks:
            zero_(block.adaLN_modulation)
        zero_(self.final_layer.adaLN_modulation)
        zero_(self.final_layer.linear)
        if self.cls_head is not None:
            zero_(self.cls_head)

    def compile_blocks(self, **kwargs) -> JiT:
        """torch.compile each block and the final layer in place (as the paper's code); returns self.

        Parameter names and state_dict keys are unchanged. kwargs go to ``torch.compile``.
        """
        for block in self.blocks:
            block.compile(**kwargs)
        self.final_layer.compile(**kwargs)
        return self

    # ---- forward ------------------------------------------------------------------------------
    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) tokens, each laid out (p, p, C) (``patch_io="matmul"``: (C, p, p)), raster order
        -> (B, C, H, W)."""
        b, g, p, c = x.shape[0], self.grid, self.patch_size, self.in_channels
        if self.patch_io == "matmul":
            return torch.einsum("bhwcpq->bchpwq", x.reshape(b, g, g, c, p, p)).reshape(b, c, g * p, g * p)
        x = x.reshape(b, g, g, p, p, c)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(b, c, g * p, g * p)

    def _rope(self, prefix: int):
        if not self.use_rope:
            return None
        start = self.in_context_len - prefix   # rows 0..in_context_len-1 of the table are identity
        return self.rope_cos[start:], self.rope_sin[start:]

    def forward(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                return_cls: bool = False):
        """z: (B, C, H, W) noisy images; t: (B,) in [0, 1], t = 1 clean; y: (B,) long labels or None.

        Returns (B, C, H, W) in z's dtype (the paper reads it as x-prediction); with ``return_cls`` (a model
        built with cls_head_after) the pair (that, the head's logits (B, num_classes) in fp32).
        """
        if z.ndim != 4 or z.shape[1:] != (self.in_channels, self.img_size, self.img_size):
            raise ValueError(f"JiT expects z of shape (B, {self.in_channels}, {self.img_size}, {self.img_size}), "
                             f"got {tuple(z.shape)}")
        b = z.shape[0]
        t = t.expand(b) if t.ndim == 0 else t
        x = self.x_embedder(z) + self.pos_embed
        c = c_t = self.t_embedder(t)
        y_emb = logits = None
        if self.y_embedder is not None:
            y_emb = self.y_embedder(y, b, z.device)
            c = c + y_emb
        prefix = 0
        for i, block in enumerate(self.blocks):
            if i == self.cls_head_after and self.cls_head is not None and return_cls:
                logits = self.cls_head(x[:, prefix:].mean(dim=1)).float()   # GAP of the image tokens
            if self.in_context_len and i == self.in_context_start:
                tokens = self.in_context_posemb.expand(b, -1, -1)
                if y_emb is not None:
                    tokens = tokens + y_emb.unsqueeze(1)
                x = torch.cat([tokens.to(x.dtype), x], dim=1)
                prefix = self.in_context_len
            x = block(x, c_t if i < self.cls_head_after else c, self._rope(prefix))   # no y before the head
        x = self.final_layer(x[:, prefix:], c, rows=self.out_rows_cpq)
        out = self.unpatchify(x).to(z.dtype)
        return (out, logits) if return_cls else out


# ---- registry: the paper's sizes (Table 9); image size = 16 * patch, so every model has 256 tokens ----
JIT_SIZES: dict[str, dict] = {
    "B": dict(depth=12, hidden_size=768, num_heads=12, bottleneck_dim=128, in_context_start=4),
    "L": dict(depth=24, hidden_size=1024, num_heads=16, bottleneck_dim=128, in_context_start=8),
    "H": dict(depth=32, hidden_size=1280, num_heads=16, bottleneck_dim=256, in_context_start=10, proj_drop=0.2),
    "G": dict(depth=40, hidden_size=1664, num_heads=16, bottleneck_dim=256, in_context_start=10, proj_drop=0.2),
}


def _paper_jit(size: str, patch: int, **overrides) -> JiT:
    kw = dict(JIT_SIZES[size], patch_size=patch, img_size=16 * patch)
    kw.update(overrides)
    return JiT(**kw)


def JiT_B_16(**kw): return _paper_jit("B", 16, **kw)   # noqa: E704  131.12M params, 25 G MACs
def JiT_B_32(**kw): return _paper_jit("B", 32, **kw)   # noqa: E704  133.19M, 26 G
def JiT_B_64(**kw): return _paper_jit("B", 64, **kw)   # noqa: E704  141.46M, 30 G (not in the paper's code)
def JiT_L_16(**kw): return _paper_jit("L", 16, **kw)   # noqa: E704  458.88M, 88 G
def JiT_L_32(**kw): return _paper_jit("L", 32, **kw)   # noqa: E704  461.53M, 89 G
def JiT_H_16(**kw): return _paper_jit("H", 16, **kw)   # noqa: E704  952.51M, 182 G
def JiT_H_32(**kw): return _paper_jit("H", 32, **kw)   # noqa: E704  956.06M, 183 G
def JiT_G_16(**kw): return _paper_jit("G", 16, **kw)   # noqa: E704  2007.1M, 383 G (not in the paper's code)
def JiT_G_32(**kw): return _paper_jit("G", 32, **kw)   # noqa: E704  2011.6M, 384 G (not in the paper's code)


JiT_models = {
    "JiT-B/16": JiT_B_16, "JiT-B/32": JiT_B_32, "JiT-B/64": JiT_B_64,
    "JiT-L/16": JiT_L_16, "JiT-L/32": JiT_L_32,
    "JiT-H/16": JiT_H_16, "JiT-H/32": JiT_H_32,
    "JiT-G/16": JiT_G_16, "JiT-G/32": JiT_G_32,
}
JIT_ARGS = tuple(p for p in inspect.signature(JiT.__init__).parameters if p != "self")


def build_jit(name: str, **overrides) -> JiT:
    """Build a paper model by name ('JiT-B/16', ...), with any constructor argument overridden.

    E.g. the Table 4 baseline: ``build_jit("JiT-B/16", rope=False, qk_norm=False, in_context_len=0)``.
    Build on the meta device (``with torch.device("meta"):``) to count parameters without memory.
    """
    check_choice("JiT model", name, JiT_models)
    check_keys(f"build_jit({name!r}) overrides", overrides, JIT_ARGS)
    return JiT_models[name](**overrides)
