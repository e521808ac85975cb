"""Checkpoints through orbax: one per finished IMP round, and mid-round ones.

Layout of a workdir::

    config.json             the resolved config of the run
    metrics.jsonl           one JSON object per (round, arm, trial), finished rounds only
    timing.jsonl            seconds per round and where they went (:mod:`lth_jax.timing`)
    checkpoints/<r>/        orbax checkpoint of round r: arrays under ``state``, JSON
                            under ``meta`` (round, every record so far), SHA-256 digests
                            of both under ``digest``
    checkpoints/partial/<i>/  mid-round checkpoints of the round in progress (engine state,
                            evaluation curves so far), ``i = round * 10**9 + step``

Guarantees:

* A checkpoint is written by orbax to a temporary directory
  (``<name>.orbax-checkpoint-tmp-*``) and renamed when complete, so a process
  killed mid-write leaves no directory that reads as finished; leftover
  temporary directories are removed when the checkpointer opens.
* Every checkpoint carries SHA-256 digests of its arrays and of its JSON; a
  checkpoint whose bytes changed (a flipped bit, a truncated or missing file)
  is refused even where orbax itself would read it without complaint, and so
  is one whose digests are missing or unreadable: it is never read unchecked.
* ``metrics.jsonl`` and ``config.json`` are rewritten whole (write to a
  temporary file, flush, fsync, ``os.replace``): they never hold a partial line.
* If the newest checkpoint cannot be read, a warning names it, it is moved
  aside to ``<name>.corrupt-<n>`` (never deleted) and the previous one is used.
  That one line is all a corrupt checkpoint prints: the reports of the reads
  orbax leaves running when a restore fails are dropped (:func:`_quiet_orbax`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from lth_jax import parallel

__all__ = [
    "RoundCheckpointer",
    "CorruptCheckpointError",
    "tree_digest",
    "partial_state",
    "resume_state",
]

PARTIAL = "partial"
#: Mid-round checkpoint ids are ``round * PARTIAL_STRIDE + step``.
PARTIAL_STRIDE = 10**9
_TMP_MARK = ".orbax-checkpoint-tmp"
_DELETING = ".deleting"


class CorruptCheckpointError(ValueError):
    """A checkpoint exists but its contents are not what was written."""


# ----------------------------------------------------------------------------- digests


def tree_digest(tree: Any) -> str:
    """SHA-256 of a pytree of arrays: every leaf's path, dtype, shape and bytes."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _json_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _stray_read(unraisable) -> bool:
    """Whether an unraisable exception is tensorstore reporting a read to a closed loop.

    Orbax restores in a fresh asyncio loop and closes it as soon as one read
    fails; the reads still running finish later on tensorstore's threads, whose
    callback ``loop.call_soon_threadsafe(..., <tensorstore.Future>, ...)`` then
    raises ``RuntimeError('Event loop is closed')``. Tensorstore hands that to
    ``sys.unraisablehook``, which prints a traceback for each read.
    """
    tb = unraisable.exc_traceback
    if not isinstance(unraisable.exc_value, RuntimeError) or tb is None:
        return False
    frame = tb.tb_frame
    if frame.f_code.co_name != "call_soon_threadsafe":
        return False
    loop = frame.f_locals.get("self")
    args = frame.f_locals.get("args") or ()
    return (
        isinstance(loop, asyncio.AbstractEventLoop)
        and loop.is_closed()
        and any(isinstance(a, ts.Future) for a in args)
    )


def _ignore(*args, **kwargs) -> None:
    """Stands in for ``call_soon_threadsafe`` of a loop a failed restore closed."""


