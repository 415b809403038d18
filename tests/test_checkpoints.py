"""Checkpoints: the official JiT layout read and written, safe loading, damaged files, resume fallback, and
FID statistics the official evaluation can read. Tiny networks on the CPU."""
from __future__ import annotations

import argparse
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from imagenet_helpers import TINY_MODEL_ARGS, make_image_folder, tiny_overrides
from PIL import Image

from manifold_lab.checks import ConfigError
from manifold_lab.cli import main
from manifold_lab.evaluate.generate import load_for_sampling, sample_noise
from manifold_lab.nets import jit as jit_mod
from manifold_lab.sample import guided_velocity, sample_ode
from manifold_lab.train import checkpoint as ckpt_mod
from manifold_lab.train import export as export_mod
from manifold_lab.train import official
from manifold_lab.train.build import build_model
from manifold_lab.train.config import ImageNetConfig, load_config
from manifold_lab.train.imagenet import read_log, train

TINY = "JiT-T/4"   # a tiny paper-style model name registered for these tests (the official args name a model)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run: 2 epochs of 3 steps, checkpoint-0001/0002 kept, then stopped at step 7."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ck")
    data = make_image_folder(root / "train")
    extra = dict(epochs=3, keep_every_epochs=1)
    full = train(load_config(None, tiny_overrides(data, root / "full", **extra)))
    train(load_config(None, tiny_overrides(data, root / "run", stop_at_step=7, **extra)))
    return {"root": root, "data": data, "full": full, "extra": extra}


@pytest.fixture
def tiny_name(monkeypatch):
    monkeypatch.setitem(jit_mod.JiT_models, TINY, lambda **kw: jit_mod.JiT(**{**TINY_MODEL_ARGS, **kw}))
    return TINY


