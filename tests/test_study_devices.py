"""Several small runs per GPU: local worker slots share the visible GPUs round-robin (logic tested on the
CPU: the kernels only report the CUDA_VISIBLE_DEVICES they were given)."""
from __future__ import annotations

import nbformat
import pytest

from manifold_lab.studies import backends
from manifold_lab.studies.spec import load_study

CODE = """import json, os, pathlib, time
time.sleep(1.0)
with open(log, "a") as f:
    f.write(f"{x} {os.environ.get('CUDA_VISIBLE_DEVICES')} {time.time() - 1.0:.3f} {time.time():.3f}\\n")
pathlib.Path(out_dir, "metrics.json").write_text(json.dumps({"y": x}))"""


def test_worker_slots_share_the_visible_gpus_round_robin(monkeypatch):
    cuda, cpu = [("a", {"device": "cuda"})], [("a", {"device": "cpu"}), ("b", {})]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert backends.gpu_slots(cuda) == ["2", "5"] and backends.gpu_slots(cpu) == []
    assert [backends.slot_gpu(s, ["2", "5"]) for s in range(5)] == ["2", "5", "2", "5", "2"]
    assert [backends.slot_gpu(s, ["0"]) for s in range(3)] == ["0", "0", "0"]     # 3 runs on one GPU
    assert backends.slot_gpu(0, []) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert backends.gpu_slots(cuda) == []


@pytest.mark.slow              # four kernel starts
def test_running_points_get_distinct_gpus(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('x: int = 0\ndevice: str = "cpu"\nlog: str = "l"\nout_dir: str = "."\n'
                                          'threads: int = 0', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(CODE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "gpu.ipynb")
    (tmp_path / "s.yaml").write_text(f"study: g\nnotebook: {tmp_path / 'gpu.ipynb'}\nrun_id: 'x{{x}}'\n"
                                     f"base: {{device: cuda, log: {tmp_path / 'log'}}}\ngrid: {{x: [0, 1, 2, 3]}}\n")
    spec = load_study(tmp_path / "s.yaml")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,7")
    (tmp_path / "r").mkdir()                                        # run_study makes it
    rep = backends.run_local(spec.notebook, tmp_path / "r", [(spec.format_id(p), p) for p in spec.points()],
                             workers=2, threads=1)
    assert sorted(rep["ran"]) == ["x0", "x1", "x2", "x3"]
    runs = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert {r[1] for r in runs} == {"3", "7"}                       # one GPU each, never the whole list
    for a in runs:                                                   # two points at once: other GPUs
        for b in runs:
            if a is not b and float(a[2]) < float(b[3]) and float(b[2]) < float(a[3]):
                assert a[1] != b[1], (a, b)
