"""Real torch.distributed: two gloo processes launched by torchrun train a tiny JiT and checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from imagenet_helpers import make_image_folder

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes_gloo(tmp_path):
    data = make_image_folder(tmp_path / "train", classes=3, per_class=6)
    out = tmp_path / "run"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "manifold_lab", "train",
           "--config", str(ROOT / "configs/jit_tiny_cpu.yaml"), "--data-path", str(data),
           "--output-dir", str(out), "--batch-size", "2", "--accum-steps", "2", "--max-steps", "3",
           "--threads", "1"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es) on cpu" in proc.stdout and "global batch 8" in proc.stdout
    state = torch.load(out / "checkpoint-last.pth", weights_only=True)
    assert state["step"] == 3 and len(state["rng"]) == 2                 # every rank's random streams
    g0, g1 = (r["generator"] for r in state["rng"])
    assert not torch.equal(g0, g1)                                         # per-rank seeds
    log = (out / "log.csv").read_text().splitlines()
    assert len(log) == 4                                                   # rank 0 alone writes
    print(f"torchrun 2-process run: {wall:.1f} s")

    # class-balanced sampling split across the two ranks gives the single-process samples
    samples = tmp_path / "samples"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "manifold_lab", "sample", "--checkpoint",
           str(out), "--n-samples", "6", "--sample-steps", "2", "--cfg-scale", "2.0", "--batch-size", "2", "--out",
           str(samples), "--format", "both", "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"loaded ema1 weights from {out / 'checkpoint-last.pth'}" in proc.stdout
    from manifold_lab.evaluate.generate import generate_samples, load_for_sampling
    net, den, cfg, _ = load_for_sampling(str(out), "ema1")
    from manifold_lab.sample import SamplingConfig
    single = generate_samples(net, den, SamplingConfig(n_samples=6, cfg_scale=2.0, sample_steps=2, batch_size=4),
                              out_dir=tmp_path / "single", img_size=16, num_classes=3, fmt="npz", progress=False)
    with np.load(samples / "samples.npz") as a, np.load(single / "samples.npz") as b:
        assert a["arr_0"].shape == (6, 16, 16, 3) and a["labels"].tolist() == [0, 0, 1, 1, 2, 2]
        assert np.abs(a["arr_0"].astype(int) - b["arr_0"].astype(int)).max() <= 1
    assert len(list(samples.glob("*.png"))) == 6
