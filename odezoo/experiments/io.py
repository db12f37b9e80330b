"""Files the recipes write: one atomic, fsynced write behind checkpoints, JSON, CSV and logs.

Every file goes through :func:`atomic_write`: a temporary file in the same folder, flushed
and fsynced, then renamed over the target — an interruption leaves the old file or the new
one, never half of either.  Checkpoints carry a sha256 digest of their contents, checked by
:func:`load_checkpoint` (a file damaged after it was written is refused, not loaded with
wrong weights), are loaded with ``weights_only=True``, and are never written with
non-finite model weights.  JSON-lines logs are append-only and survive a torn last line.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = ["CheckpointError", "atomic_write", "save_json", "save_csv", "save_checkpoint", "load_checkpoint",
           "state_digest", "nonfinite_tensors", "append_jsonl", "read_jsonl", "truncate_jsonl", "INTEGRITY_KEY"]

#: the checkpoint entry holding the digest of everything else in it
INTEGRITY_KEY = "integrity"


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


def _feed(h, value) -> None:
    """Hash ``value`` canonically: tensors by dtype, shape and bytes; mappings by sorted key."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        h.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        try:
            h.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):  # sparse, quantized, ...: their values as text
            h.update(repr(tensor.to_dense().tolist() if tensor.is_sparse else tensor.tolist()).encode())
    elif isinstance(value, Mapping):
        h.update(f"D{len(value)}".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for item in value:
            _feed(h, item)
    elif isinstance(value, bool) or value is None:
        h.update(f"C{value}".encode())
    elif isinstance(value, int):
        h.update(f"I{value}".encode())
    elif isinstance(value, float):
        h.update(f"F{value.hex()}".encode())
    elif isinstance(value, str):
        data = value.encode("utf-8")
        h.update(f"S{len(data)}:".encode() + data)
    elif isinstance(value, bytes):
        h.update(f"B{len(value)}:".encode() + value)
    else:
        h.update(f"R{value!r}".encode())


def state_digest(state: Mapping[str, Any]) -> str:
    """The sha256 of a checkpoint's contents (everything but :data:`INTEGRITY_KEY`), computed
    on the loaded objects (tensor bytes, numbers, text), so it does not depend on how
    ``torch.save`` laid the file out."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != INTEGRITY_KEY})
    return h.hexdigest()


def nonfinite_tensors(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` (a ``state_dict``) holding NaN or inf."""
    return [name for name, value in tensors.items()
            if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex())
            and not bool(torch.isfinite(value).all())]


def _show_names(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], allow_nonfinite: bool = False) -> Path:
    """Write ``state`` with ``torch.save``, atomically (see :func:`atomic_write`), with the
    sha256 :func:`state_digest` of its contents stored under :data:`INTEGRITY_KEY`.

    A ``state["model"]`` with NaN or inf weights is refused (:class:`CheckpointError`, nothing
    written) unless ``allow_nonfinite``: a diverged model is never saved as a good one."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"a checkpoint must be a dict, got {type(state).__name__}")
    if isinstance(state.get("model"), Mapping) and not allow_nonfinite:
        bad = nonfinite_tensors(state["model"])
        if bad:
            raise CheckpointError(f"refusing to write {path}: the model weights hold NaN or inf "
                                  f"({_show_names(bad)}); the model diverged")
    payload = {k: v for k, v in state.items() if k != INTEGRITY_KEY}
    payload[INTEGRITY_KEY] = {"algorithm": "sha256", "digest": state_digest(payload)}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike, map_location="cpu", verify: bool = True,
                    allow_nonfinite: bool = False) -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True`` and check it: the stored sha256
    digest must match the contents (``verify=False`` loads a checkpoint written before
    digests existed, or one you choose to trust) and the model weights must be finite
    (unless ``allow_nonfinite``).  Returns the contents without the digest entry; a clear
    :class:`CheckpointError` otherwise."""
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
    integrity = state.pop(INTEGRITY_KEY, None)
    if verify:
        if not isinstance(integrity, Mapping) or not isinstance(integrity.get("digest"), str):
            raise CheckpointError(f"checkpoint {path} has no integrity digest (it was written by an older odezoo, "
                                  f"or the entry is damaged), so its contents cannot be checked. If you trust it, "
                                  f"load it with load_checkpoint(path, verify=False); otherwise train again.")
        if integrity.get("algorithm", "sha256") != "sha256" or integrity["digest"] != state_digest(state):
            raise CheckpointError(f"checkpoint {path} is corrupt: its contents do not match the sha256 digest "
                                  f"stored in it (the file was damaged after it was written). Delete it and "
                                  f"resume from another checkpoint, or train again.")
    if isinstance(state["model"], Mapping) and not allow_nonfinite:
        bad = nonfinite_tensors(state["model"])
        if bad:
            raise CheckpointError(f"checkpoint {path} holds non-finite model weights ({_show_names(bad)}): the "
                                  f"model had diverged when it was saved. Use an earlier checkpoint or train again.")
    return state


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line to ``path`` and fsync it (an append-only log).

    A torn last line left by an interrupted append (no final newline) is cut off first, so
    the new record starts on a line of its own and the log stays readable."""
    path = Path(path)
    line = (json.dumps(record, default=_plain) + "\n").encode("utf-8")
    with open(path, "ab+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(max(0, size - 1))
            if handle.read(1) != b"\n":
                handle.seek(0)
                data = handle.read()
                handle.truncate(data.rfind(b"\n") + 1)
        handle.seek(0, os.SEEK_END)
        handle.write(line)
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
    keep = [r for r in read_jsonl(path) if isinstance(r, dict) and r.get("epoch", -1) <= max_epoch]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep))
