"""The kernel a study point's notebook runs in: quiet (IPC transport) and stoppable on Ctrl-C.

papermill starts one ipykernel per point through this manager (``kernel_manager_class``):

* **IPC, not TCP.** Over TCP without CurveZMQ keys, ipykernel 7 warns on every start "Kernel is running
  over TCP without encryption" (12 lines in the README's main command). The kernel and the runner are
  always on the same machine, so its sockets are Unix domain sockets in a private temporary folder
  (mode 0700, removed when the kernel is cleaned up): nothing is sent over the network and the warning,
  which is about exactly that, does not apply. Errors raised in the notebook still reach papermill (the
  executed ``notebook.ipynb``) and the point's ``error.json``.
* **Stoppable.** Once started, the kernel's process (group) is recorded for its point in
  :mod:`manifold_lab.studies.interrupt`, which terminates it on the first Ctrl-C and kills it on the second.
* **Stopped at once when its notebook is done** (papermill's ``shutdown_kernel="immediate"``, set by
  :func:`manifold_lab.studies.execute.run_point`): by then every cell has run, its outputs are in the
  executed notebook and the run's files are written (atomically, inside the cells), so nothing is left for
  a clean exit to do. A clean exit of a kernel that has imported torch takes about 1.2 s, spent tearing
  down the interpreter's modules (measured: a point's kernel is gone 0.1 s after its last cell instead of
  1.3 s), once per point.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from jupyter_client import AsyncKernelManager
from traitlets import CaselessStrEnum, default

from manifold_lab.studies import interrupt


class StudyKernelManager(AsyncKernelManager):
    """An AsyncKernelManager on IPC sockets under a private temporary folder; ``point``: the run id whose
    kernel it starts (set by :func:`for_point`)."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)
    point: str | None = None
    gpu: str | None = None        # the kernel's CUDA_VISIBLE_DEVICES (None: inherited)

    @default("ip")
    def _ip_default(self) -> str:
        # An absolute socket prefix (the default "kernel-ipc" is relative to the kernel's working directory,
        # which would put sockets into the project and let two kernels there race for the same names).
        return os.path.join(tempfile.mkdtemp(prefix="study-kernel-"), "ipc")

    async def start_kernel(self, **kw):
        if self.gpu is not None:
            kw["env"] = {**os.environ, **(kw.get("env") or {}), "CUDA_VISIBLE_DEVICES": self.gpu}
        await super().start_kernel(**kw)
        if self.point is not None and self.provisioner is not None:
            process = getattr(self.provisioner, "process", None)
            interrupt.kernel_started(self.point, getattr(process, "pid", None), getattr(self.provisioner, "pgid", None),
                                     os.path.dirname(self.ip) if self.transport == "ipc" else None)

    async def _async_interrupt_kernel(self) -> None:
        # jupyter_client interrupts a kernel (SIGINT) before it asks it to shut down. A study point's kernel is
        # idle by then (its notebook finished or raised), so the interrupt only races with the kernel's event
        # loop, and ipykernel logs "KeyboardInterrupt caught in kernel" at ERROR level for nothing. While
        # shutting down: the shutdown request alone (a kernel that ignores it is still killed after the
        # timeout). Ctrl-C on the runner stops kernels itself (manifold_lab.studies.interrupt).
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()

    async def cleanup_resources(self, restart: bool = False) -> None:
        await super().cleanup_resources(restart=restart)
        if self.transport == "ipc" and not restart:
            shutil.rmtree(os.path.dirname(self.ip), ignore_errors=True)


def for_point(run_id: str, gpu: str | None = None) -> type[StudyKernelManager]:
    """The manager class papermill instantiates for point ``run_id`` (a subclass naming the point and, where
    given, the GPU its kernel sees as ``cuda:0``)."""
    return type("StudyKernelManager", (StudyKernelManager,), {"point": run_id, "gpu": gpu})
