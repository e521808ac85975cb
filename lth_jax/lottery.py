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
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import checkpoint as ckpt_lib
from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import parallel, pruning, rng
from lth_jax.train import Engine, curve_fields

__all__ = ["run", "Experiment", "Interrupted", "config_to_json", "check_config_drift"]

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

    Keys in ``HARMLESS_KEYS`` may differ. A key that one side lacks (a key
    added to :func:`~lth_jax.config.base_config` after the workdir was made)
    counts as different only when the other side's value is not its default.
    ``imp.rounds`` may grow (the run is extended: finished rounds do not depend
    on how many follow; one-shot runs have one round) except in a transfer
    run; it may not shrink.

    Raises:
      ConfigError: naming the differing keys, with both values.
    """
    path = os.path.join(workdir, CONFIG)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise config_lib.ConfigError(
            f"workdir {workdir}: {CONFIG} cannot be read ({e}); fix or remove it, "
            "or use --overwrite to discard the run"
        ) from None
    old = _flatten(saved)
    new = _flatten(config_to_json(config))
    base = _flatten(config_to_json(config_lib.base_config()))
    harmless = config_lib.HARMLESS_KEYS
    missing = object()

    def differs(k):
        a, b = old.get(k, missing), new.get(k, missing)
        if a is missing or b is missing:
            present = b if a is missing else a
            return k not in base or present != base[k]
        return a != b

    def extends(k):
        if k != "imp.rounds" or "imp.rounds" not in old or "imp.rounds" not in new:
            return False
        kinds = (old.get("kind", "lottery"), new.get("kind", "lottery"))
        return kinds[0] == kinds[1] != "transfer" and int(new[k]) > int(old[k])

    diff = sorted(
        k
        for k in set(old) | set(new)
        if not any(k == h or k.startswith(h + ".") for h in harmless)
        and differs(k)
        and not extends(k)
    )
    if diff:
        show = lambda d, k: repr(d[k]) if k in d else "<missing>"
        shown = ", ".join(f"{k} ({show(old, k)} -> {show(new, k)})" for k in diff[:5])
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
        except data.DatasetUnavailableError as e:
            raise config_lib.ConfigError(str(e)) from None
        try:
            self.model = models.get(
                c.model.name, num_classes=self.dataset.num_classes, **c.model.kwargs.to_dict()
            )
        except (TypeError, ValueError) as e:
            raise config_lib.ConfigError(f"model.kwargs for {c.model.name}: {e}") from None
        n_train = int(self.dataset.train_x.shape[0])
        if c.train.batch_size > n_train:
            raise config_lib.ConfigError(
                f"train.batch_size must be <= the training set size ({n_train} examples of "
                f"{c.dataset.name}), got {c.train.batch_size}"
            )
        try:
            self.mesh = parallel.make_mesh(c.num_devices)
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from None
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
        self._alive = jax.jit(jax.vmap(masks_lib.layer_alive))

    # ------------------------------------------------------------------ keys
    def keys(self, round_: int, purpose: str):
        s = self.config.seed
        return jnp.stack([rng.derive(s, int(t), round_, purpose) for t in self.trials])

    # ------------------------------------------------------------------ rounds
    def _train(
        self,
        params,
        batch_stats,
        mask,
        round_,
        start,
        snapshot=None,
        fixed=None,
        *,
        resume=None,
        on_chunk=None,
    ):
        """Trains runs (leading axis = arm-major runs) and returns host results.

        ``resume`` is a mid-round checkpoint ``(step, state, meta)`` to continue
        from; ``on_chunk(step, get_state)`` is called after every chunk, where
        ``get_state()`` (call it before returning) gives ``(state, meta)`` to save.
        """
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
        runs, progress, hook = self._mid_round(runs, inputs, n, round_, resume, on_chunk)
        runs, curves, snap = self.engine.train(
            runs,
            start,
            snapshot_step=snapshot,
            fixed_lr_step=fixed,
            desc=f"round {round_}",
            on_chunk=hook,
            resume=progress,
        )
        # Results leave the devices here (gathered from every process when multi-host).
        cut = lambda t: (
            None if t is None else jax.tree.map(jnp.asarray, _take(parallel.to_host(t), 0, n))
        )
        curves = curves._replace(
            **{f: getattr(curves, f)[:n] for f in curves._fields if f != "steps"}
        )
        return (
            cut(runs.params),
            cut(runs.batch_stats),
            parallel.to_host(runs.fail_step)[:n],
            curves,
            cut(snap),
        )

    def _mid_round(self, runs, inputs, n, round_, resume, on_chunk):
        """The runs, ``resume`` argument and ``on_chunk`` hook for :meth:`Engine.train`."""
        progress = None
        if resume is not None:
            step, state, meta = resume
            try:
                restored, outs, snap = _resume_from(
                    state, meta, runs, (inputs[0], inputs[1]), n, self.engine.num_shards()
                )
                runs, progress = self.engine.shard(restored), (step, outs, snap)
            except (ValueError, KeyError, IndexError) as e:
                print(
                    f"warning: the mid-round checkpoint of round {round_} does not fit this run "
                    f"({e}); starting the round from its beginning",
                    file=sys.stderr,
                )
        hook = None
        if on_chunk is not None:

            def hook(step, runs, outs, snapshot):
                on_chunk(step, lambda: _partial_state(runs, outs, snapshot, n))

        return runs, progress, hook

    def dense_round(self, *, resume=None, on_chunk=None):
        """Round 0: train every trial's dense network; returns ``(state, records)``.

        ``resume`` and ``on_chunk``: mid-round checkpoints (see :meth:`_train`).
        """
        c = self.config
        params0, bs0 = self.engine.init(self.keys(0, "init"))
        mask = jax.vmap(masks_lib.ones_like)(params0)
        k = c.imp.rewind_step
        params, bs, fail, curves, snap = self._train(
            params0, bs0, mask, 0, 0, snapshot=k, resume=resume, on_chunk=on_chunk
        )
        state = {
            "init": {"params": params0, "batch_stats": bs0},
            "rewind": {"params": snap[0], "batch_stats": snap[1]},
            "ticket": {"mask": mask, "params": params, "batch_stats": bs},
        }
        records = self._records(0, ["dense"], mask, fail, curves, start=0)
        return state, records

    def round_inputs(self, prev, round_: int):
        """The starting point of every run of round ``round_ >= 1``.

        Returns ``(arms, params, batch_stats, masks, start_step, fixed_lr_step)``
        with params/masks stacked arm-major (``arms[i]`` owns runs ``i*T`` to
        ``(i+1)*T - 1`` for ``T`` trials). Params are not yet masked: the engine
        applies the mask when it creates the runs.
        """
        c = self.config
        ticket_mask = self._prune(prev["ticket"]["params"], prev["ticket"]["mask"])
        mode, k = c.imp.rewind, c.imp.rewind_step
        if mode == "weights":
            src = prev["rewind"]
        else:
            src = prev["ticket"]
        src_bs = src.get("batch_stats", {})
        fixed = c.train.steps - 1 if mode == "finetune" else None
        per_arm = {}
        for arm in c.arms:
            if arm == "ticket":
                per_arm[arm] = (src["params"], src_bs, ticket_mask)
            elif arm == "reinit":
                p, b = self.engine.init(self.keys(round_, "reinit"))
                per_arm[arm] = (p, b, ticket_mask)
            elif arm == "random_mask":
                m = self._random_mask(self.keys(round_, "random_mask"), ticket_mask)
                per_arm[arm] = (src["params"], src_bs, m)
        arms = list(per_arm)
        stacked = [_stack([per_arm[a][i] for a in arms]) for i in range(3)]
        return (arms, *stacked, k, fixed)

    def prune_round(self, prev, round_: int, *, resume=None, on_chunk=None):
        """Round ``round_ >= 1`` from the previous round's state.

        ``resume`` and ``on_chunk``: mid-round checkpoints (see :meth:`_train`).
        """
        t = len(self.trials)
        arms, params, bs, mask, k, fixed = self.round_inputs(prev, round_)
        tp, tb, fail, curves, _ = self._train(
            params, bs, mask, round_, k, fixed=fixed, resume=resume, on_chunk=on_chunk
        )
        part = lambda tree, j: _take(tree, j * t, (j + 1) * t)
        i = arms.index("ticket")
        state = {
            "init": prev["init"],
            "rewind": prev["rewind"],
            "ticket": {"mask": part(mask, i), "params": part(tp, i), "batch_stats": part(tb, i)},
            "arms": {
                a: {"mask": part(mask, j), "params": part(tp, j)}
                for j, a in enumerate(arms)
                if a != "ticket"
            },
        }
        return state, self._records(round_, arms, mask, fail, curves, start=k)

    def _records(self, round_, arms, mask, fail, curves, start):
        # Densities from exact integer counts (float32 division would misstate 1.0).
        alive = parallel.to_host(self._alive(mask))
        sizes = {p: int(np.prod(np.shape(m)[1:])) for p, m in masks_lib.named_leaves(mask)}
        total = sum(sizes[p] for p in alive)
        out = []
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
            out.append(
                {
                    "round": round_,
                    "arm": arm,
                    "trial": trial,
                    "status": "nan" if failed else "ok",
                    "fail_step": int(fail[j]) if failed else None,
                    "density": sum(int(v[j]) for v in alive.values()) / total,
                    "layer_density": {p: int(v[j]) / sizes[p] for p, v in alive.items()},
                    "start_step": int(start),
                    "train_steps": int(self.config.train.steps - start),
                    **curve_fields(curves, j),
                }
            )
        return out


# ----------------------------------------------------------------------------- mid-round state


def _numbered(leaves) -> dict:
    return {f"{i:05d}": np.asarray(a) for i, a in enumerate(leaves)}


def _unnumbered(d) -> list:
    return [d[k] for k in sorted(d, key=int)] if d else []


def _partial_state(runs, outs, snapshot, n: int) -> tuple[dict, dict]:
    """Host copy of a round in progress (cut to the ``n`` real runs) and its metadata."""
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


def _resume_from(state, meta, runs, snapshot_like, n: int, shards: int):
    """``(runs, (step, outs, snapshot))`` for :meth:`Engine.train` from a mid-round state.

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


