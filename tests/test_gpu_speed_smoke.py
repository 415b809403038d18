"""benchmarks/gpu_speed.py --cpu-smoke: every code path of the GPU speed report (rates, generated data,
prepare-data, the loader alone, the training core, the profiler summary, the trainer through both data
paths) on the CPU with the tiny JiT, in one subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_speed_cpu_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_speed.py"), "--cpu-smoke", "--out", str(tmp_path),
                        "--work", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_speed.json").read_text())
    assert res["matmul_tflops"] > 0 and res["data"]["shards"]["images"] == res["data"]["jpeg"]["images"]
    assert {k: v["kind"] for k, v in res["loader"].items()} == {"imagefolder": "ImageFolderDataset",
                                                                "shards": "ShardDataset"}
    assert all(v["images_per_s"] > 0 for v in res["loader"].values())
    m = res["models"]["tiny"]
    assert m["core"]["images_per_s"] > 0 and 0 < m["core"]["share_of_matmul"]
    groups = m["profile"]["groups"]
    assert {"matmul", "attention", "optimizer", "EMA"} <= set(groups)
    assert abs(sum(g["share"] for g in groups.values()) - 1) < 1e-6
    for path in ("imagefolder", "shards"):
        t = m["trainer"][path]
        assert t["steps"] == len(t["losses"]) and t["images_per_s"] > 0 and t["measured_steps"] > 0
    assert m["trainer"]["max_abs_loss_diff"] == 0          # the same items on both paths, bit for bit
    assert (tmp_path / "profile_tiny.json").exists() and "largest loss difference" in p.stdout
