"""Test-wide settings: one torch thread per test process.

The tests use tiny networks, for which one thread is as fast as two, and a single thread keeps test
subprocesses (papermill kernels, torchrun workers) from oversubscribing a 2-core machine.
"""
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # inherited by subprocesses started from tests

import torch  # noqa: E402

torch.set_num_threads(1)
