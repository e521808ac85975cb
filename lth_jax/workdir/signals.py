"""Signals during a run: a first SIGINT/SIGTERM saves a checkpoint at a safe point.

See :mod:`lth_jax.workdir` for the rules.
"""

from __future__ import annotations

import signal
import sys
import threading

__all__ = ["Interrupted", "SignalGuard", "ChunkSaver"]


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
    (``enabled``). A guard entered inside another (a transfer run's target IMP
    runs) takes over a signal the outer one already received, so the inner run
    stops at its first safe point and a second signal stops at once.
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
                    continue
                outer = getattr(self._old[sig], "__self__", None)
                if isinstance(outer, SignalGuard) and outer.signum is not None:
                    self.signum = outer.signum
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
