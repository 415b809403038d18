"""The JiT network: paper sizes, MACs, init, attention paths, RoPE, errors, ablation variants."""
from __future__ import annotations

import pytest
import torch
from tiny_jit import TINY_JIT
from torch.utils.flop_counter import FlopCounterMode

from manifold_lab.checks import ConfigError
from manifold_lab.nets.jit import JiT, JiT_models, build_jit
from manifold_lab.nets.layers import attention_math, sincos_pos_embed_2d
from manifold_lab.nets.macs import count_macs, count_params
from manifold_lab.nets.rope import apply_rope, rope_tables

# paper (Table 5/6 text, reference §1.1): trainable params in M and "Gflops" (= MACs) per image
PAPER = {
    "JiT-B/16": (131.12, 25), "JiT-B/32": (133.19, 26), "JiT-B/64": (141.46, 30),
    "JiT-L/16": (458.88, 88), "JiT-L/32": (461.53, 89),
    "JiT-H/16": (952.51, 182), "JiT-H/32": (956.06, 183),
    "JiT-G/16": (2007.1, 383), "JiT-G/32": (2011.6, 384),
}
# a tiny conditional JiT with every feature on: 16 tokens of width 32, 4 in-context tokens from block 1
TINY = TINY_JIT


def tiny(**kw) -> JiT:
    torch.manual_seed(0)
    return JiT(**{**TINY, **kw})


