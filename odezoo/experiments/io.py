"""Files the recipes write: one atomic, fsynced write behind checkpoints, JSON, CSV and logs.

Every file goes through [`atomic_write`][odezoo.experiments.io.atomic_write]: a temporary file in the same folder,
flushed
and fsynced, then renamed over the target — an interruption leaves the old file or the new
one, never half of either.  Checkpoints carry a sha256 digest of their contents, checked by
[`load_checkpoint`][odezoo.experiments.io.load_checkpoint] (a file damaged after it was written is refused, not
loaded with
wrong weights), are loaded with ``weights_only=True``, and are never written with
non-finite model weights.  JSON-lines logs are append-only and survive a torn last line.

Results files are sealed the same way: every line of a JSON-lines log carries a chained sha256
(``_chain``) and the log has a seal file beside it (``metrics.jsonl.seal``: line count and last
digest), and a sealed JSON file (``summary.json``) carries the digest of its contents; reading
one back checks it, so a truncated or edited file is refused with an
[`IntegrityError`][odezoo.experiments.io.IntegrityError]
naming the file instead of being trusted.  [`run_folder_lock`][odezoo.experiments.io.run_folder_lock] holds an
exclusive lock
(filelock) on a folder while a command writes it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = ["CheckpointError", "atomic_write", "save_json", "save_csv", "save_checkpoint", "load_checkpoint",
           "state_digest", "nonfinite_tensors", "append_jsonl", "read_jsonl", "truncate_jsonl", "INTEGRITY_KEY",
           "IntegrityError", "FormatError", "read_metrics", "save_sealed_json", "load_sealed_json", "run_folder_lock", "RunFolderBusy",
           "LOCK_NAME"]

#: the checkpoint entry holding the digest of everything else in it
INTEGRITY_KEY = "integrity"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not an odezoo checkpoint."""


class IntegrityError(ValueError):
    """A sealed results file (JSON-lines log, sealed JSON, partial evaluation) was truncated,
    edited or damaged after it was written; the message names the file and what to do."""


class FormatError(ValueError):
    """A run-folder file was written by an older odezoo in a form this version does not read
    (``metrics.jsonl`` counting epochs from 0); the message names the file and what to do."""


class RunFolderBusy(RuntimeError):
    """Another process holds the folder's lock (the message names it)."""


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
    """The sha256 of a checkpoint's contents (everything but
    `INTEGRITY_KEY`), computed
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
    """Write ``state`` with ``torch.save``, atomically (see [`atomic_write`][odezoo.experiments.io.atomic_write]),
    with the
    sha256 [`state_digest`][odezoo.experiments.io.state_digest] of its contents stored under
    `INTEGRITY_KEY`.

    A ``state["model"]`` with NaN or inf weights is refused
    ([`CheckpointError`][odezoo.experiments.io.CheckpointError], nothing
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
    [`CheckpointError`][odezoo.experiments.io.CheckpointError] otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first (odezoo train) or check the path")
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


CHAIN_KEY = "_chain"
SEAL_SUFFIX = ".seal"


def _canonical(record: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in record.items() if k != CHAIN_KEY}, sort_keys=True, default=_plain)


def _chain(previous: str, record: Mapping[str, Any]) -> str:
    return hashlib.sha256((previous + _canonical(record)).encode("utf-8")).hexdigest()


def _seal_path(path: Path) -> Path:
    return path.with_name(path.name + SEAL_SUFFIX)


def _write_seal(path: Path, lines: int, last: str) -> None:
    atomic_write(_seal_path(path), json.dumps({"algorithm": "sha256-chain", "lines": lines, "last": last}) + "\n")


