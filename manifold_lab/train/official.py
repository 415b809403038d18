"""The official JiT checkpoint layout (LTH14/JiT ``util/misc.py: save_model``): pure conversion to ours and back.

An official checkpoint is a dict, in this key order::

    model       the Denoiser's state dict: the JiT's tensors under ``net.`` (official parameter order:
                pos_embed, in_context_posemb, t_embedder, y_embedder, x_embedder, blocks (norm1, q_norm,
                k_norm, qkv, proj, norm2, mlp, adaLN), final_layer); float32, no buffers
    optimizer   AdamW state dict, two param groups [no_decay, decay] (1-D tensors and biases / the rest,
                frozen pos_embed left out), indices numbered group by group in official parameter order
    epoch       int, the 0-based index of the last finished epoch
    args        argparse.Namespace of main_jit.py (model, img_size, class_num, noise_scale, P_mean, ...)
    model_ema1  / model_ema2: state dicts with the keys of ``model`` (EMA decays args.ema_decay1 / 2)

Our JiT has the same tensor names (``pos_embed`` is a persistent buffer here, a frozen parameter there;
RoPE tables are non-persistent buffers here, plain attributes there: neither is in a state dict), so the
conversion is: add or strip ``net.``, reorder the keys, re-index the optimiser, map ``args`` <-> config.
A file we write also carries ``args.manifold_lab`` (our config, step, data position, RNG states), which
the official code never reads and which makes ours -> official -> ours bit-identical.

Dict in, dict out: reading and writing files is :mod:`manifold_lab.train.ckpt_file`'s, loading either
layout :mod:`manifold_lab.train.checkpoint`'s, the ``export`` command :mod:`manifold_lab.train.export`'s.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import torch

from manifold_lab.checks import ConfigError
from manifold_lab.config import config_from_values
from manifold_lab.nets.jit import JIT_SIZES, JiT_models
from manifold_lab.train.build import build_model
from manifold_lab.train.ckpt_file import CheckpointError
from manifold_lab.train.config import ImageNetConfig, config_from_dict
from manifold_lab.train.core import param_groups

PREFIX = "net."
OFFICIAL_MODELS = ("JiT-B/16", "JiT-B/32", "JiT-L/16", "JiT-L/32", "JiT-H/16", "JiT-H/32")
# main_jit.py's argparse fields and defaults (44 dests)
OFFICIAL_ARGS = dict(
    model="JiT-B/16", img_size=256, attn_dropout=0.0, proj_dropout=0.0, epochs=200, warmup_epochs=5,
    batch_size=128, lr=None, blr=5e-5, min_lr=0.0, lr_schedule="constant", weight_decay=0.0, ema_decay1=0.9999,
    ema_decay2=0.9996, P_mean=-0.8, P_std=0.8, noise_scale=1.0, t_eps=0.05, label_drop_prob=0.1, seed=0,
    start_epoch=0, num_workers=12, pin_mem=True, sampling_method="heun", num_sampling_steps=50, cfg=1.0,
    interval_min=0.0, interval_max=1.0, num_images=50000, eval_freq=40, online_eval=False, evaluate_gen=False,
    gen_bsz=256, data_path="./data/imagenet", class_num=1000, output_dir="./output_dir", resume="",
    save_last_freq=5, log_freq=100, device="cuda", world_size=1, local_rank=-1, dist_on_itp=False,
    dist_url="env://")
# official args field -> our config field (same meaning, same units)
ARG_TO_CONFIG = {"model": "model", "img_size": "img_size", "class_num": "num_classes", "noise_scale": "noise_scale",
                 "P_mean": "p_mean", "P_std": "p_std", "t_eps": "t_eps", "label_drop_prob": "label_drop",
                 "epochs": "epochs", "warmup_epochs": "warmup_epochs", "batch_size": "batch_size", "blr": "blr",
                 "min_lr": "min_lr", "lr_schedule": "lr_schedule", "weight_decay": "weight_decay", "seed": "seed"}
# official sampling args -> our sampling flag names (the checkpoint's recommended sampling settings)
SAMPLING_ARGS = {"cfg": "cfg", "num_sampling_steps": "sample_steps", "sampling_method": "solver"}
_TOP = ("pos_embed", "in_context_posemb", "t_embedder", "y_embedder", "x_embedder", "blocks", "final_layer")
_BLOCK = ("norm1", "attn.q_norm", "attn.k_norm", "attn.qkv", "attn.proj", "norm2", "mlp", "adaLN_modulation")
_SIZES = {(768, 12): "B", (1024, 24): "L", (1280, 32): "H", (1664, 40): "G"}   # (hidden, depth) -> size


def is_official(obj) -> bool:
    return isinstance(obj, dict) and {"model", "model_ema1", "model_ema2"} <= set(obj)


def official_order(names: list[str]) -> list[str]:
    """Our tensor names in the official parameter order (a stable sort: ties keep our order)."""
    def rank(name: str):
        parts = name.split(".")
        top = _TOP.index(parts[0]) if parts[0] in _TOP else len(_TOP)
        if parts[0] != "blocks" or len(parts) < 3 or not parts[1].isdigit():
            return (top, 0, 0)
        rest = ".".join(parts[2:])
        sub = next((i for i, p in enumerate(_BLOCK) if rest == p or rest.startswith(p + ".")), len(_BLOCK))
        return (top, int(parts[1]), sub)
    return sorted(names, key=rank)


# ---- the network and its optimiser groups -----------------------------------------------------------------
def meta_net(cfg) -> torch.nn.Module:
    """The config's network on the meta device (names, shapes and requires_grad without memory)."""
    c = dataclasses.replace(cfg, compile=False, model_args={k: v for k, v in cfg.model_args.items() if k != "compile"})
    with torch.device("meta"):
        return build_model(c)


