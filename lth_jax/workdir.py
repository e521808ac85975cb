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
from collections.abc import Callable, Sequence
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
    "ChunkSaver",
    "note",
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


# ----------------------------------------------------------------------------- the workdir


def check_path(workdir: str) -> None:
    """Refuses a workdir that cannot be created or written, before any work.

    Raises:
      ConfigError: not a path, not a directory, not writable, or under a file.
    """
    if not isinstance(workdir, str | os.PathLike) or not str(workdir):
        raise ConfigError(f"workdir must be a directory path, got {workdir!r}")
    path = os.path.abspath(workdir)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"workdir {workdir} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"workdir {workdir} is not writable")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"workdir {workdir} cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"workdir {workdir} cannot be created: {parent} is not writable")


def prepare(workdir: str, overwrite: bool, owned: Sequence[str], is_main: bool = True) -> None:
    """Creates ``workdir``; with ``overwrite``, deletes the files and folders in ``owned``.

    Also removes the ``*.tmp-<pid>`` files a killed writer left behind. Only the
    main process (``is_main``) deletes anything.

    Raises:
      ConfigError: the directory cannot be created.
    """
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"workdir {workdir} cannot be created: {e.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError(f"workdir {workdir} is not writable")
    if not is_main:
        return
    if overwrite:
        for name in owned:
            p = os.path.join(workdir, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    remove_stale_tmp_files(workdir)


def check_config_drift(
    workdir: str,
    new: dict,
    *,
    defaults: dict,
    harmless: Sequence[str] = (),
    growable: Sequence[str] = (),
    upgrade: Callable[[dict], dict] | None = None,
) -> None:
    """Refuses to resume ``workdir`` with a config whose results would differ.

    Args:
      workdir: the workdir; nothing is checked when it holds no ``config.json``.
      new: the config to run, as JSON (:func:`config_to_json`).
      defaults: every key's default, as JSON: a key that one side lacks (a
        key added after the workdir was made) counts as different only when
        the other side's value is not its default.
      harmless: keys (or blocks) that may differ (they do not change results).
      growable: integer keys that may grow (``imp.rounds``: finished rounds do
        not depend on how many follow); they may not shrink.
      upgrade: converts a ``config.json`` written by an older version to the
        current layout before comparing.

    Raises:
      ConfigError: naming the differing keys, with both values.
    """
    try:
        saved = read_json(os.path.join(workdir, CONFIG))
    except ValueError as e:
        raise ConfigError(
            f"workdir {workdir}: {e}; fix or remove it, or use --overwrite to discard the run"
        ) from None
    if saved is None:
        return
    if upgrade is not None:
        saved = upgrade(saved)
    old, new, base = checks.flatten(saved), checks.flatten(new), checks.flatten(defaults)
    missing = checks.MISSING

    def differs(k):
        a, b = old.get(k, missing), new.get(k, missing)
        if a is missing or b is missing:
            present = b if a is missing else a
            return k not in base or present != base[k]
        return a != b

    def grows(k):
        return k in growable and k in old and k in new and int(new[k]) > int(old[k])

    diff = sorted(
        k
        for k in set(old) | set(new)
        if not any(k == h or k.startswith(h + ".") for h in harmless)
        and differs(k)
        and not grows(k)
    )
    if diff:
        show = lambda d, k: repr(d[k]) if k in d else "<missing>"
        shown = ", ".join(f"{k} ({show(old, k)} -> {show(new, k)})" for k in diff[:5])
        more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
        raise ConfigError(
            f"workdir {workdir} holds a run with a different config: {shown}{more}; "
            "use another --workdir, or --overwrite to discard it"
        )


def sync_metrics(path: str, records: list[dict]) -> list[dict]:
    """Makes ``metrics.jsonl`` hold ``records``; returns what it held before.

    Lines of rounds beyond ``records`` (a round whose checkpoint was unreadable
    and is being redone) are kept until that round is written again.
    """
    try:
        existing = read_jsonl(path)
    except ValueError:
        existing = []
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    n = len(records)
    if len(existing) > n and same(existing[:n], records):
        return existing
    if not same(existing, records):
        write_jsonl_atomic(path, records)
    return existing


def note(msg: str, is_main: bool = True) -> None:
    """Prints ``lth-jax: <msg>`` on stderr (from the main process only)."""
    if is_main:
        print(f"lth-jax: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- signals


class Interrupted(KeyboardInterrupt):
    """A run stopped on SIGINT or SIGTERM after saving a checkpoint.

    Attributes:
      signum: the signal number.
      exit_code: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM), what
        ``lth-jax`` exits with.
    """

    def __init__(self, signum: int, where: str):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        super().__init__(f"stopped by {name} {where}; run the same command again to resume")


class SignalGuard:
    """Turns the first SIGINT/SIGTERM into a flag (``signum``) checked at safe points.

    A second signal stops at once (raising :class:`Interrupted`); the last
    checkpoint written stays valid. Only in the main thread of a single process
    (``enabled``).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # pragma: no cover - exotic embeddings
                    pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            self._restore()
            raise Interrupted(signum, "at once (second signal); the last checkpoint is kept")
        self.signum = signum
        print(
            f"lth-jax: {signal.Signals(signum).name} received: saving a checkpoint at the end of "
            "the current chunk (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def _restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()
        return False


class ChunkSaver:
    """The ``on_chunk`` hook of one round: mid-round checkpoints, and a stop on a signal.

    Args:
      ck: a :class:`lth_jax.checkpoint.RoundCheckpointer`.
      round_: the round in progress.
      every: save at the end of the first chunk at or after every multiple of
        this many steps (0: only when a signal asks to stop).
      steps: the round's last step (its checkpoint is the round's own).
      guard: the :class:`SignalGuard` of the run.
      start: the step the round (or its resumption) starts at.
    """

    def __init__(self, ck, round_: int, every: int, steps: int, guard: SignalGuard, start: int):
        self.ck, self.round, self.guard = ck, round_, guard
        self.every, self.steps = int(every), int(steps)
        self.next_due = (start // self.every + 1) * self.every if self.every else None

    def __call__(self, step: int, get_state) -> None:
        if step >= self.steps:  # the round checkpoint follows
            return
        stop = self.guard.signum is not None
        if stop or (self.next_due is not None and step >= self.next_due):
            state, meta = get_state()
            self.ck.save_partial(self.round, step, state, meta)
            if self.every:
                self.next_due = (step // self.every + 1) * self.every
        if stop:
            raise Interrupted(self.guard.signum, f"in round {self.round} at step {step}")
