"""The full-scale trainer on the CPU: config handling, a tiny run, checkpoints and bit-exact resume."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from imagenet_helpers import TINY_MODEL_ARGS, make_image_folder, tiny_overrides

from manifold_lab.checks import ConfigError
from manifold_lab.train import checkpoint as ckpt_mod
from manifold_lab.train.build import build_model
from manifold_lab.train.config import load_config
from manifold_lab.train.core import LRSchedule
from manifold_lab.train.imagenet import read_log, train

ROOT = Path(__file__).resolve().parents[1]
PAPER_PARAMS_M = {"JiT-B/16": 131.12, "JiT-B/32": 133.19, "JiT-B/64": 141.46, "JiT-L/16": 458.88,
                  "JiT-L/32": 461.53, "JiT-H/16": 952.51, "JiT-H/32": 956.06, "JiT-G/16": 2007.1,
                  "JiT-G/32": 2011.6}



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs") / "train")


# ---- config ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "configs").glob("jit_*_in*.yaml") if p.stem != "jit_b4_in64"),
                         ids=lambda p: p.stem)
def test_paper_configs_carry_the_recipe(path):
    cfg = load_config(path)
    assert (cfg.pred, cfg.loss, cfg.p_mean, cfg.p_std, cfg.t_eps, cfg.label_drop) == ("x", "v", -0.8, 0.8, 0.05, 0.1)
    assert cfg.betas == [0.9, 0.95] and cfg.weight_decay == 0 and cfg.ema_decays == [0.9999, 0.9996]
    assert cfg.resolved_noise_scale == cfg.img_size / 256 and cfg.warmup_epochs == 5
    assert cfg.resolved_lr(world_size=8) == pytest.approx(2e-4)            # 5e-5 * 1024 / 256
    with torch.device("meta"):
        net = build_model(load_config(path, {"compile": False}))
    n = sum(p.numel() for p in net.parameters() if p.requires_grad) / 1e6
    assert n == pytest.approx(PAPER_PARAMS_M[cfg.model], abs=0.06)
    drop = 0.2 if cfg.model[4] in "HG" else 0.0
    assert max(m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)) == drop


def test_b4_at_64px_is_b16s_recipe_with_patch_4():
    """Table 2(b)'s JiT-B/4 at 64 px: no recipe of its own in the paper; the noise scale 1.0 is our choice."""
    cfg, ref = load_config(ROOT / "configs/jit_b4_in64.yaml"), load_config(ROOT / "configs/jit_b16_in256.yaml")
    same = ("pred", "loss", "p_mean", "p_std", "t_eps", "label_drop", "betas", "weight_decay", "ema_decays", "blr",
            "warmup_epochs", "batch_size")
    assert all(getattr(cfg, k) == getattr(ref, k) for k in same)
    assert (cfg.img_size, cfg.model_args, cfg.resolved_noise_scale) == (64, {"patch_size": 4}, 1.0)
    with torch.device("meta"):
        net = build_model(load_config(ROOT / "configs/jit_b4_in64.yaml", {"compile": False}))
    assert net.grid ** 2 == 256 and net.patch_size == 4          # 256 tokens of 48 dimensions, as B/16 at 256


