"""The full-scale trainer's step log on rank 0: ``log.csv`` (full-precision losses) and/or TensorBoard."""
from __future__ import annotations

from pathlib import Path

from manifold_lab.checks import ConfigError


class RunLog:
    """Rank-0 step log: a CSV (``log.csv``, full-precision losses) and/or TensorBoard, plus console lines."""

    COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s")

    def __init__(self, out_dir: Path, kind: str, *, resume_step: int | None):
        self.csv = out_dir / "log.csv" if kind in ("csv", "both") else None
        self.tb = None
        if kind in ("tensorboard", "both"):
            self.tb = self.check_tensorboard()(str(out_dir / "tb"))
        if self.csv is not None:
            rows = []
            if resume_step is not None and self.csv.exists():   # drop rows a killed run wrote after the ckpt
                lines = self.csv.read_text().splitlines()[1:]
                rows = [ln for ln in lines if ln and int(ln.split(",")[0]) <= resume_step]
            self.csv.write_text(",".join(self.COLUMNS) + "\n" + "".join(r + "\n" for r in rows))

    @staticmethod
    def check_tensorboard():
        """torch's SummaryWriter class, or a ConfigError saying how to get it."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("log: tensorboard needs the tensorboard package (pip install tensorboard); "
                              "or use --log csv") from None
        return SummaryWriter

    def write(self, step: int, epoch: float, loss: float, lr: float, ips: float) -> None:
        if self.csv is not None:
            with open(self.csv, "a") as f:
                f.write(f"{step},{epoch!r},{loss!r},{lr!r},{ips:.2f}\n")
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, step)
            self.tb.add_scalar("train/lr", lr, step)
            self.tb.add_scalar("train/images_per_s", ips, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(path: str | Path):
    """The CSV step log as a DataFrame."""
    import pandas as pd

    return pd.read_csv(path)


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