def perturb_(model: JiT, std: float = 0.05, seed: int = 1) -> JiT:
    """Add noise to every parameter so the zero-initialised layers stop hiding the rest of the net."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(model: JiT, b: int = 3, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, model.in_channels, model.img_size, model.img_size, generator=g)
    t = torch.rand(b, generator=g)
    y = torch.randint(0, model.num_classes, (b,), generator=g) if model.num_classes else None
    return z, t, y


# ---- paper sizes --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PAPER))
def test_param_count_matches_paper(name):
    with torch.device("meta"):
        model = build_jit(name)
    expected = PAPER[name][0]
    tol = 0.05 if name.startswith("JiT-G") else 0.005    # half a unit of the paper's last digit
    assert abs(count_params(model) / 1e6 - expected) <= tol, count_params(model)


@pytest.mark.parametrize("name", list(PAPER))
def test_macs_match_paper(name):
    with torch.device("meta"):
        model = build_jit(name)
    rel = 0.10 if name == "JiT-B/64" else 0.05
    assert count_macs(model) / 1e9 == pytest.approx(PAPER[name][1], rel=rel)
    assert count_macs(model, batch=4) == 4 * count_macs(model)


def test_paper_configs():
    with torch.device("meta"):
        h = build_jit("JiT-H/32")
        b = build_jit("JiT-B/64")
    assert (h.img_size, h.patch_size, h.depth, h.hidden_size, h.in_context_start) == (512, 32, 32, 1280, 10)
    assert h.x_embedder.proj1.out_channels == 256 and b.x_embedder.proj1.out_channels == 128
    assert b.img_size == 1024 and b.grid == 16
    drops = [blk.attn.proj_drop.p for blk in h.blocks]
    assert drops == [0.2 if 8 <= i < 24 else 0.0 for i in range(32)]   # the middle half only
    assert all(blk.attn.attn_drop == 0.0 for blk in h.blocks)


def _measured_macs(model, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        model(*args)
    return counter.get_total_flops() // 2


def test_macs_equal_flop_counter_on_b16():
    with torch.device("meta"):
        model = build_jit("JiT-B/16")
        args = (torch.randn(1, 3, 256, 256), torch.rand(1), torch.zeros(1, dtype=torch.long))
        assert _measured_macs(model, *args) == count_macs(model)


@pytest.mark.parametrize("kw", [{}, dict(bottleneck_dim=None, mlp="gelu"), dict(in_context_len=0, rope=False),
                                dict(num_classes=None, in_context_start=0)])
def test_macs_equal_flop_counter_on_variants(kw):
    model = tiny(attn_impl="math", **kw)   # FlopCounterMode does not see CPU's fused SDPA kernel
    z, t, y = inputs(model, b=2)
    assert _measured_macs(model, z, t, y) == count_macs(model, batch=2)


# ---- initialisation and forward -------------------------------------------------------------------
def test_untrained_output_is_zero_and_learns():
    model = tiny()
    z, t, y = inputs(model)
    out = model(z, t, y)
    assert out.shape == z.shape and torch.count_nonzero(out) == 0
    out.sum().backward()      # zero output, yet the output layer gets a gradient
    assert model.final_layer.linear.weight.grad.abs().sum() > 0 or model.final_layer.linear.bias.grad.abs().sum() > 0
    assert torch.count_nonzero(perturb_(model)(z, t, y)) > 0


@pytest.mark.parametrize("kw", [
    dict(num_classes=None),                                     # unconditional
    dict(bottleneck_dim=None),                                  # plain linear patch embedding
    dict(mlp="gelu"),                                           # GELU MLP + LayerNorm
    dict(rope=False, qk_norm=False, in_context_len=0),          # the Table 4 baseline switches
    dict(in_channels=1, img_size=12, patch_size=3, num_heads=4, hidden_size=48, rope=False),
    dict(attn_drop=0.1, proj_drop=0.1, depth=4),
])
def test_variants_keep_shape(kw):
    model = perturb_(tiny(**kw))
    z, t, y = inputs(model)
    out = model(z, t, y)
    assert out.shape == z.shape and out.dtype == z.dtype and torch.isfinite(out).all()


def test_unconditional_ignores_labels_and_conditional_defaults_to_null():
    unc = perturb_(tiny(num_classes=None)).eval()
    z, t, _ = inputs(unc)
    assert unc.y_embedder is None
    assert torch.equal(unc(z, t, None), unc(z, t, torch.tensor([0, 1, 2])))
    cond = perturb_(tiny()).eval()
    assert cond.y_embedder.embedding_table.num_embeddings == TINY["num_classes"] + 1
    null = torch.full((3,), TINY["num_classes"])
    assert torch.equal(cond(z, t, None), cond(z, t, null))
    assert not torch.allclose(cond(z, t, null), cond(z, t, torch.tensor([0, 1, 2])))


def test_unpatchify_layout_is_channel_last_raster():
    model = tiny(in_channels=2, img_size=6, patch_size=3, rope=False)
    g, p, c = model.grid, 3, 2
    tokens = torch.zeros(1, g * g, p * p * c)
    r, col, i, j, ch = 1, 0, 2, 1, 1                 # token (row 1, col 0), in-patch pixel (2, 1), channel 1
    tokens[0, r * g + col, (i * p + j) * c + ch] = 1.0
    img = model.unpatchify(tokens)
    assert img.shape == (1, c, 6, 6)
    assert img[0, ch, r * p + i, col * p + j] == 1.0 and img.sum() == 1.0


def test_sincos_pos_embed_halves():
    pe = sincos_pos_embed_2d(16, 4).reshape(4, 4, 16)   # (row, col, D)
    assert torch.equal(pe[0, :, :8], pe[3, :, :8])       # first half: column index only
    assert torch.equal(pe[:, 0, 8:], pe[:, 2, 8:])       # second half: row index only
    assert not torch.equal(pe[0, 0], pe[1, 0])
    assert torch.allclose(pe[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))


# ---- attention and RoPE -----------------------------------------------------------------------------
def test_sdpa_matches_fp32_math_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 16, generator=g) for _ in range(3))
    ref = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1) @ v
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(attention_math(q, k, v), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [{}, dict(mlp="gelu", bottleneck_dim=None), dict(num_classes=None)])
def test_sdpa_and_math_models_agree(kw):
    sdpa = perturb_(tiny(attn_impl="sdpa", **kw)).eval()
    math = tiny(attn_impl="math", **kw).eval()
    math.load_state_dict(sdpa.state_dict())
    z, t, y = inputs(sdpa)
    out_s, out_m = sdpa(z, t, y), math(z, t, y)
    assert out_s.abs().mean() > 1e-3
    torch.testing.assert_close(out_s, out_m, rtol=1e-5, atol=1e-5)


def test_rope_tables_leave_in_context_tokens_unrotated():
    cos, sin = rope_tables(16, 4, prefix=5)
    assert cos.shape == (5 + 16, 16)
    assert torch.equal(cos[:5], torch.ones(5, 16)) and torch.equal(sin[:5], torch.zeros(5, 16))
    x = torch.randn(1, 2, 21, 16)
    rotated = apply_rope(x, cos, sin)
    assert torch.equal(rotated[:, :, :5], x[:, :, :5])
    assert not torch.allclose(rotated[:, :, 6:], x[:, :, 6:])
    model = tiny()                                   # in the net: blocks before the start see no prefix
    cos_late, _ = model._rope(TINY["in_context_len"])
    cos_early, _ = model._rope(0)
    assert cos_late.shape[0] == 16 + 4 and cos_early.shape[0] == 16
    assert torch.equal(cos_late[:4], torch.ones(4, 8 * 2)) and torch.equal(cos_late[4:], cos_early)


def test_rope_is_2d_relative_and_splits_axes():
    hd, grid = 16, 6
    cos, sin = rope_tables(hd, grid)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, hd, generator=g), torch.randn(1, 1, 1, hd, generator=g)

    def score(a, b):   # <R(a) q, R(b) k> for grid positions a, b = (row, col)
        ia, ib = a[0] * grid + a[1], b[0] * grid + b[1]
        qa = apply_rope(q, cos[ia:ia + 1], sin[ia:ia + 1])
        kb = apply_rope(k, cos[ib:ib + 1], sin[ib:ib + 1])
        return (qa * kb).sum()

    assert score((1, 2), (3, 1)) == pytest.approx(score((2, 4), (4, 3)).item(), abs=1e-5)
    assert score((1, 2), (3, 1)) != pytest.approx(score((1, 2), (1, 3)).item(), abs=1e-3)
    row_only = apply_rope(q.expand(1, 1, grid, hd), cos[:grid], sin[:grid])   # row 0, columns 0..5
    assert torch.allclose(row_only[..., : hd // 2], q[..., : hd // 2].expand(1, 1, grid, hd // 2))
    assert not torch.allclose(row_only[..., hd // 2:], q[..., hd // 2:].expand(1, 1, grid, hd // 2))


def _bf16_paths_agree(device: str):
    sdpa = perturb_(tiny()).to(device).eval()
    math = tiny(attn_impl="math").to(device).eval()
    math.load_state_dict(sdpa.state_dict())
    z, t, y = (a.to(device) for a in inputs(sdpa))
    ref = math(z, t, y)
    with torch.autocast(device, dtype=torch.bfloat16):
        out_s, out_m = sdpa(z, t, y), math(z, t, y)
    scale = ref.abs().max()
    assert out_s.dtype == out_m.dtype == torch.float32
    assert (out_m - ref).abs().max() < 0.05 * scale      # bf16 autocast vs fp32
    assert (out_s - out_m).abs().max() < 0.02 * scale    # fused vs fp32-logit attention under bf16


def test_bf16_autocast_on_cpu():
    _bf16_paths_agree("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_autocast_on_cuda():
    _bf16_paths_agree("cuda")


# ---- configuration errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("kw, needle", [
    (dict(img_size=10, patch_size=4), "patch_size 4 does not divide img_size 10"),
    (dict(hidden_size=30, num_heads=4), "hidden_size 30 is not divisible by num_heads 4"),
    (dict(hidden_size=36, num_heads=4), "head dim 9"),           # odd: no channel pairs for RoPE
    (dict(hidden_size=24, num_heads=4), "head dim 6"),           # even, but not two pairs of halves
    (dict(mlp="relu"), "'relu'"),
    (dict(attn_impl="flash"), "'flash'"),
    (dict(in_context_start=2), "in_context_start 2"),
    (dict(proj_drop=1.5), "1.5"),
    (dict(depth=0), "depth"),
])
def test_bad_config_is_one_line_naming_the_value(kw, needle):
    with pytest.raises(ConfigError) as err:
        tiny(**kw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_model_name_and_override():
    with pytest.raises(ConfigError) as err:
        build_jit("JiT-X/16")
    msg = str(err.value)
    assert "'JiT-X/16'" in msg and "JiT-B/16" in msg and "JiT-G/32" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="hiden_size"):
        build_jit("JiT-B/16", hiden_size=10)
    with torch.device("meta"):
        m = build_jit("JiT-B/16", rope=False, qk_norm=False, in_context_len=0, bottleneck_dim=None)
    assert not hasattr(m, "in_context_posemb") and m.x_embedder.proj1.out_channels == 768
    assert set(JiT_models) == set(PAPER)


# ---- patch I/O layout ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bottleneck_dim", [8, None])
def test_matmul_patch_io_is_the_same_function_with_the_same_parameters(bottleneck_dim):
    """patch_io="matmul" (the compiled CPU runs' layout): the same state_dict, output and gradients as the
    paper's conv patch embedding and (p, p, C) output order, to float rounding; unconditional and in-context
    too (TINY has 4 in-context tokens)."""
    conv = perturb_(tiny(bottleneck_dim=bottleneck_dim))
    mm = tiny(bottleneck_dim=bottleneck_dim, patch_io="matmul", attn_impl="math")
    assert set(mm.state_dict()) == set(conv.state_dict())
    mm.load_state_dict(conv.state_dict())
    z, t, y = inputs(conv)
    out, ref = mm(z, t, y), conv(z, t, y)
    assert ref.abs().max() > 0.1                       # the perturbed output layers are not hiding anything
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.square().mean().backward()
    ref.square().mean().backward()
    for (name, p), q in zip(mm.named_parameters(), conv.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_patchify_cpq_round_trips_and_matches_the_conv_weight_order():
    from manifold_lab.nets.layers import patchify_cpq
    x = torch.randn(2, 3, 8, 12)
    tokens = patchify_cpq(x, 4)
    assert tokens.shape == (2, 6, 48)
    torch.testing.assert_close(tokens[1, 3], x[1, :, 4:8, 0:4].flatten())   # patch (row 1, col 0), (C, p, p)
    torch.testing.assert_close(tokens[1, 5], x[1, :, 4:8, 8:12].flatten())  # raster order: (row 1, col 2)
    with pytest.raises(ConfigError, match="unknown patch_io 'pixels'; allowed: conv, matmul"):
        tiny(patch_io="pixels")
    x = torch.randn(2, 3, 8, 8)                        # TINY: 8 px, patch 2; its unpatchify inverts patchify_cpq
    torch.testing.assert_close(tiny(patch_io="matmul").unpatchify(patchify_cpq(x, 2)), x, rtol=0, atol=0)


# ---- torch.compile -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_blocks_matches_eager_on_cpu(backend):
    """Dynamo + AOTAutograd always (a few s); the inductor C++ backend (~60 s on 2 cores) under -m slow."""
    eager = perturb_(tiny())
    compiled = tiny()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks(backend=backend)
    assert set(compiled.state_dict()) == set(eager.state_dict())
    z, t, y = inputs(eager)
    out, ref = compiled(z, t, y), eager(z, t, y)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    out.square().mean().backward()
    ref.square().mean().backward()
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6, msg=name)
    assert JiT(**TINY, compile=True).blocks[0]._compiled_call_impl is not None
