"""One point of an ImageNet study (the paper's tables as papermill studies): train a JiT through the one
training core, then the paper's evaluation (class-balanced samples, CFG x EMA chosen on a search set, FID/IS
on the final set), and write ``metrics.json``. What ``notebooks/imagenet_run.ipynb`` calls.

``run_imagenet_point(ImageNetPointConfig(...), out_dir)`` writes::

    out_dir/train_config.yaml  the resolved training config (the YAML of ``config`` with this point's changes)
    out_dir/run/               the training run: config.json, log.csv, checkpoints. If it already holds a
                               checkpoint (a requeued or restarted point), training resumes from it.
    out_dir/sweep/             sweep.csv / .parquet, sweep.png, best.json (evaluate.sweep, resumable)
    out_dir/config.json        the point's config; ``derived``: the chosen cfg_scale and ema, the training
                               steps
    out_dir/metrics.json       fid, is_mean, is_std, final_loss, train_s, eval_s, resumed_from_step
                               (written last: its presence marks a finished point)

``nproc`` > 1 runs training and sampling as that many torchrun processes (one per GPU of the point).
"""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from manifold_lab import io
from manifold_lab.checks import ConfigError, check_positive
from manifold_lab.config import check_numbers, read_yaml
from manifold_lab.paths import configs_dir, project_root
from manifold_lab.runs.writer import finish_run
from manifold_lab.sample import check_ema, check_interval
from manifold_lab.train import checkpoint as ckpt_mod
from manifold_lab.train.config import ImageNetConfig, load_config

if TYPE_CHECKING:   # imported where used: the sweep pulls in the FID and plotting stack
    from manifold_lab.evaluate.sweep import SweepConfig


@dataclass
class ImageNetPointConfig:
    config: str = "jit_b16_in256"  # a YAML of configs/ (name or path): the paper's recipe of one model
    data_path: str = ""         # the training ImageFolder (empty: the YAML's data_path)
    epochs: int = 200           # training epochs (the paper's ablations: 200)
    pred: str = ""              # prediction target x, eps or v (empty: the YAML's, x)
    loss: str = ""              # loss space x, eps or v (empty: the YAML's, v)
    p_mean: float = -0.8        # logit-normal mean of training t (the paper: -0.8)
    model_args: dict = field(default_factory=dict)  # over the YAML's model_args, key by key
    overrides: dict = field(default_factory=dict)   # any other ImageNetConfig field over the YAML
    nproc: int = 1              # processes (GPUs) of the point; more than 1 runs torchrun
    emas: list = field(default_factory=lambda: ["ema1", "ema2"])  # EMAs searched
    cfg_scales: list = field(default_factory=lambda: [1.0])  # CFG scales searched
    interval: list = field(default_factory=lambda: [0.0, 1.0])  # CFG acts for lo < t < hi; 0 1 is everywhere
    search_samples: int = 8000  # samples that choose CFG and EMA (the paper: 8K)
    n_samples: int = 50000      # samples of the final FID/IS (the paper: 50K)
    sample_steps: int = 50      # ODE steps (Heun with a last Euler step)
    sample_batch_size: int = 64  # samples per process and batch
    ref: str = ""               # FID reference statistics npz (empty: built from data_path once, cached)
    feature_extractor: str = "inception"  # inception (the paper's FID), or tiny (a test stand-in)
    inception_weights: str = ""  # the local Inception weights file (or MANIFOLD_LAB_INCEPTION_WEIGHTS)
    seed: int = 0               # training and sampling seed
    from_run: str = ""          # a finished point's folder: evaluate its run/ checkpoint, no training (Table 12)
    eval_size: int = 0          # resize samples to this many px before measuring (0: native; Table 12)
    prc_ref: str = ""           # reference features npz (prepare-ref --prc-out): precision/recall too (Table 13)

    def __post_init__(self):
        for name in ("epochs", "nproc", "search_samples", "n_samples", "sample_steps", "sample_batch_size"):
            check_positive(name, getattr(self, name), integer=True)
        check_numbers(self)
        check_interval(self.interval)
        self.emas = [check_ema(e, "emas") for e in self.emas]
        if not self.cfg_scales or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                          and math.isfinite(w) and w >= 0 for w in self.cfg_scales):
            raise ConfigError(f"cfg_scales must be a list of finite numbers >= 0, got {self.cfg_scales!r}")


