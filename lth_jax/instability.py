"""Instability analysis (Frankle et al. 2020): linear mode connectivity of IMP subnetworks.

``lth-jax run`` with ``config.kind = "instability"`` runs the IMP experiment of
the config (:func:`lth_jax.lottery.run`: every round, every arm, checkpoints)
and then, for every round ``r`` (round 0 is the dense network):

1. take the round's ticket mask ``m_r`` and the rewind point ``theta_k``
   (the weights saved at ``imp.rewind_step = k``; ``k = 0`` is the
   initialization) from the round's checkpoint;
2. train **two copies** of ``m_r * theta_k`` from step ``k`` to
   ``train.steps``, each with its own SGD noise: data-order and dropout keys of
   purposes ``instability_data_a`` / ``instability_data_b`` (and
   ``instability_dropout_a`` / ``_b``) for that trial and round, with the
   config's optimizer and schedule (a fresh optimizer state, as a rewound
   ticket gets);
3. evaluate the **test error** ``err(alpha)`` of ``(1 - alpha) A + alpha B`` at
   ``num_points`` evenly spaced ``alpha`` in ``[0, 1]`` (default 11);
4. record the **error barrier** (Frankle et al. 2020, Section 2)::

       barrier = max_alpha err(alpha) - (err(0) + err(1)) / 2

   A subnetwork is *stable* (linearly mode connected) when its barrier is
   about 0 (the paper uses 2 percentage points as the threshold).

The copies always start from ``theta_k`` whatever ``imp.rewind`` says (the
analysis is about rewinding weights); with ``imp.rewind_step = 0`` it measures
the stability of rewinding to initialization.

**Batch norm** (``instability.batch_norm``; networks without batch norm are
unaffected). The running statistics of an interpolated network are not those
of either copy, and interpolating them linearly (what interpolating a PyTorch
``state_dict`` does) inflates the barrier. With ``recompute`` (the default),
every network on the path, both ends included, gets its statistics
recomputed before it is evaluated (:func:`recompute_batch_stats`): the
training set without augmentation, in order, in ``E = n_train //
train.batch_size`` batches of ``train.batch_size`` (the remainder dropped),
each passed forward in training mode (batch statistics, dropout as in
training with a fixed key); every batch-norm layer's running mean and
variance are set to the mean over the ``E`` batches of that layer's batch
mean and batch variance (the variance as the model's batch norm computes it:
flax's, biased). With ``interpolate`` they are interpolated with the params.

**Records.** Barriers are cached per ``(round, trial)`` in
``<workdir>/instability.jsonl`` (so a resumed run does not retrain copies;
with batch norm, barriers cached by a version before
``instability.batch_norm``, which interpolated the statistics, are computed
again unless the setting is ``interpolate``) and
merged into ``metrics.jsonl``: each ``ticket`` (or round-0 ``dense``) record
gains ``barrier`` (an error difference, a fraction like the accuracies),
``barrier_alphas`` and ``barrier_test_error`` (the whole curve), which
``lth-jax report`` shows as an extra column and panel.

Settings (block ``config.instability``): ``num_points`` (int >= 2, default
11) and ``batch_norm`` (``recompute``, the default, or ``interpolate``).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import checkpoint as ckpt_lib
from lth_jax import config as config_lib
from lth_jax import events, lottery, parallel
from lth_jax import workdir as wd

__all__ = [
    "run",
    "interpolate",
    "barrier",
    "interpolation_errors",
    "recompute_batch_stats",
    "train_copies",
]

INSTABILITY = "instability.jsonl"
#: The copies' names in the live metrics (``tensorboard/round_<rr>/copy_a/trial_<t>/``).
COPIES = ("copy_a", "copy_b")


def interpolate(a, b, alpha):
    """``(1 - alpha) a + alpha b`` leaf by leaf, exactly ``a`` at 0 and ``b`` at 1."""
    return jax.tree.map(lambda x, y: jnp.where(alpha == 1, y, x + alpha * (y - x)), a, b)


def barrier(errors):
    """Error barrier of curves ``errors[..., num_points]`` (alpha from 0 to 1).

    ``max(errors) - (errors[0] + errors[-1]) / 2`` along the last axis.

    Example:
      >>> import numpy as np
      >>> float(barrier(np.array([0.10, 0.30, 0.12])))
      0.19
    """
    e = np.asarray(errors, dtype=np.float64)
    return np.round(e.max(axis=-1) - 0.5 * (e[..., 0] + e[..., -1]), 12)


def interpolation_errors(engine, params_a, bs_a, params_b, bs_b, alphas, batch_norm="recompute"):
    """Test errors ``(runs, len(alphas))`` along the segments from A to B.

    Params and batch stats carry a leading run axis; the runs are evaluated
    together, one compiled evaluation per ``alpha``. ``batch_norm``:
    ``"recompute"`` (each network's running statistics recomputed,
    :func:`recompute_batch_stats`) or ``"interpolate"`` (interpolated with the
    params); the same for a network without batch norm.
    """
    if batch_norm not in ("recompute", "interpolate"):
        raise ValueError(f"batch_norm must be recompute or interpolate, got {batch_norm!r}")
    out = []
    for alpha in alphas:
        a = jnp.float32(alpha)
        params, bs = interpolate(params_a, params_b, a), interpolate(bs_a, bs_b, a)
        if batch_norm == "recompute":
            bs = recompute_batch_stats(engine, params, bs)
        _, acc = engine.evaluate(params, bs)
        out.append(1.0 - np.asarray(acc, dtype=np.float64))
    return np.stack(out, axis=-1)


def recompute_batch_stats(engine, params, batch_stats):
    """Batch-norm running statistics of ``params`` recomputed on the training data.

    Per run (leading run axis): the mean over the ``n_train // batch_size``
    training batches, in order and without augmentation, of each batch-norm
    layer's batch mean and batch variance in a training-mode forward pass
    (the rule in the module docstring). ``batch_stats`` only gives the
    structure; it is returned as is by an engine whose model has no batch norm.

    Raises:
      ValueError: a model with batch norm but no ``bn_momentum`` attribute
        (the statistics are read by running it at momentum 0).
    """
    if not engine.has_batch_stats:
        return batch_stats
    return _recompute_fn(engine)(params, batch_stats, engine.device_data["train"][0])


@functools.lru_cache(maxsize=4)
def _recompute_fn(engine):
    """The compiled recomputation of :func:`recompute_batch_stats` (one per engine)."""
    if not hasattr(engine.model, "bn_momentum"):
        raise ValueError(
            f"{type(engine.model).__name__} has batch norm but no bn_momentum attribute: "
            "its statistics cannot be recomputed; set instability.batch_norm=interpolate"
        )
    # At momentum 0 a training-mode pass stores the batch's own statistics, exactly.
    model = engine.model.clone(bn_momentum=0.0)
    b, n = engine.batch_size, engine.n_train // engine.batch_size

    def one(params, batch_stats, train_x):
        zeros = jax.tree.map(jnp.zeros_like, batch_stats)

        def body(total, i):
            x = jax.lax.dynamic_slice_in_dim(train_x, i * b, b)
            _, upd = model.apply(
                {"params": params, "batch_stats": zeros},
                x,
                train=True,
                rngs={"dropout": jax.random.fold_in(jax.random.PRNGKey(0), i)},
                mutable=["batch_stats"],
            )
            return jax.tree.map(jnp.add, total, upd["batch_stats"]), None

        total, _ = jax.lax.scan(body, zeros, jnp.arange(n))
        return jax.tree.map(lambda t: t / n, total)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def train_copies(exp: lottery.Experiment, state, round_: int, on_chunk=None):
    """Trains the two copies of one round; returns ``((params_a, bs_a), (params_b, bs_b))``.

    ``on_chunk``: :meth:`lth_jax.train.Engine.fit`'s hook (the live metrics of the copies).
    """
    t = len(exp.trials)
    twice = lambda tree: parallel.concat_runs([tree, tree])
    keys = lambda kind: np.concatenate(
        [exp.keys(round_, f"instability_{kind}_{c}") for c in ("a", "b")], axis=0
    )
    rewind = state["rewind"]
    out = exp.engine.fit(
        twice(rewind["params"]),
        twice(rewind.get("batch_stats", {})),
        twice(state["ticket"]["mask"]),
        keys("data"),
        keys("dropout"),
        exp.config.imp.rewind_step,
        desc=f"round {round_} copies",
        groups=2,  # the two copies, each one round's batch of trials
        on_chunk=on_chunk,
    )
    part = lambda tree, j: parallel.take_runs(tree, j * t, (j + 1) * t)
    return (
        (part(out.params, 0), part(out.batch_stats, 0)),
        (part(out.params, 1), part(out.batch_stats, 1)),
    )


def _round_results(exp, state, round_: int, alphas, on_chunk=None) -> list[dict]:
    (pa, ba), (pb, bb) = train_copies(exp, state, round_, on_chunk)
    errors = interpolation_errors(
        exp.engine, pa, ba, pb, bb, alphas, exp.config.instability.batch_norm
    )
    bars = barrier(errors)
    return [
        {
            "round": round_,
            "trial": int(trial),
            "barrier": float(bars[i]),
            "barrier_alphas": [float(a) for a in alphas],
            "barrier_test_error": [float(e) for e in errors[i]],
            "batch_norm": exp.config.instability.batch_norm,  # in the cache only
        }
        for i, trial in enumerate(exp.trials)
    ]


def run(config, workdir: str, *, overwrite: bool = False, progress: bool | None = None):
    """Runs (or resumes) IMP plus the instability analysis; returns the merged records.

    Raises:
      ConfigError: a bad config value, or ``checkpoint.max_to_keep`` too small
        to keep every round (each round's checkpoint is read back).
    """
    config_lib.validate(config)
    alphas = np.linspace(0.0, 1.0, int(config.instability.num_points))
    keep = config.checkpoint.max_to_keep
    if keep is not None and keep < config.imp.rounds + 1:
        raise config_lib.ConfigError(
            f"checkpoint.max_to_keep must be unset or >= imp.rounds + 1 = "
            f"{config.imp.rounds + 1} for kind 'instability' (every round is read back), "
            f"got {keep}"
        )
    is_main = parallel.is_main()
    with wd.lock(workdir, is_main):
        return _run(config, workdir, overwrite, progress, alphas, is_main)


def _run(config, workdir, overwrite, progress, alphas, is_main):
    cache_path = os.path.join(workdir, INSTABILITY)
    # The IMP run checks everything and, with overwrite, discards its own files first;
    # the barriers of the discarded run go after it.
    records = lottery.run(config, workdir, overwrite=overwrite, progress=progress, announce=False)
    if overwrite and is_main and os.path.exists(cache_path):
        os.remove(cache_path)

    cached, exp = {}, None
    if os.path.exists(cache_path):
        cached = {(r["round"], r["trial"]): r for r in wd.read_jsonl(cache_path)}
    # Barriers cached before instability.batch_norm existed interpolated the statistics:
    # with batch norm (and another setting now) they are computed again.
    mode = config.instability.batch_norm
    if any(r.get("batch_norm", "interpolate") != mode for r in cached.values()):
        exp = lottery.Experiment(config, progress=progress)
        if exp.engine.has_batch_stats:
            cached = {k: r for k, r in cached.items() if r.get("batch_norm", "interpolate") == mode}
    # Trials left out of a round (their dense network diverged) have no copies to train.
    held = lambda r: sorted(
        {int(x["trial"]) for x in records if x["round"] == r and x.get("status") != "skipped"}
    )
    todo = [r for r in range(config.imp.rounds + 1) if any((r, t) not in cached for t in held(r))]
    if todo:
        exp = exp if exp is not None else lottery.Experiment(config, progress=progress)
        ck = ckpt_lib.RoundCheckpointer(os.path.join(workdir, "checkpoints"))
        live = events.Live(workdir, config, exp.engine.progress, is_main)  # never feeds back
        try:
            for r in todo:
                exp.trials = np.asarray(held(r))
                state, _ = ck.restore(r)
                hook = live.round(r, None, COPIES, lambda: exp.trials, f"round {r} copies")
                state = jax.tree.map(jnp.asarray, state)
                for res in _round_results(exp, state, r, alphas, hook):
                    cached[(r, res["trial"])] = res
                    if is_main:
                        wd.append_jsonl(cache_path, res)
        finally:
            live.close()
            ck.close()

    extra = ("barrier", "barrier_alphas", "barrier_test_error")
    merged = []
    for rec in records:
        res = cached.get((rec["round"], rec["trial"]))
        if res is not None and rec["arm"] in ("ticket", "dense"):
            rec = {**rec, **{k: res[k] for k in extra}}
        merged.append(rec)
    if is_main:
        wd.write_jsonl_atomic(os.path.join(workdir, wd.METRICS), merged)
    return merged