def test_unknown_keys_and_flag_overrides(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: JiT-B/16\nlearning_rate: 1.0\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(bad)
    with pytest.raises(ConfigError, match="warmup"):
        load_config(ROOT / "configs/jit_b16_in256.yaml", {"warmup": 3})
    cfg = load_config(ROOT / "configs/jit_b16_in256.yaml", {"batch_size": 32, "accum_steps": 2})
    assert cfg.global_batch(4) == 256 and cfg.resolved_lr(4) == pytest.approx(5e-5)
    with pytest.raises(ConfigError, match="pred"):
        load_config(None, {"pred": "score"})


def test_cli_flags_override_yaml_and_parse_types():
    import argparse

    from manifold_lab.train import imagenet
    p = argparse.ArgumentParser()
    imagenet.register(p.add_subparsers())
    args = p.parse_args(["train", "--config", str(ROOT / "configs/jit_b16_in256.yaml"), "--epochs", "200",
                         "--model-args", '{"proj_drop": 0.1}', "--unconditional", "true", "--lr", "none"])
    from manifold_lab.config import overrides_from_args
    from manifold_lab.train.config import ImageNetConfig
    cfg = load_config(args.config, overrides_from_args(args, ImageNetConfig))
    assert cfg.epochs == 200 and cfg.model_args == {"proj_drop": 0.1} and cfg.unconditional and cfg.lr is None


@pytest.mark.parametrize("argv,msg", [
    (["--batch", "64"], "--batch was renamed --batch-size"),
    (["--batch_size", "64"], "--batch_size was renamed --batch-size"),
    (["--warmup", "3"], "--warmup was renamed --warmup-epochs"),
    (["--ema-decay", "0.999"], "--ema-decay was renamed --ema-decays"),
    (["--device", "npu"], "unknown device 'npu'"),
])
def test_old_spellings_and_bad_values_are_one_line_errors(argv, msg, capsys, tmp_path):
    from manifold_lab.cli import main
    assert main(["train", "--config", str(ROOT / "configs/jit_tiny_cpu.yaml"), "--data-path", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
    bad = tmp_path / "old.yaml"
    bad.write_text("model: JiT-B/16\nmu: -0.8\n")
    with pytest.raises(ConfigError, match="'mu' was renamed 'p_mean'"):
        load_config(bad)


def test_lr_warmup_then_constant():
    spe = 1251                                             # ImageNet steps per epoch at batch 1024
    lr_at = LRSchedule(2e-4, 5 * spe, 600 * spe)           # the paper: warm-up from 0, then constant
    assert lr_at(0) == 0 and lr_at(int(2.5 * spe)) == pytest.approx(1e-4, rel=1e-3)
    assert lr_at(5 * spe) == lr_at(599 * spe) == 2e-4
    cos = LRSchedule(2e-4, 5 * spe, 600 * spe, "cosine", min_lr=1e-6)
    assert cos(600 * spe) == pytest.approx(1e-6) and cos(5 * spe) == pytest.approx(2e-4)
    small = LRSchedule(1.0, 4, 100, warmup_from_zero=False)   # small runs: the first step already moves
    assert [small(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


# ---- training and checkpoints ------------------------------------------------------------------------
def test_tiny_run_trains_and_checkpoints(data, tmp_path):
    res = train(load_config(None, tiny_overrides(data, tmp_path / "run", epochs=2)))
    assert res["step"] == 6 and all(torch.isfinite(torch.tensor(v)) for _, v in res["losses"])
    state = torch.load(tmp_path / "run" / ckpt_mod.LAST, weights_only=True)
    assert set(state) == {"model", "ema", "optimizer", "step", "epoch", "step_in_epoch", "rng", "config"}
    assert list(state["ema"]) == ["0.9", "0.5"] and state["step"] == 6 and state["epoch"] == 2
    assert state["config"]["model_args"] == TINY_MODEL_ARGS and len(state["rng"]) == 1
    ema, model = state["ema"]["0.9"], state["model"]
    assert any(not torch.equal(ema[k], model[k]) for k in model)           # the EMA lags the model
    log = read_log(tmp_path / "run" / "log.csv")
    assert list(log.step) == list(range(1, 7)) and log.lr.iloc[0] == 0.0
    assert (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_is_bit_identical(data, tmp_path, capsys, accum):
    extra = dict(epochs=3, accum_steps=accum, batch_size=4 // accum,
                 model_args=dict(TINY_MODEL_ARGS, proj_drop=0.2, attn_drop=0.1))  # dropout: global RNG matters
    full = train(load_config(None, tiny_overrides(data, tmp_path / "full", **extra)))
    part = train(load_config(None, tiny_overrides(data, tmp_path / "part", stop_at_step=4, **extra)))
    assert part["stopped"] and part["step"] == 4                           # "killed" mid-epoch 2
    resume_from = tmp_path / "part" if accum == 1 else tmp_path / "part" / ckpt_mod.LAST   # folder or file
    rest = train(load_config(None, tiny_overrides(data, tmp_path / "part", resume=str(resume_from), **extra)))
    assert f"resumed from {tmp_path / 'part' / ckpt_mod.LAST}" in capsys.readouterr().out
    assert [v for _, v in part["losses"] + rest["losses"]] == [v for _, v in full["losses"]]
    a = read_log(tmp_path / "full" / "log.csv")
    b = read_log(tmp_path / "part" / "log.csv")
    assert a.loss.tolist() == b.loss.tolist() and a.lr.tolist() == b.lr.tolist()
    sa = torch.load(tmp_path / "full" / ckpt_mod.LAST, weights_only=True)
    sb = torch.load(tmp_path / "part" / ckpt_mod.LAST, weights_only=True)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k])
        assert torch.equal(sa["ema"]["0.5"][k], sb["ema"]["0.5"][k])


def test_unconditional_run(data, tmp_path):
    res = train(load_config(None, tiny_overrides(data, tmp_path / "u", unconditional=True, max_steps=2)))
    assert res["step"] == 2
    state = torch.load(tmp_path / "u" / ckpt_mod.LAST, weights_only=True)
    assert not any("y_embedder" in k for k in state["model"])


# ---- errors ------------------------------------------------------------------------------------------
def test_resume_errors(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ckpt_mod.resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint-last.pth"):
        train(load_config(None, tiny_overrides(data, tmp_path / "r", resume=str(tmp_path / "empty"))))
    train(load_config(None, tiny_overrides(data, tmp_path / "r", max_steps=1)))
    with pytest.raises(ConfigError, match="--resume"):                    # no silent overwrite / restart
        train(load_config(None, tiny_overrides(data, tmp_path / "r", max_steps=1)))


def test_data_errors_via_cli(tmp_path, capsys):
    from manifold_lab.cli import main
    rc = main(["train", "--config", str(ROOT / "configs/jit_tiny_cpu.yaml"), "--data-path",
               str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    big = make_image_folder(tmp_path / "five", classes=5, per_class=1)
    with pytest.raises(ConfigError, match="5 class folders"):
        train(load_config(None, tiny_overrides(big, tmp_path / "o")))


def test_killed_process_resumes_bit_identically(data, tmp_path):
    """SIGKILL a real `python -m manifold_lab train` process mid-run, resume it, compare with a clean run."""
    import os
    import signal
    import subprocess
    import time

    extra = dict(epochs=200, max_steps=40, model_args=dict(TINY_MODEL_ARGS, proj_drop=0.2))
    ref = train(load_config(None, tiny_overrides(data, tmp_path / "ref", **extra)))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "manifold_lab", "train", "--config", str(ROOT / "configs/jit_tiny_cpu.yaml"),
           "--data-path", str(data), "--output-dir", str(out), "--epochs", "200", "--max-steps", "40",
           "--save-every-steps", "1", "--model-args", json.dumps(dict(TINY_MODEL_ARGS, proj_drop=0.2)),
           "--blr", "0.01", "--ema-decays", "[0.9, 0.5]", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / ckpt_mod.LAST).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    assert rc == -signal.SIGKILL, f"the run ended before it was killed: {proc.stderr.read()[-2000:]}"
    killed_at = torch.load(out / ckpt_mod.LAST, weights_only=True)["step"]
    assert 1 <= killed_at < 40
    rest = train(load_config(None, tiny_overrides(data, out, resume=str(out), **extra)))
    assert rest["losses"][0][0] == killed_at + 1
    assert read_log(out / "log.csv").loss.tolist() == read_log(tmp_path / "ref" / "log.csv").loss.tolist()
    assert [v for _, v in rest["losses"]] == [v for s, v in ref["losses"] if s > killed_at]


def test_tensorboard_logging_needs_the_package(data, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            train(load_config(None, tiny_overrides(data, tmp_path / "tb", log="tensorboard", max_steps=1)))
    else:
        train(load_config(None, tiny_overrides(data, tmp_path / "tb", log="both", max_steps=1)))
        assert any((tmp_path / "tb" / "tb").iterdir())
