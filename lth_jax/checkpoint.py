"""Checkpoints through orbax: one per finished IMP round, plus metrics files.

Layout of a workdir::

    config.json          the resolved config of the run
    metrics.jsonl        one JSON object per (round, arm, trial), finished rounds only
    timing.jsonl         wall-clock seconds per round (kept apart: it differs run to run)
    checkpoints/<r>/     orbax checkpoint of round r: arrays under ``state``,
                         JSON under ``meta`` (round, every record so far)

Guarantees:

* A checkpoint is written by orbax to a temporary directory and renamed when
  complete, so a process killed mid-write leaves no directory that reads as
  finished; :meth:`RoundCheckpointer.restore_latest` only sees finished ones.
* ``metrics.jsonl`` is rewritten whole from the newest restorable checkpoint
  (write to a temporary file, flush, fsync, ``os.replace``): it never holds a
  partial line or a round whose checkpoint is missing.
* If the newest checkpoint cannot be read, a warning names it, it is moved
  aside to ``checkpoints/<r>.corrupt-<n>`` (never deleted) and the previous one
  is used.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["RoundCheckpointer", "write_jsonl_atomic", "append_jsonl", "read_jsonl"]


def write_jsonl_atomic(path: str, records: list[dict]) -> None:
    """Writes ``records`` as JSON lines to ``path`` atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line (for logs that need not be exact, such as timing)."""
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path: str) -> list[dict]:
    """Reads JSON lines; a final line cut short by a crash is ignored."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # the last (possibly unterminated) line
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    return out


class RoundCheckpointer:
    """Saves and restores the state of each finished round.

    Args:
      directory: the ``checkpoints/`` directory (created if missing).
      max_to_keep: keep only this many newest rounds (``None``: keep all).
    """

    def __init__(self, directory: str, max_to_keep: int | None = None):
        self.directory = os.path.abspath(directory)
        self._max_to_keep = max_to_keep
        self._open()

    def _open(self):
        self._mgr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                create=True,
                max_to_keep=self._max_to_keep,
                enable_async_checkpointing=False,
            ),
        )

    def rounds(self) -> list[int]:
        """Finished rounds on disk, ascending."""
        self._mgr.reload()
        return sorted(self._mgr.all_steps())

    def save(self, round_: int, state: Any, meta: dict) -> None:
        """Saves ``state`` (a pytree of arrays) and ``meta`` (JSON) for ``round_``."""
        state = jax.device_get(state)
        self._mgr.save(
            round_,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._mgr.wait_until_finished()

    def restore(self, round_: int) -> tuple[Any, dict]:
        out = self._mgr.restore(
            round_,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
        state = jax.tree.map(np.asarray, out["state"])
        return state, dict(out["meta"])

    def restore_latest(self) -> tuple[int, Any, dict] | None:
        """The newest round that can be read, or ``None`` if there is none.

        Unreadable newer rounds are reported on stderr and moved aside.
        """
        for r in reversed(self.rounds()):
            try:
                state, meta = self.restore(r)
                if int(meta.get("round", -1)) != r:
                    raise ValueError(f"metadata names round {meta.get('round')!r}")
                return r, state, meta
            except Exception as e:  # noqa: BLE001 - any failure to read means corrupt
                aside = self._move_aside(r)
                print(
                    f"warning: checkpoint of round {r} cannot be read ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); moved to {aside}; "
                    "falling back to the previous round",
                    file=sys.stderr,
                )
        return None

    def _move_aside(self, r: int) -> str:
        src = os.path.join(self.directory, str(r))
        n = 0
        while os.path.exists(f"{src}.corrupt-{n}"):
            n += 1
        dst = f"{src}.corrupt-{n}"
        os.replace(src, dst)
        self._mgr.close()
        self._open()
        return dst

    def close(self) -> None:
        self._mgr.close()
