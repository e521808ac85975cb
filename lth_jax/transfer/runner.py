"""The ``transfer`` runner: pretrain (or load) the source, fine-tune every arm on the target.

What it does, the arms, the head rule, the keys and the workdir layout are
described in :mod:`lth_jax.transfer`. The starting point of every arm except
``ticket_target`` comes from its function in :mod:`lth_jax.arms`, fed with
transfer's inputs (the source weights loaded into the target model, the
transferred mask, the target init); training is :meth:`lth_jax.train.Engine.fit`.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
import optax

from lth_jax import arms as arms_lib
from lth_jax import checks, data, events, lottery, models, parallel, rng
from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import workdir as wd
from lth_jax.curves import curve_fields
from lth_jax.optim import optimizer_chain
from lth_jax.regularizers_sp import add_l2_sp
from lth_jax.report import transfer as transfer_report
from lth_jax.train import Engine
from lth_jax.transfer.config import (
    BASES,
    TICKET_ARMS,
    data_train_size,
    parse_arm,
    target_lottery_config,
    transfer_config,
    validate,
)
from lth_jax.transfer.source import SOURCE_DIR, Source, load_source, pretrained_source
from lth_jax.transfer.surgery import (
    head_is_new,
    load_params,
    param_order,
    trainable_tree,
    transfer_mask,
)

__all__ = ["check_drift", "make_finetune_optimizer", "run"]

TARGET_IMP_DIR = "target_imp"
#: What ``--overwrite`` deletes in a transfer workdir (lth-jax's own files only).
OWNED = (wd.METRICS, wd.CONFIG, *wd.REPORT_FILES, SOURCE_DIR, TARGET_IMP_DIR, events.FOLDER)
#: What holds results (a workdir with any of them but no config.json is refused).
RESULTS = (wd.METRICS, SOURCE_DIR, TARGET_IMP_DIR)


# ----------------------------------------------------------------------------- optimizer


def make_finetune_optimizer(
    opt, trainable=None, l2_sp: float = 0.0, sp_mask=None
) -> optax.GradientTransformation:
    """The fine-tuning optimizer: the ``optimizer`` block's chain plus freezing and L2-SP.

    ::

        keep_pruned(inject_hyperparams(chain(
            add_l2_sp(l2_sp, mask=sp_mask),              # only when l2_sp > 0
            multi_transform({"train": <make_optimizer's chain>,
                             "freeze": set_to_zero()}, labels),
        )))

    ``labels`` come from ``trainable`` (a pytree of bools, :func:`trainable_tree`;
    ``None``: everything trains and there is no ``multi_transform``). Frozen
    leaves get an exact zero update, whatever the chain holds (weight decay,
    L1, ...). The state has the structure :class:`~lth_jax.train.Engine`
    expects (``keep_pruned`` outside, the learning rate injected), so the
    engine sets the mask and the scheduled learning rate as usual.
    """

    def factory(learning_rate):
        inner = optimizer_chain(opt, learning_rate)
        if trainable is not None:
            labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
            inner = optax.multi_transform({"train": inner, "freeze": optax.set_to_zero()}, labels)
        if l2_sp:
            inner = optax.chain(add_l2_sp(float(l2_sp), mask=sp_mask), inner)
        return inner

    return masks_lib.keep_pruned(
        optax.inject_hyperparams(factory)(learning_rate=float(opt.learning_rate))
    )


# ----------------------------------------------------------------------------- fine-tuning


def _target_dataset(config, size, trial: int):
    """Trial ``trial``'s subset of the target data at ``size`` (see the module docstring)."""
    t = config.target
    try:
        return data.get_dataset(
            t.name,
            data_dir=t.data_dir,
            val_size=t.val_size,
            train_size=data_train_size(size),
            classes=t.classes,
            seed=int(config.seed) + trial,
        )
    except ValueError as e:
        raise config_lib.ConfigError(f"target: {checks.first_line(e)}") from None
    except data.DatasetUnavailableError as e:  # what is missing, then how to supply it
        raise checks.with_detail(e, "target: ") from e