class Interrupted(KeyboardInterrupt):
    """``run`` stopped on SIGINT or SIGTERM after saving a checkpoint.

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


class _SignalGuard:
    """Turns the first SIGINT/SIGTERM into a flag checked at safe points.

    A second signal stops at once (raising :class:`Interrupted`); the last
    checkpoint written stays valid. Only in the main thread of a single process.
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
                    pass
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


class _ChunkSaver:
    """The ``on_chunk`` hook of one round: mid-round checkpoints, stop on a signal."""

    def __init__(self, ck, round_: int, config, guard: _SignalGuard, start: int):
        self.ck, self.round, self.guard = ck, round_, guard
        self.every = int(config.checkpoint.every_steps)
        self.steps = int(config.train.steps)
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


# ----------------------------------------------------------------------------- the runner


def _check_workdir(workdir: str) -> None:
    """Refuses a workdir that cannot be created or written, before any work."""
    if not isinstance(workdir, (str, os.PathLike)) or not str(workdir):
        raise config_lib.ConfigError(f"workdir must be a directory path, got {workdir!r}")
    path = os.path.abspath(workdir)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise config_lib.ConfigError(f"workdir {workdir} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise config_lib.ConfigError(f"workdir {workdir} is not writable")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise config_lib.ConfigError(
            f"workdir {workdir} cannot be created: {parent} is not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise config_lib.ConfigError(
            f"workdir {workdir} cannot be created: {parent} is not writable"
        )


