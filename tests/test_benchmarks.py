"""The benchmark suite (python -m benchmarks): every subject's --cpu-smoke path, the result schema and compare."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as bench
from benchmarks import _harness as H
from manifold_lab.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "benchmarks", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def step_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("step")
    p = _cli("step", "--cpu-smoke", "--out", out)   # the command line itself, once
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return out / "step.json", p.stdout


def test_step_cpu_smoke_writes_one_schema(step_result):
    path, stdout = step_result
    res = json.loads(path.read_text())
    assert res["schema"] == H.SCHEMA and res["subject"] == "step"
    env = res["env"]
    assert env["device"] == "cpu" and env["threads"] >= 1 and env["torch"] and len(env["load_avg"]) == 3
    assert isinstance(env["native_bf16"], bool) and env["native_bf16"] == bool({"amx_bf16", "avx512_bf16"}
                                                                               & set(env["cpu_flags"]))
    cfg, fig = res["config"], res["figures"]
    assert cfg["modes"] == ["fp32", "auto"] and cfg["net"] == "tiny"
    assert cfg["lr"] == load_config(ROOT / "configs/jit_tiny_cpu.yaml", {"batch_size": 4}).resolved_lr(1)
    assert fig["matmul_flops"] > 0 and fig["fp32"]["speedup"] == 1.0
    for mode in cfg["modes"]:
        f = fig[mode]
        assert 0 < f["step_ms_min"] <= f["step_ms"] <= f["step_ms_max"]
        assert f["useful_flops"] == pytest.approx(6 * cfg["fwd_macs_per_sample"] * 4 / (f["step_ms"] / 1e3))
        assert sum(f["profile"]["groups"].values()) == pytest.approx(1.0)
        assert {"matmul", "optimizer"} <= set(f["profile"]["groups"])
    assert "fp32" in stdout and "wrote" in stdout


def test_compare_prints_ratios(step_result, tmp_path, capsys):
    path, _ = step_result
    res = json.loads(path.read_text())
    res["figures"]["fp32"]["step_ms"] *= 2
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(res))
    assert bench.main(["compare", str(path), str(slower)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert next(ln for ln in lines if ln.startswith("fp32.step_ms ")).split()[-1] == "2.000"
    assert next(ln for ln in lines if ln.startswith("auto.step_ms ")).split()[-1] == "1.000"


def test_compare_refuses_unlike_results(step_result, tmp_path, capsys):
    path, _ = step_result
    res = json.loads(path.read_text())
    other = tmp_path / "fwd.json"
    other.write_text(json.dumps({**res, "subject": "forward"}))
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    for b in (other, junk):
        assert bench.main(["compare", str(path), str(b)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and str(b) in err[0]


def test_bad_mode_is_one_line(tmp_path, capsys):
    assert bench.main(["step", "--net", "tiny", "--modes", "fp16", "--device", "cpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: unknown mode 'fp16'") and "allowed" in err


def test_forward_cpu_smoke_with_sampling(tmp_path):
    assert bench.main(["forward", "--cpu-smoke", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "forward.json").read_text())
    f = res["figures"]
    assert f["fp32"]["forward_ms"] > 0 and f["fp32"]["share_of_matmul"] > 0
    assert f["sample"]["sample_finite"] and f["sample"]["sample_images_per_s"] > 0


def test_loader_cpu_smoke(tmp_path):
    assert bench.main(["loader", "--cpu-smoke", "--out", str(tmp_path), "--name", "ld"]) == 0
    f = json.loads((tmp_path / "ld.json").read_text())["figures"]
    assert f["data"]["jpeg"]["images"] == 6 and f["data"]["png"]["format"] == "png"
    assert all(r[0]["images_per_s"] > 0 for r in f["loader"].values())


def test_trainer_cpu_smoke_writes_no_checkpoint(tmp_path):
    assert bench.main(["trainer", "--cpu-smoke", "--out", str(tmp_path)]) == 0
    f = json.loads((tmp_path / "trainer.json").read_text())["figures"]
    for path in ("imagefolder", "shards"):
        t = f["paths"][path]["trainer"]
        assert t["steps"] == 6 == len(t["losses"]) and t["checkpoints_written"] == 0 and t["images_per_s"] > 0
        assert f["paths"][path]["loader_alone"]["images_per_s"] > 0
    assert f["max_abs_loss_diff"] == 0          # the same items on both paths, bit for bit


def test_save_checkpoints_off_refuses_stop_at_step():
    from manifold_lab.checks import ConfigError
    with pytest.raises(ConfigError, match="stop_at_step needs a checkpoint"):
        load_config(ROOT / "configs/jit_tiny_cpu.yaml", {"save_checkpoints": False, "stop_at_step": 3})
    assert load_config(ROOT / "configs/jit_tiny_cpu.yaml", {"save_checkpoints": False}).save_checkpoints is False
