"""Checkpoints that lose nothing, are read safely, and say what is wrong with a damaged file.

Our layout (``save_checkpoint``): ``model`` (the raw net's state dict, no ``module.``/``_orig_mod.``
prefixes), ``ema`` ({decay as str: state dict}, in config order), ``optimizer``, ``step`` (optimiser steps
done), ``epoch`` and ``step_in_epoch`` (the data position), ``rng`` (one entry per rank: the training
generator, torch CPU / CUDA, numpy and python states, all as tensors, numbers and strings) and ``config``
(the resolved config dict). The official JiT layout (LTH14/JiT ``save_model``) is read too and converted to
ours on load (:mod:`manifold_lab.train.official`).

Safe loading: every file goes through :func:`read_checkpoint_file`: ``torch.load(weights_only=True)``
with exactly one extra global allowed (``argparse.Namespace``, the official ``args``). Before unpickling,
the bytes are checked: our files carry a SHA-256 of their content in the zip comment (any changed or
missing byte is caught); other zip files have every member's CRC-32 checked. Whatever is wrong becomes one
:class:`CheckpointError` line naming the file and the reason.

``--resume`` takes a file, or a folder: its ``checkpoint-last.pth``, else (damaged or missing) the newest
``checkpoint-NNNN.pth`` that reads cleanly, with a warning naming each bad file (:func:`load_for_resume`).
"""
from __future__ import annotations

import argparse
import hashlib
import random
import re
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from manifold_lab.checks import ConfigError
from manifold_lab.io import atomic_write

LAST = "checkpoint-last.pth"
SAFE_GLOBALS = (argparse.Namespace,)             # the only non-weights type a checkpoint may hold
OUR_KEYS = ("model", "ema", "optimizer", "step", "epoch", "step_in_epoch", "rng", "config")
_EOCD = b"PK\x05\x06"                             # zip end-of-central-directory record (22 bytes + comment)
_SEAL = b"manifold_lab-sha256:"
_SEAL_LEN = len(_SEAL) + 64
_CHUNK = 1 << 24


class CheckpointError(ConfigError):
    """A checkpoint cannot be used: damaged, unsafe, or not a JiT checkpoint. One line: the file and why."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A file as it is; a folder -> its checkpoint-last.pth. Raises FileNotFoundError saying what is missing."""
    p = Path(path)
    if p.is_dir():
        f = p / LAST
        if not f.is_file():
            found = sorted(x.name for x in p.glob("checkpoint-*.pth"))
            hint = f"; it holds {', '.join(found)} (pass one of them as a file)" if found else ""
            raise FileNotFoundError(f"no {LAST} in folder {p}{hint}")
        return f
    if p.is_file():
        return p
    raise FileNotFoundError(f"checkpoint {p} not found (pass a checkpoint file or a folder holding {LAST})")


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


# ---- the file: sealed writes, integrity checks, safe reads ------------------------------------------------
def _sha256(f: Path, n: int) -> str:
    """SHA-256 of the first ``n`` bytes of ``f`` followed by two zero bytes: the file as torch wrote it,
    whose zip end record ends in a zero comment length (the seal replaces those two bytes)."""
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        while n > 0:
            block = fh.read(min(_CHUNK, n))
            if not block:
                break
            h.update(block)
            n -= len(block)
    h.update(b"\0\0")
    return h.hexdigest()


class _HashingFile:
    """A write-only file that hashes what passes through it (torch.save writes sequentially)."""

    def __init__(self, fh):
        self.fh, self.sha, self.tail = fh, hashlib.sha256(), b""

    def write(self, data) -> int:
        self.sha.update(data)
        self.tail = (self.tail + bytes(memoryview(data)[-22:]))[-22:]
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def write_checkpoint_file(path: str | Path, obj: dict) -> Path:
    """torch.save ``obj`` atomically (a temp file, then rename) and sealed: the SHA-256 of the bytes torch
    wrote goes into the zip comment of its end record, so :func:`check_integrity` catches any changed byte."""
    def write(tmp):
        with open(tmp, "wb") as fh:
            out = _HashingFile(fh)
            torch.save(obj, out)
            if out.tail[:4] != _EOCD or out.tail[20:] != b"\0\0":
                raise RuntimeError(f"torch.save wrote {tmp} without a plain zip end record; cannot seal it")
            comment = _SEAL + out.sha.hexdigest().encode()
            fh.seek(-2, 2)
            fh.write(struct.pack("<H", len(comment)) + comment)
    return atomic_write(path, write)