def _damaged(path: Path, what: str) -> IntegrityError:
    return IntegrityError(f"{path} {what}: it was truncated or edited after odezoo wrote it, so its contents "
                          f"cannot be trusted. Restore it from a copy, or delete the run folder and run again.")


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line to ``path``, chained to the lines before it and sealed, and fsync it.

    A torn last line left by an interrupted append (no final newline) is cut off first, so
    the new record starts on a line of its own and the log stays readable.  The log must read
    back intact ([`read_jsonl`][odezoo.experiments.io.read_jsonl]), so a damaged log is refused before it grows."""
    path = Path(path)
    existing = read_jsonl(path, _with_chain=True) if path.exists() else []
    previous = existing[-1].get(CHAIN_KEY, "") if existing else ""
    record = {k: v for k, v in record.items() if k != CHAIN_KEY}
    record[CHAIN_KEY] = _chain(previous, record)
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
    _write_seal(path, len(existing) + 1, record[CHAIN_KEY])


def read_jsonl(path: str | os.PathLike, _with_chain: bool = False) -> list[dict]:
    """The records of a JSON-lines file, checked against their chain and the seal beside the file.

    A torn last line (an interrupted append) is skipped, and so is a whole line appended after
    the last seal (the process stopped between the two writes).  A line that is not JSON, a
    record whose chain digest does not match (an edited or reordered line), fewer lines than
    the seal counts (a truncated log) or a missing seal for a chained log raise
    [`IntegrityError`][odezoo.experiments.io.IntegrityError] naming the file.  A log written before seals existed
    (no chain in
    any line) is read as it is."""
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise IntegrityError(f"{path} is a folder, not a JSON-lines log")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, "is not UTF-8 text") from None
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                break  # torn last line of an interrupted append
            raise _damaged(path, f"line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise _damaged(path, f"line {number} is not a JSON object")
        records.append(record)
    chained = [r for r in records if CHAIN_KEY in r]
    seal_path = _seal_path(path)
    if chained or seal_path.exists():
        if len(chained) != len(records):
            raise _damaged(path, "mixes sealed and unsealed lines")
        try:
            seal = json.loads(seal_path.read_text(encoding="utf-8"))
            sealed_lines, last = int(seal["lines"]), str(seal["last"])
        except FileNotFoundError:
            raise _damaged(path, f"has no seal ({seal_path.name} is missing)") from None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise _damaged(path, f"has a damaged seal ({seal_path.name})") from None
        previous = ""
        for number, record in enumerate(records, start=1):
            if record[CHAIN_KEY] != _chain(previous, record):
                raise _damaged(path, f"line {number} does not match its digest")
            previous = record[CHAIN_KEY]
            if number == sealed_lines and previous != last:
                raise _damaged(path, f"does not match its seal ({seal_path.name}) at line {number}")
        if len(records) < sealed_lines:
            raise _damaged(path, f"holds {len(records)} line(s) where its seal ({seal_path.name}) counts "
                                 f"{sealed_lines}")
        if len(records) > sealed_lines + 1:  # one unsealed line is an interrupted append; more are not
            raise _damaged(path, f"holds {len(records)} line(s) where its seal ({seal_path.name}) counts "
                                 f"{sealed_lines}")
    if _with_chain:
        return records
    return [{k: v for k, v in r.items() if k != CHAIN_KEY} for r in records]


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` ([`read_jsonl`][odezoo.experiments.io.read_jsonl]), one per
    epoch, ``epoch`` counted from 1: the record of epoch k describes the k-th epoch, and a checkpoint
    of epoch k holds the run after k epochs.  odezoo counted them from 0 before; such a log (its
    first record is epoch 0, which no log counting from 1 holds) raises
    [`FormatError`][odezoo.experiments.io.FormatError] naming the file, so an old run is never
    resumed, reused or plotted one epoch off."""
    path = Path(path)
    records = read_jsonl(path)
    if any(record.get("epoch") == 0 for record in records):
        raise FormatError(f"{path} counts epochs from 0: its run was written by an older odezoo, and this one counts "
                          f"them from 1 (epoch k = after k epochs), so it does not resume, reuse or plot that run. "
                          f"Finish or read it with the odezoo that wrote it, or train it again (--out NEW_DIR, or "
                          f"delete {path.parent}).")
    return records


def truncate_jsonl(path: str | os.PathLike, max_epoch: int) -> None:
    """Keep only records of epochs ``<= max_epoch`` (a resume after epoch ``max_epoch`` drops what
    an interrupted later epoch wrote), atomically, re-chained and re-sealed."""
    path = Path(path)
    if not path.exists():
        _seal_path(path).unlink(missing_ok=True)
        return
    keep = [r for r in read_jsonl(path) if r.get("epoch", -1) <= max_epoch]
    previous, lines = "", []
    for record in keep:
        record = {**record, CHAIN_KEY: _chain(previous, record)}
        previous = record[CHAIN_KEY]
        lines.append(json.dumps(record, default=_plain) + "\n")
    atomic_write(path, "".join(lines))
    _write_seal(path, len(lines), previous)


# --------------------------------------------------------------------------- sealed JSON
def _json_digest(data: Mapping[str, Any]) -> str:
    text = json.dumps({k: v for k, v in data.items() if k != INTEGRITY_KEY}, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_sealed_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write the mapping ``data`` as JSON with the sha256 of its contents under
    `INTEGRITY_KEY` (atomically);
    [`load_sealed_json`][odezoo.experiments.io.load_sealed_json] checks it."""
    plain = json.loads(json.dumps({k: v for k, v in data.items() if k != INTEGRITY_KEY}, default=_plain))
    plain[INTEGRITY_KEY] = {"algorithm": "sha256", "digest": _json_digest(plain)}
    return save_json(path, plain)


def load_sealed_json(path: str | os.PathLike) -> dict:
    """The mapping a [`save_sealed_json`][odezoo.experiments.io.save_sealed_json] wrote, without its digest;
    [`IntegrityError`][odezoo.experiments.io.IntegrityError]
    naming the file when it is not JSON (truncated), has no digest, or does not match it (edited)."""
    path = Path(path)
    if path.is_dir():
        raise IntegrityError(f"{path} is a folder, not a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _damaged(path, "is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get(INTEGRITY_KEY), Mapping):
        raise _damaged(path, "has no integrity digest")
    seal = data.pop(INTEGRITY_KEY)
    if seal.get("digest") != _json_digest(data):
        raise _damaged(path, "does not match the sha256 digest stored in it")
    return data


# --------------------------------------------------------------------------- folder locks
LOCK_NAME = ".odezoo.lock"


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / (LOCK_NAME + ".holder")).read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']} ({info['command']}, since {info['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its pid was not recorded yet)"


@contextmanager
def run_folder_lock(folder: str | os.PathLike, command: str):
    """Hold an exclusive lock on ``folder`` (created when missing) while the block writes it.

    The lock is a ``filelock.FileLock`` on ``folder/.odezoo.lock`` (an OS lock: it is released
    when its process ends, even by ``kill -9``, so no stale lock is left behind).  When another
    process holds it, [`RunFolderBusy`][odezoo.experiments.io.RunFolderBusy] says who (pid, host, command, since
    when) and
    what to do; nothing is written."""
    import filelock

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderBusy(f"{folder} is a file, not a folder; give another --out")
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RunFolderBusy(f"{folder} is being written by {_holder(folder)}; wait until it finishes, or give "
                            f"another --out. Nothing was written.") from None
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]}
        atomic_write(folder / (LOCK_NAME + ".holder"), json.dumps(holder) + "\n")
        yield folder
    finally:
        (folder / (LOCK_NAME + ".holder")).unlink(missing_ok=True)
        lock.release()
