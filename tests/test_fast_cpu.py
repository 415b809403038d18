"""The fast CPU mode: bf16 only where the CPU has it natively, and the compiled small-run step (numerics
within float tolerance of the eager step; the compiled code cached on disk)."""
from __future__ import annotations

import os

import pytest
import torch

from manifold_lab import device as dev
from manifold_lab.checks import ConfigError
from manifold_lab.denoiser import Denoiser
from manifold_lab.nets.mlp import MLP
from manifold_lab.toy import ToyConfig
from manifold_lab.train.loop import TrainConfig, make_core, train

CPU = torch.device("cpu")


def test_bf16_on_a_cpu_without_native_bf16_is_one_line(monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not dev.native_bf16()
    with pytest.raises(ConfigError, match="needs native bf16 \\(AMX or AVX512-BF16\\)") as e:
        dev.uses_bf16("bf16", CPU)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="native bf16"):            # a run fails before its first step
        make_core(MLP(8, hidden_size=8, depth=2), Denoiser(), TrainConfig(precision="bf16", device="cpu"))
    assert dev.uses_bf16("fp32", CPU) is False and dev.uses_bf16("auto", CPU) is False


def test_bf16_on_a_native_bf16_cpu_autocasts(monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_tile"}))
    assert dev.native_bf16() and dev.uses_bf16("bf16", CPU)
    lin = torch.nn.Linear(4, 4)
    with dev.autocast("bf16", CPU):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16


def test_compile_must_be_a_bool():
    with pytest.raises(ConfigError, match="compile must be true or false"):
        TrainConfig(compile="yes")
    assert ToyConfig(compile=True).train_config().compile is True


def test_compile_cache_dir_respects_the_user(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert dev.compile_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path / "ml"))
    assert dev.compile_cache_dir() == tmp_path / "ml" / "inductor"


def test_compile_knob_routes_the_forward_through_torch_compile(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path))
    net = MLP(8, hidden_size=8, depth=2)
    core = make_core(net, Denoiser(), TrainConfig(device="cpu", compile=True))
    assert core.net is net and core.model is not net and core.model._orig_mod is net   # optimiser sees net
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert make_core(net, Denoiser(), TrainConfig(device="cpu")).model is net


def _losses(compile_: bool, steps: int = 4):
    torch.manual_seed(0)
    net = MLP(16, hidden_size=32, depth=3)
    cfg = TrainConfig(steps=steps, batch_size=32, lr=1e-3, device="cpu", precision="fp32", compile=compile_)
    res = train(net, Denoiser(), lambda b, g: (torch.randn(b, 16, generator=g), None), cfg, progress=False)
    return res.curve.loss.tolist(), [p.detach().clone() for p in net.parameters()]


@pytest.mark.slow
def test_compiled_step_matches_eager(tmp_path, monkeypatch):
    """A few steps of the toy MLP through torch.compile: losses and weights within float tolerance of eager."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager, w_eager = _losses(False)
    comp, w_comp = _losses(True)
    assert comp == pytest.approx(eager, rel=1e-4, abs=1e-6)
    for a, b in zip(w_eager, w_comp):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert any((tmp_path / "inductor").rglob("*")), "the compiled code was not cached in TORCHINDUCTOR_CACHE_DIR"
