"""Files the recipes write: one atomic, fsynced write behind checkpoints, JSON, CSV and logs.

Every file goes through :func:`atomic_write`: a temporary file in the same folder, flushed
and fsynced, then renamed over the target — an interruption leaves the old file or the new
one, never half of either.  Checkpoints are loaded with ``weights_only=True``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = ["CheckpointError", "atomic_write", "save_json", "save_csv", "save_checkpoint", "load_checkpoint",
           "append_jsonl", "read_jsonl", "truncate_jsonl"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not an odezoo checkpoint."""


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Any], None]) -> Path:
    """Write ``data`` to ``path`` atomically and durably; return the path.

    ``data`` is text (UTF-8), bytes, or a callable that writes to the binary file handle it is
    given (``torch.save`` style).  Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor) or hasattr(value, "item"):
        return value.item() if getattr(value, "numel", lambda: 1)() == 1 else value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(data, indent=2, default=_plain) + "\n")


def save_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV (header: union of keys in first-seen order), atomically.
    Nested values (dicts, lists) are written as JSON."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if columns:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v, default=_plain) if isinstance(v, (dict, list, tuple)) else v
                         for k, v in row.items()})
    return atomic_write(path, buffer.getvalue())


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save``, atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True``; a clear :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first (recipes/train.py) or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(f"checkpoint {path} is corrupt or was not written by odezoo ({error.__class__.__name__}: "
                              f"{first_line}). Delete it and resume from another checkpoint, or train again.") from error
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not an odezoo training checkpoint (no model/config entries)")
    return state


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line to ``path`` and fsync it (an append-only log)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=_plain) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (an interrupted append) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # torn last line of an interrupted append
            raise ValueError(f"{path}: line {number} is not JSON; the log is damaged") from None
    return records


def truncate_jsonl(path: str | os.PathLike, max_epoch: int) -> None:
    """Keep only records of epochs ``<= max_epoch`` (written before an interruption), atomically."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in read_jsonl(path) if r.get("epoch", -1) <= max_epoch]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep))
