"""The training step on synthetic data: TrainCore.step, the step every trainer takes, per net and mode.

    python -m benchmarks step --net JiT-B/16 --batch-size 128 --modes bf16+compile --out DIR   # one GPU
    python -m benchmarks step --net image --modes fp32 bf16 bf16+compile --out DIR             # CPU study net
    python -m benchmarks step --cpu-smoke --out DIR                                            # seconds

Nets: a full-scale config (JiT-B/16, JiT-L/16, JiT-B/32, JiT-L/32, JiT-H/16: configs/*.yaml; the lr is the
config's for one process, ``resolved_lr(1)``), ``tiny`` (configs/jit_tiny_cpu.yaml), ``image`` (the small
image study's JiT, ImageConfig's defaults: width 64, 16 tokens of 192-d) and ``toy`` (the toy MLP,
ToyConfig's defaults: D = 512). Each mode is ``fp32``, ``bf16`` or ``auto``, optionally ``+compile``
(full-scale JiTs compile their blocks as the paper's code; small nets through the small-run core's
``compile``). Data: uint8 noise flipped and mapped on the device (full scale), fixed noise images (image),
the toy's own batch function (toy). The modes, and an n x n matmul (the bar), are timed in turns
(harness.interleaved: a shared machine's load hits them alike) and compared by their medians: ``speedup``
is the first mode's step time over each one's; useful FLOP/s = 3 x 2 x forward MACs x batch / step time,
``share_of_matmul`` its share of the interleaved matmul rate (fp32 on the CPU, bf16 on CUDA).
``--profile N``: torch.profiler top ops over N steps of each mode.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks import _harness as H
from manifold_lab.train.core import TrainCore

CONFIGS = {"JiT-B/16": "jit_b16_in256.yaml", "JiT-L/16": "jit_l16_in256.yaml", "JiT-B/32": "jit_b32_in512.yaml",
           "JiT-L/32": "jit_l32_in512.yaml", "JiT-H/16": "jit_h16_in256.yaml", "tiny": "jit_tiny_cpu.yaml"}
NETS = (*CONFIGS, "image", "toy")
MATMUL = "_matmul"
# op or kernel name -> group; the first match wins (EMA's _foreach_lerp_ before the optimizer's)
GROUPS = [("EMA", r"lerp"),
          ("optimizer", r"adam|_foreach_"),
          ("attention", r"flash|fmha|attention|sdpa|softmax|cudnn.*mha"),
          ("matmul", r"gemm|xmma|cutlass|nvjet|cublas|wgmma|_scaled_mm|conv|mkldnn|onednn|"
                     r"aten::(mm|addmm|bmm|baddbmm|matmul|linear)$"),
          ("norm/modulation", r"rsqrt|norm(?!al)|modulat|rms"),
          ("elementwise", r"triton_|cpp_fused|elementwise|vectorized|unrolled|copy|fill|cat|reduce|memcpy|"
                          r"memset|aten::")]


@dataclass
class Case:
    """One net in one mode, ready to step: ``step()`` takes one optimiser step (no sync)."""
    core: TrainCore
    step: Callable[[], torch.Tensor]
    macs: int              # forward MACs per sample
    lr: float
    batch: int


def add_arguments(p) -> None:
    p.add_argument("--net", default="JiT-B/16", choices=NETS)
    p.add_argument("--batch-size", type=int, default=None, help="default: the net's config")
    p.add_argument("--modes", nargs="+", default=["auto"], help="fp32 | bf16 | auto, each optionally +compile")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per mode (interleaved)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per mode (compile included)")
    p.add_argument("--profile", type=int, default=0, help="profile N steps of each mode (0: no profile)")
    p.add_argument("--matmul-n", type=int, default=None, help="matmul size (default 8192 CUDA, 1024 CPU)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="small nets: a config field (YAML value), e.g. --set D=2048 --set hidden_size=1024")


def smoke(a) -> None:
    a.net, a.batch_size, a.modes, a.device = "tiny", 4, ["fp32", "auto"], "cpu"
    a.steps, a.repeats, a.warmup, a.profile, a.matmul_n = 2, 2, 1, 1, 256


def parse_mode(mode: str) -> tuple[str, bool]:
    """"bf16+compile" -> ("bf16", True)."""
    from manifold_lab.device import PRECISIONS
    prec, _, rest = mode.partition("+")
    if rest not in ("", "compile") or prec not in PRECISIONS:
        from manifold_lab.checks import ConfigError
        raise ConfigError(f"unknown mode {mode!r}; allowed: fp32, bf16, auto, each optionally +compile")
    return prec, rest == "compile"


def linear_macs(net: nn.Module) -> int:
    """Forward MACs per sample of a net made of Linear layers (the toy MLP)."""
    return sum(m.in_features * m.out_features for m in net.modules() if isinstance(m, nn.Linear))


def full_scale_case(name: str, batch, prec: str, comp: bool, device: torch.device) -> Case:
    from manifold_lab.data.imagefolder import random_flip, to_model_range
    from manifold_lab.nets.macs import count_macs
    from manifold_lab.train.build import build_denoiser, build_model
    from manifold_lab.train.config import load_config
    from manifold_lab.train.core import LRSchedule

    over = {"precision": prec, "compile": comp, "device": device.type} | ({"batch_size": batch} if batch else {})
    cfg = load_config(H.ROOT / "configs" / CONFIGS[name], over)
    torch.manual_seed(0)
    net = build_model(cfg).to(device)
    lr = cfg.resolved_lr(1)
    core = TrainCore(net, build_denoiser(cfg), schedule=LRSchedule(lr), ema_decays=cfg.ema_decays,
                     generator=torch.Generator(device).manual_seed(0), betas=cfg.betas, precision=cfg.precision)
    g = torch.Generator(device).manual_seed(1)
    u8 = torch.randint(0, 256, (cfg.batch_size, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8, device=device,
                       generator=g)
    y = torch.randint(0, cfg.num_classes, (cfg.batch_size,), device=device, generator=g)
    return _stepper(core, lambda: (random_flip(to_model_range(u8), core.generator), y), count_macs(net), lr,
                    cfg.batch_size)


def small_case(name: str, batch, prec: str, comp: bool, device: torch.device, overrides=()) -> Case:
    """The image study's JiT or the toy MLP with its config's defaults, through the small-run core."""
    from manifold_lab.config import parse_set
    from manifold_lab.denoiser import Denoiser
    from manifold_lab.schedule import TimeSampler
    from manifold_lab.train.loop import make_core
    over = (dict(parse_set(o) for o in overrides) | {"precision": prec, "compile": comp, "device": str(device)}
            | ({"batch_size": batch} if batch else {}))
    if name == "image":
        from manifold_lab.image_study import ImageConfig, make_net
        from manifold_lab.nets.macs import count_macs
        cfg = ImageConfig(**over)
        net = make_net(cfg)
        den = Denoiser(pred=cfg.pred, loss=cfg.loss, t_sampler=TimeSampler("logit_normal", cfg.p_mean, cfg.p_std),
                       t_eps=cfg.t_eps, noise_scale=cfg.noise_scale)
        macs = count_macs(net)
        x = torch.rand(cfg.batch_size, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(1))
        x = (x * 2 - 1).to(device)
        batch_fn = lambda b, g: (x, None)
    else:
        from manifold_lab.data.manifold import ColumnOrthogonalEmbedding, sample_toy
        from manifold_lab.nets.mlp import MLP
        from manifold_lab.toy import ToyConfig
        cfg = ToyConfig(**over)
        torch.manual_seed(0)
        net = MLP(cfg.D, hidden_size=cfg.hidden_size, depth=cfg.depth)
        den = Denoiser(pred=cfg.pred, loss=cfg.loss, t_eps=cfg.t_eps,
                       t_sampler=TimeSampler(cfg.t_sampler, cfg.p_mean, cfg.p_std))
        emb, macs = ColumnOrthogonalEmbedding(cfg.D, cfg.d, seed=cfg.proj_seed), linear_macs(net)
        batch_fn = lambda b, g: (emb.embed(sample_toy(cfg.dist, b, cfg.d, g)), None)
    tcfg = cfg.train_config()
    core = make_core(net, den, tcfg)
    return _stepper(core, lambda: batch_fn(tcfg.batch_size, core.generator), macs, tcfg.lr, tcfg.batch_size)


def _stepper(core: TrainCore, next_batch, macs: int, lr: float, batch: int) -> Case:
    counter = iter(range(10 ** 9))
    core.net.train()
    return Case(core, lambda: core.step(next(counter), next_batch), macs, lr, batch)


def build(name: str, batch, mode: str, device: torch.device, overrides=()) -> Case:
    prec, comp = parse_mode(mode)
    if name in CONFIGS:
        if overrides:
            raise SystemExit(f"--set is for the small nets (image, toy), not {name}")
        return full_scale_case(name, batch, prec, comp, device)
    return small_case(name, batch, prec, comp, device, overrides)


def warm(case: Case, n: int, device: torch.device) -> float:
    """``n`` untimed steps (the first ones compile, where the mode compiles); their seconds."""
    t = time.perf_counter()
    for _ in range(n):
        case.step()
    case.core.flush()
    H.sync(device)
    return time.perf_counter() - t


def run(a) -> tuple[dict, dict]:
    """Build every mode, warm each, time them in turns; (config, figures)."""
    from manifold_lab.device import resolve_device
    device = resolve_device(a.device)
    for m in a.modes:
        parse_mode(m)
    ref_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    mm_s = 0.05 if getattr(a, "cpu_smoke", False) else 0.5
    figures = {"matmul_flops": H.matmul_rate(device, ref_dtype, a.matmul_n, mm_s),
               "matmul_dtype": str(ref_dtype).split(".")[-1]}
    if device.type == "cpu" and H.native_bf16():
        figures["matmul_bf16_flops"] = H.matmul_rate(device, torch.bfloat16, a.matmul_n, mm_s)
    cases = {m: build(a.net, a.batch_size, m, device, getattr(a, "overrides", ())) for m in a.modes}
    warm_s = {m: warm(c, a.warmup, device) for m, c in cases.items()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n = a.matmul_n or (8192 if device.type == "cuda" else 1024)
    x, w = (torch.randn(n, n, device=device, dtype=ref_dtype) for _ in range(2))
    fns = {m: c.step for m, c in cases.items()} | {MATMUL: lambda: x @ w}     # the bar, timed in the same turns
    times = H.interleaved(fns, device, repeats=a.repeats, calls=a.steps, warmup=1)
    figures["matmul_flops_interleaved"] = 2 * n ** 3 / times.pop(MATMUL)["median_s"]
    first = times[a.modes[0]]["median_s"]
    for m, c in cases.items():
        dt = times[m]["median_s"]
        flops = 6 * c.macs * c.batch / dt
        figures[m] = {"step_ms": 1e3 * dt, "step_ms_min": 1e3 * times[m]["min_s"],
                      "step_ms_max": 1e3 * times[m]["max_s"], "samples_per_s": c.batch / dt,
                      "useful_flops": flops, "share_of_matmul": flops / figures["matmul_flops_interleaved"],
                      "speedup": first / dt, "warmup_s": warm_s[m], "loss": c.core.flush()[-1][1]}
        if a.profile:
            figures[m]["profile"] = profile(c, device, a.profile)
    if device.type == "cuda":
        figures["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    c0 = next(iter(cases.values()))
    config = {"net": a.net, "batch_size": c0.batch, "modes": a.modes, "device": str(device), "steps": a.steps,
              "repeats": a.repeats, "warmup": a.warmup, "lr": c0.lr, "fwd_macs_per_sample": c0.macs}
    return config, figures


def profile(case: Case, device: torch.device, n: int) -> dict:
    """torch.profiler over ``n`` steps: self time per op (CPU) or kernel (CUDA), grouped (GROUPS), per step;
    the 15 longest."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    cuda = device.type == "cuda"
    with torch_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(n):
            case.step()
        case.core.flush()
        H.sync(device)
    rows = [(e.key, (e.self_device_time_total if cuda else e.self_cpu_time_total) / n, e.count // n)
            for e in prof.key_averages()]
    rows = [r for r in rows if r[1] > 0 and not r[0].startswith("ProfilerStep")]
    total = sum(us for _, us, _ in rows) or 1.0
    groups: dict[str, float] = {}
    for name, us, _ in rows:
        groups[group_of(name)] = groups.get(group_of(name), 0.0) + us
    top = sorted(rows, key=lambda r: -r[1])[:15]
    return {"total_ms": total / 1e3, "timer": "cuda kernels" if cuda else "cpu ops (self time)",
            "groups": {g: us / total for g, us in sorted(groups.items(), key=lambda x: -x[1])},
            "top": [{"name": k[:100], "group": group_of(k), "ms": us / 1e3, "calls": c, "share": us / total}
                    for k, us, c in top]}


def group_of(name: str) -> str:
    """The group (GROUPS) of an op or kernel name; "other" if none matches."""
    low = name.lower()
    return next((g for g, pat in GROUPS if re.search(pat, low)), "other")


def report(config: dict, figures: dict) -> None:
    print(f"step: {config['net']} batch {config['batch_size']} on {config['device']}, "
          f"{torch.get_num_threads()} thread(s); matmul {figures['matmul_flops'] / 1e9:.1f} GFLOP/s "
          f"({figures['matmul_dtype']}; {figures['matmul_flops_interleaved'] / 1e9:.1f} interleaved)"
          + (f", bf16 {figures['matmul_bf16_flops'] / 1e9:.1f} GFLOP/s"
                                            if "matmul_bf16_flops" in figures else ""))
    for m in config["modes"]:
        f = figures[m]
        print(f"  {m:<14} {f['step_ms']:8.2f} ms/step ({f['step_ms_min']:.2f}-{f['step_ms_max']:.2f}), "
              f"{f['samples_per_s']:9.1f} samples/s, {f['useful_flops'] / 1e9:7.1f} GFLOP/s = "
              f"{f['share_of_matmul']:.2f} of matmul, x{f['speedup']:.2f}, warm-up {f['warmup_s']:.1f} s")
        for r in f.get("profile", {}).get("top", [])[:8]:
            print(f"      {r['ms']:8.2f} ms {100 * r['share']:5.1f}%  {r['group']:<16} {r['name'][:80]}")