def _check_target(config) -> None:
    """Loads the target data and traces one fine-tuning chunk on it, before anything is written.

    Raises:
      ConfigError: the target data cannot be had, or the model does not fit it.
    """
    f = config.finetune
    ds = _target_dataset(config, config.target.train_sizes[0], 0)
    try:
        Engine(
            model=models.get(
                config.model.name, num_classes=ds.num_classes, **config_lib.model_kwargs(config)
            ),
            dataset=ds,
            optimizer=f.optimizer,
            steps=int(f.steps),
            batch_size=min(int(f.batch_size), int(ds.train_x.shape[0])),
            eval_every=int(f.eval_every),
            augment=bool(config.target.augment),
            progress=False,
        ).check()
    except Exception as e:  # noqa: BLE001 - a failure to trace: the model does not fit
        raise config_lib.ConfigError(
            f"model {config.model.name} does not fit the target {config.target.name} "
            f"(inputs {ds.train_x.shape[1:]}): {checks.first_line(e, 200)}"
        ) from None


class _SizeRunner:
    """Fine-tunes every arm of one target size, trial by trial (``live``: :mod:`lth_jax.events`).

    ``guard``: the run's :class:`lth_jax.workdir.SignalGuard`; after a signal, the
    next chunk's end stops the run (an unfinished size is redone from its start).
    """

    def __init__(
        self, config, source: Source, size_index: int, size, workdir, progress, live, guard=None
    ):
        self.config = c = config
        self.workdir = workdir
        self.live = live
        self.guard = guard
        self.src = source
        self.i = size_index
        self.size = size
        self.progress = progress
        f = c.finetune
        self.trials = list(range(int(c.num_trials)))
        self.datasets = [_target_dataset(c, size, trial) for trial in self.trials]
        ds0 = self.datasets[0]
        self.n_train = int(ds0.train_x.shape[0])
        self.num_classes = int(ds0.num_classes)
        self.batch_size = min(int(f.batch_size), self.n_train)
        self.head_new = head_is_new(source.num_classes, self.num_classes, bool(f.reuse_head))
        self.dont_load = (r"^head/",) if self.head_new else ()
        self.mesh = parallel.make_mesh(c.num_devices)
        base_kw = config_lib.model_kwargs(c)
        self.kwargs = {  # fine-tuning with dropout or without (both rates 0)
            d: {
                **base_kw,
                "dropout": float(f.dropout) if d else 0.0,
                "input_dropout": float(f.input_dropout) if d else 0.0,
            }
            for d in (False, True)
        }
        try:
            self.models = {
                d: models.get(c.model.name, num_classes=self.num_classes, **kw)
                for d, kw in self.kwargs.items()
            }
        except (TypeError, ValueError) as e:
            raise config_lib.ConfigError(f"model for fine-tuning: {e}") from None
        sample = np.asarray(ds0.train_x[:1])
        self.order = param_order(self.models[False], sample)
        self.shapes = jax.eval_shape(
            lambda k: self.models[False].init({"params": k}, sample, train=False)["params"],
            jax.random.PRNGKey(0),
        )
        self.engines: dict[tuple, Engine] = {}

    # -- keys
    def key(self, trial: int, purpose: str):
        return rng.derive(int(self.config.seed), trial, self.i, purpose)[None]

    # -- engines: one per (dropout, l2sp, frozen) group, moved from trial to trial
    def engine(self, group, trial: int) -> Engine:
        dropout, l2sp, frozen = group
        base = self.engines.get(group)
        if base is None:
            f = self.config.finetune
            trainable = None
            if frozen:
                trainable = trainable_tree(self.shapes, self.order, f.trainable, f.freeze_layers)
            dont = [re.compile(p) for p in self.dont_load]
            sp_mask = lambda path, leaf: (
                path.split("/")[-1] == "kernel"
                and np.ndim(leaf) >= 2
                and not any(r.search(path) for r in dont)
            )
            tx = make_finetune_optimizer(
                f.optimizer, trainable, float(f.l2_sp) if l2sp else 0.0, sp_mask
            )
            base = Engine(
                model=self.models[dropout],
                dataset=self.datasets[0],
                optimizer=f.optimizer,
                steps=int(f.steps),
                batch_size=self.batch_size,
                eval_every=int(f.eval_every),
                eval_batch_size=int(f.eval_batch_size),
                augment=bool(self.config.target.augment),
                mesh=self.mesh,
                progress=self.progress,
                tx=tx,
            )
            self.engines[group] = base
        return base if trial == 0 else base.for_dataset(self.datasets[trial])

    # -- starting points
    def starts(self, arm: str, trial: int, fresh):
        """``(params, batch_stats, mask, group)`` of one arm of one trial (leading axis 1).

        The arm's function of :mod:`lth_jax.arms` gets: as ``source``, the
        pretrained weights (fine-tune arms) or the source rewind point (ticket
        arms) loaded into the target model with the head rule; as ``mask``,
        all ones (fine-tune arms) or the source ticket carried to the target
        (:func:`~lth_jax.transfer.surgery.transfer_mask`); as ``fresh``, the
        target init of this trial; keys of purpose ``transfer_<purpose>``.
        """
        f, src = self.config.finetune, self.src
        params0, bs0 = fresh
        one = lambda tree: parallel.take_runs(tree, trial, trial + 1)
        load = lambda params, bs: (
            load_params(params0, one(params), self.dont_load),
            load_params(bs0, one(bs), self.dont_load),
        )
        base, mods = parse_arm(arm)
        if base in BASES:
            frozen = base == "pretrained" and f.trainable != "all"
            group = ("dropout" in mods, "l2sp" in mods, frozen)
            source = lambda: load(src.params, src.batch_stats)
            mask = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params0)  # all alive
        else:
            group = (False, False, False)
            source = lambda: load(src.rewind_params, src.rewind_batch_stats)
            mask = jax.vmap(
                lambda m, k: transfer_mask(
                    m, self.shapes, k, self.head_new, self.config.transfer.ticket_head
                )
            )(one(src.mask), self.key(trial, "transfer_head_mask"))
        inputs = arms_lib.ArmInputs(
            source=source,
            mask=mask,
            fresh=lambda: fresh,
            key=lambda purpose: self.key(trial, f"transfer_{purpose}"),
        )
        return (*arms_lib.get(base)(inputs), group)

    def _stop(self, step=None, get_state=None) -> None:
        """``on_chunk``: raises :class:`lth_jax.workdir.Interrupted` once a signal came.

        Also called before each trial and each target IMP run (``step`` None).
        """
        if self.guard is not None and self.guard.signum is not None:
            size = transfer_report.train_size_label(self.size)
            at = "" if step is None else f" at step {step}"
            raise wd.Interrupted(
                self.guard.signum,
                f"in the fine-tuning of target size {size}{at} (a size is redone from its start)",
            )

    def run(self) -> list[dict]:
        arms = [a for a in self.config.transfer.arms if a != "ticket_target"]
        records = []
        for trial in self.trials:
            self._stop()
            eng0 = self.engine((False, False, False), 0)
            fresh = eng0.init(self.key(trial, "transfer_init"))
            per_group: dict[tuple, list] = {}
            for arm in arms:
                p, b, m, group = self.starts(arm, trial, fresh)
                per_group.setdefault(group, []).append((arm, p, b, m))
            for group, items in per_group.items():
                params, bs, mask = (
                    parallel.concat_runs([it[i] for it in items]) for i in (1, 2, 3)
                )
                n = len(items)
                rep = lambda k, n=n: np.tile(k, (n, 1))
                desc = f"size {transfer_report.train_size_label(self.size)} trial {trial}"
                names = [it[0] for it in items]  # the live metrics only read
                hook = self.live.finetune(self.i, trial, names, f"finetune {desc}", self._stop)
                out = self.engine(group, trial).fit(
                    params,
                    bs,
                    mask,
                    rep(self.key(trial, "transfer_data")),
                    rep(self.key(trial, "transfer_dropout")),
                    desc=desc,
                    on_chunk=hook,
                )
                for j, (arm, *_rest) in enumerate(items):
                    m1 = parallel.take_runs(mask, j, j + 1)
                    records.append(
                        self._record(arm, trial, m1, out.fail_step[j], out.curves, j, group)
                    )
        if "ticket_target" in self.config.transfer.arms:
            records += self.target_tickets()
        order = {a: k for k, a in enumerate(self.config.transfer.arms)}
        return sorted(records, key=lambda r: (order[r["arm"]], r["trial"]))

    def _record(self, arm, trial, mask, fail, curves, j, group) -> dict:
        f = self.config.finetune
        alive, total = masks_lib.count(jax.tree.map(lambda a: a[0], mask))
        failed = int(fail) >= 0
        return {
            **self._common(arm, trial),
            "status": "nan" if failed else "ok",
            "fail_step": int(fail) if failed else None,
            "density": int(alive) / max(int(total), 1),
            "dropout": float(f.dropout) if group[0] else 0.0,
            "input_dropout": float(f.input_dropout) if group[0] else 0.0,
            "l2_sp": float(f.l2_sp) if group[1] else 0.0,
            "trainable": f.trainable if group[2] else "all",
            "start_step": 0,
            "train_steps": int(f.steps),
            **curve_fields(curves, j),
        }

    def _common(self, arm, trial) -> dict:
        base, _ = parse_arm(arm)
        from_source = base == "pretrained" or arm in ("ticket_source", "random_mask")
        return {
            "phase": "ticket" if arm in TICKET_ARMS else "finetune",
            "size_index": self.i,
            "train_size": self.size,
            "n_train": self.n_train,
            "batch_size": self.batch_size,
            "arm": arm,
            "trial": int(trial),
            "num_classes": self.num_classes,
            "source_num_classes": self.src.num_classes,
            "head": ("new" if self.head_new else "reused") if from_source else "new",
            "source_test_accuracy": self.src.test_accuracy.get(int(trial)),
        }

    def target_tickets(self) -> list[dict]:
        c = self.config
        rounds = int(c.imp.rounds)
        out = []
        for trial in self.trials:
            tcfg = target_lottery_config(c, self.size, trial)
            tcfg.train.batch_size = self.batch_size
            d = os.path.join(self.workdir, TARGET_IMP_DIR, f"size{self.i}_trial{trial}")
            self._stop()
            recs = lottery.run(tcfg, d, progress=self.progress, announce=False)
            rec = next(r for r in recs if r["round"] == rounds and r["arm"] == "ticket")
            keep = {
                k: v for k, v in rec.items() if k not in ("round", "arm", "trial", "layer_density")
            }
            out.append(
                {
                    **keep,
                    **self._common("ticket_target", trial),
                    "dropout": 0.0,
                    "input_dropout": 0.0,
                    "l2_sp": 0.0,
                    "trainable": "all",
                    "target_imp_workdir": os.path.relpath(d, self.workdir),
                }
            )
        return out