def config_path(name: str) -> Path:
    """A config name (``jit_b16_in256``) or path -> the YAML file."""
    configs = configs_dir()
    for p in (Path(name), configs / name, configs / f"{name}.yaml"):
        if p.is_file():
            return p
    raise FileNotFoundError(f"config {name!r} not found (a path, or one of "
                            f"{', '.join(sorted(q.stem for q in configs.glob('*.yaml')))})")


def train_config(cfg: ImageNetPointConfig, out_dir: Path) -> ImageNetConfig:
    """The training config of the point: the YAML, the point's changes, the run folder (resumed if it holds
    a checkpoint), no progress bar."""
    raw = read_yaml(config_path(cfg.config))
    values = {**raw, **cfg.overrides, "epochs": cfg.epochs, "p_mean": cfg.p_mean, "seed": cfg.seed,
              "model_args": {**raw.get("model_args", {}), **cfg.overrides.get("model_args", {}), **cfg.model_args},
              "output_dir": str(out_dir / "run"), "progress": False}
    values |= {k: getattr(cfg, k) for k in ("data_path", "pred", "loss") if getattr(cfg, k)}
    if (out_dir / "run" / ckpt_mod.LAST).is_file():
        values["resume"] = str(out_dir / "run")
    return load_config(None, values)


def _torchrun(nproc: int, argv: list[str], log: Path) -> None:
    """``python -m manifold_lab ARGV`` as ``nproc`` torchrun processes; output to ``log`` and this stdout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "manifold_lab", *argv]
    with open(log, "a") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        f.write(proc.stdout)
    print(proc.stdout[-3000:], flush=True)
    if proc.returncode:
        raise RuntimeError(f"torchrun {' '.join(argv[:1])} failed with exit code {proc.returncode}; see {log}")


def train_point(cfg: ImageNetPointConfig, out_dir: Path) -> tuple[ImageNetConfig, int]:
    """Train (or resume) the point's JiT. Returns (the config, the step it resumed from, 0 if fresh)."""
    tcfg = train_config(cfg, out_dir)
    resumed = ckpt_mod.load_checkpoint(tcfg.resume)[0]["step"] if tcfg.resume else 0
    io.write_text(out_dir / "train_config.yaml", _yaml(tcfg.to_dict()))
    if cfg.nproc == 1:
        from manifold_lab.train.imagenet import train

        train(tcfg)
    else:
        _torchrun(cfg.nproc, ["train", "--config", str(out_dir / "train_config.yaml")], out_dir / "train.log")
    return tcfg, resumed


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


def from_run_dir(cfg: ImageNetPointConfig) -> Path:
    """``from_run`` as a folder: as given, or relative to the project root (study YAMLs name results/...)."""
    p = Path(cfg.from_run)
    return p if p.is_absolute() or p.exists() else project_root() / p


def run_dir(cfg: ImageNetPointConfig, out_dir: Path) -> Path:
    """The training run the point evaluates: its own, or that of the finished point ``from_run``."""
    return from_run_dir(cfg) / "run" if cfg.from_run else out_dir / "run"


def finished_config(cfg: ImageNetPointConfig) -> ImageNetConfig:
    """The training config of the finished point ``from_run`` (its train_config.yaml), for evaluation only."""
    path = from_run_dir(cfg) / "train_config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"from_run {cfg.from_run}: no train_config.yaml (not a finished ImageNet point)")
    values = {**read_yaml(path), "progress": False, "resume": None}
    return load_config(None, values | ({"data_path": cfg.data_path} if cfg.data_path else {}))



def sweep_config(cfg: ImageNetPointConfig, out_dir: Path, ref: Path) -> SweepConfig:
    """The sweep of the point: search CFG x EMA on search_samples, then the best on n_samples (a single
    choice is evaluated once, on n_samples)."""
    from manifold_lab.evaluate.sweep import SweepConfig
    from manifold_lab.sample import SamplingConfig

    single = len(cfg.emas) * len(cfg.cfg_scales) == 1
    sampling = SamplingConfig(interval=list(cfg.interval), sample_steps=cfg.sample_steps,
                              batch_size=cfg.sample_batch_size, seed=cfg.seed)
    return SweepConfig(checkpoint=str(run_dir(cfg, out_dir)), ref=str(ref), out=str(out_dir / "sweep"),
                       sampling=sampling, cfg_scales=list(cfg.cfg_scales), emas=list(cfg.emas),
                       search_samples=cfg.n_samples if single else cfg.search_samples,
                       final_samples=0 if single else cfg.n_samples, feature_extractor=cfg.feature_extractor,
                       inception_weights=cfg.inception_weights, resize=cfg.eval_size or 0,
                       prc_ref=cfg.prc_ref or "")


