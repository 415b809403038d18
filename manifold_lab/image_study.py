"""The small real-image experiment (the paper's Table 2 at laptop scale): a JiT on photo crops.

The sequence length is fixed (``grid_side`` x ``grid_side`` tokens, 16 by default) and the patch size sets
both the resolution and the token dimension, as in the paper (JiT-B/16 at 256 px against JiT-B/4 at 64 px):

    patch 8 -> 32 px images, 8*8*3 = 192-d tokens   (well above a width of 64: "high-dimensional")
    patch 4 -> 16 px images,          48-d tokens
    patch 2 ->  8 px images,          12-d tokens   (well below the width: "low-dimensional")

Every resolution shows the same pictures (the shipped 32 px crops, box-downsampled), see
:mod:`manifold_lab.data.real_images`. ``run_image_point(ImageConfig(...), out_dir)`` trains, samples,
measures (:mod:`manifold_lab.metrics.images`) and writes the run folder. Training, sampling and the metric run on
``cfg.device``; the metric's feature net is trained (once, cached) on the CPU, so it is one instrument on every device::

    out_dir/metrics.json   fd_feat, fd_pix, their real-vs-real floors, final_loss, timings (flat dict)
    out_dir/config.json    the resolved ImageConfig; ``derived``: token_dim, img_size, params (the JiT's size)
    out_dir/curve.csv      the training loss per step
    out_dir/samples.png    an 8 x 8 grid of generated images (nearest-upscaled to >= 32 px per image)
    out_dir/samples.npz    those 64 images, uint8 (64, 3, H, W)
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from manifold_lab import param, seeds
from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.config import check_numbers
from manifold_lab.data.imagefolder import to_uint8
from manifold_lab.data.real_images import make_image_set
from manifold_lab.denoiser import Denoiser
from manifold_lab.device import PRECISIONS, autocast, check_device, resolve_device
from manifold_lab.metrics.features import load_feature_net
from manifold_lab.metrics.images import ImageMetric
from manifold_lab.nets.jit import JiT
from manifold_lab.nets.skip import LongSkip
from manifold_lab.runs.writer import finish_run
from manifold_lab.sample import SOLVERS, generate
from manifold_lab.schedule import TimeSampler
from manifold_lab.train.core import LR_SCHEDULES
from manifold_lab.train.loop import TrainConfig, train

N_GRID = 64   # images in the saved sample grid


@dataclass
class ImageConfig:
    data: str = "skimage"       # skimage (shipped photo crops) or a path to an image folder
    patch_size: int = 8         # patch size p; images are p * grid_side px; tokens are p*p*3-d
    grid_side: int = 4          # tokens per side (sequence length grid_side^2, fixed across patch sizes)
    hidden_size: int = 64       # JiT hidden size (width)
    depth: int = 4              # JiT blocks
    num_heads: int = 4          # attention heads
    bottleneck_dim: int = 0     # bottleneck patch-embed dim (0: plain linear patch embedding)
    rope: bool = True           # 2-D RoPE in attention
    qk_norm: bool = True        # RMS-normalised queries and keys
    pred: str = "x"             # what the network outputs: x, eps, v, or pre-conditioned edm, linear
    loss: str = "v"             # the space of the squared error: x, eps or v
    p_mean: float = -0.8        # logit-normal mean of training t (negative is noisier; paper: -0.8)
    p_std: float = 0.8          # logit-normal std of training t
    noise_scale: float = 1.0    # eps ~ N(0, noise_scale^2) against images in [-1, 1]
    t_eps: float = 0.05         # clamp of (1 - t) and t in divisions, training and sampling
    steps: int = 600            # training steps
    batch_size: int = 128       # training batch
    lr: float = 1e-3            # AdamW peak learning rate
    warmup_steps: int = 50      # linear lr warm-up steps
    lr_schedule: str = "constant"  # after warm-up: constant (the paper), or cosine decay to 0
    ema_decays: list = field(default_factory=lambda: [0.99])  # EMA decays; the first is evaluated (none: the raw net)
    n_train: int = 20000        # training crops of the skimage set (plus 2000 reference); a folder uses all
    n_samples: int = 500        # generated images for the metric (the real-vs-real floor uses as many)
    solver: str = "heun"        # ODE solver: heun (last step Euler) or euler
    sample_steps: int = 20      # ODE steps from noise (t 0) to data (t 1)
    feat_steps: int = 800       # training steps of the metric's feature net (cached per data set)
    seed: int = 0               # seeds init, training draws and sampling (data and feature net: seed 0)
    device: str = "auto"        # auto (CUDA when present, else the CPU), cpu, cuda, cuda:N
    precision: str = "auto"     # auto (bf16 autocast on CUDA, none on the CPU), bf16 (CPU: AMX/AVX512-BF16 only) or fp32
    compile: bool = False       # torch.compile the training loss (code cached on disk, see device.py; CPU: compiled_cpu_layout)
    long_skip: bool = False     # add a long skip z -> output with zero-initialised learned gates (nets/skip.py)

    def __post_init__(self):
        check_numbers(self)
        for name in ("patch_size", "grid_side", "hidden_size", "depth", "num_heads", "steps", "batch_size",
                     "n_train", "n_samples", "sample_steps", "feat_steps"):
            check_positive(name, getattr(self, name), integer=True)
        param.check_pred("prediction target", self.pred)
        param.check_target("loss space", self.loss)
        check_choice("solver", self.solver, SOLVERS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_device(self.device)
        check_positive("lr", self.lr)
        if not all(0 <= e < 1 for e in self.ema_decays):
            raise ConfigError(f"every EMA decay must be in [0, 1), got {self.ema_decays!r}")
        if self.feat_steps <= 10:
            raise ConfigError(f"feat_steps must be an integer > 10 (the feature net's one-cycle lr schedule warms "
                              f"up over a tenth of it), got {self.feat_steps!r}")
        self._check_heads()
        if self.bottleneck_dim < 0:
            raise ConfigError(f"bottleneck_dim must be >= 0 (0 = plain patch embedding), got {self.bottleneck_dim!r}")
        if not isinstance(self.long_skip, bool):
            raise ConfigError(f"long_skip must be true or false, got {self.long_skip!r}")

    def _check_heads(self) -> None:
        """The width fits the heads (what JiT checks, here before any data or feature net is built)."""
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_size % 4:
            raise ConfigError(f"hidden_size {self.hidden_size} must be divisible by 4 (2-D sin-cos position "
                              "embedding)")
        if self.rope and (self.hidden_size // self.num_heads) % 4:
            raise ConfigError(f"head dim {self.hidden_size // self.num_heads} (= hidden_size {self.hidden_size} / "
                              f"num_heads {self.num_heads}) must be divisible by 4 for 2-D RoPE")

    @property
    def img_size(self) -> int:
        return self.patch_size * self.grid_side

    @property
    def token_dim(self) -> int:
        return 3 * self.patch_size ** 2

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup_steps=self.warmup_steps,
                           lr_schedule=self.lr_schedule, ema_decays=tuple(self.ema_decays), seed=self.seed,
                           precision=self.precision, device=self.device, compile=self.compile)


def make_net(cfg: ImageConfig) -> JiT:
    """An unconditional JiT without in-context tokens, initialised under cfg.seed (with ``long_skip``:
    wrapped in :class:`manifold_lab.nets.skip.LongSkip`, one zero-initialised gate per output pixel value)."""
    if cfg.long_skip:
        return LongSkip(make_net(dataclasses.replace(cfg, long_skip=False)), (3, cfg.img_size, cfg.img_size))
    with seeds.init_rng(cfg.seed):
        return JiT(img_size=cfg.img_size, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size, depth=cfg.depth,
                   num_heads=cfg.num_heads, num_classes=None, bottleneck_dim=cfg.bottleneck_dim or None,
                   rope=cfg.rope, qk_norm=cfg.qk_norm, in_context_len=0, **compiled_cpu_layout(cfg))


def compiled_cpu_layout(cfg: ImageConfig) -> dict:
    """The JiT's layout options for a compiled run on the CPU, else none (the paper's code).

    There inductor fuses the same network better with the patch I/O as matmuls on channel-major patches
    and the attention written out (``patch_io="matmul"``, ``attn_impl="math"``: the same parameters and
    function, other float rounding). Measured on an AVX2 CPU, one thread, the study's JiT (width 64, 16
    tokens of 192-d, batch 128), fp32 compiled: 77 ms a training step with the defaults, 62 ms with both
    (0.51 of the fp32 matmul rate); the patch I/O alone 70 ms, the attention alone none. On CUDA the paper's
    layout and the fused attention kernels stay.
    """
    if cfg.compile and resolve_device(cfg.device).type == "cpu":
        return {"patch_io": "matmul", "attn_impl": "math"}
    return {}


def run_image_point(cfg: ImageConfig, out_dir: str | Path, *, progress: bool = False) -> dict[str, float]:
    """Train, sample and measure one image run; write the run folder (see the module docstring)."""
    out_dir = Path(out_dir)
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    images = make_image_set(cfg.data, cfg.img_size, n_train=cfg.n_train)
    feature_net, feat_info = load_feature_net(images, steps=cfg.feat_steps)
    metric = ImageMetric(images, feature_net.to(device), n_floor=cfg.n_samples, device=device)
    net = make_net(cfg)
    den = Denoiser(pred=cfg.pred, loss=cfg.loss, t_sampler=TimeSampler("logit_normal", cfg.p_mean, cfg.p_std),
                   t_eps=cfg.t_eps, noise_scale=cfg.noise_scale)
    result = train(net, den, images.batch_fn(device), cfg.train_config(), progress=progress,
                   desc=f"p{cfg.patch_size} w{cfg.hidden_size} {cfg.pred}-pred {cfg.loss}-loss")
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(cfg.precision, device):
        samples = generate(den, result.eval_net, (cfg.n_samples, 3, cfg.img_size, cfg.img_size),
                           steps=cfg.sample_steps, solver=cfg.solver, device=device,
                           generator=seeds.generator(cfg.seed, "sample", device))
    sample_s = time.perf_counter() - t0
    metrics = metric(samples) | feat_info | {
        "final_loss": float(result.curve.loss.tail(max(1, cfg.steps // 10)).mean()),
        "train_s": result.wall_s, "sample_s": sample_s, "wall_s": time.perf_counter() - start,
    }
    derived = {"token_dim": cfg.token_dim, "img_size": cfg.img_size,
               "params": sum(p.numel() for p in net.parameters())}
    return _save_run(out_dir, cfg, metrics, derived, to_uint8(samples[:N_GRID], layout="nchw").numpy(),
                     result.curve)


def _save_run(out_dir: Path, cfg: ImageConfig, metrics: dict, derived: dict, grid, curve) -> dict:
    from manifold_lab.plots.images import save_image_grid

    return finish_run(out_dir, cfg, metrics, kind="image", derived=derived, tables={"curve.csv": curve},
                      arrays={"samples.npz": {"samples": grid}},
                      figures={"samples.png": lambda path: save_image_grid(path, grid)})