def our_groups(net) -> list[list[str]]:
    """Names in our optimiser's groups, [decay, no_decay] (manifold_lab.train.core.param_groups)."""
    name_of = {id(p): n for n, p in net.named_parameters()}
    return [[name_of[id(p)] for p in g["params"]] for g in param_groups(net, 0.0)]


def official_groups(net) -> list[list[str]]:
    """Names in the official optimiser's groups, [no_decay, decay] (misc.add_weight_decay): trainable
    parameters in official order; 1-D tensors and biases get no decay."""
    params = dict(net.named_parameters())
    order = official_order([n for n, p in params.items() if p.requires_grad])
    no_decay = [n for n in order if params[n].ndim == 1 or n.endswith(".bias")]
    return [no_decay, [n for n in order if n not in set(no_decay)]]


def reindex_optimizer(osd: dict, src: list[list[str]], dst: list[list[str]], where: str) -> dict:
    """An AdamW state dict re-indexed from groups of names ``src`` to ``dst`` (two groups each, the decay
    group and the no-decay group swapped: dst group k takes the settings of src group 1 - k)."""
    saved = osd["param_groups"]
    if [len(g["params"]) for g in saved] != [len(n) for n in src]:
        raise CheckpointError(f"{where}: the optimizer's groups hold {[len(g['params']) for g in saved]} "
                              f"parameters, the network needs {[len(n) for n in src]}")
    old = {n: i for g, names in zip(saved, src) for i, n in zip(g["params"], names)}
    groups, state, idx = [], {}, 0
    for k, names in enumerate(dst):
        g = {key: v for key, v in saved[1 - k].items() if key != "params"}
        g["params"] = list(range(idx, idx + len(names)))
        for n in names:
            if old[n] in osd["state"]:
                state[idx] = osd["state"][old[n]]
            idx += 1
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ---- official -> ours ------------------------------------------------------------------------------------
def _strip(sd, f: Path, key: str) -> dict:
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"checkpoint {f}: {key} is not a state dict of tensors")
    if not all(isinstance(k, str) and k.startswith(PREFIX) for k in sd):
        raise CheckpointError(f"checkpoint {f}: {key} has keys without the official {PREFIX!r} prefix")
    return {k[len(PREFIX):]: v.detach() for k, v in sd.items()}


def config_from_args(a: dict) -> tuple[dict, list[str]]:
    """Our config fields from the official args (missing fields: the official defaults, noted)."""
    fields = [*ARG_TO_CONFIG, "attn_dropout", "proj_dropout", "ema_decay1", "ema_decay2"]
    missing = [k for k in fields if k not in a]
    get = lambda k: a.get(k, OFFICIAL_ARGS[k])
    values = {ours: get(k) for k, ours in ARG_TO_CONFIG.items()}
    values.update(model_args={"attn_drop": float(get("attn_dropout")), "proj_drop": float(get("proj_dropout"))},
                  ema_decays=[float(get("ema_decay1")), float(get("ema_decay2"))], pred="x", loss="v", lr=None,
                  betas=[0.9, 0.95])
    if values["model"] not in JiT_models:
        raise ConfigError(f"its args name model {values['model']!r}, which is no JiT model")
    notes = [f"config from its args ({values['model']}, {values['img_size']} px, {values['num_classes']} classes, "
             f"noise scale {values['noise_scale']})"]
    if missing:
        notes.append(f"its args lack {', '.join(missing)}: official defaults used")
    return values, notes


def sampling_from_args(a: dict) -> dict | None:
    """The checkpoint's recommended sampling settings (cfg, interval, sample_steps, solver), where given."""
    out = {ours: a[k] for k, ours in SAMPLING_ARGS.items() if k in a}
    if "interval_min" in a and "interval_max" in a:
        out["interval"] = [float(a["interval_min"]), float(a["interval_max"])]
    return out or None