def _retire_loops(tb) -> None:
    """Makes the loops a failed restore closed ignore the reads that finish later.

    The loops are found in the frames of the restore's traceback that have
    ended (orbax's, not its callers'). A closed loop only raises from
    ``call_soon_threadsafe``, and only tensorstore's stray reads still call it,
    possibly after the restore has returned: on these loops it does nothing
    instead.
    """
    running, frame = set(), sys._getframe()
    while frame is not None:
        running.add(id(frame))
        frame = frame.f_back
    retired: list[Any] = []
    while tb is not None:
        if id(tb.tb_frame) not in running:
            for value in tb.tb_frame.f_locals.values():
                if (
                    isinstance(value, asyncio.AbstractEventLoop)
                    and value.is_closed()
                    and not any(value is r for r in retired)
                ):
                    retired.append(value)
                    with contextlib.suppress(AttributeError, TypeError):  # no instance __dict__
                        value.call_soon_threadsafe = _ignore
        tb = tb.tb_next


@contextlib.contextmanager
def _quiet_orbax():
    """Keeps orbax/tensorstore/asyncio from printing tracebacks for a corrupt read.

    Within it, ``absl`` and ``asyncio`` log only critical messages and
    ``sys.unraisablehook`` drops the reports of :func:`_stray_read`, passing
    every other one on. If the restore fails, its closed loops are retired
    (:func:`_retire_loops`), so reads that finish after it report nothing, and
    the locals of its finished frames are cleared, so that the tasks it left
    are collected here: asyncio logs "Task exception was never retrieved" when
    such a task is collected.
    """
    loggers = [logging.getLogger(n) for n in ("absl", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _stray_read(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    except BaseException as e:
        _retire_loops(e.__traceback__)
        time.sleep(0.01)  # lets a report that was under way when the loops were retired finish
        traceback.clear_frames(e.__traceback__)
        raise
    finally:
        gc.collect()
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _short(e: BaseException, limit: int = 200) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- checkpointer


class _Store:
    """One orbax CheckpointManager over a directory of numbered checkpoints."""

    def __init__(self, directory: str, max_to_keep: int | None):
        self.directory = directory
        self._max_to_keep = max_to_keep
        self._open()

    def _open(self):
        self._mgr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                create=True,
                max_to_keep=self._max_to_keep,
                enable_async_checkpointing=False,
                cleanup_tmp_directories=True,
            ),
        )
        if parallel.is_main():
            for name in os.listdir(self.directory):
                if name.endswith(_DELETING):
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def steps(self) -> list[int]:
        self._mgr.reload()
        return sorted(self._mgr.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        state = parallel.to_host(state)  # gathered from every process when multi-host
        meta = json.loads(json.dumps(meta))  # plain JSON types, as they will read back
        digest = {"state": tree_digest(state), "meta": _json_digest(meta)}
        self._mgr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave(meta),
                digest=ocp.args.JsonSave(digest),
            ),
            force=True,
        )
        self._mgr.wait_until_finished()

    def restore(self, step: int) -> tuple[Any, dict]:
        """``(state, meta)`` of checkpoint ``step``, checked against its digests.

        Raises:
          CorruptCheckpointError: the digests are missing or the contents do not
            match them (orbax errors, an unreadable digest among them, propagate).
        """
        if not os.path.isdir(os.path.join(self.directory, str(step), "digest")):
            raise CorruptCheckpointError("it has no SHA-256 digest")
        items = dict(
            state=ocp.args.StandardRestore(),
            meta=ocp.args.JsonRestore(),
            digest=ocp.args.JsonRestore(),
        )
        with _quiet_orbax():
            out = self._mgr.restore(step, args=ocp.args.Composite(**items))
        state = jax.tree.map(np.asarray, out["state"])
        meta = dict(out["meta"])
        digest = out["digest"]
        if not isinstance(digest, dict):
            raise CorruptCheckpointError("its SHA-256 digest is not a JSON object")
        if digest.get("state") != tree_digest(state):
            raise CorruptCheckpointError("the arrays do not match their SHA-256 digest")
        if digest.get("meta") != _json_digest(meta):
            raise CorruptCheckpointError("the metadata does not match its SHA-256 digest")
        return state, meta

    def delete(self, step: int) -> None:
        """Removes a checkpoint: renamed first (atomic), then deleted."""
        if parallel.is_main():
            src = os.path.join(self.directory, str(step))
            if os.path.isdir(src):
                dst = src + _DELETING
                os.replace(src, dst)
                shutil.rmtree(dst, ignore_errors=True)
        self._mgr.reload()

    def move_aside(self, step: int) -> str:
        src = os.path.join(self.directory, str(step))
        n = 0
        while os.path.exists(f"{src}.corrupt-{n}"):
            n += 1
        dst = f"{src}.corrupt-{n}"
        if parallel.is_main():
            os.replace(src, dst)
        self._mgr.close()
        self._open()
        return dst

    def close(self) -> None:
        self._mgr.close()


