"""The toy manifold experiment (the paper's Fig. 2): d-dim data buried in D dims, an MLP denoiser.

``run_toy(ToyConfig(...), out_dir)`` trains, samples, measures and writes the run folder::

    out_dir/samples.npz   samples (N, D) generated points, P (D, d), reference (M, d) ground truth (M >= 10,000);
                          with n_train > 0 also train (n_train, d), the fixed training set in d-dim coordinates
    out_dir/metrics.json  energy_distance, nn_dist, nn_dist_ref, off_manifold, final_loss, train_s, sample_s
    out_dir/config.json   the resolved ToyConfig (``run``: toy; see manifold_lab.runs.writer)
    out_dir/curve.csv     the training loss per step
    out_dir/fig_samples.png  generated points in the d-dim coordinates P^T x over the ground truth

The same function backs ``python -m manifold_lab toy ...`` and ``notebooks/toy_manifold.ipynb``. Training,
sampling and the metrics run on ``cfg.device``; the ground truth is drawn on the CPU, so it is the same on
every device.

Training t is uniform by default. The paper does not state the toy's t-sampler; its ImageNet
logit-normal(-0.8, 0.8) puts only about 1e-4 of the mass above t = 0.9, so a toy MLP never learns the
last stretch of the ODE and every target's samples stay blurred (x-prediction at D=512 and at D=2: mean
nearest-neighbour distance 0.069 and 0.127 with logit-normal, 0.012 and 0.021 with uniform t; 2000 steps
at lr 2e-3). The default lr 4e-3 was chosen over 2e-3 because eps-prediction at D=2 needed it (0.027 vs 0.10).

Training data. ``n_train = 0`` (the default) draws a fresh batch from the distribution at every step (from
the training generator, bit-identical to the runs made before the knob existed). ``n_train = N > 0`` trains
on a fixed set of N points, drawn once on the CPU from its own generator seeded with
``seeds.seed_for(data_seed, "train_set")`` (so the set does not depend on ``seed``, the device or the batch
size) and **cycled**: the batches are consecutive slices of a stream of random permutations of the N points (one
permutation per epoch, drawn from the training generator), so every point is seen once per epoch. A batch
larger than N spans several epochs (each point appears batch_size / N times, rounded up or down); the batch
size is kept, so the optimiser sees the same batch size as a fresh-data run. Two sets with different
``data_seed`` are independent draws of a continuous distribution: disjoint (with probability 1; the
memorisation study checks it), of the same distribution.

Data scale and long skip. ``data_scale = s`` multiplies every training batch of the unit-RMS data by s
(after embedding, which is linear: the same as before) while the noise stays N(0, I): the signal-to-noise
ratio of z_t = t s x + (1 - t) eps moves by s, as the image side's ``noise_scale`` moves it by 1 / noise_scale.
The generated samples are divided by s as soon as they are drawn, so samples.npz and every metric are in units
of the data's own RMS, against the same unit-scale reference as at s = 1 (nn_dist of a perfect sampler is the
same at every s). ``long_skip`` wraps the MLP in :class:`manifold_lab.nets.skip.LongSkip` (out = MLP(z, t) + g z,
one gate per output coordinate, g = 0 at init). The defaults (s = 1, no skip) leave the run untouched, bit for
bit: neither knob adds an operation then.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from manifold_lab import param, seeds
from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.config import check_numbers
from manifold_lab.data.manifold import ColumnOrthogonalEmbedding, check_dist, sample_toy
from manifold_lab.denoiser import Denoiser
from manifold_lab.device import PRECISIONS, autocast, check_device, resolve_device
from manifold_lab.metrics.manifold import toy_metrics
from manifold_lab.nets.mlp import MLP
from manifold_lab.nets.skip import LongSkip
from manifold_lab.runs.writer import finish_run
from manifold_lab.sample import SOLVERS, generate
from manifold_lab.schedule import T_SAMPLERS, TimeSampler
from manifold_lab.train.core import LR_SCHEDULES
from manifold_lab.train.loop import TrainConfig, train


@dataclass
class ToyConfig:
    dist: str = "spiral"        # spiral, moons, checkerboard, gaussian_ring, swiss_roll (d 2); sphere, torus, gaussian
    d: int = 2                  # dimension of the data subspace (the manifold's own dimension can be lower)
    D: int = 512                # ambient dimension (at least d)
    pred: str = "x"             # what the network outputs: x, eps, v, or pre-conditioned edm, linear
    loss: str = "v"             # the space of the squared error: x, eps or v
    hidden_size: int = 256      # MLP hidden width
    depth: int = 5              # MLP Linear layers (ReLU between)
    steps: int = 2000           # training steps
    batch_size: int = 512       # training batch
    lr: float = 4e-3            # AdamW peak learning rate
    warmup_steps: int = 100     # linear lr warm-up steps
    lr_schedule: str = "cosine"  # after warm-up: cosine decay to 0, or constant
    ema_decays: list = field(default_factory=lambda: [0.995])  # EMA decays; the first is evaluated (none: the raw net)
    t_sampler: str = "uniform"  # training t: uniform, or logit_normal(p_mean, p_std) as on ImageNet (see docs)
    p_mean: float = -0.8        # logit-normal mean (the paper's ImageNet -0.8)
    p_std: float = 0.8          # logit-normal std (the paper's ImageNet 0.8)
    t_eps: float = 0.05         # clamp of (1 - t) and t in divisions, training and sampling
    solver: str = "heun"        # ODE solver: heun (last step Euler) or euler
    sample_steps: int = 50      # ODE steps from noise (t 0) to data (t 1)
    n_samples: int = 2000       # generated points
    n_reference: int = 10000    # ground-truth points saved and used for nearest-neighbour distances
    n_train: int = 0            # training points: 0 draws fresh data every step; N > 0 cycles a fixed set of N
    data_seed: int = 0          # seeds the draw of the fixed training set (n_train > 0); another value, a disjoint set
    seed: int = 0               # seeds init, training draws and sampling
    proj_seed: int = 0          # seeds the projection P (fixed across runs by default)
    device: str = "auto"        # auto (CUDA when present, else the CPU), cpu, cuda, cuda:N
    precision: str = "auto"     # auto (bf16 autocast on CUDA, none on the CPU), bf16 (CPU: AMX/AVX512-BF16 only) or fp32
    compile: bool = False       # torch.compile the training forward (compiled code cached on disk, see device.py)
    long_skip: bool = False     # add a long skip z -> output with zero-initialised learned gates (nets/skip.py)
    data_scale: float = 1.0     # s: the unit-RMS data is multiplied by s before embedding; the noise stays unit

    def __post_init__(self):
        check_numbers(self)
        check_dist(self.dist, self.d)
        ColumnOrthogonalEmbedding.check_dims(self.D, self.d)
        param.check_pred("prediction target", self.pred)
        param.check_target("loss space", self.loss)
        check_choice("time sampler", self.t_sampler, T_SAMPLERS)
        check_choice("solver", self.solver, SOLVERS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_device(self.device)
        for name in ("hidden_size", "depth", "steps", "batch_size", "sample_steps", "n_samples", "n_reference"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("lr", self.lr)
        if not all(0 <= e < 1 for e in self.ema_decays):
            raise ConfigError(f"every EMA decay must be in [0, 1), got {self.ema_decays!r}")
        if self.n_reference < 10000:
            raise ConfigError(f"n_reference must be >= 10000, got {self.n_reference}")
        for name in ("n_train", "data_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        check_scale_and_skip(self)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup_steps=self.warmup_steps,
                           lr_schedule=self.lr_schedule, ema_decays=tuple(self.ema_decays), seed=self.seed,
                           precision=self.precision, device=self.device, compile=self.compile)


def draw_train_set(cfg: ToyConfig) -> torch.Tensor | None:
    """The fixed training set of ``cfg`` in d-dim coordinates: (n_train, d) float32 on the CPU, or None
    when ``cfg.n_train == 0`` (fresh data every step). Depends only on dist, d, n_train and data_seed."""
    if cfg.n_train == 0:
        return None
    return sample_toy(cfg.dist, cfg.n_train, cfg.d, seeds.generator(cfg.data_seed, "train_set"))


class CycledBatches:
    """Batches cycled through a fixed set X (N, ...): consecutive slices of a stream of random permutations
    of the N rows (one per epoch, drawn from the generator the trainer passes), so every row is used once per
    epoch; a batch larger than N spans several epochs. Call as ``batch_fn(batch_size, generator)``."""

    def __init__(self, X: torch.Tensor):
        self.X = X
        self.queue = torch.empty(0, dtype=torch.long, device=X.device)
        self.epochs = 0

    def __call__(self, b: int, g: torch.Generator):
        while len(self.queue) < b:
            perm = torch.randperm(len(self.X), generator=g, device=self.X.device)
            self.queue = torch.cat([self.queue, perm])
            self.epochs += 1
        idx, self.queue = self.queue[:b], self.queue[b:]
        return self.X[idx], None


def check_scale_and_skip(cfg) -> None:
    """long_skip must be a bool and data_scale a finite number > 0 (ConfigError otherwise)."""
    if not isinstance(cfg.long_skip, bool):
        raise ConfigError(f"long_skip must be true or false, got {cfg.long_skip!r}")
    s = cfg.data_scale
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < float("inf"):
        raise ConfigError(f"data_scale must be a finite number > 0, got {s!r}")


def scaled_batches(batch_fn, s: float):
    """A batch_fn whose data batches are multiplied by s (the data scale; the noise is drawn elsewhere, unit)."""
    def fn(b, g):
        x, y = batch_fn(b, g)
        return x * s, y
    return fn


@dataclass
class ToyModel:
    """A trained toy model and what it was trained on (see :func:`run_toy_model`)."""
    cfg: ToyConfig
    embedding: ColumnOrthogonalEmbedding
    denoiser: Denoiser
    net: nn.Module                  # the evaluated network (the first EMA's copy), in eval mode
    train_set: torch.Tensor | None  # (n_train, d) d-dim coordinates, None with fresh data
    samples: torch.Tensor           # (n_samples, D) generated points, on the CPU
    reference: torch.Tensor         # (n_reference, d) ground truth


def run_toy(cfg: ToyConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, float]:
    """Train, sample and measure one toy run; write the run folder (see the module docstring)."""
    return run_toy_model(cfg, out_dir, progress=progress)[0]


def run_toy_model(cfg: ToyConfig, out_dir: str | Path, *, progress: bool = True) -> tuple[dict[str, float], ToyModel]:
    """:func:`run_toy`, also returning the trained model (network, denoiser, P, training set, samples)."""
    out_dir = Path(out_dir)
    device = resolve_device(cfg.device)
    emb = ColumnOrthogonalEmbedding(cfg.D, cfg.d, seed=cfg.proj_seed)
    with seeds.init_rng(cfg.seed):
        net = MLP(cfg.D, hidden_size=cfg.hidden_size, depth=cfg.depth)
    if cfg.long_skip:
        net = LongSkip(net, (cfg.D,))
    den = Denoiser(pred=cfg.pred, loss=cfg.loss, t_eps=cfg.t_eps,
                   t_sampler=TimeSampler(cfg.t_sampler, cfg.p_mean, cfg.p_std))
    train_set = draw_train_set(cfg)
    if train_set is None:
        def batch_fn(b, g):
            return emb.embed(sample_toy(cfg.dist, b, cfg.d, g)), None
    else:
        batch_fn = CycledBatches(emb.embed(train_set).to(device))
    if cfg.data_scale != 1:
        batch_fn = scaled_batches(batch_fn, cfg.data_scale)

    result = train(net, den, batch_fn, cfg.train_config(), progress=progress,
                   desc=f"toy D={cfg.D} {cfg.pred}-pred")
    t0 = time.perf_counter()
    with autocast(cfg.precision, device):
        samples = generate(den, result.eval_net, (cfg.n_samples, cfg.D), steps=cfg.sample_steps, solver=cfg.solver,
                           device=device, generator=seeds.generator(cfg.seed, "sample", device))
    sample_s = time.perf_counter() - t0
    if cfg.data_scale != 1:
        samples = samples / cfg.data_scale  # back to the unit-scale data's units: every metric and file below
    g_ref = seeds.generator(cfg.seed, "reference")
    reference = sample_toy(cfg.dist, cfg.n_reference, cfg.d, g_ref)
    fresh = sample_toy(cfg.dist, cfg.n_samples, cfg.d, g_ref)
    metrics = toy_metrics(samples, emb, reference.to(device), fresh.to(device))
    metrics |= {"final_loss": float(result.curve.loss.tail(100).mean()), "train_s": result.wall_s,
                "sample_s": sample_s}
    _save_run(out_dir, cfg, metrics, emb, samples.cpu(), reference, result.curve, train_set)
    return metrics, ToyModel(cfg, emb, den, result.eval_net, train_set, samples.cpu(), reference)


def _save_run(out_dir: Path, cfg: ToyConfig, metrics, emb, samples, reference, curve, train_set=None) -> None:
    from manifold_lab.plots.toy import plot_toy_samples

    extra = {} if train_set is None else {"train": train_set.numpy()}
    fig = plot_toy_samples(emb.project(samples).numpy(), reference.numpy(),
                           title=f"{cfg.dist} in D={cfg.D}: {cfg.pred}-pred, {cfg.loss}-loss")
    finish_run(out_dir, cfg, metrics, kind="toy", tables={"curve.csv": curve},
               arrays={"samples.npz": dict(samples=samples.numpy(), P=emb.P.numpy(), reference=reference.numpy(),
                                           **extra)},
               figures={"fig_samples.png": fig})

