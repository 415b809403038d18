"""The bad-input table: every command, given a bad value, a bad path or a damaged file, exits 2 with exactly
one ``error:`` line on stderr naming the value or the file, no traceback, and writes nothing.

Each case runs in-process through ``manifold_lab.cli.main`` (nothing trains before the error) in a fresh
working directory, and the test compares the files under ``tmp_path`` before and after.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from manifold_lab.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "jit_tiny_cpu.yaml")
NO_WRITE = "/proc/sys/manifold_lab_out"     # a folder no one (not even root) may create files in

# (id, argv with {placeholders}, a substring the one error line must hold)
CASES = [
    # numbers: non-finite, impossible, not numbers, YAML 1.2 spellings refused only when wrong
    ("toy-lr-inf", "toy --lr inf --out {out}", "--lr takes a finite number, got 'inf'"),
    ("toy-lr-nan", "toy --lr nan --out {out}", "'nan'"),
    ("toy-lr-abc", "toy --lr abc --out {out}", "'abc'"),
    ("toy-p-mean-nan", "toy --p-mean nan --out {out}", "--p-mean takes a finite number, got 'nan'"),
    ("toy-steps-negative", "toy --steps -5 --out {out}", "steps must be a positive integer, got -5"),
    ("toy-batch-size-0", "toy --batch-size 0 --out {out}", "batch_size must be a positive integer, got 0"),
    ("toy-n-samples-float", "toy --n-samples 1.5 --out {out}", "--n-samples takes an integer"),
    ("toy-num-samples-renamed", "toy --num-samples 5 --out {out}", "--num-samples was renamed --n-samples"),
    # outputs checked before any work
    ("toy-out-file", "toy --steps 1 --out {file}", "is a file, not a folder"),
    ("toy-out-empty", "toy --steps 1 --out=", "--out is empty"),
    ("toy-out-under-file", "toy --steps 1 --out {file}/run", "cannot be created"),
    ("toy-out-not-writable", f"toy --steps 1 --out {NO_WRITE}", "not writable"),
    ("image-out-file", "image --steps 1 --out {file}", "is a file, not a folder"),
    ("image-out-not-writable", f"image --steps 1 --out {NO_WRITE}", "not writable"),
    # image edge cases
    ("image-feat-steps-10", "image --feat-steps 10 --out {out}", "feat_steps must be an integer > 10"),
    ("image-heads-width", "image --hidden-size 30 --num-heads 4 --out {out}", "not divisible by num_heads 4"),
    ("image-one-image", "image --data {one} --out {out}", "holds 1 image(s)"),
    ("image-corrupt", "image --data {corrupt} --out {out}", "bad.png"),
    ("image-no-images", "image --data {empty} --out {out}", "no images under"),
    ("image-p-mean-nan", "image --p-mean nan --out {out}", "--p-mean takes a finite number"),
    # sample: every sampling value at parse, before the checkpoint is read
    ("sample-cfg-scale-nan", "sample --checkpoint {ckpt} --cfg-scale nan --out {out}", "--cfg-scale takes a finite"),
    ("sample-cfg-scale-negative", "sample --checkpoint {ckpt} --cfg-scale -1 --out {out}", "cfg_scale must be"),
    ("sample-n-samples-negative", "sample --checkpoint {ckpt} --n-samples -5 --out {out}",
     "n_samples must be a positive integer, got -5"),
    ("sample-interval-reversed", "sample --checkpoint {ckpt} --interval 1 0 --out {out}",
     "interval must be two numbers lo hi with 0 <= lo < hi <= 1, got [1, 0]"),
    ("sample-interval-three", "sample --checkpoint {ckpt} --interval 0 0.5 1 --out {out}", "interval must be two"),
    ("sample-batch-size-0", "sample --checkpoint {ckpt} --batch-size 0 --out {out}",
     "batch_size must be a positive integer, got 0"),
    ("sample-sample-steps-0", "sample --checkpoint {ckpt} --sample-steps 0 --out {out}", "sample_steps must be"),
    ("sample-ema-bad", "sample --checkpoint {ckpt} --ema ema0 --out {out}", "'ema0'"),
    ("sample-cfg-renamed", "sample --checkpoint {ckpt} --cfg 3 --out {out}", "--cfg was renamed --cfg-scale"),
    ("sample-num-samples-renamed", "sample --checkpoint {ckpt} --num-samples 5 --out {out}",
     "--num-samples was renamed --n-samples"),
    ("sample-out-file", "sample --checkpoint {ckpt} --out {file}", "is a file, not a folder"),
    ("sample-missing-checkpoint", "sample --checkpoint {tmp}/nothing.pth --out {out}", "nothing.pth"),
    # sweep
    ("sweep-scales-reversed", "sweep --checkpoint {ckpt} --ref {ref} --cfg-scales 3:1:0.5 --out {out}", "'3:1:0.5'"),
    ("sweep-scales-nan", "sweep --checkpoint {ckpt} --ref {ref} --cfg-scales 1,nan --out {out}", "cfg_scales must"),
    ("sweep-emas-bad", "sweep --checkpoint {ckpt} --ref {ref} --emas ema1 best --out {out}", "'best'"),
    ("sweep-search-samples-0", "sweep --checkpoint {ckpt} --ref {ref} --search-samples 0 --out {out}",
     "search_samples must be a positive integer"),
    ("sweep-final-negative", "sweep --checkpoint {ckpt} --ref {ref} --final-samples -1 --out {out}",
     "final_samples must be an integer >= 0"),
    ("sweep-interval-reversed", "sweep --checkpoint {ckpt} --ref {ref} --interval 0.5 0.2 --out {out}",
     "0 <= lo < hi <= 1"),
    ("sweep-out-file", "sweep --checkpoint {ckpt} --ref {ref} --out {file}", "is a file, not a folder"),
    ("sweep-missing-ref", "sweep --checkpoint {ckpt} --ref {tmp}/none.npz --out {out}", "none.npz"),
    # fid and prepare-ref
    ("fid-npz-without-arr0", "fid {noarr} --ref {ref} --feature-extractor tiny", "has no arr_0"),
    ("fid-npz-damaged", "fid {file} --ref {ref} --feature-extractor tiny", "no PNG samples"),
    ("fid-corrupt-png", "fid {pngs} --ref {ref} --feature-extractor tiny", "bad.png"),
    ("fid-batch-size-0", "fid {pngs} --ref {ref} --feature-extractor tiny --fid-batch-size 0",
     "--fid-batch-size must be a positive integer"),
    ("fid-out-folder", "fid {pngs} --ref {ref} --feature-extractor tiny --out {tmp}", "is a folder"),
    ("fid-ref-damaged", "fid {pngs} --ref {file} --feature-extractor tiny", "cannot read reference statistics"),
    ("prepare-ref-corrupt", "prepare-ref --data-path {corrupt} --img-size 8 --out {tmp}/r.npz "
     "--feature-extractor tiny", "bad.png"),
    ("prepare-ref-nothing-decodes", "prepare-ref --data-path {allbad} --img-size 8 --out {tmp}/r.npz "
     "--feature-extractor tiny --bad-images skip", "none of the 2 images"),
    ("prepare-ref-out-folder", "prepare-ref --data-path {corrupt} --img-size 8 --out {tmp} --feature-extractor tiny",
     "is a folder"),
    ("prepare-ref-img-size-0", "prepare-ref --data-path {corrupt} --img-size 0 --out {tmp}/r.npz",
     "--img-size must be a positive integer"),
    ("prepare-ref-no-images", "prepare-ref --data-path {empty} --img-size 8 --out {tmp}/r.npz "
     "--feature-extractor tiny", "no images under"),
    # prepare-data
    ("prepare-data-out-file", "prepare-data --data-path {corrupt} --img-size 8 --out {file}", "is a file"),
    ("prepare-data-shard-size-0", "prepare-data --data-path {corrupt} --img-size 8 --shard-size 0 --out {out}",
     "--shard-size must be a positive integer"),
    ("prepare-data-workers-negative", "prepare-data --data-path {corrupt} --img-size 8 --workers -1 --out {out}",
     "--workers must be >= 0"),
    # train
    ("train-lr-nan", "train --config " + TINY + " --lr nan --output-dir {out}", "--lr takes a finite number"),
    ("train-lr-inf-yaml", "train --config {inf_yaml} --output-dir {out}", "lr must be a finite number"),
    ("train-yaml-syntax", "train --config {bad_yaml}", "bad.yaml, line"),
    ("train-yaml-missing", "train --config {tmp}/none.yaml", "none.yaml"),
    ("train-output-file", "train --config " + TINY + " --data-path {corrupt} --output-dir {file}", "is a file"),
    ("train-corrupt-image", "train --config " + TINY + " --data-path {corrupt} --output-dir {out} "
     "--max-steps 3 --batch-size 1", "bad.png"),
    ("train-nothing-decodes", "train --config " + TINY + " --data-path {allbad} --bad-images skip "
     "--output-dir {out}", "none of the 2 images"),
    ("train-ema-renamed", "train --config " + TINY + " --ema-decay 0.9 --output-dir {out}",
     "--ema-decay was renamed --ema-decays"),
    # id
    ("id-out-folder", "id --out {tmp}", "is a folder"),
    ("id-n-0", "id --n 0", "n must be a positive integer"),
    # study: the YAML itself and --set values that do not parse (checked before any kernel)
    ("study-yaml-syntax", "study {bad_study}", "study.yaml, line"),
    ("study-set-syntax", "study " + str(ROOT / "studies" / "toy_fig2.yaml") + " --set pred=[x", "--set pred=[x"),
    ("study-set-no-equals", "study " + str(ROOT / "studies" / "toy_fig2.yaml") + " --set lr", "key=value"),
    ("study-set-renamed", "study " + str(ROOT / "studies" / "toy_fig2.yaml") + " --set width=[64]",
     "'width' was renamed 'hidden_size'"),
]
# a damaged file met while training (ImageNet is not pre-read): the run folder holds config.json and log.csv
# by then, but no checkpoint; every other case writes nothing at all
FOUND_WHILE_RUNNING = {"train-corrupt-image"}


def _png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


@pytest.fixture
def inputs(tmp_path, monkeypatch) -> dict[str, str]:
    """The files the cases refer to, and a fresh working directory (a write into '.' would show)."""
    t = tmp_path
    (t / "a_file").write_text("not a folder\n")
    _png(t / "one" / "c0" / "only.png")
    _png(t / "corrupt" / "c0" / "a.png", 1)
    _png(t / "corrupt" / "c1" / "b.png", 2)
    (t / "corrupt" / "c1" / "bad.png").write_bytes(b"not a png")
    for name in ("x.png", "y.png"):
        (t / "allbad" / "c0").mkdir(parents=True, exist_ok=True)
        (t / "allbad" / "c0" / name).write_bytes(b"\x89PNG broken")
    (t / "empty" / "c0").mkdir(parents=True)
    _png(t / "pngs" / "000000.png", 3)
    (t / "pngs" / "bad.png").write_bytes(b"not a png")
    np.savez(t / "noarr.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    np.savez(t / "ref.npz", mu=np.zeros(16, np.float32), sigma=np.eye(16))
    (t / "bad.yaml").write_text("lr: [1e-3\nblr: 2\n")
    (t / "inf.yaml").write_text(f"{(ROOT / 'configs' / 'jit_tiny_cpu.yaml').read_text()}\nlr: .inf\n")
    (t / "study.yaml").write_text("study: x\nnotebook: n.ipynb\ngrid: {pred: [x, eps}\n")
    (t / "cwd").mkdir()
    monkeypatch.chdir(t / "cwd")
    return {"tmp": str(t), "out": str(t / "out"), "file": str(t / "a_file"), "one": str(t / "one"),
            "corrupt": str(t / "corrupt"), "allbad": str(t / "allbad"), "empty": str(t / "empty"),
            "pngs": str(t / "pngs"), "noarr": str(t / "noarr.npz"), "ref": str(t / "ref.npz"),
            "ckpt": str(t / "ckpt.pth"), "bad_yaml": str(t / "bad.yaml"), "inf_yaml": str(t / "inf.yaml"),
            "bad_study": str(t / "study.yaml")}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("case,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(inputs, tmp_path, capsys, case, argv, expected):
    words = [w.format(**inputs) for w in argv.split(" ")]
    before = _tree(tmp_path)
    rc = main(words)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err[-2000:])
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected.format(**inputs) in lines[0], lines[0]
    after = _tree(tmp_path)
    if case in FOUND_WHILE_RUNNING:
        assert not [p for p in set(after) - set(before) if p.endswith(".pth")]   # no checkpoint of a bad run
        after = {k: v for k, v in after.items() if not k.startswith("out")}
    assert after == before                                             # nothing written, nothing touched
    assert not os.path.exists(NO_WRITE)


def test_the_table_covers_every_writing_command():
    commands = {c[1].split(" ")[0] for c in CASES}
    assert {"toy", "image", "sample", "sweep", "fid", "prepare-ref", "prepare-data", "train", "id",
            "study"} <= commands
    assert len(CASES) >= 60


def test_yaml_12_numbers_are_numbers(tmp_path, capsys):
    """1e-3, 5E-4, .5 and 1_000 are numbers in a train --config, a --set and a flag (YAML 1.2)."""
    from manifold_lab.config import load_yaml
    from manifold_lab.studies.spec import load_study

    assert load_yaml("[1e-3, 5E-4, .5, 1_000, 1:30, '1e-3']") == [0.001, 0.0005, 0.5, 1000, "1:30", "1e-3"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{Path(TINY).read_text()}\nblr: 1e-2\nmin_lr: 5E-7\nwarmup_epochs: .5\n")
    assert main(["train", "--config", str(cfg), "--lr", "1e-3", "--epochs", "1_000", "--print-config"]) == 0
    import json
    printed = json.loads(capsys.readouterr().out)
    assert (printed["blr"], printed["min_lr"], printed["warmup_epochs"]) == (0.01, 5e-7, 0.5)
    assert (printed["lr"], printed["epochs"]) == (0.001, 1000)
    spec = load_study(ROOT / "studies" / "toy_fig2.yaml")
    spec.override(["lr=1e-3", "steps=1_000"])
    assert spec.base["lr"] == 0.001 and isinstance(spec.base["lr"], float)


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only user-caused errors become one line: an unexpected exception propagates."""
    import manifold_lab.toy as toy

    def broken(*a, **k):
        raise KeyError("a bug")
    monkeypatch.setattr(toy, "run_toy", broken)
    with pytest.raises(KeyError):
        main(["toy", "--steps", "1", "--out", "unused"])