def infer_from_shapes(sd: dict) -> tuple[dict, list[str]]:
    """Model, img_size and classes from tensor shapes (no args): hidden = pos_embed's last dim, patch =
    proj1's kernel, img = sqrt(tokens) * patch, depth = number of blocks."""
    if "pos_embed" not in sd or "x_embedder.proj1.weight" not in sd:
        raise ConfigError("it has no args and no pos_embed / x_embedder.proj1.weight to infer the network from")
    hidden, tokens, patch = sd["pos_embed"].shape[-1], sd["pos_embed"].shape[1], sd["x_embedder.proj1.weight"].shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    grid = math.isqrt(tokens)
    model = f"JiT-{_SIZES.get((hidden, depth), '?')}/{patch}"
    if model not in JiT_models or grid * grid != tokens:
        raise ConfigError(f"it has no args, and its shapes (hidden {hidden}, depth {depth}, patch {patch}, "
                          f"{tokens} tokens) match no JiT model")
    y = sd.get("y_embedder.embedding_table.weight")
    values = dict(model=model, img_size=grid * patch, num_classes=int(y.shape[0]) - 1 if y is not None else 1000,
                  unconditional=y is None)
    return values, [f"no args in the checkpoint: {model}, {grid * patch} px, "
                    f"{'unconditional' if y is None else str(values['num_classes']) + ' classes'} inferred from "
                    f"tensor shapes; noise scale {grid * patch / 256:g} (img_size / 256, the paper's rule) and "
                    "the training settings are defaults"]


def _checked(sd: dict, net, f: Path, key: str, model: str) -> dict:
    """``sd`` in our key order, or a one-line error naming the first mismatches with ``net``."""
    own = net.state_dict()
    bad = [k for k in own if k not in sd][:3] + [k for k in sd if k not in own][:3] + \
        [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
         if k in sd and tuple(sd[k].shape) != tuple(v.shape)][:3]
    if bad:
        raise CheckpointError(f"checkpoint {f}: {key} does not fit {model} (missing, unexpected or mis-shaped: "
                              f"{', '.join(bad)})")
    return {k: sd[k] for k in own}


def to_ours(raw: dict, f: Path) -> dict:
    """An official checkpoint in our layout, with ``meta``: format "official", notes (what was inferred),
    sampling (recommended settings from args, or None), source_keys, position, args (as a dict)."""
    sds = {k: _strip(raw[k], f, k) for k in ("model", "model_ema1", "model_ema2")}
    args = raw.get("args")
    a = vars(args) if isinstance(args, argparse.Namespace) else args if isinstance(args, dict) else None
    extra = a.get("manifold_lab") if a else None
    extra = extra if isinstance(extra, dict) and isinstance(extra.get("config"), dict) else None
    try:
        if extra is not None:
            values, notes = dict(extra["config"]), ["config, step and RNG states restored from args.manifold_lab"]
        elif a is not None:
            values, notes = config_from_args(a)
            if not {"model", "img_size", "class_num"} <= set(a):          # a fork's args: the net from shapes
                inferred, more = infer_from_shapes(sds["model"])
                values.update(inferred)
                notes += more
        else:
            values, notes = infer_from_shapes(sds["model"])
        cfg = config_from_values(ImageNetConfig, values, f"the args of {f}")
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {f}: {e}") from None
    if ":" in cfg.model:
        raise CheckpointError(f"checkpoint {f} names custom model {cfg.model!r}; official files hold JiT models")
    net = meta_net(cfg)
    weights = {k: _checked(sd, net, f, k, cfg.model) for k, sd in sds.items()}
    keys = [str(float(d)) for d in cfg.ema_decays][:2]
    if len(set(keys)) < len(keys):
        raise CheckpointError(f"checkpoint {f}: both EMAs have decay {keys[0]}")
    opt = raw.get("optimizer")
    optimizer = {"state": {}, "param_groups": []}
    if isinstance(opt, dict) and opt.get("param_groups"):
        try:
            optimizer = reindex_optimizer(opt, official_groups(net), our_groups(net), f"checkpoint {f}")
        except (CheckpointError, KeyError, TypeError) as e:          # the weights are still usable
            notes.append(f"its optimizer state was not converted ({e})")
    epoch = raw.get("epoch")
    state = {"model": weights["model"], "ema": dict(zip(keys, [weights["model_ema1"], weights["model_ema2"]])),
             "optimizer": optimizer, "step": 0, "epoch": int(epoch) + 1 if isinstance(epoch, int) else 0,
             "step_in_epoch": 0, "rng": [], "config": values if extra is not None else cfg.to_dict()}
    if extra is not None:
        state.update({k: extra[k] for k in ("step", "epoch", "step_in_epoch", "rng") if k in extra})
    state["meta"] = {"format": "official", "notes": notes, "sampling": sampling_from_args(a) if a else None,
                     "source_keys": {"model": "model", "ema1": "model_ema1", "ema2": "model_ema2"}, "args": a,
                     "position": f"epoch {epoch} finished" if isinstance(epoch, int) else "no epoch recorded"}
    return state


