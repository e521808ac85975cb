"""Where a round's wall time goes: the split that ``timing.jsonl`` records.

``lth-jax run`` appends one line per finished round to ``<workdir>/timing.jsonl``
(:data:`lth_jax.workdir.TIMING`)::

    {"round": 1, "wall_time_s": 12.3, "startup_s": 0.0, "compile_s": 0.4,
     "train_s": 8.9, "eval_s": 2.1, "checkpoint_s": 0.3, "events_s": 0.1,
     "host_s": 0.5, "shares": {"compile": 0.033, "train": 0.724, ...}}

Keys, all in seconds of this process's wall clock:

* ``wall_time_s``: the round, from the start of its setup (pruning, the arms)
  to its line in ``metrics.jsonl``.
* ``startup_s``: the time before the first round this ``run`` call trains, not
  part of ``wall_time_s``: from the call of :func:`lth_jax.lottery.run` to the
  start of that round (config checks, data loading, model build, the trace
  check, reading checkpoints); when the process is the ``lth-jax`` command,
  also everything before that call since the process started (the
  interpreter, the imports of jax and lth_jax, the config). ``0.0`` on every
  later round.
* ``compile_s``: tracing, lowering and XLA compilation during the round (JAX's
  ``jax.monitoring`` duration events ``/jax/core/compile/jaxpr_trace_duration``,
  ``.../jaxpr_to_mlir_module_duration`` and ``.../backend_compile_duration``,
  the last one also for a program read from the persistent cache), wherever
  in the round it happened; the other parts exclude it.
* ``train_s`` and ``eval_s``: the compiled chunks (``train.eval_every`` steps
  and an evaluation of every run, one program), from dispatch to results,
  split in two. **eval_s is an estimate**: training and evaluation run in one
  program, so the evaluation's part is timed once per engine and process on
  its own (the same evaluation, alone: :func:`calibrate_eval`) and scaled by
  the chunks and the runs per device; ``train_s`` is the rest of the chunks'
  time. The one timing run of the evaluation is counted in ``host_s``. In a
  multi-process run (multi-host) there is no estimate: ``eval_s`` is 0 and
  the evaluation is in ``train_s``.
* ``checkpoint_s``: writing the round's checkpoint, the mid-round ones and
  deleting those (their host copies included).
* ``events_s``: live metrics (TensorBoard, W&B, the plain line;
  :mod:`lth_jax.events`).
* ``host_s``: everything else in the round: pruning and setting up the arms,
  the records, ``metrics.jsonl``, moving results to the host.
* ``shares``: each part (``compile``, ``train``, ``eval``, ``checkpoint``,
  ``events``, ``host``) as a fraction of ``wall_time_s``; they sum to 1 up to
  rounding (``startup_s`` is not a share: it precedes the round).

The runner opens a :class:`RoundTimer` around each round; the code that does
the work (:func:`lth_jax.loop.run_chunks`, :meth:`lth_jax.train.Engine.fit`)
reports to the open one through :func:`section` and does nothing extra when
none is open.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import weakref

import jax
import numpy as np
from jax.sharding import PartitionSpec

__all__ = [
    "PARTS",
    "COMPILE_EVENTS",
    "RoundTimer",
    "active",
    "section",
    "close",
    "compile_seconds",
    "run_started",
    "calibrate_eval",
]

#: The parts of a round, in the order of ``shares``.
PARTS = ("compile", "train", "eval", "checkpoint", "events", "host")
#: The ``jax.monitoring`` duration events counted as compilation.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)

_compile_total = 0.0
_listening = False
_active: RoundTimer | None = None
_runs_started = 0
_eval_per_run: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _on_duration(event: str, duration: float, **kwargs) -> None:
    global _compile_total
    if event in COMPILE_EVENTS:
        _compile_total += float(duration)


def compile_seconds() -> float:
    """Seconds of compilation events seen in this process since timing was first used."""
    global _listening
    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _listening = True
    return _compile_total


def _is_command() -> bool:
    """Whether this process is the ``lth-jax`` command (its script or ``python -m``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name in ("lth_jax", "lth_jax.__main__", "lth_jax.cli"):
        return True
    cli = sys.modules.get("lth_jax.cli")
    return cli is not None and getattr(main, "main", None) is getattr(cli, "main", None)


def _process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or ``None``."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def run_started() -> float:
    """Marks the call of a runner; returns the ``perf_counter`` its startup is counted from.

    The first call in the ``lth-jax`` command's process counts from the
    process's start (when ``/proc`` tells it); every other call from now.
    """
    global _runs_started
    now = time.perf_counter()
    compile_seconds()  # start listening before the first compilation
    first = _runs_started == 0
    _runs_started += 1
    age = _process_age() if first and _is_command() else None
    return now - (age or 0.0)


def active() -> RoundTimer | None:
    """The open :class:`RoundTimer`, or ``None``."""
    return _active


@contextlib.contextmanager
def section(part: str):
    """Counts the wall time of the block (less its compilation) as ``part`` of the open round.

    Does nothing when no :class:`RoundTimer` is open.
    """
    timer = _active
    if timer is None:
        yield
        return
    t0, c0 = time.perf_counter(), compile_seconds()
    try:
        yield
    finally:
        timer.add(part, time.perf_counter() - t0 - (compile_seconds() - c0))


class RoundTimer:
    """Splits one round's wall time into :data:`PARTS`.

    :meth:`start` opens it (the open one gets what :func:`section` measures),
    :meth:`record` closes it and gives the round's ``timing.jsonl`` line.

    Args:
      since: a ``perf_counter`` mark (:func:`run_started`): the round's
        ``startup_s`` is the time from it to :meth:`start`; ``None``: 0.
    """

    def __init__(self, since: float | None = None):
        self.since = since
        self.startup_s = 0.0
        self.parts = dict.fromkeys(PARTS, 0.0)
        self._t0 = self._c0 = 0.0

    def start(self) -> RoundTimer:
        """Opens this timer (closing any other): the round starts now."""
        global _active
        self._t0, self._c0 = time.perf_counter(), compile_seconds()
        if self.since is not None:
            self.startup_s = max(0.0, self._t0 - self.since)
        _active = self
        return self

    def add(self, part: str, seconds: float) -> None:
        """Adds ``seconds`` (at least 0) to ``part``."""
        self.parts[part] += max(0.0, seconds)

    def move(self, src: str, dst: str, seconds: float) -> None:
        """Moves ``seconds`` (at most what ``src`` holds) from ``src`` to ``dst``."""
        s = min(max(0.0, seconds), self.parts[src])
        self.parts[src] -= s
        self.parts[dst] += s

    def record(self, round_: int) -> dict:
        """Closes the timer; returns the ``timing.jsonl`` line of the finished round ``round_``."""
        wall = time.perf_counter() - self._t0
        parts = dict(self.parts, compile=compile_seconds() - self._c0)
        close(self)
        measured = sum(v for k, v in parts.items() if k != "host")
        parts["host"] = max(0.0, wall - measured)
        total = max(wall, measured, 1e-9)  # parts measured past the wall (clock noise): < 1
        return {
            "round": round_,
            "wall_time_s": round(wall, 3),
            "startup_s": round(self.startup_s, 3),
            **{f"{k}_s": round(v, 3) for k, v in parts.items()},
            "shares": {k: round(v / total, 4) for k, v in parts.items()},
        }


def close(timer: RoundTimer | None = None) -> None:
    """Closes ``timer`` if it is the open one (``None``: whichever is open)."""
    global _active
    if timer is None or _active is timer:
        _active = None


# ----------------------------------------------------------------------------- evaluation


def _eval_program(engine):
    """The chunk's evaluation alone (validation, then test), per run, on the engine's mesh."""

    def local(params, batch_stats, data):
        def one(pb):
            return tuple(engine._evaluate(pb[0], pb[1], data[s]) for s in ("val", "test"))

        return jax.lax.map(one, (params, batch_stats))

    if engine.mesh is None:
        return jax.jit(local)
    P = PartitionSpec
    return jax.jit(
        jax.shard_map(
            local,
            mesh=engine.mesh,
            in_specs=(P("runs"), P("runs"), P()),
            out_specs=P("runs"),
            check_vma=False,
        )
    )


def calibrate_eval(engine, runs) -> float:
    """Seconds of one chunk's evaluation of ``runs`` (padded, sharded): an estimate.

    Times the evaluation part of the chunk program on its own, once per
    engine (for one run per device, the faster of two calls; compiled first,
    the compilation counted as such), and scales it by the runs each device
    evaluates one after another. In a multi-process run it estimates nothing
    (0 s: the evaluation stays in ``train_s``).
    """
    if jax.process_count() > 1:  # runs span other processes' devices: no estimate (0 s)
        return 0.0
    shards = engine.num_shards()
    per_device = max(1, jax.tree.leaves(runs.params)[0].shape[0] // shards)
    per_run = _eval_per_run.get(engine)
    if per_run is None:
        one = lambda a: np.asarray(a)[:shards]  # one run per device, cut on the host
        args = (
            jax.tree.map(one, jax.device_get(runs.params)),
            jax.tree.map(one, jax.device_get(runs.batch_stats)),
            {s: engine.device_data[s] for s in ("val", "test")},
        )
        compiled = _eval_program(engine).lower(*args).compile()
        times = []
        for _ in range(2):  # the faster of two: the first may pay for warming up
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - t0)
        per_run = min(times)
        _eval_per_run[engine] = per_run
    return per_run * per_device
