"""The checkpoint file: sealed atomic writes, integrity checks, safe reads, and the one error type.

Safe loading: every file goes through :func:`read_checkpoint_file`: ``torch.load(weights_only=True)``
with exactly one extra global allowed (``argparse.Namespace``, the official ``args``). Before unpickling,
the bytes are checked: our files carry a SHA-256 of their content in the zip comment (any changed or
missing byte is caught); other zip files have every member's CRC-32 checked. Whatever is wrong becomes one
:class:`CheckpointError` line naming the file and the reason.

This module knows bytes, not layouts: :mod:`manifold_lab.train.official` converts the official JiT layout,
:mod:`manifold_lab.train.checkpoint` holds ours and the loading that dispatches between them.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import struct
import warnings
import zipfile
from pathlib import Path

import torch

from manifold_lab.checks import ConfigError
from manifold_lab.io import atomic_write

LAST = "checkpoint-last.pth"
SAFE_GLOBALS = (argparse.Namespace,)             # the only non-weights type a checkpoint may hold
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
