"""The fast CPU mode: bf16 only where the CPU has it natively, and the compiled small-run step (numerics
within float tolerance of the eager step; the compiled code cached on disk)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from manifold_lab import device as dev
from manifold_lab.checks import ConfigError
from manifold_lab.denoiser import Denoiser
from manifold_lab.nets.mlp import MLP
from manifold_lab.toy import ToyConfig
from manifold_lab.train.core import LossGraph
from manifold_lab.train.loop import TrainConfig, make_core, train

ROOT = Path(__file__).resolve().parents[1]

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


def test_compile_knob_routes_the_loss_through_torch_compile(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path))
    net, den = MLP(8, hidden_size=8, depth=2), Denoiser()
    core = make_core(net, den, TrainConfig(device="cpu", compile=True))
    graph = core.loss_graph._orig_mod                        # the whole loss but the draws, compiled
    assert isinstance(graph, LossGraph) and graph.net is net and graph.denoiser is den
    assert core.net is net and core.model is net             # the optimiser and the EMAs see the net itself
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert make_core(net, den, TrainConfig(device="cpu")).loss_graph is None


def test_draw_then_loss_given_is_the_eager_loss():
    """The split a compiled run uses draws t, eps, dropped labels in the eager order: the same losses."""
    den = Denoiser(pred="eps", loss="v", num_classes=3, label_drop=0.5)
    net = lambda z, t, y: z * t[:, None] + y[:, None].float()
    x, y = torch.randn(16, 4), torch.arange(16) % 3
    eager = den.loss_per_sample(net, x, y, generator=torch.Generator().manual_seed(3))
    t, eps, y_net = den.draw(x, y, torch.Generator().manual_seed(3))
    assert (y_net == 3).any() and torch.equal(LossGraph(net, den)(x, t, eps, y_net, y)["loss"], eager)


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


@pytest.mark.parametrize("precision, compile_, fused", [("fp32", False, False), ("bf16", False, True),
                                                       ("fp32", True, True)])
def test_the_fast_mode_steps_with_the_fused_adamw(precision, compile_, fused, monkeypatch, tmp_path):
    """fp32 eager keeps torch's default AdamW (the committed tables' numbers); bf16 or compile on the CPU
    take the fused one, whose update agrees with it to float tolerance."""
    if precision == "bf16" and not dev.native_bf16():
        pytest.skip("this CPU has no native bf16")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    core = make_core(MLP(8, hidden_size=8, depth=2), Denoiser(),
                     TrainConfig(device="cpu", precision=precision, compile=compile_))
    assert bool(core.optimizer.defaults.get("fused")) is fused
    from manifold_lab.train.core import make_optimizer
    nets = [MLP(8, hidden_size=16, depth=2) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [make_optimizer(n, lr=1e-2, weight_decay=0.1, fused=f) for n, f in zip(nets, (None, True))]
    for _ in range(5):
        for n, o in zip(nets, opts):
            g = torch.Generator().manual_seed(0)
            for p in n.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            o.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_study_asking_for_bf16_on_a_cpu_without_it_is_one_line_before_anything(monkeypatch, tmp_path, capsys):
    from manifold_lab.cli import main

    monkeypatch.setattr(dev, "native_bf16", lambda: False)
    monkeypatch.chdir(ROOT)
    out = tmp_path / "results"
    assert main(["study", "studies/toy_fig2.yaml", "--results-dir", str(out), "--set", "precision=bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "point D0002-spiral-d2-mlp-w256-xpred-vloss-s0" in err[0] and "native bf16" in err[0]
    assert not out.exists()
    # --plan still estimates (for a machine with bf16, e.g. a SLURM node) and says a local run would stop
    assert main(["study", "studies/toy_fig2.yaml", "--results-dir", str(out), "--set", "precision=bf16", "--plan"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("plan for study toy_fig2") and "total: ~" in cap.out
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: a local run of it stops") and "native bf16" in err[0]
    assert not out.exists()
    assert main(["study", "studies/toy_fig2.yaml", "--results-dir", str(out), "--plan"]) == 0
    assert "warning" not in capsys.readouterr().err
    # a setting this machine would run (or a check of the config's own) is no warning about this machine
    assert main(["study", "studies/toy_fig2.yaml", "--results-dir", str(out), "--plan", "--set", "lr=-1"]) == 0
    assert "on this machine" not in capsys.readouterr().err


def test_a_compiled_image_run_on_the_cpu_takes_the_fused_layout(monkeypatch):
    """compile on the CPU: the JiT's patch I/O as matmuls and the attention written out (what inductor fuses
    well there); eager, or on CUDA: the paper's layout (the committed tables' numbers)."""
    from manifold_lab import image_study
    from manifold_lab.image_study import ImageConfig, make_net
    from manifold_lab.nets.layers import Attention

    def layout(**kw):
        net = make_net(ImageConfig(depth=1, **kw))
        return net.patch_io, {m.impl for m in net.modules() if isinstance(m, Attention)}

    assert layout(device="cpu") == ("conv", {"sdpa"})
    assert layout(device="cpu", compile=True) == ("matmul", {"math"})
    eager, comp = make_net(ImageConfig(device="cpu")), make_net(ImageConfig(device="cpu", compile=True))
    for a, b in zip(eager.state_dict().values(), comp.state_dict().values()):
        assert torch.equal(a, b)                                       # the same initial weights
    monkeypatch.setattr(image_study, "resolve_device", lambda name: torch.device("cuda"))
    assert layout(device="auto", compile=True) == ("conv", {"sdpa"})  # a run for CUDA keeps the fused kernels


@pytest.mark.slow
def test_compiled_image_steps_match_eager(tmp_path, monkeypatch):
    """A few training steps of the image study's JiT compiled (the fused CPU layout) against eager (the
    paper's layout): losses and weights within float tolerance."""
    from manifold_lab.image_study import ImageConfig, make_net

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def run(compile_: bool):
        cfg = ImageConfig(device="cpu", precision="fp32", compile=compile_, depth=2, batch_size=32, steps=4)
        net = make_net(cfg)
        res = train(net, Denoiser(), lambda b, g: (x[torch.randint(0, 64, (b,), generator=g)], None),
                    cfg.train_config(), progress=False)
        return res.curve.loss.tolist(), list(net.parameters()), net.patch_io

    (eager, w_eager, io_e), (comp, w_comp, io_c) = run(False), run(True)
    assert (io_e, io_c) == ("conv", "matmul")
    assert comp == pytest.approx(eager, rel=1e-4, abs=1e-6)
    for a, b in zip(w_eager, w_comp):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
