"""A workdir's files: atomic JSON and JSON-lines writes, the one reader, metrics sync.

See :mod:`lth_jax.workdir` for the rules.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "RunFailed",
    "config_to_json",
    "is_disk_full",
    "disk_full",
    "write_json_atomic",
    "write_jsonl_atomic",
    "append_jsonl",
    "read_jsonl",
    "read_json",
    "remove_stale_tmp_files",
    "sync_metrics",
    "write_metrics",
]


class RunFailed(RuntimeError):
    """A run that cannot go on; the message is one line (``lth-jax`` exits 1 with it)."""


def config_to_json(config) -> dict:
    """The config as plain JSON types (tuples become lists)."""
    return json.loads(config.to_json(sort_keys=True))


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` says the disk (or the quota) is full."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(e) or "Disk quota exceeded" in str(e)


def disk_full(path: str) -> RunFailed:
    """The one-line failure for a full disk while writing ``path``."""
    return RunFailed(
        f"no space left on the device while writing {path}; free some space and run the "
        "same command again to resume"
    )


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if is_disk_full(e):
            raise disk_full(path) from None
        raise
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_jsonl_atomic(path: str, records: list[dict]) -> None:
    """Writes ``records`` as JSON lines (keys sorted) to ``path`` atomically."""
    _write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented JSON (keys sorted) to ``path`` atomically."""
    _write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line (for logs that need not be exact, such as timing)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path: str, missing_ok: bool = True) -> list[dict]:
    """The JSON objects of a JSON-lines file, in order (see the module docstring).

    Args:
      path: the file.
      missing_ok: return ``[]`` for a missing file (else ``ValueError``).

    Raises:
      ValueError: ``<path>:<line>: malformed JSON line (...)`` for a bad line
        that is not the last one, ``<path>:<line>: expected a JSON object``.
    """
    if not os.path.exists(path):
        if missing_ok:
            return []
        raise ValueError(f"no such file: {path}")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    out = []
    for k, (lineno, line) in enumerate(numbered):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if k == len(numbered) - 1:
                break  # a partially written last line: the writer died
            raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
    return out


def read_json(path: str) -> dict | None:
    """The JSON object in ``path``, or ``None`` when the file is missing.

    Raises:
      ValueError: the file cannot be read or holds no JSON object.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} cannot be read (not a JSON object)")
    return obj


def remove_stale_tmp_files(directory: str, names: Sequence[str]) -> None:
    """Removes ``<name>.tmp-<pid>`` files that a killed writer of ``<name>`` left in ``directory``.

    Only for the ``names`` given (lth-jax's own files): a ``*.tmp-<digits>``
    file of anything else is not lth-jax's to delete.
    """
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        head, sep, pid = name.rpartition(".tmp-")
        if sep and head in names and pid.isdigit() and int(pid) != os.getpid():
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))


def _jsonl_text(records: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


def sync_metrics(path: str, records: list[dict]) -> list[dict]:
    """Makes ``metrics.jsonl`` hold ``records``; returns the records it held before.

    Lines after ``records`` (of rounds whose checkpoint was unreadable and that
    are being redone) are kept when the lines before them are ``records``, until
    those rounds are written again (see :func:`write_metrics`). Anything else
    the file holds, a final line cut short included, is rewritten.
    """
    try:
        existing = read_jsonl(path)
    except ValueError:
        existing = []
    n = len(records)
    keep = existing if _jsonl_text(existing[:n]) == _jsonl_text(records) else records
    try:
        with open(path, encoding="utf-8") as f:
            current = f.read()
    except OSError:
        current = None
    if current != _jsonl_text(keep):
        write_jsonl_atomic(path, keep)
    return existing


def write_metrics(path: str, records: list[dict], before: list[dict], key: str = "round") -> None:
    """Writes ``records``, then the lines of ``before`` past their last ``key`` (still to redo).

    A round that was redone keeps the lines of later rounds on disk until those
    are redone too, as long as every redone round gave the lines it had before.
    """
    done = {r.get(key) for r in records}
    redone = done & {r.get(key) for r in before}
    lines = lambda recs: _jsonl_text([r for r in recs if r.get(key) in redone])
    later = [r for r in before if r.get(key) not in done]
    write_jsonl_atomic(path, records + (later if lines(before) == lines(records) else []))
