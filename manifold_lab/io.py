"""Atomic file writes: write to a temporary name in the same folder, then os.replace.

A killed process therefore never leaves a half-written file under the final name. The file gets the mode
a plain ``open(path, "w")`` would give it (0666 less the process umask, e.g. 0644 or 0664), so results and
checkpoints on a shared filesystem are as readable as every other tool's files (a temporary file is
created 0600).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:            # elsewhere: set and restore it (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically. Returns the final Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path, text: str) -> Path:
    def w(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return atomic_write(path, w)


def write_json(path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path) -> Any:
    with open(path) as f:
        return json.load(f)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (Path, tuple, set)):
        return str(o) if isinstance(o, Path) else list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_torch(path, obj: Any) -> Path:
    import torch
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_npz(path, **arrays) -> Path:
    import numpy as np

    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return atomic_write(path, w)


def save_table(path, df) -> Path:
    """Write a DataFrame as CSV (.csv) or parquet (.parquet), chosen by the suffix."""
    path = Path(path)
    if path.suffix == ".parquet":
        return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def save_figure(path, fig, dpi: int = 130) -> Path:
    """Save a matplotlib Figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    plt.close(fig)
    return out


CACHE_KINDS = ("real_images", "features", "pixel_pca", "fid_refs")


def cache_dir(kind: str) -> Path:
    """The cache folder of one ``kind`` of prepared file (real_images, features, pixel_pca, fid_refs):
    ``$MANIFOLD_LAB_CACHE/<kind>``, default ``~/.cache/manifold_lab/<kind>``. Not created here."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"cache kind {kind!r} is not one of {', '.join(CACHE_KINDS)}")
    root = os.environ.get("MANIFOLD_LAB_CACHE") or Path.home() / ".cache" / "manifold_lab"
    return Path(root) / kind


@contextlib.contextmanager
def build_lock(path: Path):
    """Hold an exclusive lock on ``<path>.lock`` (beside ``path``, its folder created) for the ``with`` block, so
    that of several processes about to build the same cache file (the workers of a study on a fresh machine) the
    first builds it and the others wait, then find it made. Where the system offers no file locks (no fcntl, or
    a file system that refuses them) the block runs unlocked, as before: the write stays atomic either way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:          # not POSIX: no lock
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:          # e.g. a network file system without locks
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_npz(path, build: Callable[[], dict]) -> dict:
    """The arrays of the ``.npz`` cache file ``path`` ({name: array}), or ``build()``'s, saved there first
    (atomically, under :func:`build_lock`, so that of several processes the first builds and the others read)."""
    import numpy as np

    path = Path(path)
    with build_lock(path):
        if path.is_file():
            with np.load(path) as f:
                return {name: f[name] for name in f.files}
        arrays = build()
        save_npz(path, **arrays)
    return arrays


# ---- outputs checked before any work -------------------------------------------------------------------
def _unwritable(folder: Path) -> str | None:
    """Why files cannot be created in the existing folder ``folder`` (None if they can)."""
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only filesystem"
    except OSError:
        pass
    return f"{folder} is not writable (permission denied)"


def _check_path(path, what: str) -> Path:
    from manifold_lab.checks import ConfigError

    if path is None or not str(path).strip():
        raise ConfigError(f"{what} is empty; give a path")
    path = Path(path)
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc != path:
        why = _unwritable(anc)
        if why:
            raise ConfigError(f"{what} {path}: cannot be created, {why}")
    return path


def check_writable_dir(path, what: str = "--out") -> Path:
    """An output folder, checked before any work: not empty, not a file, creatable or writable (a one-line
    ConfigError naming the path and the reason: exists as a file, read-only, permission). Creates nothing."""
    from manifold_lab.checks import ConfigError

    path = _check_path(path, what)
    if path.exists():
        why = _unwritable(path)
        if why:
            raise ConfigError(f"{what} {path}: {why}")
    return path


def check_writable_file(path, what: str = "--out") -> Path:
    """An output file, checked before any work: not empty, not a folder, its folder creatable or writable."""
    from manifold_lab.checks import ConfigError

    path = _check_path(path, what)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    if path.exists():
        why = _unwritable(path.parent)
        if why or not os.access(path, os.W_OK):
            raise ConfigError(f"{what} {path}: {why or 'the file is not writable (permission denied)'}")
    return path


_WARNED: set[str] = set()    # warning lines already printed by this process


def warn_once(text: str) -> None:
    """Print ``warning: <text>`` on stderr, once per process for each distinct text."""
    import sys

    if text not in _WARNED:
        _WARNED.add(text)
        print(f"warning: {text}", file=sys.stderr, flush=True)


def read_json_or_warn(path, *, expect: type = dict, consequence: str = "ignored") -> Any | None:
    """The JSON value in ``path`` if it parses as an ``expect`` (dict, list, ...); None otherwise. Never raises:
    an absent file gives None silently; an unreadable, malformed or mistyped one gives None and one warning
    line naming the file, the reason and ``consequence`` (e.g. "the point counts as failed"), once per process."""
    path = Path(path)
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        msg = str(e).splitlines()[0][:120] if str(e) else "unreadable"
        warn_once(f"{path} is damaged ({type(e).__name__}: {msg}); {consequence}")
        return None
    if not isinstance(value, expect):
        warn_once(f"{path} is damaged (holds {type(value).__name__}, not {expect.__name__}); {consequence}")
        return None
    return value