class RoundCheckpointer:
    """Saves and restores the state of each finished round, and of the round in progress.

    Args:
      directory: the ``checkpoints/`` directory (created if missing).
      max_to_keep: keep only this many newest rounds (``None``: keep all).
      max_partials: mid-round checkpoints kept (the newest ones of the round in
        progress; one older than the newest is the fallback if it is unreadable).
    """

    def __init__(self, directory: str, max_to_keep: int | None = None, max_partials: int = 2):
        self.directory = os.path.abspath(directory)
        self._rounds = _Store(self.directory, max_to_keep)
        self._max_partials = max_partials
        self._partials: _Store | None = None

    # ------------------------------------------------------------------ rounds
    def rounds(self) -> list[int]:
        """Finished rounds on disk, ascending."""
        return self._rounds.steps()

    def save(self, round_: int, state: Any, meta: dict) -> None:
        """Saves ``state`` (a pytree of arrays) and ``meta`` (JSON) for ``round_``."""
        self._rounds.save(round_, state, meta)

    def restore(self, round_: int) -> tuple[Any, dict]:
        """``(state, meta)`` of ``round_`` (numpy arrays).

        Raises:
          CorruptCheckpointError: the digests are missing or the contents do not
            match them (orbax errors propagate as they are).
        """
        state, meta = self._rounds.restore(round_)
        if int(meta.get("round", -1)) != round_:
            raise CorruptCheckpointError(f"its metadata names round {meta.get('round')!r}")
        return state, meta

    def restore_latest(self) -> tuple[int, Any, dict] | None:
        """The newest round that can be read, or ``None`` if there is none.

        Unreadable newer rounds are reported on stderr and moved aside.
        """
        for r in reversed(self.rounds()):
            try:
                state, meta = self.restore(r)
                return r, state, meta
            except Exception as e:  # noqa: BLE001 - any failure to read means corrupt
                aside = self._rounds.move_aside(r)
                _warn(
                    f"checkpoint of round {r} cannot be read ({_short(e)}); moved to {aside}; "
                    "falling back to the previous round"
                )
        return None

    # ------------------------------------------------------------------ mid-round
    def _partial_store(self) -> _Store:
        if self._partials is None:
            self._partials = _Store(os.path.join(self.directory, PARTIAL), self._max_partials)
        return self._partials

    def _partial_ids(self) -> list[int]:
        if self._partials is None and not os.path.isdir(os.path.join(self.directory, PARTIAL)):
            return []
        return self._partial_store().steps()

    def save_partial(self, round_: int, step: int, state: Any, meta: dict) -> None:
        """Saves the state of round ``round_`` after ``step`` steps of it."""
        meta = {**meta, "round": round_, "step": step}
        self._partial_store().save(round_ * PARTIAL_STRIDE + step, state, meta)

    def restore_partial(self, round_: int) -> tuple[int, Any, dict] | None:
        """``(step, state, meta)`` of the newest readable mid-round checkpoint of ``round_``.

        Mid-round checkpoints of other rounds are deleted (a finished round no
        longer needs them; those of a later round depend on a round whose
        checkpoint was unreadable). Unreadable ones are reported and moved aside.
        """
        store = None
        for i in reversed(self._partial_ids()):
            store = self._partial_store()
            r, step = divmod(i, PARTIAL_STRIDE)
            if r != round_:
                if r > round_:
                    _warn(
                        f"discarding the mid-round checkpoint of round {r} at step {step}: "
                        f"it continues a round {r - 1} that is being redone"
                    )
                store.delete(i)
                continue
            try:
                state, meta = store.restore(i)
                if (int(meta.get("round", -1)), int(meta.get("step", -1))) != (r, step):
                    raise CorruptCheckpointError(
                        f"its metadata names round {meta.get('round')!r}, step {meta.get('step')!r}"
                    )
                return step, state, meta
            except Exception as e:  # noqa: BLE001 - any failure to read means corrupt
                aside = store.move_aside(i)
                _warn(
                    f"mid-round checkpoint of round {r} at step {step} cannot be read "
                    f"({_short(e)}); moved to {aside}; falling back to an earlier one"
                )
        return None

    def clear_partials(self) -> None:
        """Deletes every mid-round checkpoint (called once a round is saved)."""
        for i in self._partial_ids():
            self._partial_store().delete(i)

    def close(self) -> None:
        self._rounds.close()
        if self._partials is not None:
            self._partials.close()


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- engine state


