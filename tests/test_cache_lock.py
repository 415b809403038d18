"""io.build_lock: of several processes about to build the same cache file, one builds it, the others wait and
find it made (real processes, a real file lock)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from manifold_lab import io

BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from manifold_lab.io import build_lock, atomic_write
    path, log = Path(sys.argv[1]), Path(sys.argv[2])
    with build_lock(path):
        if not path.is_file():
            with open(log, "a") as f:
                f.write("built\\n")
            time.sleep(1.0)                      # a slow build: the other process arrives meanwhile
            atomic_write(path, lambda tmp: Path(tmp).write_text("made"))
    print(path.read_text())
""")


def test_two_processes_build_a_cache_file_once(tmp_path):
    path, log = tmp_path / "cache" / "thing.npz", tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(path), str(log)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs == ["made", "made"]
    assert log.read_text() == "built\n"                       # one build; without the lock both would build
    assert (path.parent / "thing.npz.lock").is_file()


def test_a_file_system_without_locks_runs_the_block_unlocked(tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")

    def refuse(*a):
        raise OSError(38, "Function not implemented")
    monkeypatch.setattr(fcntl, "flock", refuse)
    ran = []
    with io.build_lock(tmp_path / "sub" / "x.pt"):
        ran.append(True)
    assert ran == [True] and (tmp_path / "sub").is_dir()