def _prepare_workdir(workdir: str, overwrite: bool) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise config_lib.ConfigError(f"workdir {workdir} cannot be created: {e.strerror}") from None
    if jax.process_index() == 0:
        if overwrite:
            import shutil

            for name in (METRICS, CONFIG, TIMING, "checkpoints", "report.md", "report.png"):
                p = os.path.join(workdir, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
        ckpt_lib.remove_stale_tmp_files(workdir)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("lth_jax workdir ready")


def _note(msg: str) -> None:
    if jax.process_index() == 0:
        print(f"lth-jax: {msg}", file=sys.stderr, flush=True)


def run(
    config, workdir: str, *, overwrite: bool = False, progress: bool | None = None
) -> list[dict]:
    """Runs (or resumes) a lottery experiment in ``workdir``; returns all records.

    Every config value is checked before any work starts (then the data, the
    model and the workdir); a workdir holding a run of another config is
    refused unless ``overwrite``. A run resumes from its newest readable
    checkpoint (round or mid-round) and produces the same ``metrics.jsonl`` as
    an uninterrupted run. SIGINT and SIGTERM (in the main thread) save a
    checkpoint at the end of the current chunk and raise :class:`Interrupted`.

    Args:
      config: an ``ml_collections.ConfigDict`` (see :mod:`lth_jax.config`).
      workdir: where ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` go.
      overwrite: discard a previous run in ``workdir`` instead of resuming it.
      progress: show progress bars (default: ``config.progress``).

    Raises:
      ConfigError: (a ``ValueError``) a bad config value, an unusable workdir,
        or a workdir holding another config.
      Interrupted: (a ``KeyboardInterrupt``) stopped by a signal; resumable.
    """
    config_lib.validate(config)
    if config.kind == "transfer":
        raise config_lib.ConfigError(
            "kind 'transfer' runs through lth_jax.transfer.run (or lth-jax run), not lottery.run"
        )
    _check_workdir(workdir)
    if not overwrite:
        check_config_drift(workdir, config)
    exp = Experiment(config, progress=progress)  # checks that need the data and the model
    _prepare_workdir(workdir, overwrite)
    if jax.process_index() == 0:
        ckpt_lib.write_json_atomic(os.path.join(workdir, CONFIG), config_to_json(config))
    with _SignalGuard(enabled=jax.process_count() == 1) as guard:
        return _run_rounds(exp, workdir, guard)


def _sync_metrics(path: str, records: list[dict]) -> list[dict]:
    """Makes ``metrics.jsonl`` hold ``records``; returns what it held before.

    Lines of rounds beyond ``records`` (a round whose checkpoint was unreadable
    and is being redone) are kept until that round is written again.
    """
    try:
        existing = ckpt_lib.read_jsonl(path)
    except ValueError:
        existing = []
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    n = len(records)
    if len(existing) > n and same(existing[:n], records):
        return existing
    if not same(existing, records):
        ckpt_lib.write_jsonl_atomic(path, records)
    return existing


def _run_rounds(exp: Experiment, workdir: str, guard: _SignalGuard) -> list[dict]:
    config = exp.config
    is_main = jax.process_index() == 0
    metrics_path = os.path.join(workdir, METRICS)
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
        before = _sync_metrics(metrics_path, records) if is_main else []
        if latest is None and before:
            _note(
                f"warning: {METRICS} holds {len(before)} records but no checkpoint can be read; "
                "recomputing every round (the results will be the same)"
            )
        partial = ck.restore_partial(done + 1)
        last = config.imp.rounds
        for r in range(done + 1, last + 1):
            t0 = time.perf_counter()
            resume = partial if r == done + 1 else None
            if resume is not None:
                _note(f"resuming round {r} at step {resume[0]} from a mid-round checkpoint")
            start = 0 if r == 0 else config.imp.rewind_step
            saver = _ChunkSaver(ck, r, config, guard, resume[0] if resume else start)
            if r == 0:
                state, recs = exp.dense_round(resume=resume, on_chunk=saver)
            else:
                state, recs = exp.prune_round(state, r, resume=resume, on_chunk=saver)
            old = [x for x in before if x.get("round") == r]
            if old and json.dumps(old, sort_keys=True) != json.dumps(recs, sort_keys=True):
                _note(f"warning: round {r} was redone and its results differ from the earlier ones")
            records = records + recs
            ck.save(r, state, {"round": r, "records": records})
            ck.clear_partials()
            if is_main:
                ckpt_lib.write_jsonl_atomic(metrics_path, records)
                ckpt_lib.append_jsonl(
                    os.path.join(workdir, TIMING),
                    {"round": r, "wall_time_s": round(time.perf_counter() - t0, 3)},
                )
            if guard.signum is not None and r < last:
                raise Interrupted(guard.signum, f"after round {r}")
        failed = [x for x in records if x.get("status", "ok") != "ok"]
        if failed:
            _note(
                f"warning: {len(failed)} of {len(records)} runs stopped at a non-finite loss "
                "(status 'nan' in metrics.jsonl)"
            )
    finally:
        ck.close()
    return records
