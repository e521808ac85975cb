"""Trials whose dense network diverged: found, left out of later rounds, recorded as skipped.

A non-finite training loss freezes a run inside the compiled loop and marks its
record ``status: "nan"`` (:mod:`lth_jax.loop`). A trial whose *dense* network
(round 0) diverged has nothing meaningful to prune: :mod:`lth_jax.lottery`
leaves it out of every later round (:func:`drop_diverged`) and writes a record
saying why for each of its arms (:func:`with_skipped`); when every trial
diverged the run stops (:func:`diverged` raises). The other trials keep their
own keys, so their results do not change.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import workdir as wd

__all__ = ["diverged", "drop_diverged", "with_skipped"]


def diverged(records) -> dict[int, int]:
    """``{trial: fail_step}`` of the trials whose dense network (round 0) diverged.

    Raises:
      RunFailed: every trial diverged (there is nothing meaningful to prune).
    """
    dense = [r for r in records if r["round"] == 0]
    out = {int(r["trial"]): r.get("fail_step") for r in dense if r.get("status", "ok") != "ok"}
    if dense and len(out) == len(dense):
        steps = sorted({s for s in out.values() if s is not None})
        raise wd.RunFailed(
            f"the dense network diverged in every trial (non-finite training loss, from step "
            f"{steps[0] if steps else '?'}): there is nothing to prune; lower "
            "optimizer.learning_rate (or check the data) and run again with --overwrite"
        )
    return out


def drop_diverged(exp, state, records):
    """Leaves the trials whose dense network diverged out of later rounds (``exp``: the
    :class:`lth_jax.lottery.Experiment`; its state and trials).

    The other trials keep their own keys (derived from their trial number), so
    their results are what they would be without the diverged ones.
    """
    out_trials = diverged(records)
    alive = [int(t) for t in exp.trials if int(t) not in out_trials]
    if len(alive) == len(exp.trials):
        return state
    held = jax.tree.leaves(state["ticket"]["mask"])[0].shape[0]
    if held == len(exp.trials):  # the state of round 0 holds every trial
        idx = jnp.asarray([i for i, t in enumerate(exp.trials) if int(t) in alive])
        state = {k: jax.tree.map(lambda a: a[idx], v) for k, v in state.items()}
    exp.trials = np.asarray(alive)
    return state


def with_skipped(exp, round_: int, recs, records):
    """``recs`` plus a record saying why for every arm of every trial left out."""
    out_trials = diverged(records)
    skipped = [
        {
            "round": round_,
            "arm": arm,
            "trial": t,
            "status": "skipped",
            "reason": f"the dense network of this trial diverged at step {step}; it is not pruned",
            "density": None,
            "final_test_accuracy": None,
        }
        for arm in exp.config.arms
        for t, step in sorted(out_trials.items())
    ]
    if not skipped:
        return recs
    order = {a: i for i, a in enumerate(exp.config.arms)}
    return sorted(recs + skipped, key=lambda r: (order[r["arm"]], r["trial"]))
