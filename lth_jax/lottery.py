"""Iterative magnitude pruning with rewinding and controls: ``lth-jax run``.

Round 0 trains the dense network of every trial (the rewind point ``theta_k``
is saved at ``imp.rewind_step = k``). Each later round ``r``:

1. **prune** the ticket: ``mask_r = magnitude_prune(trained ticket of round
   r-1, mask_{r-1}, imp.prune_rate, imp.scope, imp.layer_rates)`` (a one-shot
   run prunes once to ``imp.one_shot_density``);
2. **set up every arm** from that mask, each trial with its own keys:

   ============  ==============================  ===============================
   arm           mask                            weights it starts from
   ============  ==============================  ===============================
   ticket        ``mask_r``                      the rewind source (below)
   reinit        ``mask_r``                      a fresh init (key purpose
                                                 ``reinit``, round ``r``)
   random_mask   random, with ``mask_r``'s       the rewind source
                 per-layer counts
   ============  ==============================  ===============================

   The rewind source depends on ``imp.rewind``: ``weights`` (default) uses
   ``theta_k`` (``k = 0`` is the initialization, Frankle & Carbin; ``k > 0`` is
   Frankle et al. 2020); ``lr`` (Renda et al. 2020) keeps the ticket's trained
   weights of round ``r-1`` and replays the learning-rate schedule from step
   ``k``; ``finetune`` keeps the trained weights and trains at the last
   learning rate of the schedule. Every arm of a round starts at step ``k``,
   trains to ``train.steps`` with a fresh optimizer state, and sees the same
   data order and dropout keys (key purposes ``data``/``dropout`` of that
   trial and round), so arms differ only in what the table says.
3. **train** all ``trials x arms`` runs as one compiled program (vmapped, split
   over the devices), and **record** one metrics line per run.

Every finished round is checkpointed (orbax) with the masks, the initial,
rewind and trained weights, and all records so far; running the same command
on the same workdir resumes after the last finished round and produces the
same ``metrics.jsonl`` as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import checkpoint as ckpt_lib
from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import parallel, pruning, rng
from lth_jax.train import Engine, early_stop

__all__ = ["run", "Experiment", "config_to_json", "check_config_drift"]

METRICS = "metrics.jsonl"
CONFIG = "config.json"
TIMING = "timing.jsonl"


def config_to_json(config) -> dict:
    """The config as plain JSON types (tuples become lists)."""
    return json.loads(config.to_json(sort_keys=True))


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_config_drift(workdir: str, config) -> None:
    """Refuses to resume ``workdir`` with a config whose results would differ.

    Raises:
      ConfigError: naming the differing keys (keys in ``HARMLESS_KEYS`` are
        ignored).
    """
    path = os.path.join(workdir, CONFIG)
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = _flatten(json.load(f))
    new = _flatten(config_to_json(config))
    harmless = config_lib.HARMLESS_KEYS
    diff = sorted(
        k
        for k in set(old) | set(new)
        if old.get(k, "<missing>") != new.get(k, "<missing>")
        and not any(k == h or k.startswith(h + ".") for h in harmless)
    )
    if diff:
        shown = ", ".join(
            f"{k} ({old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r})" for k in diff[:5]
        )
        more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
        raise config_lib.ConfigError(
            f"workdir {workdir} holds a run with a different config: {shown}{more}; "
            "use another --workdir, or --overwrite to discard it"
        )


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


def _take(tree, start, stop):
    return jax.tree.map(lambda a: a[start:stop], tree)


class Experiment:
    """Everything a lottery run needs, set up once: data, model, engine, keys.

    Args:
      config: a validated config (see :mod:`lth_jax.config`).
      progress: show progress bars (defaults to ``config.progress``).
    """

    def __init__(self, config, progress: bool | None = None):
        from lth_jax import data, models

        config_lib.validate(config)
        self.config = c = config
        self.dataset = data.get_dataset(
            c.dataset.name,
            data_dir=c.dataset.data_dir,
            val_size=c.dataset.val_size,
            train_size=c.dataset.train_size,
            classes=c.dataset.classes,
            seed=c.seed,
        )
        try:
            self.model = models.get(
                c.model.name, num_classes=self.dataset.num_classes, **c.model.kwargs.to_dict()
            )
        except TypeError as e:
            raise config_lib.ConfigError(f"model.kwargs for {c.model.name}: {e}") from None
        n_train = int(self.dataset.train_x.shape[0])
        if c.train.batch_size > n_train:
            raise config_lib.ConfigError(
                f"train.batch_size must be <= the training set size ({n_train} examples of "
                f"{c.dataset.name}), got {c.train.batch_size}"
            )
        self.mesh = parallel.make_mesh(c.num_devices)
        self.engine = Engine(
            model=self.model,
            dataset=self.dataset,
            optimizer=c.optimizer,
            steps=c.train.steps,
            batch_size=c.train.batch_size,
            eval_every=c.train.eval_every,
            eval_batch_size=c.train.eval_batch_size,
            augment=bool(c.dataset.augment),
            mesh=self.mesh,
            progress=c.progress if progress is None else progress,
        )
        self.layer_rates = dict(c.imp.layer_rates)
        shapes = jax.eval_shape(self.engine._init_impl, jax.random.PRNGKey(0))[0]
        try:
            pruning.resolve_layer_rates(shapes, c.imp.prune_rate, self.layer_rates)
        except ValueError as e:
            raise config_lib.ConfigError(f"imp.layer_rates: {e}") from None
        self.trials = np.arange(c.num_trials)
        rate = c.imp.prune_rate
        if c.imp.one_shot_density is not None:
            rate = 1.0 - float(c.imp.one_shot_density)
        scope, layer_rates = c.imp.scope, self.layer_rates or None
        self._prune = jax.jit(
            jax.vmap(lambda p, m: pruning.magnitude_prune(p, m, rate, scope, layer_rates))
        )
        self._random_mask = jax.jit(jax.vmap(pruning.random_mask_like))
        self._density = jax.jit(jax.vmap(masks_lib.density))
        self._layer_density = jax.jit(jax.vmap(masks_lib.layer_density))

    # ------------------------------------------------------------------ keys
    def keys(self, round_: int, purpose: str):
        s = self.config.seed
        return jnp.stack([rng.derive(s, int(t), round_, purpose) for t in self.trials])

    # ------------------------------------------------------------------ rounds
    def _train(self, params, batch_stats, mask, round_, start, snapshot=None, fixed=None):
        """Trains runs (leading axis = arm-major runs) and returns host results."""
        n_arms = jax.tree.leaves(params)[0].shape[0] // len(self.trials)
        rep = lambda k: jnp.tile(k, (n_arms, 1))
        inputs = (
            params,
            batch_stats,
            mask,
            rep(self.keys(round_, "data")),
            rep(self.keys(round_, "dropout")),
        )
        inputs, n = parallel.pad_runs(inputs, self.engine.num_shards())
        runs = self.engine.new_runs(*inputs)
        runs, curves, snap = self.engine.train(
            runs, start, snapshot_step=snapshot, fixed_lr_step=fixed, desc=f"round {round_}"
        )
        cut = lambda t: None if t is None else _take(t, 0, n)
        curves = curves._replace(
            **{f: getattr(curves, f)[:n] for f in curves._fields if f != "steps"}
        )
        return (
            cut(runs.params),
            cut(runs.batch_stats),
            np.asarray(runs.fail_step)[:n],
            curves,
            cut(snap),
        )

    def dense_round(self):
        """Round 0: train every trial's dense network; returns ``(state, records)``."""
        c = self.config
        params0, bs0 = self.engine.init(self.keys(0, "init"))
        params0, bs0 = _take(params0, 0, len(self.trials)), _take(bs0, 0, len(self.trials))
        mask = jax.vmap(masks_lib.ones_like)(params0)
        k = c.imp.rewind_step
        params, bs, fail, curves, snap = self._train(params0, bs0, mask, 0, 0, snapshot=k)
        state = {
            "init": {"params": params0, "batch_stats": bs0},
            "rewind": {"params": snap[0], "batch_stats": snap[1]},
            "ticket": {"mask": mask, "params": params, "batch_stats": bs},
        }
        records = self._records(0, ["dense"], mask, fail, curves, start=0)
        return state, records

    def prune_round(self, prev, round_: int):
        """Round ``round_ >= 1`` from the previous round's state."""
        c = self.config
        t = len(self.trials)
        ticket_mask = self._prune(prev["ticket"]["params"], prev["ticket"]["mask"])
        mode, k = c.imp.rewind, c.imp.rewind_step
        if mode == "weights":
            src = prev["rewind"]
        else:
            src = {"params": prev["ticket"]["params"], "batch_stats": prev["ticket"]["batch_stats"]}
        fixed = c.train.steps - 1 if mode == "finetune" else None
        per_arm = {}
        for arm in c.arms:
            if arm == "ticket":
                per_arm[arm] = (src["params"], src["batch_stats"], ticket_mask)
            elif arm == "reinit":
                p, b = self.engine.init(self.keys(round_, "reinit"))
                per_arm[arm] = (_take(p, 0, t), _take(b, 0, t), ticket_mask)
            elif arm == "random_mask":
                m = self._random_mask(self.keys(round_, "random_mask"), ticket_mask)
                per_arm[arm] = (src["params"], src["batch_stats"], m)
        arms = list(per_arm)
        params = _stack([per_arm[a][0] for a in arms])
        bs = _stack([per_arm[a][1] for a in arms])
        mask = _stack([per_arm[a][2] for a in arms])
        tp, tb, fail, curves, _ = self._train(params, bs, mask, round_, k, fixed=fixed)
        i = arms.index("ticket")
        state = {
            "init": prev["init"],
            "rewind": prev["rewind"],
            "ticket": {
                "mask": ticket_mask,
                "params": _take(tp, i * t, (i + 1) * t),
                "batch_stats": _take(tb, i * t, (i + 1) * t),
            },
            "arms": {
                a: {
                    "mask": _take(mask, j * t, (j + 1) * t),
                    "params": _take(tp, j * t, (j + 1) * t),
                }
                for j, a in enumerate(arms)
                if a != "ticket"
            },
        }
        return state, self._records(round_, arms, mask, fail, curves, start=k)

    def _records(self, round_, arms, mask, fail, curves, start):
        dens = np.asarray(self._density(mask))
        layer = jax.device_get(self._layer_density(mask))
        out = []
        t = len(self.trials)
        for j in range(len(arms) * t):
            arm, trial = arms[j // t], int(self.trials[j % t])
            bi, bstep = early_stop(curves.val_loss[j], curves.steps)
            failed = int(fail[j]) >= 0
            if failed:
                print(
                    f"warning: arm {arm}, trial {trial}, round {round_}: non-finite training "
                    f"loss at step {int(fail[j])}; this run stopped there",
                    file=sys.stderr,
                )
            f = lambda a: [float(v) for v in a]
            out.append(
                {
                    "round": round_,
                    "arm": arm,
                    "trial": trial,
                    "status": "nan" if failed else "ok",
                    "fail_step": int(fail[j]) if failed else None,
                    "density": float(dens[j]),
                    "layer_density": {p: float(v[j]) for p, v in layer.items()},
                    "start_step": int(start),
                    "train_steps": int(self.config.train.steps - start),
                    "final_test_accuracy": float(curves.test_accuracy[j, -1]),
                    "final_test_loss": float(curves.test_loss[j, -1]),
                    "final_val_loss": float(curves.val_loss[j, -1]),
                    "final_val_accuracy": float(curves.val_accuracy[j, -1]),
                    "best_val_step": bstep,
                    "best_val_loss": float(curves.val_loss[j, bi]),
                    "test_accuracy_at_best_val": float(curves.test_accuracy[j, bi]),
                    "eval_steps": [int(s) for s in curves.steps],
                    "train_loss_curve": f(curves.train_loss[j]),
                    "val_loss_curve": f(curves.val_loss[j]),
                    "test_accuracy_curve": f(curves.test_accuracy[j]),
                }
            )
        return out


def _prepare_workdir(workdir: str, config, overwrite: bool) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise config_lib.ConfigError(f"workdir {workdir} cannot be created: {e.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise config_lib.ConfigError(f"workdir {workdir} is not writable")
    if overwrite:
        import shutil

        for name in (METRICS, CONFIG, TIMING, "checkpoints", "report.md", "report.png"):
            p = os.path.join(workdir, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    check_config_drift(workdir, config)


def run(
    config, workdir: str, *, overwrite: bool = False, progress: bool | None = None
) -> list[dict]:
    """Runs (or resumes) a lottery experiment in ``workdir``; returns all records.

    Args:
      config: an ``ml_collections.ConfigDict`` (see :mod:`lth_jax.config`).
      workdir: where ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` go.
      overwrite: discard a previous run in ``workdir`` instead of resuming it.
      progress: show progress bars (default: ``config.progress``).

    Raises:
      ConfigError: a bad config value, or a workdir holding another config.
    """
    config_lib.validate(config)
    _prepare_workdir(workdir, config, overwrite)
    exp = Experiment(config, progress=progress)
    is_main = jax.process_index() == 0
    if is_main:
        tmp = os.path.join(workdir, CONFIG + ".tmp")
        with open(tmp, "w") as f:
            json.dump(config_to_json(config), f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(workdir, CONFIG))
    ck = ckpt_lib.RoundCheckpointer(
        os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.max_to_keep
    )
    latest = ck.restore_latest()
    if latest is None:
        done, state, records = -1, None, []
    else:
        done, state, meta = latest
        records = meta["records"]
        state = jax.tree.map(jnp.asarray, state)
    metrics_path = os.path.join(workdir, METRICS)
    if is_main:
        ckpt_lib.write_jsonl_atomic(metrics_path, records)
    last = config.imp.rounds
    for r in range(done + 1, last + 1):
        t0 = time.perf_counter()
        if r == 0:
            state, recs = exp.dense_round()
        else:
            state, recs = exp.prune_round(state, r)
        records = records + recs
        ck.save(r, state, {"round": r, "records": records})
        if is_main:
            ckpt_lib.write_jsonl_atomic(metrics_path, records)
            ckpt_lib.append_jsonl(
                os.path.join(workdir, TIMING),
                {"round": r, "wall_time_s": round(time.perf_counter() - t0, 3)},
            )
    ck.close()
    return records