def _same(a, b) -> bool:
    """Deep equality with tensors compared bit for bit (dtype, shape, values) and dict key order."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _one_error_line(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert all(n in err for n in needles), err
    return err


# ---- the official layout -----------------------------------------------------------------------------------
def test_official_key_order_of_b16_matches_the_official_list():
    """Key order and optimiser groups of a JiT-B/16 (meta device) as the official code lists them."""
    with torch.device("meta"):
        net = jit_mod.build_jit("JiT-B/16")
    block = ["norm1.weight", "attn.q_norm.weight", "attn.k_norm.weight", "attn.qkv.weight", "attn.qkv.bias",
             "attn.proj.weight", "attn.proj.bias", "norm2.weight", "mlp.w12.weight", "mlp.w12.bias",
             "mlp.w3.weight", "mlp.w3.bias", "adaLN_modulation.1.weight", "adaLN_modulation.1.bias"]
    expected = ["pos_embed", "in_context_posemb", "t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias",
                "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias", "y_embedder.embedding_table.weight",
                "x_embedder.proj1.weight", "x_embedder.proj2.weight", "x_embedder.proj2.bias"] + \
        [f"blocks.{i}.{k}" for i in range(12) for k in block] + \
        ["final_layer." + k for k in ("norm_final.weight", "linear.weight", "linear.bias",
                                      "adaLN_modulation.1.weight", "adaLN_modulation.1.bias")]
    assert official.official_order(list(net.state_dict())) == expected and len(expected) == 183
    no_decay, decay = official.official_groups(net)
    assert (len(no_decay), len(decay)) == (114, 68) and "pos_embed" not in no_decay + decay
    assert no_decay[:4] == ["t_embedder.mlp.0.bias", "t_embedder.mlp.2.bias", "x_embedder.proj2.bias",
                            "blocks.0.norm1.weight"] and decay[0] == "in_context_posemb"


def test_variant_inferred_from_shapes_without_args():
    with torch.device("meta"):
        sd = jit_mod.build_jit("JiT-B/32", img_size=512).state_dict()
    values, notes = official.infer_from_shapes(sd)
    assert (values["model"], values["img_size"], values["num_classes"]) == ("JiT-B/32", 512, 1000)
    assert "inferred from tensor shapes" in notes[0] and "noise scale 2" in notes[0]


def _random_weights(cfg, seed):
    torch.manual_seed(seed)
    net = build_model(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)          # the zero-initialised layers too: a non-trivial net
    return net


def _official_file(path, nets, args: argparse.Namespace | None):
    """Write what LTH14/JiT's save_model writes: model / EMAs under 'net.', the EMAs as nn.Parameters,
    AdamW over [no_decay, decay] after one step, the 0-based epoch and the argparse Namespace."""
    model = nets[0]
    opt_groups = official.official_groups(model)
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [params[n] for n in opt_groups[0]], "weight_decay": 0.0},
                             {"params": [params[n] for n in opt_groups[1]], "weight_decay": 0.0}],
                            lr=2e-4, betas=(0.9, 0.95))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    order = official.official_order(list(model.state_dict()))
    sds = [n.state_dict() for n in nets]
    obj = {"model": {"net." + k: sds[0][k] for k in order}, "optimizer": opt.state_dict(), "epoch": 7}
    if args is not None:
        obj["args"] = args
    for i in (1, 2):
        obj[f"model_ema{i}"] = {"net." + k: torch.nn.Parameter(sds[i][k].clone(), requires_grad=k != "pos_embed")
                                for k in order}
    torch.save(obj, path)
    return opt


def test_official_layout_samples_bit_identical_to_ours(tiny_name, tmp_path, capsys):
    cfg = ImageNetConfig(model=tiny_name, img_size=16, num_classes=3, noise_scale=1.5, p_mean=-0.6,
                         label_drop=0.2, ema_decays=[0.9999, 0.9996], model_args={"attn_drop": 0.0, "proj_drop": 0.1})
    nets = [_random_weights(cfg, s) for s in (0, 1, 2)]
    args = argparse.Namespace(**dict(official.OFFICIAL_ARGS, model=tiny_name, img_size=16, class_num=3,
                                     noise_scale=1.5, P_mean=-0.6, label_drop_prob=0.2, proj_dropout=0.1,
                                     cfg=2.9, interval_min=0.1, epochs=600, lr=2e-4, distributed=True, gpu=0))
    _official_file(tmp_path / "official.pth", nets, args)
    ours_opt = torch.optim.AdamW(nets[0].parameters())
    ckpt_mod.save_checkpoint(tmp_path / "ours.pth", state={"model": nets[0].state_dict(), "optimizer":
                             ours_opt.state_dict(), "ema": {"0.9999": nets[1].state_dict(),
                                                             "0.9996": nets[2].state_dict()}},
                             step=0, epoch=0, step_in_epoch=0, rng=[], config=cfg.to_dict())
    state, _ = ckpt_mod.load_checkpoint(tmp_path / "official.pth")
    c = state["config"]
    assert (c["model"], c["img_size"], c["num_classes"], c["noise_scale"], c["p_mean"], c["label_drop"],
            c["epochs"], c["ema_decays"], c["model_args"]) == \
        (tiny_name, 16, 3, 1.5, -0.6, 0.2, 600, [0.9999, 0.9996], {"attn_drop": 0.0, "proj_drop": 0.1})
    assert state["meta"]["sampling"] == {"cfg": 2.9, "sample_steps": 50, "solver": "heun", "interval": [0.1, 1.0]}
    assert state["epoch"] == 8 and len(state["optimizer"]["state"]) == len(list(nets[0].parameters()))
    for which, i in (("model", 0), ("ema1", 1), ("ema2", 2), ("0.9996", 2)):
        assert _same(ckpt_mod.weights_from_checkpoint(state, which), nets[i].state_dict())
    for which in ("ema1", "ema2", "model"):                                   # bit-equal float samples
        outs = []
        for f in ("official.pth", "ours.pth"):
            net, den, _, _ = load_for_sampling(str(tmp_path / f), which)
            z0 = sample_noise(range(4), (3, 16, 16), den.noise_scale, seed=0)
            fn = guided_velocity(den, net, torch.tensor([0, 1, 2, 0]), cfg_scale=2.0, interval=(0.1, 1.0))
            outs.append(sample_ode(fn, z0, steps=3))
        assert torch.equal(outs[0], outs[1]) and outs[0].abs().max() > 0
    for f in ("official", "ours"):                                            # and through the CLI
        assert main(["sample", "--checkpoint", str(tmp_path / f"{f}.pth"), "--n-samples", "3", "--cfg-scale", "2.9",
                     "--sample-steps", "3", "--out", str(tmp_path / f"s_{f}"), "--no-progress"]) == 0
    for i in range(3):
        a, b = (np.asarray(Image.open(tmp_path / f"s_{f}" / f"{i:06d}.png")) for f in ("official", "ours"))
        assert np.array_equal(a, b)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "official.pth"), "--n-samples", "1", "--sample-steps",
                 "2", "--out", str(tmp_path / "s2"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"loaded ema1 weights from {tmp_path / 'official.pth'} (decay 0.9999; official JiT checkpoint: " \
        "model_ema1, epoch 7 finished)" in out and "cfg_scale 2.9 (checkpoint)" in out


def test_official_file_without_args_or_optimizer(tiny_name, tmp_path):
    """Released files may lack args / optimizer / epoch: the net comes from the shapes (B sizes only)."""
    cfg = ImageNetConfig(model=tiny_name, img_size=16, num_classes=3)
    nets = [_random_weights(cfg, s) for s in (0, 1, 2)]
    _official_file(tmp_path / "noargs.pth", nets, None)
    with pytest.raises(ckpt_mod.CheckpointError, match="match no JiT model"):   # tiny sizes are no paper model
        ckpt_mod.load_checkpoint(tmp_path / "noargs.pth")


def test_export_import_round_trip_is_bit_identical(run, tmp_path, capsys):
    src = run["root"] / "run" / ckpt_mod.LAST
    assert main(["export", "--checkpoint", str(run["root"] / "run"), "--format", "official",
                 "--out", str(tmp_path / "off")]) == 0
    assert "official JiT layout" in capsys.readouterr().out
    f = tmp_path / "off" / ckpt_mod.LAST
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = torch.load(f, map_location="cpu", weights_only=True)
    ours = torch.load(src, map_location="cpu", weights_only=True)             # ours needs no extra global
    assert list(raw) == ["model", "optimizer", "epoch", "args", "model_ema1", "model_ema2"]
    order = ["net." + k for k in official.official_order(list(ours["model"]))]
    assert list(raw["model"]) == list(raw["model_ema1"]) == list(raw["model_ema2"]) == order
    assert isinstance(raw["args"], argparse.Namespace) and set(official.OFFICIAL_ARGS) <= set(vars(raw["args"]))
    assert raw["epoch"] == ours["epoch"] - 1 == 1 and raw["args"].class_num == 3 and raw["args"].img_size == 16
    with torch.device("meta"):
        net = build_model(load_config(None, tiny_overrides(run["data"], tmp_path)))
    groups = official.official_groups(net)
    assert [len(g["params"]) for g in raw["optimizer"]["param_groups"]] == [len(g) for g in groups]
    ours_names = [n for g in official.our_groups(net) for n in g]              # our index -> name
    for off_idx, name in enumerate(groups[0] + groups[1]):
        assert _same(raw["optimizer"]["state"][off_idx], ours["optimizer"]["state"][ours_names.index(name)])
    assert main(["export", "--checkpoint", str(f), "--format", "ours", "--out", str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", map_location="cpu", weights_only=True)
    assert _same(back, ours)


# ---- safe loading, damaged files ---------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_on_load_is_refused(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    torch.save({"model": _Evil(marker)}, tmp_path / "evil.pth")              # torch zip, GLOBAL posix.system
    with open(tmp_path / "evil.pkl", "wb") as fh:                            # a plain pickle
        pickle.dump({"model": _Evil(marker)}, fh)
    torch.save({"model": {"w": torch.ones(1)}, "path": Path("/etc")}, tmp_path / "other.pth")  # another class
    for name, needle in (("evil.pth", "system"), ("evil.pkl", "refused"), ("other.pth", "Path")):
        assert main(["sample", "--checkpoint", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        _one_error_line(capsys, str(tmp_path / name), "refused", needle)
    assert not marker.exists()


def _corrupt(data: bytes, rng: random.Random, kind: str) -> bytes:
    if kind == "truncate":
        return data[:rng.randrange(len(data))]
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def test_twenty_random_corruptions_each_give_one_line(run, tmp_path, capsys):
    data = (run["root"] / "run" / ckpt_mod.LAST).read_bytes()
    rng = random.Random(20)
    reasons = []
    for k in range(20):
        bad = tmp_path / f"bad{k:02d}.pth"
        bad.write_bytes(_corrupt(data, rng, "truncate" if k % 2 else "flip"))
        assert main(["sample", "--checkpoint", str(bad), "--n-samples", "1", "--out", str(tmp_path / "o")]) == 2
        reasons.append(_one_error_line(capsys, str(bad)))
    assert not (tmp_path / "o").exists()
    print("\n".join(reasons))


def test_unsealed_zip_is_checked_by_crc(tmp_path):
    """Files not written by us (the official ones) carry no SHA-256: a changed tensor byte fails its CRC-32."""
    import zipfile

    torch.save({"model": {"net.w": torch.arange(64.0)}, "model_ema1": {}, "model_ema2": {}}, tmp_path / "u.pth")
    with zipfile.ZipFile(tmp_path / "u.pth") as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data/0"))
    data = bytearray((tmp_path / "u.pth").read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len                    # the tensor's bytes
    data[start + 5] ^= 0x10
    (tmp_path / "v.pth").write_bytes(bytes(data))
    with pytest.raises(ckpt_mod.CheckpointError, match="CRC"):
        ckpt_mod.read_checkpoint_file(tmp_path / "v.pth")


def test_resume_falls_back_past_a_damaged_last_checkpoint(run, tmp_path, capsys):
    import shutil

    from manifold_lab.train import distributed as dist_mod
    from manifold_lab.train.imagenet import ImageNetRun

    out = tmp_path / "run"
    shutil.copytree(run["root"] / "run", out)
    last = out / ckpt_mod.LAST
    bad = last.read_bytes()[:-1000]                                           # truncated at step 7
    last.write_bytes(bad)
    cfg = load_config(None, tiny_overrides(run["data"], out, resume=str(out), **run["extra"]))
    r = ImageNetRun(cfg, dist_mod.setup("cpu"))
    printed = capsys.readouterr().out
    assert f"warning: checkpoint {last} is damaged" in printed
    assert f"resumed from {out / 'checkpoint-0002.pth'} (step 6" in printed
    assert last.read_bytes() == bad                                           # untouched until a good save
    rest = r.run()
    full = run["full"]["losses"]
    assert [v for _, v in rest["losses"]] == [v for s, v in full if s > 6]    # continues bit for bit
    assert read_log(out / "log.csv").loss.tolist() == read_log(run["root"] / "full" / "log.csv").loss.tolist()
    assert ckpt_mod.load_checkpoint(out)[0]["step"] == 9                     # replaced by a good one


def test_init_from_official_starts_a_new_run(run, tmp_path, capsys):
    off = tmp_path / "off.pth"
    export_mod.export(str(run["root"] / "run"), "official", str(off))
    source, _ = ckpt_mod.load_checkpoint(off)
    from manifold_lab.train import distributed as dist_mod
    from manifold_lab.train.imagenet import ImageNetRun

    cfg = load_config(None, tiny_overrides(run["data"], tmp_path / "ft", init_from=str(off), init_ema="ema2",
                                           max_steps=1))
    r = ImageNetRun(cfg, dist_mod.setup("cpu"))
    assert f"initialised with ema2 weights from {off} (decay 0.5; official JiT checkpoint: model_ema2, epoch 1 " \
        "finished)" in capsys.readouterr().out
    assert r.pos.step == 0 and not r.core.optimizer.state
    assert _same(r.core.net.state_dict(), source["ema"]["0.5"])
    assert all(_same(e.state_dict(), source["ema"]["0.5"]) for e in r.core.emas.values())
    assert r.run()["step"] == 1
    argv = ["train", "--config", str(Path(__file__).resolve().parents[1] / "configs/jit_tiny_cpu.yaml"),
            "--data-path", str(run["data"]), "--output-dir", str(tmp_path / "mm"), "--init-from", str(off),
            "--model-args", '{"patch_size": 4, "hidden_size": 16, "depth": 2, "num_heads": 2, "bottleneck_dim": 8, '
            '"in_context_len": 4, "in_context_start": 1}']
    assert main(argv) == 2
    _one_error_line(capsys, "do not fit the configured network", str(off))
    with pytest.raises(ckpt_mod.CheckpointError, match="--init-from"):
        ckpt_mod.load_for_resume(off)


# ---- FID statistics ---------------------------------------------------------------------------------------
def test_prepare_ref_output_reads_like_the_official_stats(run, tmp_path):
    """Our prepare-ref npz, read the way LTH14's torch-fidelity reads fid_stats/*.npz (np.load(f)['mu'],
    ['sigma'], then fid_statistics_to_metric's dtype and shape asserts), and an official-style file (mu and
    sigma only) accepted by our fid."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from manifold_lab.evaluate import fid as fid_mod
    from manifold_lab.evaluate import ref_stats

    ref = tmp_path / "ref.npz"
    assert main(["prepare-ref", "--data-path", str(run["data"]), "--img-size", "16", "--out", str(ref),
                 "--feature-extractor", "tiny"]) == 0
    stats2 = {"mu": np.load(ref)["mu"], "sigma": np.load(ref)["sigma"]}      # the fork's metrics.py:98
    assert stats2["mu"].dtype == np.float32 and stats2["sigma"].dtype == np.float64
    assert stats2["sigma"].shape == (stats2["mu"].shape[0],) * 2
    feats = torch.randn(40, stats2["mu"].shape[0])                            # float32, as the extractor gives
    fid = fid_statistics_to_metric(fid_features_to_statistics(feats), stats2, False)["frechet_inception_distance"]
    assert np.isfinite(fid)
    np.savez(tmp_path / "official_style.npz", **stats2)                      # mu / sigma only
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            folder / f"{i:05d}.png")
    a = fid_mod.evaluate_folder(folder, ref, kind="tiny")
    b = fid_mod.evaluate_folder(folder, tmp_path / "official_style.npz", kind="tiny")
    assert a["fid"] == b["fid"]
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3), sigma=np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="need a finite mu"):
        ref_stats.load_ref_stats(tmp_path / "bad.npz")


def test_ema_index_is_the_one_emaN_parser():
    assert [ckpt_mod.ema_index(w) for w in ("ema1", "ema2", "ema12", "model", "0.9999", "ema", "emax")] == \
        [1, 2, 12, None, None, None, None]
    state = {"model": {"w": torch.zeros(1)}, "ema": {"0.9": {"w": torch.ones(1)}, "0.5": {"w": torch.full((1,), 2.0)}}}
    assert ckpt_mod.weights_from_checkpoint(state, "ema2")["w"].item() == 2.0
    assert ckpt_mod.weights_from_checkpoint(state, "0.9")["w"].item() == 1.0
    with pytest.raises(ConfigError, match="'ema3' does not exist"):
        ckpt_mod.weights_from_checkpoint(state, "ema3")