def test_non_finite_samples_are_refused_with_the_count(tmp_path):
    """generate_samples writes no PNG of a batch that holds NaN, and says how many samples were bad."""
    import torch

    from manifold_lab.denoiser import Denoiser
    from manifold_lab.evaluate.generate import NonFiniteSamplesError, generate_samples
    from manifold_lab.sample import SamplingConfig

    class NaNNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, z, t, y=None):
            out = z.clone()
            out[0] = float("nan")              # the first sample of each batch diverges
            return out

    cfg = SamplingConfig(n_samples=3, batch_size=3, sample_steps=2)
    with pytest.raises(NonFiniteSamplesError, match="1 of 3 samples"):
        generate_samples(NaNNet(), Denoiser(), cfg, out_dir=tmp_path / "s", img_size=4, num_classes=None,
                         progress=False)
    assert not list((tmp_path / "s").glob("*.png"))


def test_non_finite_loss_names_the_likely_cause():
    from manifold_lab.denoiser import Denoiser
    from manifold_lab.schedule import TimeSampler
    from manifold_lab.train.core import likely_cause

    assert "p_mean 9" in likely_cause(1e-3, Denoiser(t_sampler=TimeSampler("logit_normal", 9.0, 0.8)))
    assert "lr 5" in likely_cause(5.0, Denoiser())
    assert "lr 0.001 may be too high" in likely_cause(1e-3, Denoiser())
