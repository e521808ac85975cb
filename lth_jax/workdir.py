"""A workdir's whole life: its path, its files, config drift, metrics, signals.

Every experiment kind (``lottery``, ``instability``, ``transfer``) keeps its
results in a workdir through this module; orbax checkpoints are
:mod:`lth_jax.checkpoint`'s. The files lth-jax writes there::

    config.json      the resolved config of the run (written before any training)
    metrics.jsonl    one JSON object per run record (finished rounds or sizes only)
    timing.jsonl     wall-clock seconds per round (kept apart: it differs run to run)
    checkpoints/     orbax checkpoints (see :mod:`lth_jax.checkpoint`)
    report.md, report.png

Rules stated exactly:

* **Atomic files.** ``config.json`` and ``metrics.jsonl`` are rewritten whole:
  written to ``<name>.tmp-<pid>``, flushed, fsynced, then ``os.replace``-d, so
  they never hold a partial line. ``timing.jsonl`` is appended to (it need not
  be exact).
* **Reading JSON lines** (:func:`read_jsonl`, the one reader): blank lines are
  skipped; a final line that does not parse (a process died while appending
  it) is ignored; a line that does not parse anywhere else, or that is not a
  JSON object, is an error naming the file and line.
* **Drift.** A workdir holding a run of another config is refused
  (:func:`check_config_drift`) unless the run is overwritten.
* **Signals.** Within :class:`SignalGuard`, the first SIGINT or SIGTERM sets a
  flag the runner checks at safe points (after a chunk: it saves a checkpoint
  and raises :class:`Interrupted`); a second one stops at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
from typing import Any

from lth_jax import checks
from lth_jax.checks import ConfigError

__all__ = [
    "CONFIG",
    "METRICS",
    "TIMING",
    "REPORT_FILES",
    "config_to_json",
    "write_json_atomic",
    "write_jsonl_atomic",
    "append_jsonl",
    "read_jsonl",
    "read_json",
    "remove_stale_tmp_files",
    "check_path",
    "prepare",
    "check_config_drift",
    "sync_metrics",
    "Interrupted",
    "SignalGuard",
]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TIMING = "timing.jsonl"
REPORT_FILES = ("report.md", "report.png")


def config_to_json(config) -> dict:
    """The config as plain JSON types (tuples become lists)."""
    return json.loads(config.to_json(sort_keys=True))


# ----------------------------------------------------------------------------- files


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


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
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


def remove_stale_tmp_files(directory: str) -> None:
    """Removes ``*.tmp-<pid>`` files that a killed process left in ``directory``."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        head, sep, pid = name.rpartition(".tmp-")
        if sep and head and pid.isdigit() and int(pid) != os.getpid():
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))
