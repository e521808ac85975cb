"""Gradual magnitude pruning (Zhu & Gupta 2017) inside the compiled training loop: arm ``gmp``.

The ``gmp`` arm of round ``r`` trains the network once, from the rewind
source (``theta_k``; the arm is defined with ``imp.rewind=weights`` only),
starting **dense** (every weight alive) and pruning it while it trains, down
to this round's ticket's per-layer counts. The rule, exactly:

* **When.** The round trains steps ``k .. T-1`` (``k = imp.rewind_step``,
  ``T = train.steps``). Pruning runs from ``t0 = k + floor(gmp.start * (T -
  k) + 1/2)`` to ``t1 = k + floor(gmp.end * (T - k) + 1/2)``; the mask is
  updated at the boundaries ``b = t0 + every, t0 + 2 every, ... < t1`` and at
  ``t1`` itself (``every = gmp.every``), where boundary ``b`` means after
  step ``b - 1`` and before step ``b`` (``b = T``: after the last step, before
  the last evaluation).
* **How many.** Per prunable layer with ``n`` weights and the ticket's count
  ``a_f`` (the ticket's mask of this round), the alive count after the update
  at boundary ``b`` is Zhu & Gupta's eq. 1 in counts, cubic from the start
  count ``a_i = n`` (dense) to ``a_f``, rounded half up::

      a_b = a_f + floor((a_i - a_f) * (1 - (b - t0) / (t1 - t0))^3 + 1/2)

  computed exactly (integers, on the host). ``a_t1 = a_f``: the final mask
  has exactly the ticket's per-layer counts, and the record's
  ``layer_density`` is that final mask's. Non-prunable leaves keep every
  weight (their ticket count is their size).
* **Which.** The ``a_b`` alive weights of largest ``|w|`` (the current
  weights, after step ``b - 1``) stay, within each layer; ties are removed in
  position order (row-major), as in :mod:`lth_jax.pruning`. Pruned weights
  never revive (a new mask is a subset of the old one).
* **Exact zeros.** At an update the newly pruned weights are set to ``0.0``
  and the mask held by the optimizer state (:func:`lth_jax.masks.keep_pruned`)
  is replaced, so from that step on their gradient going into the optimizer
  and their update coming out of it are zero: momentum, Adam moments, weight
  decay, L1 or max-norm never move them again. (The moments they hold stay in
  the state but never reach them.) A run stopped at a non-finite loss is not
  pruned further.

The schedule is data (:class:`Schedule`, one per run, in
:class:`lth_jax.train.RunState`): every run of a round, ``gmp`` or not, is the
same compiled program; a run whose schedule has no boundary (``-1``) never
changes its mask, and an engine built without GMP slots has no mask-update
branch at all.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import masks as masks_lib

__all__ = [
    "ARM",
    "Schedule",
    "window",
    "boundaries",
    "target_count",
    "slots",
    "schedule",
    "never",
    "plan",
    "update",
]

#: The arm name (registered in :mod:`lth_jax.arms`).
ARM = "gmp"


class Schedule(NamedTuple):
    """The mask updates of one run (a leading run axis when batched).

    Attributes:
      steps: int32 ``(U,)``, the boundaries at which the mask is updated
        (``-1``: none, padding and runs without GMP).
      counts: a pytree shaped like the mask, int32 ``(U,)`` per leaf: the
        layer's alive count after the update at ``steps[u]``.
    """

    steps: Any
    counts: Any


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


def window(start: float, end: float, first: int, last: int) -> tuple[int, int]:
    """``(t0, t1)``: the pruning window of a round training steps ``first .. last - 1``.

    Example:
      >>> window(0.0, 0.75, 0, 1000)
      (0, 750)
      >>> window(0.1, 0.5, 100, 400)
      (130, 250)
    """
    n = last - first
    return first + _half_up(float(start) * n), first + _half_up(float(end) * n)


def boundaries(t0: int, t1: int, every: int) -> list[int]:
    """The update boundaries in ``(t0, t1]``: ``t0 + every, t0 + 2 every, ... < t1``, then ``t1``.

    Example:
      >>> boundaries(0, 250, 100)
      [100, 200, 250]
    """
    return [*range(t0 + every, t1, every), t1] if t1 > t0 else []


def target_count(a_i: int, a_f: int, b: int, t0: int, t1: int) -> int:
    """The alive count after the update at boundary ``b``: eq. 1 of Zhu & Gupta, in counts.

    ``a_f + floor((a_i - a_f) (1 - (b - t0) / (t1 - t0))^3 + 1/2)``, exactly
    (integer arithmetic).

    Example:
      >>> [target_count(1000, 200, b, 0, 100) for b in (0, 25, 50, 75, 100)]
      [1000, 538, 300, 213, 200]
    """
    if not t0 <= b <= t1 or t1 <= t0:
        raise ValueError(f"boundary {b} outside the window ({t0}, {t1}]")
    num = (a_i - a_f) * (t1 - b) ** 3
    den = (t1 - t0) ** 3
    return a_f + (2 * num + den) // (2 * den)


def _rounds_window(config) -> tuple[int, int]:
    g = config.gmp
    return window(g.start, g.end, int(config.imp.rewind_step), int(config.train.steps))


def slots(config) -> int:
    """The number of mask updates of a ``gmp`` run of this config (0 without the arm)."""
    if ARM not in tuple(config.arms):
        return 0
    return len(boundaries(*_rounds_window(config), int(config.gmp.every)))


def schedule(final_mask, t0: int, t1: int, every: int) -> Schedule:
    """The :class:`Schedule` of runs starting dense and ending at ``final_mask``'s counts.

    ``final_mask`` has a leading run axis; every leaf's count goes from its
    size to ``final_mask``'s count of that run (see the module docstring).
    """
    bounds = boundaries(t0, t1, every)
    leaves, treedef = jax.tree.flatten(final_mask)
    runs = int(np.shape(leaves[0])[0])
    counts = []
    for m in leaves:
        m = np.asarray(m, dtype=bool)
        n = int(m[0].size)
        finals = [int(c) for c in m.reshape(runs, -1).sum(axis=1)]
        counts.append(
            np.asarray([[target_count(n, a, b, t0, t1) for b in bounds] for a in finals], np.int32)
        )
    steps = np.tile(np.asarray(bounds, np.int32), (runs, 1))
    return Schedule(
        jnp.asarray(steps), jax.tree.unflatten(treedef, [jnp.asarray(c) for c in counts])
    )


def never(mask, slots: int) -> Schedule:
    """``slots`` empty updates for every run of ``mask`` (leading run axis): no mask change."""
    runs = int(np.shape(jax.tree.leaves(mask)[0])[0])
    return Schedule(
        jnp.full((runs, slots), -1, jnp.int32),
        jax.tree.map(lambda _: jnp.zeros((runs, slots), jnp.int32), mask),
    )


def plan(config, arms, masks, trials: int):
    """``(start masks, schedules)`` of a round's arm-major runs; ``schedules`` is ``None``
    without the ``gmp`` arm.

    ``masks`` are the masks the arms gave (for ``gmp``: the ticket's, its final
    mask); a ``gmp`` run starts from the all-alive mask with the schedule to
    that mask's counts, every other run keeps its mask and gets no update.
    """
    arms = list(arms)
    if ARM not in arms:
        return masks, None
    j = arms.index(ARM)
    part = lambda tree, a, b: jax.tree.map(lambda x: x[a:b], tree)
    final = part(masks, j * trials, (j + 1) * trials)
    t0, t1 = _rounds_window(config)
    every = int(config.gmp.every)
    size = len(boundaries(t0, t1, every))
    runs = int(np.shape(jax.tree.leaves(masks)[0])[0])
    pieces = [never(part(masks, 0, j * trials), size), schedule(final, t0, t1, every)]
    pieces.append(never(part(masks, (j + 1) * trials, runs), size))
    sched = jax.tree.map(lambda *xs: jnp.concatenate(xs), *pieces)
    ones = jax.tree.map(lambda m: jnp.ones_like(m, dtype=bool), final)
    start = jax.tree.map(
        lambda m, o: jnp.concatenate([m[: j * trials], o, m[(j + 1) * trials :]]), masks, ones
    )
    return start, sched


def _keep_top(p, m, count):
    """``m`` keeping its ``count`` alive weights of largest ``|p|`` (ties: earlier ones go)."""
    score = jnp.where(m, jnp.abs(p).astype(jnp.float32), -jnp.inf).reshape(-1)
    order = jnp.argsort(score, stable=True)
    rank = jnp.empty_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    return m & (rank >= m.size - count).reshape(m.shape)


def update(run, boundary):
    """One run's mask update at ``boundary`` (inside the compiled step), when its schedule has it.

    ``run`` is a :class:`lth_jax.train.RunState` with a :class:`Schedule`;
    returns it with the pruned params zeroed and the optimizer state's mask
    replaced, or unchanged (the same values) when ``boundary`` is not one of
    its updates or the run has stopped.
    """
    sched = run.gmp
    hit = sched.steps == boundary
    do = jnp.any(hit) & (run.fail_step < 0)

    def prune(params, mask):
        counts = jax.tree.map(lambda c: jnp.max(jnp.where(hit, c, 0)), sched.counts)
        new = jax.tree.map(_keep_top, params, mask, counts)
        return masks_lib.apply(new, params), new

    params, mask = jax.lax.cond(do, prune, lambda p, m: (p, m), run.params, run.opt_state.mask)
    return run._replace(params=params, opt_state=run.opt_state._replace(mask=mask))