def reference_stats(cfg: ImageNetPointConfig, tcfg: ImageNetConfig) -> Path:
    """``cfg.ref``, or statistics of the training folder at the training resolution, built on first use and
    cached in $MANIFOLD_LAB_CACHE/fid_refs/ (keyed by the folder, the size and the feature extractor)."""
    if cfg.ref:
        if not Path(cfg.ref).is_file():
            raise FileNotFoundError(f"reference statistics {cfg.ref} not found (build them with prepare-ref)")
        return Path(cfg.ref)
    import hashlib

    from manifold_lab.evaluate.ref_stats import prepare_ref

    key = hashlib.sha1(str(Path(tcfg.data_path).resolve()).encode()).hexdigest()[:12]
    size = cfg.eval_size or tcfg.img_size   # the resolution the samples are measured at
    ref = io.cache_dir("fid_refs") / f"{key}-px{size}-{cfg.feature_extractor}.npz"
    with io.build_lock(ref):        # the points of a study sharing a data set: one computes it, the others wait
        if not ref.is_file():
            prepare_ref(tcfg.data_path, ref, img_size=size, kind=cfg.feature_extractor,
                        weights=cfg.inception_weights or None, verbose=False)
    return ref


def evaluate_point(cfg: ImageNetPointConfig, tcfg: ImageNetConfig, out_dir: Path) -> dict:
    """The sweep against the reference statistics; returns best.json's chosen row."""
    from manifold_lab.evaluate.sweep import run_sweep, sweep_argv

    scfg = sweep_config(cfg, out_dir, reference_stats(cfg, tcfg))
    if cfg.nproc == 1:
        from manifold_lab.train import distributed as dist_mod

        run_sweep(scfg, dist_mod.setup(tcfg.device), progress=False)
    else:
        _torchrun(cfg.nproc, [*sweep_argv(scfg), "--no-progress"], out_dir / "sweep.log")
    best = io.read_json(out_dir / "sweep" / "best.json")
    return best["final"] or best["search"]


def run_imagenet_point(cfg: ImageNetPointConfig, out_dir: str | Path, *, progress: bool = False) -> dict[str, float]:
    """Train, evaluate and write the point's folder (see the module docstring). ``progress`` is unused (a
    point logs to its files)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tcfg, resumed = (finished_config(cfg), 0) if cfg.from_run else train_point(cfg, out_dir)
    if cfg.from_run:
        carry_evaluated_run(cfg, out_dir)
    t1 = time.perf_counter()
    best = evaluate_point(cfg, tcfg, out_dir)
    log = read_train_log(from_run_dir(cfg) if cfg.from_run else out_dir)
    metrics = {"fid": float(best["fid"]), "is_mean": float(best["is_mean"]), "is_std": float(best["is_std"]),
               "final_loss": float(log.loss.tail(max(1, len(log) // 10)).mean()), "train_s": t1 - t0,
               "eval_s": time.perf_counter() - t1, "resumed_from_step": float(resumed)}
    metrics |= {k: float(best[k]) for k in ("precision", "recall") if best.get(k) is not None and best[k] == best[k]}
    derived = {"cfg_scale": float(best["cfg_scale"]), "ema": str(best["ema"]), "steps": int(log.step.iloc[-1])}
    return finish_run(out_dir, cfg, metrics, kind="imagenet", derived=derived)


def carry_evaluated_run(cfg: ImageNetPointConfig, out_dir: Path) -> None:
    """An evaluation-only point (``from_run``) holds copies of the train_config.yaml and run/log.csv of the
    run whose weights it evaluates (not its checkpoints), so its folder describes what was measured and
    meets the imagenet kind's contract (manifold_lab.run_files)."""
    src = from_run_dir(cfg)
    for name in ("train_config.yaml", "run/log.csv"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"from_run {cfg.from_run}: no {name} (not a finished ImageNet point)")
        io.atomic_write(out_dir / name, lambda tmp, src_file=src / name: shutil.copyfile(src_file, tmp))


def read_train_log(out_dir: Path):
    """The training run's step log (log.csv) as a DataFrame."""
    from manifold_lab.train.runlog import read_log

    return read_log(out_dir / "run" / "log.csv")
