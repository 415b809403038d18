"""The toy command-line contract, the trainer's repeatability, and a short run that learns."""
import argparse
import dataclasses
import json
import subprocess
import sys
from contextlib import nullcontext as _nullcontext

import numpy as np
import pytest
import torch

from manifold_lab.checks import ConfigError
from manifold_lab.cli import build_parser, main
from manifold_lab.config import field_default, flag
from manifold_lab.denoiser import Denoiser
from manifold_lab.nets.mlp import MLP
from manifold_lab.toy import ToyConfig
from manifold_lab.train.loop import NonFiniteLossError, TrainConfig, train


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "manifold_lab", *args], capture_output=True, text=True, **kw)


def test_toy_cli_writes_the_contract(tmp_path):
    out = tmp_path / "run"
    r = cli("toy", "--dist", "spiral", "--d", "2", "--D", "16", "--pred", "x", "--loss", "v", "--steps", "30",
            "--seed", "1", "--n-samples", "200", "--sample-steps", "5", "--ema-decays", "[0.9, 0.5]",
            "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    with np.load(out / "samples.npz") as f:
        assert f["samples"].shape == (200, 16) and f["P"].shape == (16, 2) and f["reference"].shape[1] == 2
        assert f["reference"].shape[0] >= 10_000
        np.testing.assert_allclose(f["P"].T @ f["P"], np.eye(2), atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"energy_distance", "nn_dist", "nn_dist_ref", "off_manifold"} <= set(metrics)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["D"] == 16 and cfg["seed"] == 1 and cfg["steps"] == 30 and cfg["ema_decays"] == [0.9, 0.5]
    assert (out / "curve.csv").read_text().startswith("step,loss,lr")


def _toy_parser():
    parser = build_parser("toy")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["toy"]


def test_toy_parser_has_a_flag_per_config_field_with_its_default():
    """The parser itself, not its help text: one flag per ToyConfig field, its help stating the field's real
    default, and the run flags; nothing else but -h and the refusals of old spellings."""
    toy = _toy_parser()
    by_flag = {o: a for a in toy._actions for o in a.option_strings}
    fields = {flag(f.name): f for f in dataclasses.fields(ToyConfig)}
    for name, f in fields.items():
        action = by_flag.get(name)
        assert action is not None, f"no flag {name} for ToyConfig.{f.name}"
        assert action.dest == f"cfg_{f.name}" and action.default is None, name
        assert action.help.endswith(f"(default: {field_default(f)!r})".replace("%", "%%")) or \
            action.help.endswith(f"(default: {field_default(f)})"), (name, action.help)
    assert by_flag["--out"].required and by_flag["--threads"].default == 0
    assert isinstance(by_flag["--no-progress"], argparse._StoreTrueAction)
    others = {o for o in by_flag if o not in fields} - {"-h", "--help", "--out", "--threads", "--no-progress"}
    assert all(by_flag[o].dest.startswith("_renamed_") for o in others), others
    args = toy.parse_args(["--D", "16", "--dist", "spiral", "--out", "x"])
    assert (args.cfg_D, args.cfg_dist, args.cfg_pred, args.out) == ("16", "spiral", None, "x")


@pytest.mark.parametrize("args,msg", [
    (["--D", "1", "--d", "2"], "D=1 is smaller than d=2"),
    (["--pred", "score"], "unknown prediction target 'score'; allowed: x, eps, v"),
    (["--loss", "y"], "unknown loss space 'y'; allowed: x, eps, v"),
    (["--dist", "banana"], "unknown distribution 'banana'; allowed: spiral"),
    (["--steps", "0"], "steps must be a positive integer, got 0"),
    (["--device", "gpu"], "unknown device 'gpu'; allowed: auto, cpu, cuda, cuda:N"),
    (["--width", "64"], "--width was renamed --hidden-size"),
    (["--batch", "64"], "--batch was renamed --batch-size"),
    (["--n_samples", "64"], "--n_samples was renamed --n-samples"),
    (["--ema", "0.9"], "--ema was renamed --ema-decays"),
    (["--hidden", "64"], "unrecognized arguments: --hidden 64"),   # no silent abbreviation of a flag
])
def test_toy_cli_bad_input_is_one_line(tmp_path, capsys, args, msg):
    with pytest.raises(SystemExit) if msg.startswith("unrecognized") else _nullcontext():
        assert main(["toy", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert msg in err
    assert len(err.strip().splitlines()) == 1 or msg.startswith("unrecognized")   # argparse adds its usage


def _toy_batches(b, g):
    x = torch.randn(b, 2, generator=g) * 0.1 + torch.tensor([1.0, -1.0])
    return torch.cat([x, torch.zeros(b, 6)], 1), None


def test_training_is_bitwise_repeatable_and_learns():
    def once():
        torch.manual_seed(0)
        return train(MLP(8, hidden_size=64, depth=3), Denoiser("x", "v"), _toy_batches,
                     TrainConfig(steps=200, batch_size=128, lr=2e-3), progress=False)
    a, b = once(), once()
    assert a.curve["loss"].tolist() == b.curve["loss"].tolist()
    assert a.curve["loss"].iloc[-20:].mean() < 0.2 * a.curve["loss"].iloc[:20].mean()


def test_nan_loss_names_the_step():
    def bad(b, g):
        return torch.full((b, 4), float("nan")), None
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 0"):
        train(MLP(4, hidden_size=8, depth=2), Denoiser(), bad, TrainConfig(steps=3, batch_size=4), progress=False)


def test_config_checks():
    with pytest.raises(ConfigError, match="n_reference must be >= 10000"):
        ToyConfig(n_reference=10)
