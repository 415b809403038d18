"""Our checkpoint layout, loading (ours or the official JiT layout), resume, and the choice of weights.

Our layout (``save_checkpoint``): ``model`` (the raw net's state dict, no ``module.``/``_orig_mod.``
prefixes), ``ema`` ({decay as str: state dict}, in config order), ``optimizer``, ``step`` (optimiser steps
done), ``epoch`` and ``step_in_epoch`` (the data position), ``rng`` (one entry per rank: the training
generator, torch CPU / CUDA, numpy and python states, all as tensors, numbers and strings) and ``config``
(the resolved config dict). The official JiT layout (LTH14/JiT ``save_model``) is read too and converted to
ours on load (:mod:`manifold_lab.train.official`). Reading and writing the bytes safely is
:mod:`manifold_lab.train.ckpt_file`'s job; its names are importable from here too.

``--resume`` takes a file, or a folder: its ``checkpoint-last.pth``, else (damaged or missing) the newest
``checkpoint-NNNN.pth`` that reads cleanly, with a warning naming each bad file (:func:`load_for_resume`).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from manifold_lab.checks import ConfigError
from manifold_lab.train import official
from manifold_lab.train.ckpt_file import (
    LAST,
    CheckpointError,
    read_checkpoint_file,
    resolve_checkpoint,
    write_checkpoint_file,
)

__all__ = ["LAST", "OUR_KEYS", "CheckpointError", "describe", "ema_index", "load_checkpoint", "load_for_resume",
           "load_weights", "read_checkpoint_file", "resolve_checkpoint", "rng_state", "save_checkpoint",
           "set_rng_state", "weights_from_checkpoint", "write_checkpoint_file"]

OUR_KEYS = ("model", "ema", "optimizer", "step", "epoch", "step_in_epoch", "rng", "config")


# ---- random states as weights_only-safe values ------------------------------------------------------------
def rng_state(generator: torch.Generator) -> dict:
    """Every random state that training draws from in this process, as tensors, ints, floats and strings
    (numpy's MT19937 keys and python's 625-word state become int64 tensors)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(words, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` recorded (bit-exact)."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(w) for w in p["state"].tolist()), p["gauss_next"]))



# ---- our layout ------------------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, *, state: dict, step: int, epoch: int, step_in_epoch: int, rng: list,
                    config: dict) -> Path:
    """Write one checkpoint atomically and sealed. ``state``: the training core's ``state_dict()`` (model,
    ema, optimizer); ``rng``: one :func:`rng_state` per rank."""
    obj = {
        "model": state["model"],
        "ema": state["ema"],
        "optimizer": state["optimizer"],
        "step": int(step),
        "epoch": int(epoch),
        "step_in_epoch": int(step_in_epoch),
        "rng": rng,
        "config": config,
    }
    return write_checkpoint_file(path, obj)


def _is_tensor_dict(d) -> bool:
    return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def check_ours(obj, f: Path) -> dict:
    """``obj`` if it has our layout with the right types, else CheckpointError naming what is wrong."""
    missing = [k for k in OUR_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {f} lacks {', '.join(missing)} (it holds {', '.join(map(str, obj))})")
    kinds = {"model": _is_tensor_dict(obj["model"]), "config": isinstance(obj["config"], dict),
             "ema": isinstance(obj["ema"], dict) and all(_is_tensor_dict(v) for v in obj["ema"].values()),
             "optimizer": isinstance(obj["optimizer"], dict) and {"state", "param_groups"} <= set(obj["optimizer"]),
             "rng": isinstance(obj["rng"], list),
             **{k: isinstance(obj[k], int) and obj[k] >= 0 for k in ("step", "epoch", "step_in_epoch")}}
    bad = [k for k, ok in kinds.items() if not ok]
    if bad:
        raise CheckpointError(f"checkpoint {f} is damaged: {', '.join(bad)} do not have the expected type")
    return obj


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[dict, Path]:
    """Load a checkpoint file or folder (its checkpoint-last.pth), ours or the official JiT layout.

    Returns (state in our layout plus ``meta`` = {format, notes, sampling, ...}, the file). An official
    file is converted: ``net.`` stripped, ``model_ema1``/``model_ema2`` -> ``ema``, ``args`` -> ``config``.
    """
    f = resolve_checkpoint(path)
    obj = read_checkpoint_file(f, map_location)
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {f} holds a {type(obj).__name__}, not a checkpoint dict")
    if official.is_official(obj):
        return official.to_ours(obj, f), f
    if "ema" not in obj and "config" not in obj:
        raise CheckpointError(f"checkpoint {f} is neither ours ({', '.join(OUR_KEYS)}) nor the official JiT "
                              f"layout (model, model_ema1, model_ema2, ...); it holds {', '.join(map(str, obj))}")
    state = check_ours(obj, f)
    state["meta"] = {"format": "manifold_lab", "notes": [], "sampling": None}
    return state, f


def _resume_candidates(folder: Path) -> list[Path]:
    """checkpoint-last.pth first, then checkpoint-NNNN.pth from the highest epoch down."""
    numbered = sorted((p for p in folder.glob("checkpoint-*.pth") if p.name != LAST and p.stem[11:].isdigit()),
                      key=lambda p: int(p.stem[11:]), reverse=True)
    return ([folder / LAST] if (folder / LAST).is_file() else []) + numbered


def load_for_resume(path: str | Path) -> tuple[dict, Path, list[str]]:
    """(state, file, warnings) for ``--resume``: a file must read cleanly; a folder falls back from a damaged
    or missing checkpoint-last.pth to the newest checkpoint-NNNN.pth that reads cleanly. Nothing is moved
    or deleted: the bad file stays until the next save replaces it (atomically) with a good one."""
    p = Path(path)
    if not p.is_dir():
        state, f = load_checkpoint(p)
        return _ours_only(state, f), f, []
    candidates = _resume_candidates(p)
    if not candidates:
        resolve_checkpoint(p)                              # raises the usual FileNotFoundError
    notes = [] if (p / LAST).is_file() else [f"warning: no {LAST} in {p}"]
    for f in candidates:
        try:
            state, f = load_checkpoint(f)
        except CheckpointError as e:
            notes.append(f"warning: {e}; trying the previous checkpoint")
            continue
        return _ours_only(state, f), f, notes
    raise CheckpointError(f"no checkpoint in {p} reads cleanly ({len(candidates)} tried: "
                          f"{', '.join(c.name for c in candidates)})")


def _ours_only(state: dict, f: Path) -> dict:
    if state["meta"]["format"] != "manifold_lab":
        raise CheckpointError(f"{f} is an official JiT checkpoint; --resume continues our own runs, start a "
                              "new run from its weights with --init-from")
    if not state["optimizer"].get("param_groups"):
        raise CheckpointError(f"{f} holds no optimizer state, so it cannot be resumed; start a new run from its "
                              "weights with --init-from")
    return state


# ---- choosing weights ------------------------------------------------------------------------------------
def ema_index(which: str) -> int | None:
    """The 1-based EMA number of an "emaN" weight name ("ema2" -> 2), None for anything else ("model", a
    decay such as "0.9999"). The one parser of "emaN" names."""
    return int(which[3:]) if which.startswith("ema") and which[3:].isdigit() else None


def weights_from_checkpoint(ckpt: dict, which: str = "ema1") -> dict:
    """A state dict to sample with. which: "model", "ema1"/"ema2"/... (the i-th EMA), or a decay "0.9999"."""
    if which == "model":
        return ckpt["model"]
    emas = ckpt.get("ema", {})
    i = ema_index(which)
    if i is not None:
        keys = list(emas)
        if not 0 < i <= len(keys):
            raise ConfigError(f"checkpoint has {len(keys)} EMA(s) ({', '.join(keys)}); {which!r} does not exist")
        return emas[keys[i - 1]]
    for k in emas:
        try:
            if float(k) == float(which):
                return emas[k]
        except ValueError:
            break
    raise ConfigError(f"no EMA {which!r} in checkpoint; it has: model, "
                      + ", ".join(f"ema{i + 1} (decay {k})" for i, k in enumerate(emas)))


def describe(state: dict, which: str, path: Path) -> str:
    """One line: which weights of which checkpoint, and what the network is, e.g. "ema1 weights from F
    (decay 0.9999, official JiT checkpoint: model_ema1, epoch 599 finished): JiT-B/16, 256 px, 1000 classes"."""
    cfg, meta = state["config"], state.get("meta", {})
    decays = list(state.get("ema", {}))
    details = []
    i = ema_index(which)
    if i is not None and 0 < i <= len(decays):
        details.append(f"decay {decays[i - 1]}")
    if meta.get("format") == "official":
        details.append(f"official JiT checkpoint: {meta['source_keys'].get(which, which)}, {meta['position']}")
    else:
        details.append(f"step {state['step']}, epoch {state['epoch']}")
    net = f"{cfg['model']}, {cfg['img_size']} px, " + \
          ("unconditional" if cfg.get("unconditional") else f"{cfg['num_classes']} classes")
    return f"{which} weights from {path} ({'; '.join(details)}): {net}"


def load_weights(net: torch.nn.Module, weights: dict, path: Path) -> None:
    """Strict ``load_state_dict`` whose failure is one line naming the first differences."""
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in weights and tuple(weights[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = [f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}" for label, items in
                 (("missing", missing), ("unexpected", extra), ("shape (checkpoint vs model)", shapes)) if items]
        raise CheckpointError(f"the weights of {path} do not fit the configured network: {'; '.join(parts)}")
    net.load_state_dict(weights)