def _numbered(leaves) -> dict:
    return {f"{i:05d}": np.asarray(a) for i, a in enumerate(leaves)}


def _unnumbered(d) -> list:
    return [d[k] for k in sorted(d, key=int)] if d else []


def partial_state(runs, outs, snapshot, n: int) -> tuple[dict, dict]:
    """Host copy of a batch in progress (cut to the ``n`` real runs) and its metadata."""
    cut = lambda tree: [np.asarray(a)[:n] for a in jax.tree.leaves(parallel.to_host(tree))]
    host_outs = parallel.to_host([tuple(o) for o in outs])
    fields = [
        np.stack([np.asarray(o[j])[:n] for o in host_outs], axis=1)
        for j in range(len(host_outs[0]))
    ]
    state = {"runs": _numbered(cut(runs)), "outs": _numbered(fields)}
    if snapshot is not None:
        state["snapshot"] = _numbered(cut(snapshot))
    return state, {"has_snapshot": snapshot is not None, "num_runs": n}


def resume_state(state, meta, runs, snapshot_like, n: int, shards: int):
    """``(runs, outs, snapshot)`` to resume ``Engine.fit`` from a :func:`partial_state`.

    Raises:
      ValueError: the saved state does not fit these runs.
    """
    fresh, treedef = jax.tree.flatten(runs)
    saved = _unnumbered(state["runs"])
    if int(meta.get("num_runs", -1)) != n or len(saved) != len(fresh):
        raise ValueError(f"it holds {meta.get('num_runs')} runs in {len(saved)} arrays")
    for a, b in zip(saved, fresh):
        if a.shape[1:] != b.shape[1:] or a.shape[0] != n or a.dtype != b.dtype:
            raise ValueError(f"an array is {a.dtype}{a.shape}, expected {b.dtype}{b.shape}")
    pad = lambda leaves: parallel.pad_runs([jnp.asarray(a) for a in leaves], shards)[0]
    new_runs = jax.tree.unflatten(treedef, pad(saved))
    fields = pad(_unnumbered(state["outs"]))
    chunks = int(fields[0].shape[1]) if fields else 0
    outs = [tuple(f[:, c] for f in fields) for c in range(chunks)]
    snapshot = None
    if meta.get("has_snapshot"):
        snap_leaves, snap_def = jax.tree.flatten(snapshot_like)
        saved_snap = _unnumbered(state["snapshot"])
        if len(saved_snap) != len(snap_leaves):
            raise ValueError("its rewind snapshot does not fit the model")
        snapshot = jax.tree.unflatten(snap_def, pad(saved_snap))
    return new_runs, outs, snapshot