# ----------------------------------------------------------------------------- runner


def check_drift(workdir: str, config) -> None:
    """Refuses ``workdir`` if it holds a transfer run of another config (nothing may grow).

    Raises:
      ConfigError: naming the differing keys, with both values.
    """
    config_lib.check_drift(workdir, config, base=transfer_config(), growable=(), results=RESULTS)


def run(config, workdir: str, *, overwrite: bool = False, progress: bool | None = None):
    """Runs (or resumes) a transfer experiment in ``workdir``; returns all records.

    Writes ``config.json``, ``metrics.jsonl`` (after each finished target
    size), ``source/``, ``target_imp/`` and the report
    (:func:`lth_jax.report.transfer.write_report`). A finished size is not run
    again.

    Raises:
      ConfigError: a bad config value, a workdir holding another config, a
        source workdir that lacks what is needed, or ``finetune.reuse_head``
        with different class counts.
    """
    validate(config)
    wd.check_path(workdir)
    wd.check_contents(workdir, OWNED)
    is_main = parallel.is_main()
    with wd.lock(workdir, is_main):
        if not overwrite:
            check_drift(workdir, config)
        _check_target(config)
        pretrained = None
        if config.transfer.pretrained_workdir is not None:
            pretrained = pretrained_source(config)  # its checks, before anything is written
        # source/ is the source run's: it discards its own files after its own checks.
        wd.prepare(workdir, overwrite, [n for n in OWNED if n != SOURCE_DIR], is_main)
        return _run(config, workdir, overwrite, progress, is_main, pretrained)


def _run(config, workdir: str, overwrite: bool, progress, is_main: bool, pretrained=None):
    prog = bool(config.progress) if progress is None else progress
    if is_main:
        wd.write_json_atomic(os.path.join(workdir, wd.CONFIG), wd.config_to_json(config))
    src = load_source(config, workdir, overwrite, prog, pretrained)

    metrics = os.path.join(workdir, wd.METRICS)
    old = wd.read_jsonl(metrics)
    want = len(config.transfer.arms) * int(config.num_trials)
    records = []
    live = events.Live(workdir, config, prog, is_main, steps=int(config.finetune.steps))
    # SIGINT/SIGTERM: the chunk ends, the finished sizes are kept, the run exits 130/143.
    with wd.SignalGuard(enabled=jax.process_count() == 1) as guard:
        try:
            for i, size in enumerate(config.target.train_sizes):
                done = [r for r in old if r.get("size_index") == i]
                if len(done) == want:
                    records += done
                    continue
                records += _SizeRunner(config, src, i, size, workdir, prog, live, guard).run()
                if is_main:
                    wd.write_jsonl_atomic(metrics, records)
        finally:
            live.close()
    if is_main:
        wd.write_jsonl_atomic(metrics, records)
        transfer_report.write_report(workdir)
    return records
