"""Iterative magnitude pruning with rewinding and controls: ``lth-jax run``.

Round 0 trains the dense network of every trial (the rewind point ``theta_k``
is saved at ``imp.rewind_step = k``). Each later round ``r``:

1. **prune** the ticket: ``mask_r = magnitude_prune(trained ticket of round
   r-1, mask_{r-1}, imp.prune_rate, imp.scope, imp.layer_rates)``. A
   one-shot run (``imp.one_shot_density = d``, one round) prunes once to the
   per-layer densities IMP would reach at overall density ``d``: each layer
   at ``(1 - rate_l)^L`` (``rate_l`` its ``imp.layer_rates`` rate, else
   ``imp.prune_rate``; in ``global`` scope the pool of the others as a whole)
   for the real ``L >= 0`` at which the prunable weights are at ``d``
   (:func:`lth_jax.pruning.one_shot_rates`); without ``imp.layer_rates`` every
   layer goes to ``d``;
2. **set up every arm** from that mask, each trial with its own keys: an arm
   is a function of :mod:`lth_jax.arms` (``ticket``: ``mask_r`` on the rewind
   source below; ``reinit``: ``mask_r`` on a fresh init, key purpose
   ``reinit`` of round ``r``; ``random_mask``: a random mask with ``mask_r``'s
   per-layer counts on the rewind source; ``gmp``: the rewind source, all
   alive, pruned while it trains to ``mask_r``'s per-layer counts, :mod:`lth_jax.gmp`;
   ``snip``/``grasp``/``synflow``: the rewind source pruned at once by the method's
   scores to ``mask_r``'s per-layer or overall counts (``pai.scope``), and their
   ``_shuffled``/``_reinit`` sanity checks, :mod:`lth_jax.saliency`);

   The rewind source depends on ``imp.rewind``: ``weights`` (default) uses
   ``theta_k`` (``k = 0`` is the initialization, Frankle & Carbin; ``k > 0`` is
   Frankle et al. 2020); ``lr`` (Renda et al. 2020) keeps the ticket's trained
   weights of round ``r-1`` and replays the learning-rate schedule from step
   ``k``; ``finetune`` keeps the trained weights and trains at one constant
   rate, ``imp.finetune_lr`` or, when that is unset, the schedule's rate at
   the last step (refused by the config check when below 1e-3 of
   ``optimizer.learning_rate``). With ``lr`` and ``finetune`` the controls
   mean: ``random_mask`` is random pruning of the trained network at the
   ticket's per-layer counts, then the same retraining: from the ticket's
   previous-round network, it keeps in each layer the ticket's count of
   weights drawn at random among that network's alive ones (the previous
   ticket mask), so it differs from the ticket only in which weights this
   round removes; ``reinit`` is refused (a fresh initialization trained for
   the retraining budget only controls nothing; run ``imp.rewind=weights``
   for it). Every arm of a round starts at step ``k``, trains to
   ``train.steps`` with a fresh optimizer state, and sees the same data
   order and dropout keys (key purposes ``data``/``dropout`` of that trial
   and round), so arms differ only in what the table says.
3. **train** all ``trials x arms`` runs as one compiled program (vmapped, split
   over the devices), and **record** one metrics line per run.

Every finished round is checkpointed (orbax, :mod:`lth_jax.checkpoint`) with
the masks, the initial, rewind and trained weights, and all records so far;
running the same command again resumes after the last finished round (and
says so) with the same ``metrics.jsonl`` as an uninterrupted run. Workdir files,
drift check, signals: :mod:`lth_jax.workdir`; live metrics: :mod:`lth_jax.events`.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import arms as arms_lib
from lth_jax import checkpoint as ckpt_lib
from lth_jax import (
    checks,
    config_checks,
    data,
    events,
    fused_adam,
    gmp,
    models,
    parallel,
    pruning,
    rng,
    timing,
)
from lth_jax import config as config_lib
from lth_jax import diverged as diverged_lib
from lth_jax import masks as masks_lib
from lth_jax import workdir as wd
from lth_jax.curves import curve_fields
from lth_jax.train import Engine

__all__ = ["run", "Experiment"]

#: What ``--overwrite`` deletes in a lottery workdir (lth-jax's own files only).
OWNED = (wd.METRICS, wd.CONFIG, wd.TIMING, "checkpoints", events.FOLDER, *wd.REPORT_FILES)


def _layer_rates(config):
    """``imp.layer_rates`` as a tuple of ``(regex, rate)`` pairs, or ``None``."""
    return tuple((str(p), r) for p, r in config.imp.layer_rates) or None


class Experiment:
    """Everything a lottery run needs, set up once: data, model, engine, keys.

    Args:
      config: a validated config (see :mod:`lth_jax.config`).
      progress: show progress bars (defaults to ``config.progress``).
    """

    def __init__(self, config, progress: bool | None = None):
        config_lib.validate(config)
        self.config = c = config
        try:
            self.dataset = data.get_dataset(
                c.dataset.name,
                data_dir=c.dataset.data_dir,
                val_size=c.dataset.val_size,
                train_size=c.dataset.train_size,
                classes=c.dataset.classes,
                seed=c.seed,
            )
        except ValueError as e:
            raise config_lib.ConfigError(f"dataset {c.dataset.name}: {e}") from None
        except data.DatasetUnavailableError as e:  # what is missing, then how to supply it
            raise checks.with_detail(e) from e  # the cause: the whole message, for tracebacks
        try:
            self.model = models.get(
                c.model.name, num_classes=self.dataset.num_classes, **config_lib.model_kwargs(c)
            )
        except (TypeError, ValueError) as e:
            raise config_lib.ConfigError(f"model.kwargs for {c.model.name}: {e}") from None
        n_train = int(self.dataset.train_x.shape[0])
        if c.train.batch_size > n_train:
            raise config_lib.ConfigError(
                f"train.batch_size must be <= the training set size ({n_train} examples of "
                f"{c.dataset.name}), got {c.train.batch_size}"
            )
        config_checks.check_pai_data(c, n_train)
        try:
            self.mesh = parallel.make_mesh(c.num_devices)
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from None
        try:  # the model is built on the data and one chunk of training is traced
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
                gmp_slots=gmp.slots(c),
            )
            self.engine.check()
        except (fused_adam.Unusable, fused_adam.KernelBuildError) as e:  # the kernel's, as is
            raise config_lib.ConfigError(str(e), getattr(e, "detail", "")) from None
        except Exception as e:  # noqa: BLE001 - a failure to trace: the model does not fit
            what = f"{c.dataset.name} (inputs {self.dataset.train_x.shape[1:]})"
            what += " with dataset.augment" if c.dataset.augment else ""
            raise config_lib.ConfigError(
                f"model {c.model.name} (model.kwargs {config_lib.model_kwargs(c)}) does not fit "
                f"{what}: {checks.first_line(e, 200)}"
            ) from None
        layer_rates = _layer_rates(c)
        try:
            pruning.resolve_layer_rates(self.engine.param_shapes(), c.imp.prune_rate, layer_rates)
        except ValueError as e:
            raise config_lib.ConfigError(f"imp.layer_rates: {e}") from None
        self.trials = np.arange(c.num_trials)
        rate = c.imp.prune_rate
        if c.imp.one_shot_density is not None:  # IMP's per-layer densities, at once
            try:
                shot = pruning.one_shot_rates(
                    self.engine.param_shapes(), float(c.imp.one_shot_density), rate, layer_rates
                )
            except ValueError as e:
                raise config_lib.ConfigError(f"imp.one_shot_density: {e}") from None
            rate, layer_rates = shot.rate, shot.layer_rates
        scope = c.imp.scope
        self._prune = jax.jit(
            jax.vmap(lambda p, m: pruning.magnitude_prune(p, m, rate, scope, layer_rates))
        )

    # ------------------------------------------------------------------ keys
    def keys(self, round_: int, purpose: str):
        """The ``(trials, 2)`` keys of ``round_`` for ``purpose`` (:func:`lth_jax.rng.derive`)."""
        s = self.config.seed
        return np.stack([np.asarray(rng.derive(s, int(t), round_, purpose)) for t in self.trials])

    # ------------------------------------------------------------------ rounds
    def _fit(self, params, batch_stats, mask, round_, start, **kw):
        """:meth:`Engine.fit` of arm-major runs with this round's data and dropout keys."""
        n_arms = jax.tree.leaves(params)[0].shape[0] // len(self.trials)
        rep = lambda k: np.tile(k, (n_arms, 1))
        return self.engine.fit(
            params,
            batch_stats,
            mask,
            rep(self.keys(round_, "data")),
            rep(self.keys(round_, "dropout")),
            start,
            desc=f"round {round_}",
            groups=n_arms,  # each arm a group: every round's batch has round 0's shape
            **kw,
        )

    def dense_round(self, *, resume=None, on_chunk=None):
        """Round 0: train every trial's dense network; returns ``(state, records)``.

        ``resume`` and ``on_chunk``: mid-round checkpoints (see :meth:`Engine.fit`).
        """
        params0, bs0 = self.engine.init(self.keys(0, "init"))
        mask = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params0)  # all alive
        out = self._fit(
            params0,
            bs0,
            mask,
            0,
            0,
            snapshot_step=self.config.imp.rewind_step,
            resume=resume,
            on_chunk=on_chunk,
        )
        state = {
            "init": {"params": params0, "batch_stats": bs0},
            "rewind": {"params": out.snapshot[0], "batch_stats": out.snapshot[1]},
            "ticket": {"mask": mask, "params": out.params, "batch_stats": out.batch_stats},
        }
        if "one_shot" in self.config.arms:  # one-shot pruning ranks the trained dense weights
            state["dense"] = {"params": out.params, "batch_stats": out.batch_stats}
        return state, self._records(0, ["dense"], mask, out, start=0)

    def round_inputs(self, prev, round_: int):
        """The starting point of every run of round ``round_ >= 1``.

        Returns ``(arms, params, batch_stats, masks, start_step, fixed_lr_step)``
        with params/masks stacked arm-major (``arms[i]`` owns runs ``i*T`` to
        ``(i+1)*T - 1`` for ``T`` trials), each arm's from its function in
        :mod:`lth_jax.arms` (``gmp``'s mask is its final one: :func:`lth_jax.gmp.plan`).
        Params are not yet masked: the engine masks them. ``fixed_lr_step`` is ``None`` (follow the
        schedule) except with ``imp.rewind=finetune``: ``FixedLR(imp.finetune_lr)``,
        or the last step ``train.steps - 1`` (its scheduled rate) when that is unset.
        """
        from lth_jax.optim import FixedLR

        c = self.config
        ticket = (prev["ticket"]["params"], prev["ticket"]["mask"])  # pruned on every device:
        ticket_mask = self._prune(*parallel.shard_even(ticket, self.engine.mesh))  # random_mask too
        src = prev["rewind"] if c.imp.rewind == "weights" else prev["ticket"]
        inputs = arms_lib.ArmInputs(
            source=lambda: (src["params"], src.get("batch_stats", {})),
            mask=ticket_mask,
            fresh=lambda: self.engine.init(self.keys(round_, "reinit")),
            key=lambda purpose: self.keys(round_, purpose),
            prev=prev,
            dense=(lambda: (prev["dense"]["params"], prev["dense"].get("batch_stats", {})))
            if "dense" in prev
            else None,
            rewind=c.imp.rewind,
            pai=arms_lib.PaI(self.engine, c.pai),  # snip, grasp, synflow: each scored once
        )
        per_arm = {arm: arms_lib.get(arm)(inputs) for arm in c.arms}
        arms = list(per_arm)
        stacked = [parallel.concat_runs([per_arm[a][i] for a in arms]) for i in range(3)]
        fixed = None
        if c.imp.rewind == "finetune":
            ft = c.imp.finetune_lr
            fixed = c.train.steps - 1 if ft is None else FixedLR(float(ft))
        return (arms, *stacked, c.imp.rewind_step, fixed)

    def prune_round(self, prev, round_: int, *, resume=None, on_chunk=None):
        """Round ``round_ >= 1`` from the previous round's state.

        ``resume`` and ``on_chunk``: mid-round checkpoints (see :meth:`Engine.fit`).
        """
        t = len(self.trials)
        arms, params, bs, mask, k, fixed = self.round_inputs(prev, round_)
        mask, sched = gmp.plan(self.config, arms, mask, t)  # gmp: all alive, pruned in training
        kw = {"fixed_lr_step": fixed, "resume": resume, "on_chunk": on_chunk, "gmp": sched}
        out = self._fit(params, bs, mask, round_, k, **kw)
        mask = out.mask  # the final masks (the given ones; gmp's pruned one)
        part = lambda tree, j: parallel.take_runs(tree, j * t, (j + 1) * t)
        i = arms.index("ticket")
        tp, tb = out.params, out.batch_stats
        state = {
            **({"dense": prev["dense"]} if "dense" in prev else {}),
            "init": prev["init"],
            "rewind": prev["rewind"],
            "ticket": {"mask": part(mask, i), "params": part(tp, i), "batch_stats": part(tb, i)},
            "arms": {
                a: {"mask": part(mask, j), "params": part(tp, j)}
                for j, a in enumerate(arms)
                if a != "ticket"
            },
        }
        return state, self._records(round_, arms, mask, out, start=k)

    def _records(self, round_, arms, mask, out, start):
        density, layer_density = masks_lib.run_densities(parallel.to_host(mask))
        fail = out.fail_step
        records = []
        t = len(self.trials)
        for j in range(len(arms) * t):
            arm, trial = arms[j // t], int(self.trials[j % t])
            failed = int(fail[j]) >= 0
            if failed:
                print(
                    f"warning: arm {arm}, trial {trial}, round {round_}: non-finite training "
                    f"loss at step {int(fail[j])}; this run stopped there",
                    file=sys.stderr,
                )
            records.append(
                {
                    "round": round_,
                    "arm": arm,
                    "trial": trial,
                    "status": "nan" if failed else "ok",
                    "fail_step": int(fail[j]) if failed else None,
                    "density": density[j],
                    "layer_density": layer_density[j],
                    "start_step": int(start),
                    "train_steps": int(self.config.train.steps - start),
                    **curve_fields(out.curves, j, self.config.train.early_stop_metric),
                }
            )
        return records


# ----------------------------------------------------------------------------- the runner


def run(
    config,
    workdir: str,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    announce: bool = True,
) -> list[dict]:
    """Runs (or resumes) a lottery experiment in ``workdir``; returns all records.

    Every config value is checked before any work starts (then the data, the
    model and the workdir); a workdir holding a run of another config is
    refused unless ``overwrite``. A run resumes from its newest readable
    checkpoint (round or mid-round) and produces the same ``metrics.jsonl`` as
    an uninterrupted run. SIGINT and SIGTERM (in the main thread) save a
    checkpoint at the end of the current chunk and raise
    :class:`lth_jax.workdir.Interrupted`.

    Args:
      config: an ``ml_collections.ConfigDict`` (see :mod:`lth_jax.config`).
      workdir: where ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` go.
      overwrite: discard a previous run in ``workdir`` instead of resuming it.
      progress: show progress bars (default: ``config.progress``).
      announce: say on stderr where a rerun resumes, or that every round is
        done (off for the IMP runs inside instability and transfer runs).

    Raises:
      ConfigError: (a ``ValueError``) a bad config value, an unusable workdir,
        or a workdir holding another config; for a dataset that is not available,
        the error's line says what is missing, its ``detail`` (and its cause, a
        :class:`~lth_jax.data.DatasetUnavailableError`) how to supply it.
      Interrupted: (a ``KeyboardInterrupt``) stopped by a signal; resumable.
    """
    started = timing.run_started()  # startup_s of timing.jsonl counts from here
    config_lib.validate(config)
    wd.check_path(workdir)
    wd.check_contents(workdir, OWNED)
    is_main = parallel.is_main()
    with wd.lock(workdir, is_main):
        if not overwrite:
            config_lib.check_drift(workdir, config)
        exp = Experiment(config, progress=progress)  # the data, the model, one traced chunk
        wd.prepare(workdir, overwrite, OWNED, is_main)  # nothing is deleted before this
        parallel.barrier("lth_jax workdir ready")
        if is_main:
            wd.write_json_atomic(os.path.join(workdir, wd.CONFIG), wd.config_to_json(config))
        with wd.SignalGuard(enabled=jax.process_count() == 1) as guard:
            try:
                return _run_rounds(exp, workdir, guard, started, announce)
            except Exception as e:
                if wd.is_disk_full(e) and not isinstance(e, wd.RunFailed):
                    raise wd.disk_full(f"a checkpoint in {workdir}") from None
                raise


def _run_rounds(
    exp: Experiment, workdir: str, guard: wd.SignalGuard, started, announce: bool
) -> list[dict]:
    config = exp.config
    is_main = parallel.is_main()
    metrics_path = os.path.join(workdir, wd.METRICS)
    live = events.Live(workdir, config, exp.engine.progress, is_main)  # never feeds back
    ck = ckpt_lib.RoundCheckpointer(
        os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.max_to_keep
    )
    try:
        latest = ck.restore_latest()
        if latest is None:
            done, state, records = -1, None, []
        else:
            done, state, meta = latest
            records = meta["records"]
            state = jax.tree.map(jnp.asarray, state)
        before = wd.sync_metrics(metrics_path, records) if is_main else []
        if latest is None and before:
            wd.note(
                f"warning: {wd.METRICS} holds {len(before)} records but no checkpoint can be "
                "read; recomputing every round (the results will be the same)",
                is_main,
            )
        partial = ck.restore_partial(done + 1)
        last = config.imp.rounds
        wd.note_resume(done, last, partial is not None, is_main and announce)
        for r in range(done + 1, last + 1):
            timer = timing.RoundTimer(started if r == done + 1 else None).start()
            resume = partial if r == done + 1 else None
            if resume is not None:
                wd.note(
                    f"resuming round {r} at step {resume[0]} from a mid-round checkpoint", is_main
                )
            start = 0 if r == 0 else config.imp.rewind_step
            saver = wd.ChunkSaver(
                ck,
                r,
                config.checkpoint.every_steps,
                config.train.steps,
                guard,
                resume[0] if resume else start,
            )
            saver = live.round(r, saver, ["dense"] if r == 0 else config.arms, lambda: exp.trials)
            if r == 0:
                state, recs = exp.dense_round(resume=resume, on_chunk=saver)
            else:
                state = diverged_lib.drop_diverged(exp, state, records)
                state, recs = exp.prune_round(state, r, resume=resume, on_chunk=saver)
                recs = diverged_lib.with_skipped(exp, r, recs, records)
            old = [x for x in before if x.get("round") == r]
            if old and json.dumps(old, sort_keys=True) != json.dumps(recs, sort_keys=True):
                wd.note(
                    f"warning: round {r} was redone and its results differ from the earlier ones",
                    is_main,
                )
            records = records + recs
            with timing.section("checkpoint"):
                ck.save(r, state, {"round": r, "records": records})
                ck.clear_partials()
            if is_main:
                wd.write_metrics(metrics_path, records, before)
                wd.append_jsonl(os.path.join(workdir, wd.TIMING), timer.record(r))
            if r == 0:
                diverged_lib.diverged(records)  # raises when every trial diverged: nothing to prune
            if guard.signum is not None and r < last:
                raise wd.Interrupted(guard.signum, f"after round {r}")
        failed = [x for x in records if x.get("status") == "nan"]
        if failed:
            wd.note(
                f"warning: {len(failed)} of {len(records)} runs stopped at a non-finite loss "
                "(status 'nan' in metrics.jsonl)",
                is_main,
            )
    finally:
        timing.close()
        live.close()
        ck.close()
    return records
