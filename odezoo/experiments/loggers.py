"""Where a training run's per-epoch metrics go besides ``metrics.jsonl`` (``odezoo train --logger``).

``metrics.jsonl`` (sealed, see [`odezoo.experiments.io`][odezoo.experiments.io]) is always written and stays the
record the other commands read.  ``--logger csv`` adds ``metrics.csv`` (one row per epoch,
rewritten atomically from the log, so a resumed run never holds an epoch twice);
``--logger tensorboard`` adds TensorBoard event files under ``tensorboard/`` (every numeric
metric as a scalar at its epoch; a resumed run purges the steps it redoes).  Epochs are
counted from 1 in every logger, as in ``metrics.jsonl`` and on screen.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .io import read_metrics, save_csv

__all__ = ["LOGGERS", "CSVLogger", "TensorBoardLogger", "open_loggers"]

#: the logger names ``--logger`` accepts
LOGGERS = ("csv", "tensorboard")


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch" and math.isfinite(v)}


class CSVLogger:
    """``metrics.csv`` beside ``metrics.jsonl``: the log's records, flat columns, epochs from 1."""

    def __init__(self, out: Path, start_epoch: int = 1):
        self.out = Path(out)

    def log(self, record: Mapping[str, Any]) -> None:
        rows = [{"epoch": r["epoch"], **_scalars(r)} for r in read_metrics(self.out / "metrics.jsonl")]
        save_csv(self.out / "metrics.csv", rows)

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard scalars under ``tensorboard/`` (needs the ``tensorboard`` package)."""

    def __init__(self, out: Path, start_epoch: int = 1):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("--logger tensorboard needs the tensorboard package: pip install 'odezoo[tensorboard]'") \
                from None
        self.writer = SummaryWriter(log_dir=str(Path(out) / "tensorboard"), purge_step=start_epoch)

    def log(self, record: Mapping[str, Any]) -> None:
        for key, value in _scalars(record).items():
            self.writer.add_scalar(key, value, global_step=record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


_CLASSES = {"csv": CSVLogger, "tensorboard": TensorBoardLogger}


def open_loggers(names: Sequence[str] | None, out: str | Path, start_epoch: int = 1) -> list:
    """The loggers called ``names`` for the run folder ``out`` (``start_epoch``: the first epoch,
    from 1, this process logs)."""
    unknown = [n for n in names or () if n not in _CLASSES]
    if unknown:
        raise ValueError(f"unknown logger(s) {', '.join(unknown)}; choose from {', '.join(LOGGERS)}")
    return [_CLASSES[name](Path(out), start_epoch) for name in dict.fromkeys(names or ())]