# ---- ours -> official ------------------------------------------------------------------------------------
def _args_for(cfg, state: dict, notes: list[str]) -> argparse.Namespace:
    """main_jit.py's args for our config: every official field, plus ``manifold_lab`` (ours, exact)."""
    meta = state.get("meta") or {}
    world = max(len(state["rng"]), 1)
    d = dict(OFFICIAL_ARGS, **(meta.get("args") or {}))
    d.update({off: getattr(cfg, ours) for off, ours in ARG_TO_CONFIG.items()})
    defaults = [OFFICIAL_ARGS["ema_decay1"], OFFICIAL_ARGS["ema_decay2"]]
    decays = (list(cfg.ema_decays) + defaults[len(cfg.ema_decays):])[:2]
    size_drop = JIT_SIZES.get(cfg.model[4:5], {}).get("proj_drop", 0.0)
    d.update(noise_scale=cfg.resolved_noise_scale, batch_size=cfg.batch_size * cfg.accum_steps,
             lr=cfg.resolved_lr(world), world_size=world, distributed=world > 1,
             attn_dropout=float(cfg.model_args.get("attn_drop", 0.0)),
             proj_dropout=float(cfg.model_args.get("proj_drop", size_drop)),
             ema_decay1=float(decays[0]), ema_decay2=float(decays[1]),
             data_path=cfg.data_path, output_dir=cfg.output_dir, save_last_freq=cfg.save_every_epochs,
             log_freq=cfg.log_every, num_workers=cfg.num_workers)
    from manifold_lab.sample import SamplingConfig  # its defaults; "cfg" is main_jit.py's guidance scale

    dflt = SamplingConfig()
    rec = meta.get("sampling") or {"cfg": dflt.cfg_scale, "interval": dflt.interval,
                                   "sample_steps": dflt.sample_steps, "solver": dflt.solver}
    d.update(cfg=float(rec.get("cfg", d["cfg"])), num_sampling_steps=int(rec.get("sample_steps", dflt.sample_steps)),
             sampling_method=str(rec.get("solver", dflt.solver)))
    if "interval" in rec:
        d.update(interval_min=float(rec["interval"][0]), interval_max=float(rec["interval"][1]))
    config = dict(state["config"])
    if len(cfg.ema_decays) > 2:
        config["ema_decays"] = list(cfg.ema_decays[:2])
        notes.append(f"only the first two of {len(cfg.ema_decays)} EMAs fit the official layout")
    d["manifold_lab"] = {"config": config, **{k: state[k] for k in ("step", "epoch", "step_in_epoch", "rng")}}
    return argparse.Namespace(**d)


def to_official(state: dict) -> tuple[dict, list[str]]:
    """Our checkpoint state (as load_checkpoint returns it) in the official layout, and notes on what did
    not carry over exactly (fewer than two EMAs, a network the official code cannot build)."""
    cfg = config_from_dict(dict(state["config"]))
    if ":" in cfg.model:
        raise CheckpointError(f"model {cfg.model!r} is a custom network; the official layout holds JiT models")
    notes = []
    stock = cfg.model in OFFICIAL_MODELS and not cfg.unconditional and \
        set(cfg.model_args) <= {"attn_drop", "proj_drop", "compile", "attn_impl"}
    if not stock:
        notes.append(f"the official code builds only {', '.join(OFFICIAL_MODELS)} at their stock sizes, "
                     f"conditional; this network ({cfg.model}, model_args {cfg.model_args}"
                     f"{', unconditional' if cfg.unconditional else ''}) loads with manifold_lab only")
    net = meta_net(cfg)
    emas = list(state["ema"].values())
    if len(emas) < 2:
        notes.append(f"the checkpoint has {len(emas)} EMA(s); model_ema2{'' if emas else ' and model_ema1'} "
                     f"repeat{'s' if emas else ''} {'model_ema1' if emas else 'the model weights'}")
        emas = (emas + [state["model"]])[:1] * 2
    order = official_order(list(state["model"]))
    prefixed = [{PREFIX + k: sd[k] for k in order} for sd in (state["model"], emas[0], emas[1])]
    opt = state["optimizer"]
    optimizer = reindex_optimizer(opt, our_groups(net), official_groups(net), "our optimizer") \
        if opt.get("param_groups") else opt
    out = {"model": prefixed[0], "optimizer": optimizer, "epoch": int(state["epoch"]) - 1,
           "args": _args_for(cfg, state, notes), "model_ema1": prefixed[1], "model_ema2": prefixed[2]}
    return out, notes