def check_integrity(f: Path) -> str:
    """"sealed" (our SHA-256 matches) or "crc" (an unsealed zip: every member's CRC-32 matches) or "legacy"
    (not a zip; torch's pre-1.6 format, left to the safe unpickler). Raises CheckpointError otherwise."""
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(4)
        fh.seek(max(size - 22 - _SEAL_LEN, 0))
        tail = fh.read()
    if size >= 22 + _SEAL_LEN and tail[:4] == _EOCD and tail[20:22] == struct.pack("<H", _SEAL_LEN):
        comment = tail[22:]
        if not comment.startswith(_SEAL) or _sha256(f, size - _SEAL_LEN - 2).encode() != comment[len(_SEAL):]:
            raise CheckpointError(f"checkpoint {f} is damaged: its content does not match the SHA-256 "
                                  "written with it (changed bytes)")
        return "sealed"
    if head != b"PK\x03\x04":
        if size == 0:
            raise CheckpointError(f"checkpoint {f} is damaged: the file is empty")
        return "legacy"
    if size < 22 or tail[-22:-18] != _EOCD or tail[-2:] != b"\0\0":
        raise CheckpointError(f"checkpoint {f} is damaged: the zip archive has no end record (truncated, "
                              "or bytes changed at its end)")
    try:
        with zipfile.ZipFile(f) as z:
            for info in z.infolist():
                with z.open(info) as m:
                    while m.read(_CHUNK):
                        pass
    except Exception as e:  # noqa: BLE001  (zipfile raises many kinds on damaged input)
        raise CheckpointError(f"checkpoint {f} is damaged: {_first_line(e)}") from None
    return "crc"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _unsafe_reason(e: Exception) -> str | None:
    """What a weights_only refusal was about, in a few words (None: not a refusal)."""
    msg = str(e)
    if "Weights only load failed" not in msg and "WeightsUnpickler" not in msg:
        return None
    g = re.search(r"GLOBAL ([\w.]+)", msg)
    if g:
        return f"loading it would need the Python global {g.group(1)}"
    op = re.search(r"Unsupported operand (\d+)", msg)
    if op:
        return f"it uses pickle instruction {op.group(1)}, which safe loading does not run (not a torch.save file?)"
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip() and "weights_only" not in ln and "PyTorch" not in ln]
    return f"safe loading refused it ({lines[0][:160] if lines else 'no reason given'})"


def read_checkpoint_file(f: str | Path, map_location="cpu"):
    """The unpickled object of one file, read safely: integrity check, then ``torch.load(weights_only=True)``
    allowing only ``argparse.Namespace`` besides tensors, numbers, strings, lists, tuples and dicts."""
    f = Path(f)
    check_integrity(f)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            warnings.simplefilter("ignore")
            return torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises RuntimeError, UnpicklingError, EOFError, ...)
        unsafe = _unsafe_reason(e)
        if unsafe:
            raise CheckpointError(f"checkpoint {f} refused: {unsafe}; a checkpoint may hold only tensors, "
                                  "numbers, strings, lists, dicts and argparse.Namespace") from None
        raise CheckpointError(f"checkpoint {f} is damaged or not a torch checkpoint: {_first_line(e)}") from None


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
    from manifold_lab.train import official

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
def weights_from_checkpoint(ckpt: dict, which: str = "ema1") -> dict:
    """A state dict to sample with. which: "model", "ema1"/"ema2"/... (the i-th EMA), or a decay "0.9999"."""
    if which == "model":
        return ckpt["model"]
    emas = ckpt.get("ema", {})
    if which.startswith("ema") and which[3:].isdigit():
        i = int(which[3:]) - 1
        keys = list(emas)
        if not 0 <= i < len(keys):
            raise ConfigError(f"checkpoint has {len(keys)} EMA(s) ({', '.join(keys)}); {which!r} does not exist")
        return emas[keys[i]]
    for k in emas:
        try:
            if float(k) == float(which):
                return emas[k]
        except ValueError:
            break
    raise ConfigError(f"no EMA {which!r} in checkpoint; it has: model, "
                      + ", ".join(f"ema{i + 1} (decay {k})" for i, k in enumerate(emas)))


def ema_names(ckpt: dict) -> list[str]:
    """The EMA choices a checkpoint offers, as accepted by weights_from_checkpoint."""
    return [f"ema{i + 1}" for i in range(len(ckpt.get("ema", {})))]


def describe(state: dict, which: str, path: Path) -> str:
    """One line: which weights of which checkpoint, and what the network is, e.g. "ema1 weights from F
    (decay 0.9999, official JiT checkpoint: model_ema1, epoch 599 finished): JiT-B/16, 256 px, 1000 classes"."""
    cfg, meta = state["config"], state.get("meta", {})
    decays = list(state.get("ema", {}))
    details = []
    if which.startswith("ema") and which[3:].isdigit() and 0 < int(which[3:]) <= len(decays):
        details.append(f"decay {decays[int(which[3:]) - 1]}")
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
