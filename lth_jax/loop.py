"""The loop over an engine's compiled chunks: progress, snapshots, hooks, curves.

:meth:`lth_jax.train.Engine.fit` calls :func:`run_chunks`; each iteration is one
call of the compiled chunk program (``eval_every`` steps and an evaluation)
per group of runs, whose per-run body is :func:`run_chunk`.

Groups: a batch of runs may be trained as several groups of equal size (the
arms of a lottery round, each the size of round 0's batch), one call of the
chunk program per group and chunk. Every run is computed by the same one-run
program either way, so the results do not change; the gain is that rounds of
different sizes share one compiled chunk program (a first run compiles it once,
not once per size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from lth_jax import checkpoint as ckpt_lib
from lth_jax import fused_adam, timing
from lth_jax import gmp as gmp_lib
from lth_jax.curves import Curves
from lth_jax.data import pipeline
from lth_jax.models import cpu_conv
from lth_jax.optim import fixed_rate, set_learning_rate
from lth_jax.parallel import join_runs, to_host

__all__ = ["run_chunks", "run_chunk", "train_step", "cross_entropy", "fit_hook"]


def run_chunk(engine, run, s0, fixed_lr, data):
    """One run: ``eval_every`` steps from ``s0`` as a ``lax.scan``, then evaluation.

    The body of the compiled chunk (:meth:`lth_jax.train.Engine.chunk`): step
    ``s`` trains at ``fixed_lr`` (``>= 0``) or ``schedule(s)``; a run holding a
    GMP schedule (``run.gmp``, :mod:`lth_jax.gmp`) then updates its mask at
    boundary ``s + 1`` when the schedule has it. Runs without one have no
    mask-update branch.
    """

    def body(run, s):
        lr = jnp.where(fixed_lr >= 0, fixed_lr, engine.schedule(s))
        run, loss = train_step(engine, run, s, lr, data["train"])
        if run.gmp is not None:
            run = gmp_lib.update(run, s + 1)
        return run, loss

    steps = s0 + jnp.arange(engine.eval_every, dtype=jnp.int32)
    run, losses = jax.lax.scan(body, run, steps)
    with jax.named_scope("evaluate"):
        val_loss, val_acc = engine._evaluate(run.params, run.batch_stats, data["val"])
        test_loss, test_acc = engine._evaluate(run.params, run.batch_stats, data["test"])
    return run, (jnp.mean(losses), val_loss, val_acc, test_loss, test_acc)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy with integer labels."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def train_step(engine, run, s, lr, train):
    """One training step of one run: its batch, forward and backward, the masked update.

    A step whose loss is not finite changes nothing (params, batch statistics
    and optimizer state keep their values) and records ``s`` in
    ``run.fail_step`` (the first such step). With ``optimizer.fused_adam_cpu``
    the update is one kernel (:mod:`lth_jax.fused_adam`), the guard inside
    it. The three parts carry the named scopes ``batch``,
    ``forward_backward`` and ``update`` in the compiled program's metadata,
    which the benchmark's breakdown of the loop reads.
    """
    train_x, train_y = train
    spe = engine.steps_per_epoch
    with jax.named_scope("batch"):
        i = s % spe
        # The epoch's order is drawn at its first step, or at a new run's first step (perm
        # -1); otherwise the run carries it, from one chunk to the next as well.
        perm = jax.lax.cond(
            (i == 0) | (run.perm[0] < 0),
            lambda: pipeline.epoch_permutation(run.data_key, s // spe, engine.n_train),
            lambda: run.perm,
        )
        idx = pipeline.batch_indices(perm, i, engine.batch_size)
        x, y = train_x[idx], train_y[idx]
        step_key = jax.random.fold_in(run.dropout_key, s)
        if engine.augment:
            x = pipeline.random_crop_flip(jax.random.fold_in(step_key, 1), x)

    def loss_fn(p):
        logits, bs = engine._apply(p, run.batch_stats, x, True, step_key)
        return cross_entropy(logits, y), bs

    # On a CPU, convolution gradients as canonical convolutions (lth_jax.models.cpu_conv).
    with jax.named_scope("forward_backward"), cpu_conv.canonical_backward():
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(run.params)
    with jax.named_scope("update"):
        alive = run.fail_step < 0
        finite = jnp.isfinite(loss)
        ok = alive & finite
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        if engine.fused_adam:  # one kernel, the guard inside it (lth_jax.fused_adam)
            params, opt_state = fused_adam.update(grads, run.opt_state, run.params, lr, ok)
        else:
            opt_state = set_learning_rate(run.opt_state, lr)
            updates, opt_state = engine.tx.update(grads, opt_state, run.params)
            new_params = optax.apply_updates(run.params, updates)
            params, opt_state = keep(new_params, run.params), keep(opt_state, run.opt_state)
        run = run._replace(
            params=params,
            batch_stats=keep(batch_stats, run.batch_stats),
            opt_state=opt_state,
            perm=perm,
            fail_step=jnp.where(alive & ~finite, s, run.fail_step),
        )
    return run, loss


def run_chunks(
    engine,
    runs,
    start_step: int,
    snapshot_step: int | None = None,
    fixed_lr_step=None,
    desc: str = "train",
    on_chunk: Callable[..., Any] | None = None,
    resume: tuple[int, list, Any] | None = None,
):
    """Trains ``runs`` chunk by chunk up to ``engine.steps``.

    ``runs`` is a list of groups (each a run-batched state, padded, sharded;
    donated), trained one after another in each chunk; outputs are joined in
    group order. ``on_chunk(step, runs, outs, snapshot)`` sees the groups
    after each chunk (read them before returning: they are donated to the
    next chunk), the evaluation outputs so far (joined) and the snapshot so
    far (a list of ``(params, batch_stats)``, one per group); ``resume`` is
    ``(step, outs, snapshot)`` as it saw them. Returns ``(runs, curves,
    snapshot)``, both lists of groups. ``fixed_lr_step``: ``None`` (the
    schedule), an int step or a :class:`lth_jax.optim.FixedLR` (see
    :func:`lth_jax.optim.fixed_rate`).
    """
    e = engine.eval_every
    if start_step % e or engine.steps % e:
        raise ValueError(
            f"start step {start_step} and train.steps {engine.steps} must be multiples of "
            f"train.eval_every={e}"
        )
    snapshot = None
    outs, eval_steps = [], []
    first = start_step
    if resume is not None:
        first, outs, snapshot = int(resume[0]), list(resume[1]), resume[2]
        if first % e or not start_step < first <= engine.steps:
            raise ValueError(
                f"cannot resume at step {first}: it must be a multiple of "
                f"train.eval_every={e} in ({start_step}, {engine.steps}]"
            )
        if len(outs) != (first - start_step) // e:
            raise ValueError(
                f"cannot resume at step {first}: {len(outs)} evaluations given, "
                f"{(first - start_step) // e} expected"
            )
        eval_steps = list(range(start_step + e, first + 1, e))
    elif snapshot_step == start_step:
        snapshot = _copy(runs)
    # A constant learning rate (fine-tuning) is data of the chunk: -1 follows the schedule.
    fixed = jnp.float32(fixed_rate(engine.schedule, fixed_lr_step))
    bar = tqdm(
        total=engine.steps - start_step,
        initial=first - start_step,
        desc=desc,
        disable=not engine.progress,
        leave=False,
        unit="step",
        dynamic_ncols=True,
    )
    timer = timing.active()  # the round's time split (lth_jax.timing), when one is open
    try:
        for s0 in range(first, engine.steps, e):
            with timing.section("train"):  # dispatch to results; the first one compiles
                done = [engine.chunk(g, s0, fixed) for g in runs]
                runs = [g for g, _ in done]
                out = join_runs([tuple(o) for _, o in done])  # group order
                if timer is not None:
                    jax.block_until_ready(out)
            if timer is not None:
                timer.move("train", "eval", timing.calibrate_eval(engine, runs[0]) * len(runs))
            outs.append(out)
            eval_steps.append(s0 + e)
            if snapshot_step == s0 + e:
                snapshot = _copy(runs)
            if engine.progress:
                jax.block_until_ready(out[1])
                bar.set_postfix(val_loss=f"{float(jnp.mean(out[1])):.3f}")
            bar.update(e)
            if on_chunk is not None:
                on_chunk(s0 + e, runs, outs, snapshot)
    finally:
        bar.close()
    outs = to_host(outs)
    stack = lambda j: np.stack([o[j] for o in outs], axis=1) if outs else np.zeros((0, 0))
    curves = Curves(
        steps=np.asarray(eval_steps, np.int64),
        train_loss=stack(0),
        val_loss=stack(1),
        val_accuracy=stack(2),
        test_loss=stack(3),
        test_accuracy=stack(4),
    )
    return runs, curves, snapshot


def fit_hook(on_chunk, n: int):
    """The ``on_chunk`` of :func:`run_chunks` that :meth:`lth_jax.train.Engine.fit` passes.

    After each chunk: ``on_chunk.on_eval(step, out, groups, n)`` first, when
    ``on_chunk`` has that method (live metrics, :mod:`lth_jax.events`: it only
    reads), then ``on_chunk(step, get_state)`` with ``get_state()`` the host
    copy of the ``n`` real runs for a mid-round checkpoint
    (:func:`lth_jax.checkpoint.partial_state`).
    """
    on_eval = getattr(on_chunk, "on_eval", None)

    def hook(step, runs, outs, snapshot):
        if on_eval is not None:
            with timing.section("events"):
                on_eval(step, outs[-1], runs, n)
        with timing.section("checkpoint"):  # mid-round checkpoints

            def get_state():
                snap = None if snapshot is None else join_runs(snapshot)
                return ckpt_lib.partial_state(join_runs(runs), outs, snap, n)

            on_chunk(step, get_state)

    return hook


def _copy(groups):
    """``(params, batch_stats)`` of every group, copied (the groups are donated next)."""
    return [jax.tree.map(jnp.copy, (g.params, g.batch_stats)) for g in groups]
