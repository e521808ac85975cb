"""Transfer learning: pretrain, fine-tune (with dropout, freezing, L2-SP), carry a ticket.

``lth-jax run`` with ``config.kind = "transfer"`` (start from
:func:`transfer_config`) does three things in ``<workdir>``:

1. **Source.** Pretrains on the source dataset (the usual ``dataset``,
   ``model``, ``train``, ``optimizer`` blocks) by running
   :func:`lth_jax.lottery.run` in ``<workdir>/source`` with the one arm
   ``ticket``: round 0 is the dense pretrained network of each trial; when a
   ticket arm is asked for, it goes on for ``imp.rounds`` IMP rounds to find
   the source ticket (open_lth's "pretrain on A, then IMP"). Or, with
   ``transfer.pretrained_workdir``, it loads an earlier lottery workdir (or
   transfer workdir: its ``source/``) instead: trial ``t`` here uses trial
   ``t`` there, round ``transfer.pretrained_round`` (default 0: the trained
   dense network).
2. **Fine-tune** on the target dataset (block ``target``), once per size in
   ``target.train_sizes`` (a fraction of the target training set, or a count),
   with the ``finetune`` block's steps, batch size and optimizer, every arm of
   ``transfer.arms``:

   =========================  ==============================================
   arm                        starts from
   =========================  ==============================================
   ``scratch``                a fresh init of the target model
   ``pretrained``             the source weights, with the head rule below
   ``…+dropout``              the same, fine-tuned with ``finetune.dropout``
                              and ``finetune.input_dropout`` (arms without it
                              fine-tune with both set to 0)
   ``pretrained+l2sp``        L2 toward the pretrained weights
                              (:func:`lth_jax.regularizers_sp.add_l2_sp`,
                              strength ``finetune.l2_sp``) on every
                              transferred kernel; combines with ``+dropout``
   =========================  ==============================================

   **The head rule.** The output layer ``head`` is *new* (freshly
   initialized, the key of the ``scratch`` arm's head: arms differ only in the
   body) unless ``finetune.reuse_head`` is true **and** the source and target
   class counts are equal. Asking to reuse a head when the counts differ is an
   error, never a silent reuse or truncation (open_lth's bug: transfer with
   another class count silently used 10 outputs). This is big_vision's
   ``dont_load=['head/.*']``: see :func:`load_params`.

   **What trains** (``finetune.trainable``, pretrained arms only; scratch arms
   always train everything): ``all``; ``head`` (a linear probe on frozen
   features); ``all_but_first`` with ``finetune.freeze_layers = k``: the first
   ``k`` layers are frozen. A *layer* is a kernel and the leaves created after
   it up to the next kernel (its bias, its batch norm), in the order the model
   creates them (:func:`layer_groups`). Frozen parameters get an exact zero
   update (``optax.multi_transform`` with ``optax.set_to_zero()``, and weight
   decay, L1, L2 and max-norm sit inside the trained branch only), so they
   stay bit for bit what they were. Batch-norm running statistics of frozen
   layers still update in training mode (they are not parameters).

3. **Ticket transfer** (arms ``ticket_source``, ``ticket_source_reinit``,
   ``ticket_target``, ``random_mask``; needs ``imp.rounds >= 1``), trained on
   the target without dropout, with all weights trainable:

   ========================  ============================  =====================
   arm                       mask                          weights
   ========================  ============================  =====================
   ``ticket_source``         source ticket of round R      source rewind point
                                                           ``theta_k``
   ``ticket_source_reinit``  source ticket of round R      a fresh init
   ``random_mask``           random, the per-layer         source rewind point
                             counts of ``ticket_source``
   ``ticket_target``         IMP on the target itself      its own init / rewind
                             (``imp`` block, ``finetune``  point (a lottery run
                             training), round R            per size and trial)
   ========================  ============================  =====================

   (``R = imp.rounds``.) The head follows the head rule. A **new head** is
   masked at the source head's density (``transfer.ticket_head =
   "source_density"``, default: a random mask with ``round(d * n)`` of its
   ``n`` weights alive, ``d`` the source ticket head's density, so the overall
   density matches the target ticket's) or left dense (``"dense"``).
   ``ticket_target`` trains from ``imp.rewind_step`` (``k``), the others from
   step 0, all to ``finetune.steps``.

**Target data per trial.** Trial ``t`` of every size uses its own random
subset of the target training set (and validation split):
``get_dataset(target.name, seed=config.seed + t, train_size=size, ...)``, so
the spread over trials includes which examples were drawn. All arms of a
(size, trial) see the same examples, the same data order and dropout keys
(paired comparison). The test set is always the whole target test split. The
batch size is ``min(finetune.batch_size, n_train)`` (full batch when the
subset is smaller than a batch).

**Keys.** ``rng.derive(seed, trial, size_index, purpose)`` with purposes
``transfer_init`` (target init, shared by every arm: the new head of a
pretrained arm equals the scratch arm's head), ``transfer_data``,
``transfer_dropout``, ``transfer_head_mask``, ``transfer_random_mask``.

**Workdir.** ``config.json``; ``metrics.jsonl`` with one object per (size,
arm, trial): ``size_index``, ``train_size``, ``n_train``, ``arm``, ``trial``,
``density``, ``final_test_accuracy``, ``test_accuracy_at_best_val``,
``best_val_step``, curves, ...; ``source/`` (the source lottery workdir);
``target_imp/`` (the target lottery runs of ``ticket_target``);
``report.md`` / ``report.png`` (:func:`write_report`). Finished sizes are
kept: running the same command again resumes after the last finished size.

**Engine.** Training reuses :class:`lth_jax.train.Engine` through
:class:`FinetuneEngine`, which only swaps in another optimizer (see
:func:`make_finetune_optimizer`) and can move its compiled programs to another
dataset of the same shapes (the per-trial subsets).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lth_jax import checkpoint as ckpt_lib
from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import parallel, pruning, rng
from lth_jax.regularizers_sp import add_l2_sp
from lth_jax.report import trial_stats, workdir_kind
from lth_jax.train import Engine, curve_fields, optimizer_chain

__all__ = [
    "transfer_config",
    "validate",
    "source_config",
    "target_lottery_config",
    "parse_arm",
    "param_order",
    "layer_groups",
    "trainable_tree",
    "head_is_new",
    "load_params",
    "transfer_mask",
    "make_finetune_optimizer",
    "FinetuneEngine",
    "run",
    "write_report",
    "load_records",
    "summarize",
    "format_table",
    "is_transfer_workdir",
]

METRICS = "metrics.jsonl"
CONFIG = "config.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
SOURCE_DIR = "source"
TARGET_IMP_DIR = "target_imp"

BASES = ("scratch", "pretrained")
MODIFIERS = ("dropout", "l2sp")
TICKET_ARMS = ("ticket_source", "ticket_source_reinit", "ticket_target", "random_mask")
TRAINABLE = ("all", "head", "all_but_first")
TICKET_HEADS = ("source_density", "dense")
HEAD = "head"


# ----------------------------------------------------------------------------- config


def transfer_config() -> ml_collections.ConfigDict:
    """The base config of the ``transfer`` kind: every key with its default.

    The source blocks are :func:`lth_jax.config.base_config`'s (``dataset``,
    ``model``, ``train``, ``optimizer``, ``imp``, ``seed``, ``num_trials``);
    ``arms`` is not used (``transfer.arms`` is). Added blocks:

    * ``transfer``: ``arms`` (see the module docstring), ``pretrained_workdir``
      (``None``: pretrain here), ``pretrained_round`` (0), ``ticket_head``
      (``source_density`` | ``dense``).
    * ``target``: ``name``, ``data_dir``, ``classes``, ``val_size``,
      ``train_sizes`` (fractions in ``(0, 1]`` or counts), ``augment``.
    * ``finetune``: ``steps``, ``batch_size``, ``eval_every``,
      ``eval_batch_size``, ``optimizer`` (a full optimizer block), ``trainable``
      (``all`` | ``head`` | ``all_but_first``), ``freeze_layers``,
      ``reuse_head``, ``dropout``, ``input_dropout``, ``l2_sp``.
    """
    c = config_lib.base_config()
    c.kind = "transfer"
    c.arms = ("ticket",)

    c.transfer = ml_collections.ConfigDict()
    c.transfer.arms = ("scratch", "scratch+dropout", "pretrained", "pretrained+dropout")
    c.transfer.pretrained_workdir = ml_collections.FieldReference(None, field_type=str)
    c.transfer.pretrained_round = 0
    c.transfer.ticket_head = "source_density"

    c.target = ml_collections.ConfigDict()
    c.target.name = "mnist1d"
    c.target.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.target.classes = ml_collections.FieldReference(None, field_type=tuple)
    c.target.val_size = ml_collections.FieldReference(None, field_type=int)
    c.target.train_sizes = (1.0,)
    c.target.augment = False

    c.finetune = ml_collections.ConfigDict()
    c.finetune.steps = 1000
    c.finetune.batch_size = 100
    c.finetune.eval_every = 100
    c.finetune.eval_batch_size = 1000
    c.finetune.optimizer = ml_collections.ConfigDict(c.optimizer.to_dict())
    c.finetune.trainable = "all"
    c.finetune.freeze_layers = 0
    c.finetune.reuse_head = False
    c.finetune.dropout = 0.5
    c.finetune.input_dropout = 0.0
    c.finetune.l2_sp = 0.0
    return c


def parse_arm(arm: str) -> tuple[str, frozenset[str]]:
    """``"pretrained+dropout"`` -> ``("pretrained", {"dropout"})``; ticket arms as is.

    Raises:
      ConfigError: an unknown base or modifier, a repeated modifier, ``l2sp``
        on a scratch arm, or a modifier on a ticket arm.
    """
    if not isinstance(arm, str):
        raise config_lib.ConfigError(f"transfer.arms entries must be strings, got {arm!r}")
    if arm in TICKET_ARMS:
        return arm, frozenset()
    base, *mods = arm.split("+")
    allowed = ", ".join([*BASES, *TICKET_ARMS])
    if base not in BASES:
        raise config_lib.ConfigError(
            f"transfer.arms: unknown arm {arm!r}; arms are {allowed}, and scratch/pretrained "
            f"take modifiers +{' +'.join(MODIFIERS)}"
        )
    bad = [m for m in mods if m not in MODIFIERS]
    if bad or len(set(mods)) != len(mods):
        raise config_lib.ConfigError(
            f"transfer.arms: arm {arm!r} has a bad or repeated modifier; allowed: "
            f"+{' +'.join(MODIFIERS)}"
        )
    if base == "scratch" and "l2sp" in mods:
        raise config_lib.ConfigError(
            f"transfer.arms: {arm!r}: L2-SP pulls toward pretrained weights; a scratch arm has none"
        )
    return base, frozenset(mods)


def _strip(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c = c.copy_and_resolve_references()
    for key in ("transfer", "target", "finetune"):
        if key in c:
            del c[key]
    return c


def _has_tickets(config) -> bool:
    return any(a in TICKET_ARMS for a in config.transfer.arms)


def source_config(config) -> ml_collections.ConfigDict:
    """The ``lottery`` config that pretrains (and finds the source ticket) in ``source/``.

    Arms: ``ticket`` only; ``imp.rounds`` is 0 unless a ticket arm needs the
    source ticket; every checkpoint is kept (round 0 holds the pretrained
    weights).
    """
    c = _strip(config)
    c.kind = "lottery"
    c.arms = ("ticket",)
    if not _has_tickets(config):
        c.imp.rounds = 0
    c.checkpoint.max_to_keep = None
    return c


def _no_dropout_kwargs(model_kwargs) -> dict:
    kw = dict(model_kwargs)
    kw["dropout"] = 0.0
    kw["input_dropout"] = 0.0
    return kw


def target_lottery_config(config, train_size, trial: int) -> ml_collections.ConfigDict:
    """The ``lottery`` config of the target's own IMP (arm ``ticket_target``) for one trial.

    Dataset = the ``target`` block at ``train_size`` with data seed
    ``config.seed + trial`` (the same subset the other arms of that trial
    see); training = the ``finetune`` block; model = the source model without
    dropout; ``imp`` as in the config; one trial.
    """
    c = _strip(config)
    t, f = config.target, config.finetune
    c.kind = "lottery"
    c.arms = ("ticket",)
    c.seed = int(config.seed) + int(trial)
    c.num_trials = 1
    c.dataset.name = t.name
    c.dataset.data_dir = t.data_dir
    c.dataset.classes = t.classes
    c.dataset.val_size = t.val_size
    c.dataset.train_size = _data_train_size(train_size)
    c.dataset.augment = bool(t.augment)
    c.model.kwargs = ml_collections.ConfigDict(_no_dropout_kwargs(config.model.kwargs.to_dict()))
    c.train.steps = f.steps
    c.train.batch_size = f.batch_size
    c.train.eval_every = f.eval_every
    c.train.eval_batch_size = f.eval_batch_size
    c.optimizer = ml_collections.ConfigDict(f.optimizer.to_dict())
    c.checkpoint.max_to_keep = 2
    return c


_RENAMES = ((r"\btrain\.", "finetune."), (r"\boptimizer\.", "finetune.optimizer."))


def _target_error(e: config_lib.ConfigError) -> config_lib.ConfigError:
    msg = str(e)
    for pat, rep in _RENAMES:
        msg = re.sub(pat, rep, msg)
    msg = re.sub(r"\bdataset\.train_size\b", "target.train_sizes", msg)
    msg = re.sub(r"\bdataset\.", "target.", msg)
    return config_lib.ConfigError(msg)


def validate(config) -> None:
    """Checks a ``transfer`` config; raises :class:`~lth_jax.config.ConfigError` (one line)."""
    if config.get("kind") != "transfer":
        raise config_lib.ConfigError(f"kind must be 'transfer' here, got {config.get('kind')!r}")
    for block in ("transfer", "target", "finetune"):
        if block not in config:
            raise config_lib.ConfigError(
                f"config block {block} is missing; start from lth_jax.transfer.transfer_config()"
            )
    tc, t, f = config.transfer, config.target, config.finetune
    arms = tuple(tc.arms)
    if not arms:
        raise config_lib.ConfigError("transfer.arms must name at least one arm")
    if len(set(arms)) != len(arms):
        raise config_lib.ConfigError(f"transfer.arms must not repeat an arm, got {list(arms)}")
    parsed = [parse_arm(a) for a in arms]
    if _has_tickets(config) and int(config.imp.rounds) < 1:
        raise config_lib.ConfigError(
            f"imp.rounds must be >= 1 for the ticket arms {[a for a in arms if a in TICKET_ARMS]}, "
            f"got {config.imp.rounds!r}"
        )
    config_lib.validate(source_config(config))

    sizes = tuple(t.train_sizes) if isinstance(t.train_sizes, Sequence) else None
    if not sizes:
        raise config_lib.ConfigError(
            f"target.train_sizes must be a non-empty list of fractions in (0, 1] or counts >= 1, "
            f"got {t.train_sizes!r}"
        )
    for s in sizes:
        ok = not isinstance(s, bool) and (
            (isinstance(s, int) and s >= 1) or (isinstance(s, float) and 0.0 < s <= 1.0)
        )
        if not ok:
            raise config_lib.ConfigError(
                f"target.train_sizes entries must be fractions in (0, 1] or counts >= 1, got {s!r}"
            )
    if len(set(sizes)) != len(sizes):
        raise config_lib.ConfigError(f"target.train_sizes must not repeat, got {list(sizes)}")
    try:
        config_lib.validate(target_lottery_config(config, sizes[0], 0))
    except config_lib.ConfigError as e:
        raise _target_error(e) from None

    if f.trainable not in TRAINABLE:
        raise config_lib.ConfigError(
            f"finetune.trainable must be one of {', '.join(TRAINABLE)}; got {f.trainable!r}"
        )
    k = f.freeze_layers
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise config_lib.ConfigError(f"finetune.freeze_layers must be an integer >= 0, got {k!r}")
    if f.trainable == "all_but_first" and k < 1:
        raise config_lib.ConfigError(
            "finetune.freeze_layers must be >= 1 with finetune.trainable='all_but_first', got 0"
        )
    if not isinstance(f.reuse_head, bool):
        raise config_lib.ConfigError(
            f"finetune.reuse_head must be true or false, got {f.reuse_head!r}"
        )
    for key in ("dropout", "input_dropout"):
        v = f[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
            raise config_lib.ConfigError(f"finetune.{key} must be a number in [0, 1), got {v!r}")
    sp = f.l2_sp
    if isinstance(sp, bool) or not isinstance(sp, int | float) or not 0.0 <= sp < math.inf:
        raise config_lib.ConfigError(f"finetune.l2_sp must be a finite number >= 0, got {sp!r}")
    if sp == 0 and any("l2sp" in mods for _, mods in parsed):
        raise config_lib.ConfigError("finetune.l2_sp must be > 0 for an arm with +l2sp, got 0")
    if f.reuse_head and tc.pretrained_workdir is None:
        from lth_jax import data

        count = lambda name, classes: len(classes) if classes else data.get_spec(name).num_classes
        n_src = count(config.dataset.name, config.dataset.classes)
        n_tgt = count(t.name, t.classes)
        head_is_new(n_src, n_tgt, reuse_head=True)  # raises on different counts
    if tc.ticket_head not in TICKET_HEADS:
        raise config_lib.ConfigError(
            f"transfer.ticket_head must be one of {', '.join(TICKET_HEADS)}; got {tc.ticket_head!r}"
        )
    r = tc.pretrained_round
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise config_lib.ConfigError(
            f"transfer.pretrained_round must be an integer >= 0, got {r!r}"
        )
    if tc.pretrained_workdir is None and r > int(source_config(config).imp.rounds):
        raise config_lib.ConfigError(
            f"transfer.pretrained_round={r} is past the source's last round "
            f"{source_config(config).imp.rounds}"
        )
    if tc.pretrained_workdir is not None and not os.path.isdir(tc.pretrained_workdir):
        raise config_lib.ConfigError(
            f"transfer.pretrained_workdir {tc.pretrained_workdir!r} is not a directory"
        )


# ----------------------------------------------------------------------------- parameters


def param_order(model, sample) -> list[str]:
    """Leaf paths of ``model``'s params in the order the model creates them.

    (``jax.tree`` flattening sorts dict keys, so ``Dense_10`` would come before
    ``Dense_2``; this reads the creation order of ``model.init`` without
    computing anything.)

    Example:
      >>> import jax.numpy as jnp
      >>> from lth_jax import models
      >>> param_order(models.get("mlp", features=(4,)), jnp.zeros((1, 3)))
      ['Dense_0/kernel', 'Dense_0/bias', 'head/kernel', 'head/bias']
    """
    order: list[str] = []

    def init(key):
        variables = model.init({"params": key}, sample, train=False)
        order.extend(flax.traverse_util.flatten_dict(variables["params"], sep="/"))
        return variables

    jax.eval_shape(init, jax.random.PRNGKey(0))
    return order


def layer_groups(
    order: Sequence[str], shapes: Mapping[str, tuple] | None = None
) -> list[list[str]]:
    """Groups leaf paths (in creation order) into layers: a kernel and what follows it.

    A new layer starts at every leaf named ``kernel`` (with ``ndim >= 2`` when
    ``shapes`` is given); leaves before the first kernel join the first layer.

    Example:
      >>> layer_groups(["c/kernel", "c/bias", "bn/scale", "head/kernel", "head/bias"])
      [['c/kernel', 'c/bias', 'bn/scale'], ['head/kernel', 'head/bias']]
    """
    groups: list[list[str]] = []
    for path in order:
        is_kernel = path.split("/")[-1] == "kernel" and (
            shapes is None or len(shapes.get(path, ())) >= 2
        )
        if is_kernel or not groups:
            groups.append([path])
        else:
            groups[-1].append(path)
    return groups


def trainable_tree(params, order: Sequence[str], trainable: str = "all", freeze_layers: int = 0):
    """A pytree of Python bools shaped like ``params``: ``True`` where a leaf trains.

    Args:
      params: params (or shapes) of the target model.
      order: the leaf paths in creation order (:func:`param_order`).
      trainable: ``all``, ``head`` (only leaves under ``head/``) or
        ``all_but_first`` (all but the first ``freeze_layers`` layers of
        :func:`layer_groups`).
      freeze_layers: ``k`` for ``all_but_first``.

    Raises:
      ValueError: an unknown mode, or ``k`` not leaving at least the last layer
        (the head) trainable.

    Example:
      >>> import jax.numpy as jnp
      >>> p = {"Dense_0": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 2))}}
      >>> trainable_tree(p, ["Dense_0/kernel", "head/kernel"], "head")
      {'Dense_0': {'kernel': False}, 'head': {'kernel': True}}
    """
    paths = [p for p, _ in masks_lib.named_leaves(params)]
    if trainable == "all":
        flags = {p: True for p in paths}
    elif trainable == "head":
        flags = {p: p.split("/")[0] == HEAD for p in paths}
    elif trainable == "all_but_first":
        shapes = {p: np.shape(x) for p, x in masks_lib.named_leaves(params)}
        groups = layer_groups([p for p in order if p in shapes], shapes)
        if not 1 <= freeze_layers < len(groups):
            raise ValueError(
                f"finetune.freeze_layers must be in [1, {len(groups) - 1}] (the model has "
                f"{len(groups)} layers and the last must train), got {freeze_layers}"
            )
        frozen = {p for g in groups[:freeze_layers] for p in g}
        flags = {p: p not in frozen for p in paths}
    else:
        raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
    treedef = jax.tree.structure(params)
    return jax.tree.unflatten(treedef, [flags[p] for p in paths])


def head_is_new(source_classes: int, target_classes: int, reuse_head: bool = False) -> bool:
    """Whether fine-tuning gets a fresh head; never reuses a head of the wrong size.

    Reuses the source head only when asked **and** the class counts are equal.

    Raises:
      ConfigError: ``reuse_head`` with different class counts.

    Example:
      >>> head_is_new(5, 5), head_is_new(5, 5, reuse_head=True), head_is_new(10, 5)
      (True, False, True)
    """
    if not reuse_head:
        return True
    if int(source_classes) != int(target_classes):
        raise config_lib.ConfigError(
            f"finetune.reuse_head=True, but the source head has {source_classes} outputs and the "
            f"target has {target_classes} classes; set finetune.reuse_head=False for a new head"
        )
    return False


def load_params(init, pretrained, dont_load: Sequence[str] = (r"^head/",)):
    """``init`` with every leaf taken from ``pretrained`` except those matching ``dont_load``.

    big_vision's "load and reset the head": leaves whose path
    (``"head/kernel"``) matches a ``dont_load`` regex keep their value from
    ``init``; every other leaf must exist in ``pretrained`` with the same
    shape. Extra leaves in ``pretrained`` are an error too, unless they match
    ``dont_load`` (the old head), so a mismatched architecture never loads
    halfway.

    Works on single params or on trees with a leading run axis (then both must
    have the same leading size).

    Raises:
      ValueError: a missing, extra or differently shaped leaf (named).

    Example:
      >>> import jax.numpy as jnp
      >>> init = {"body": {"kernel": jnp.zeros((2, 2))}, "head": {"kernel": jnp.zeros((2, 3))}}
      >>> pre = {"body": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 10))}}
      >>> out = load_params(init, pre)
      >>> float(out["body"]["kernel"][0, 0]), out["head"]["kernel"].shape
      (1.0, (2, 3))
      >>> float(out["head"]["kernel"].sum())  # the new head keeps its init
      0.0
    """
    rx = [re.compile(p) for p in dont_load]
    skip = lambda path: any(r.search(path) for r in rx)
    src = dict(masks_lib.named_leaves(pretrained))
    leaves = masks_lib.named_leaves(init)
    want = {p for p, _ in leaves}
    extra = sorted(p for p in src if p not in want and not skip(p))
    if extra:
        raise ValueError(f"pretrained params have leaves the target model lacks: {extra}")
    out = []
    for path, x in leaves:
        if skip(path):
            out.append(x)
            continue
        if path not in src:
            raise ValueError(f"pretrained params lack {path!r}")
        y = src[path]
        if np.shape(y) != np.shape(x):
            raise ValueError(
                f"pretrained {path!r} has shape {np.shape(y)}, the target model needs {np.shape(x)}"
            )
        out.append(jnp.asarray(y, dtype=jnp.result_type(x)))
    return jax.tree.unflatten(jax.tree.structure(init), out)


def transfer_mask(
    source_mask, target_shapes, key, head_new: bool = True, head: str = "source_density"
):
    """Carries a source ticket's mask to the target model (one run, no leading axis).

    Every leaf but the head's comes from ``source_mask`` (same paths and
    shapes). A reused head keeps its mask. A new head is all alive
    (``head="dense"``) or gets a random mask with ``round(d * n)`` of its ``n``
    kernel weights alive, ``d`` the source head kernel's density
    (``head="source_density"``); its bias stays alive.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> src = {"Dense_0": {"kernel": jnp.array([[True, False]])},
      ...        "head": {"kernel": jnp.array([[True, False, False, False]] * 2)}}
      >>> shapes = {"Dense_0": {"kernel": (1, 2)}, "head": {"kernel": (2, 2)}}
      >>> m = transfer_mask(src, shapes, jax.random.PRNGKey(0))
      >>> m["Dense_0"]["kernel"].tolist(), int(m["head"]["kernel"].sum())
      ([[True, False]], 1)
    """
    src = dict(masks_lib.named_leaves(source_mask))
    is_shape = lambda x: isinstance(x, tuple) and all(isinstance(i, int) for i in x)
    flat, treedef = jax.tree_util.tree_flatten_with_path(target_shapes, is_leaf=is_shape)
    out = []
    for path, leaf in flat:
        p = masks_lib.path_str(path)
        shape = tuple(leaf) if is_shape(leaf) else np.shape(leaf)
        if p.split("/")[0] == HEAD and head_new:
            if head == "dense" or p.split("/")[-1] != "kernel" or p not in src:
                out.append(jnp.ones(shape, bool))
                continue
            d = jnp.mean(jnp.asarray(src[p], jnp.float32))
            n = int(np.prod(shape))
            alive = jnp.floor(d * n + 0.5).astype(jnp.int32)
            rank = jnp.argsort(jnp.argsort(jax.random.uniform(key, (n,))))
            out.append((rank < alive).reshape(shape))
            continue
        if p not in src or np.shape(src[p]) != shape:
            raise ValueError(f"source mask has no leaf {p!r} of shape {shape}")
        out.append(jnp.asarray(src[p], bool))
    return jax.tree.unflatten(treedef, out)


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


@dataclasses.dataclass(eq=False)
class FinetuneEngine(Engine):
    """An :class:`~lth_jax.train.Engine` (with ``tx`` from :func:`make_finetune_optimizer`)
    that can move its compiled programs to another dataset of the same shapes."""

    def for_dataset(self, dataset) -> FinetuneEngine:
        """The same engine on another dataset, reusing the compiled programs when shapes match.

        The compiled chunk takes the data as an argument, so a dataset with the
        same array shapes (another random subset of the same size) needs no
        new compilation.
        """
        other = dataclasses.replace(self, dataset=dataset)
        same = jax.tree.map(np.shape, other._data) == jax.tree.map(np.shape, self._data)
        if same and other.n_train == self.n_train:
            other._chunk, other._init, other._new_runs = self._chunk, self._init, self._new_runs
        return other


# ----------------------------------------------------------------------------- source


class _Source:
    """What fine-tuning needs from the source, each with a leading trial axis."""

    def __init__(self, directory, round_, ticket_round, num_trials):
        ck_dir = os.path.join(directory, "checkpoints")
        if not os.path.isdir(ck_dir):
            raise config_lib.ConfigError(f"no checkpoints/ in the source workdir {directory}")
        ck = ckpt_lib.RoundCheckpointer(ck_dir)
        try:
            rounds = ck.rounds()
            need = [round_] + ([ticket_round] if ticket_round is not None else [])
            missing = [r for r in need if r not in rounds]
            if missing:
                raise config_lib.ConfigError(
                    f"the source workdir {directory} has no finished round {missing[0]} "
                    f"(it has {rounds})"
                )
            state, _ = ck.restore(round_)
            trials = jax.tree.leaves(state["ticket"]["params"])[0].shape[0]
            if trials < num_trials:
                raise config_lib.ConfigError(
                    f"num_trials={num_trials} but the source workdir {directory} has only "
                    f"{trials} trials"
                )
            cut = lambda tree: jax.tree.map(lambda a: np.asarray(a)[:num_trials], tree)
            self.directory = directory
            self.round = round_
            self.params = cut(state["ticket"]["params"])
            self.batch_stats = cut(state["ticket"].get("batch_stats") or {})
            self.num_classes = int(np.shape(self.params[HEAD]["kernel"])[-1])
            self.ticket_round = ticket_round
            if ticket_round is not None:
                st, _ = ck.restore(ticket_round)
                self.mask = jax.tree.map(lambda a: a.astype(bool), cut(st["ticket"]["mask"]))
                self.rewind_params = cut(st["rewind"]["params"])
                self.rewind_batch_stats = cut(st["rewind"].get("batch_stats") or {})
        finally:
            ck.close()
        recs = ckpt_lib.read_jsonl(os.path.join(directory, METRICS))
        self.test_accuracy = {
            int(r["trial"]): r.get("final_test_accuracy")
            for r in recs
            if r.get("round") == round_ and r.get("arm") in ("dense", "ticket")
        }
        cfg_path = os.path.join(directory, CONFIG)
        self.config = None
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                self.config = json.load(f)


def _source_dir(path: str) -> str:
    sub = os.path.join(path, SOURCE_DIR)
    return sub if os.path.isdir(os.path.join(sub, "checkpoints")) else path


def _load_source(config, workdir, overwrite, progress) -> _Source:
    from lth_jax import lottery

    tc = config.transfer
    ticket_round = int(config.imp.rounds) if _has_tickets(config) else None
    if tc.pretrained_workdir is not None:
        directory = _source_dir(tc.pretrained_workdir)
    else:
        directory = os.path.join(workdir, SOURCE_DIR)
        lottery.run(source_config(config), directory, overwrite=overwrite, progress=progress)
    src = _Source(directory, int(tc.pretrained_round), ticket_round, int(config.num_trials))
    if src.config is not None:
        name = src.config.get("model", {}).get("name")
        if name is not None and name != config.model.name:
            raise config_lib.ConfigError(
                f"model.name is {config.model.name!r} but the pretrained workdir "
                f"{directory} trained {name!r}"
            )
    return src


# ----------------------------------------------------------------------------- fine-tuning


def _take(tree, i, j):
    return jax.tree.map(lambda a: a[i:j], tree)


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


def _data_train_size(size):
    """``train_size`` for :func:`lth_jax.data.get_dataset`: ``1.0`` (all) is passed as ``None``."""
    return None if isinstance(size, float) and size == 1.0 else size


def _train_size_label(size) -> str:
    if isinstance(size, float):
        return f"{100 * size:g}%"
    return str(size)


class _SizeRunner:
    """Fine-tunes every arm of one target size, trial by trial."""

    def __init__(self, config, source: _Source, size_index: int, size, workdir, progress: bool):
        from lth_jax import data, models

        self.config = c = config
        self.workdir = workdir
        self.src = source
        self.i = size_index
        self.size = size
        self.progress = progress
        t, f = c.target, c.finetune
        self.trials = list(range(int(c.num_trials)))
        self.datasets = []
        for trial in self.trials:
            try:
                ds = data.get_dataset(
                    t.name,
                    data_dir=t.data_dir,
                    val_size=t.val_size,
                    train_size=_data_train_size(size),
                    classes=t.classes,
                    seed=int(c.seed) + trial,
                )
            except ValueError as e:
                raise config_lib.ConfigError(f"target: {str(e).splitlines()[0]}") from None
            self.datasets.append(ds)
        ds0 = self.datasets[0]
        self.n_train = int(ds0.train_x.shape[0])
        self.num_classes = int(ds0.num_classes)
        self.batch_size = min(int(f.batch_size), self.n_train)
        self.head_new = head_is_new(source.num_classes, self.num_classes, bool(f.reuse_head))
        self.dont_load = (r"^head/",) if self.head_new else ()
        self.mesh = parallel.make_mesh(c.num_devices)
        base_kw = c.model.kwargs.to_dict()
        self.kwargs = {
            False: _no_dropout_kwargs(base_kw),
            True: {**base_kw, "dropout": float(f.dropout), "input_dropout": float(f.input_dropout)},
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
        self.engines: dict[tuple, FinetuneEngine] = {}

    # -- keys
    def key(self, trial: int, purpose: str):
        return rng.derive(int(self.config.seed), trial, self.i, purpose)[None]

    # -- engines: one per (dropout, l2sp, frozen) group, moved from trial to trial
    def engine(self, group, trial: int) -> FinetuneEngine:
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
            base = FinetuneEngine(
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
        """``(params, batch_stats, mask, group)`` of one arm of one trial (leading axis 1)."""
        f = self.config.finetune
        params0, bs0 = fresh
        src = self.src
        one = lambda tree: _take(tree, trial, trial + 1)
        load = lambda init, pre: load_params(init, one(pre), self.dont_load)
        ones = jax.vmap(masks_lib.ones_like)(params0)
        base, mods = parse_arm(arm)
        if base in BASES:
            group = (
                "dropout" in mods,
                "l2sp" in mods,
                base == "pretrained" and f.trainable != "all",
            )
            if base == "scratch":
                return params0, bs0, ones, group
            return load(params0, src.params), load(bs0, src.batch_stats), ones, group
        group = (False, False, False)
        mask = jax.vmap(
            lambda m, k: transfer_mask(
                m, self.shapes, k, self.head_new, self.config.transfer.ticket_head
            )
        )(one(src.mask), self.key(trial, "transfer_head_mask"))
        if arm == "ticket_source":
            return load(params0, src.rewind_params), load(bs0, src.rewind_batch_stats), mask, group
        if arm == "ticket_source_reinit":
            return params0, bs0, mask, group
        if arm == "random_mask":
            m = jax.vmap(pruning.random_mask_like)(self.key(trial, "transfer_random_mask"), mask)
            return load(params0, src.rewind_params), load(bs0, src.rewind_batch_stats), m, group
        raise ValueError(arm)

    def run(self) -> list[dict]:
        arms = [a for a in self.config.transfer.arms if a != "ticket_target"]
        records = []
        for trial in self.trials:
            eng0 = self.engine((False, False, False), 0)
            fresh = eng0.init(self.key(trial, "transfer_init"))
            per_group: dict[tuple, list] = {}
            for arm in arms:
                p, b, m, group = self.starts(arm, trial, fresh)
                per_group.setdefault(group, []).append((arm, p, b, m))
            for group, items in per_group.items():
                eng = self.engine(group, trial)
                params = _stack([it[1] for it in items])
                bs = _stack([it[2] for it in items])
                mask = _stack([it[3] for it in items])
                n = len(items)
                rep = lambda k, n=n: jnp.tile(k, (n, 1))
                inputs = (
                    params,
                    bs,
                    mask,
                    rep(self.key(trial, "transfer_data")),
                    rep(self.key(trial, "transfer_dropout")),
                )
                inputs, _ = parallel.pad_runs(inputs, eng.num_shards())
                runs = eng.new_runs(*inputs)
                runs, curves, _ = eng.train(
                    runs, 0, desc=f"size {_train_size_label(self.size)} trial {trial}"
                )
                fail = np.asarray(runs.fail_step)
                for j, (arm, *_rest) in enumerate(items):
                    m1 = _take(mask, j, j + 1)
                    records.append(self._record(arm, trial, m1, fail[j], curves, j, group))
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
        from lth_jax import lottery

        c = self.config
        rounds = int(c.imp.rounds)
        out = []
        for trial in self.trials:
            tcfg = target_lottery_config(c, self.size, trial)
            tcfg.train.batch_size = self.batch_size
            d = os.path.join(self.workdir, TARGET_IMP_DIR, f"size{self.i}_trial{trial}")
            recs = lottery.run(tcfg, d, progress=self.progress)
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


def _prepare(workdir: str, config, overwrite: bool) -> None:
    from lth_jax import lottery

    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise config_lib.ConfigError(f"workdir {workdir} cannot be created: {e.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise config_lib.ConfigError(f"workdir {workdir} is not writable")
    if overwrite:
        for name in (METRICS, CONFIG, REPORT_MD, REPORT_PNG, SOURCE_DIR, TARGET_IMP_DIR):
            p = os.path.join(workdir, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    lottery.check_config_drift(workdir, config)


def run(config, workdir: str, *, overwrite: bool = False, progress: bool | None = None):
    """Runs (or resumes) a transfer experiment in ``workdir``; returns all records.

    Writes ``config.json``, ``metrics.jsonl`` (after each finished target
    size), ``source/``, ``target_imp/`` and the report
    (:func:`write_report`). A finished size is not run again.

    Raises:
      ConfigError: a bad config value, a workdir holding another config, a
        source workdir that lacks what is needed, or ``finetune.reuse_head``
        with different class counts.
    """
    from lth_jax import lottery

    validate(config)
    _prepare(workdir, config, overwrite)
    prog = bool(config.progress) if progress is None else progress
    is_main = jax.process_index() == 0
    if is_main:
        tmp = os.path.join(workdir, CONFIG + ".tmp")
        with open(tmp, "w") as f:
            json.dump(lottery.config_to_json(config), f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(workdir, CONFIG))
    src = _load_source(config, workdir, overwrite, prog)

    metrics = os.path.join(workdir, METRICS)
    old = ckpt_lib.read_jsonl(metrics)
    want = len(config.transfer.arms) * int(config.num_trials)
    records = []
    for i, size in enumerate(config.target.train_sizes):
        done = [r for r in old if r.get("size_index") == i]
        if len(done) == want:
            records += done
            continue
        runner = _SizeRunner(config, src, i, size, workdir, prog)
        records += runner.run()
        if is_main:
            ckpt_lib.write_jsonl_atomic(metrics, records)
    if is_main:
        ckpt_lib.write_jsonl_atomic(metrics, records)
        write_report(workdir)
    return records


# ----------------------------------------------------------------------------- report


def is_transfer_workdir(workdir: str) -> bool:
    """Whether ``workdir/config.json`` says ``kind: transfer``."""
    return workdir_kind(workdir) == "transfer"


def load_records(workdir: str) -> list[dict]:
    """The records of a transfer workdir's ``metrics.jsonl`` (ValueError when none)."""
    path = os.path.join(os.fspath(workdir), METRICS)
    if not os.path.isfile(path):
        raise ValueError(f"no {METRICS} in experiment directory: {workdir}")
    recs = [r for r in ckpt_lib.read_jsonl(path) if "size_index" in r and "arm" in r]
    if not recs:
        raise ValueError(f"no transfer records in {path}")
    return recs


def _ok(r) -> bool:
    v = r.get("final_test_accuracy")
    return r.get("status", "ok") == "ok" and isinstance(v, int | float) and math.isfinite(v)


def summarize(records: Sequence[Mapping]) -> list[dict]:
    """One row per (size, arm): ``n``, ``n_failed``, mean/std/min/max of the accuracies."""
    arm_order: dict[str, int] = {}
    groups: dict[tuple, list] = {}
    for r in records:
        arm_order.setdefault(r["arm"], len(arm_order))
        groups.setdefault((int(r["size_index"]), r["arm"]), []).append(r)
    rows = []
    for (i, arm), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], arm_order[kv[0][1]])):
        ok = [r for r in recs if _ok(r)]
        row = {
            "size_index": i,
            "train_size": recs[0].get("train_size"),
            "n_train": recs[0].get("n_train"),
            "arm": arm,
            "density": float(np.mean([r.get("density", 1.0) for r in recs])),
            "n": len(ok),
            "n_failed": len(recs) - len(ok),
        }
        for key in ("final_test_accuracy", "test_accuracy_at_best_val"):
            vals = [float(r[key]) for r in ok if r.get(key) is not None]
            row.update({f"{key}_{stat}": v for stat, v in trial_stats(vals).items()})
        rows.append(row)
    return rows


def _pct(m, s, n) -> str:
    if n == 0 or not math.isfinite(m):
        return "failed"
    return f"{100 * m:.2f}" if n == 1 else f"{100 * m:.2f} ± {100 * s:.2f}"


def _table(header, body, right) -> str:
    widths = [max(3, len(h), *(len(c[j]) for c in body)) for j, h in enumerate(header)]
    line = lambda cells: (
        "| "
        + " | ".join(c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(cells, widths, right))
        + " |"
    )
    sep = "|" + "|".join(
        ("-" * (w + 1) + ":") if rj else (":" + "-" * (w + 1)) for w, rj in zip(widths, right)
    )
    return "\n".join([line(header), sep + "|", *(line(c) for c in body)])


def format_table(rows: Sequence[Mapping]) -> str:
    """The summary rows as a markdown table (accuracies in %, mean ± sample std)."""
    header = [
        "target train size",
        "n_train",
        "arm",
        "% weights",
        "trials",
        "final test acc",
        "min - max",
        "test acc at early stop",
    ]
    body = []
    for r in rows:
        n = r["n"]
        body.append(
            [
                _train_size_label(r["train_size"]),
                str(r["n_train"]),
                r["arm"],
                f"{100 * r['density']:.3g}",
                f"{n}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else ""),
                _pct(r["final_test_accuracy_mean"], r["final_test_accuracy_std"], n),
                "-"
                if n == 0
                else f"{100 * r['final_test_accuracy_min']:.1f} - "
                f"{100 * r['final_test_accuracy_max']:.1f}",
                _pct(r["test_accuracy_at_best_val_mean"], r["test_accuracy_at_best_val_std"], n),
            ]
        )
    return _table(header, body, [False, True, False, True, True, True, True, True])


# (label, arm a, arm b): paired differences a - b shown when both arms ran.
_EFFECTS = (
    ("pretraining (no dropout)", "pretrained", "scratch"),
    ("pretraining (with dropout)", "pretrained+dropout", "scratch+dropout"),
    ("dropout, pretrained", "pretrained+dropout", "pretrained"),
    ("dropout, scratch", "scratch+dropout", "scratch"),
    ("L2-SP, pretrained", "pretrained+l2sp", "pretrained"),
    ("L2-SP + dropout, pretrained", "pretrained+dropout+l2sp", "pretrained+dropout"),
    ("source ticket vs target ticket", "ticket_source", "ticket_target"),
    ("source ticket vs its reinit", "ticket_source", "ticket_source_reinit"),
    ("source ticket vs random mask", "ticket_source", "random_mask"),
)


def effects(records: Sequence[Mapping]) -> list[dict]:
    """Paired (same size and trial) differences of final test accuracy between arms.

    Rows ``{size_index, train_size, n_train, effect, a, b, n, mean, std, wins}``
    (``wins``: trials where ``a`` beat ``b``), for the pairs of ``_EFFECTS``
    present in ``records``.
    """
    by = {(int(r["size_index"]), r["arm"], int(r["trial"])): r for r in records if _ok(r)}
    sizes = sorted({int(r["size_index"]) for r in records})
    info = {int(r["size_index"]): r for r in records}
    out = []
    for i in sizes:
        for label, a, b in _EFFECTS:
            trials = sorted(t for (j, arm, t) in by if j == i and arm == a and (i, b, t) in by)
            if not trials:
                continue
            d = [
                by[(i, a, t)]["final_test_accuracy"] - by[(i, b, t)]["final_test_accuracy"]
                for t in trials
            ]
            st = trial_stats(d)
            m, s = st["mean"], st["std"]
            out.append(
                {
                    "size_index": i,
                    "train_size": info[i].get("train_size"),
                    "n_train": info[i].get("n_train"),
                    "effect": label,
                    "a": a,
                    "b": b,
                    "n": len(d),
                    "mean": m,
                    "std": s,
                    "wins": int(sum(x > 0 for x in d)),
                }
            )
    return out


def format_effects(rows: Sequence[Mapping]) -> str:
    header = [
        "target train size",
        "n_train",
        "effect (a - b)",
        "trials",
        "Δ final test acc (pp)",
        "a wins",
    ]
    body = [
        [
            _train_size_label(r["train_size"]),
            str(r["n_train"]),
            f"{r['effect']}: {r['a']} - {r['b']}",
            str(r["n"]),
            f"{100 * r['mean']:+.2f}" + (f" ± {100 * r['std']:.2f}" if r["n"] > 1 else ""),
            f"{r['wins']}/{r['n']}",
        ]
        for r in rows
    ]
    return _table(header, body, [False, True, False, True, True, True])


def _plot(rows, path, title):
    """Test accuracy against target training examples (log): one line per arm.

    Panels: the fine-tune arms (final test accuracy), then the ticket arms with
    ``scratch`` as a dense reference when there are ticket arms, else the
    fine-tune arms at early stop. Line = mean, band = min-max over trials.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = list(dict.fromkeys(r["arm"] for r in rows))
    ft = [a for a in arms if a not in TICKET_ARMS]
    tickets = [a for a in arms if a in TICKET_ARMS]
    final = ("final_test_accuracy", "final")
    panels = [(ft, final, "fine-tuning")]
    if tickets:
        ref = ["scratch"] if "scratch" in arms else []
        panels.append((ref + tickets, final, "ticket transfer"))
    else:
        panels.append((ft, ("test_accuracy_at_best_val", "at early stop"), "fine-tuning"))
    colors = {a: f"C{k % 10}" for k, a in enumerate(arms)}
    fig = Figure(figsize=(12, 4.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (names, (key, label), what) in zip(axes, panels):
        for arm in names:
            rs = sorted((r for r in rows if r["arm"] == arm and r["n"]), key=lambda r: r["n_train"])
            if not rs:
                continue
            x = [r["n_train"] for r in rs]
            y = [100 * r[f"{key}_mean"] for r in rs]
            lo = [100 * r[f"{key}_min"] for r in rs]
            hi = [100 * r[f"{key}_max"] for r in rs]
            base = arm.split("+")[0]
            ls = "--" if base == "scratch" else ("-" if base == "pretrained" else ":")
            marker = "o" if "dropout" in arm else ("s" if arm in TICKET_ARMS else "^")
            if "l2sp" in arm:
                marker = "D"
            dens = rs[0]["density"]
            name = arm if dens >= 0.9995 else f"{arm} ({100 * dens:.3g}% weights)"
            ax.plot(x, y, ls, marker=marker, label=name, color=colors[arm])
            ax.fill_between(x, lo, hi, color=colors[arm], alpha=0.1)
        ax.set_xscale("log")
        ax.set_xlabel("target training examples (log)")
        ax.set_title(f"{what}: target test accuracy, {label}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _config_line(cfg: Mapping | None) -> str:
    if not cfg:
        return ""
    g = lambda *ks: _dig(cfg, ks)
    src_classes = g("dataset", "classes")
    tgt_classes = g("target", "classes")
    ft = g("finetune") or {}
    fo = ft.get("optimizer") or {}
    parts = [
        f"model {g('model', 'name')} {g('model', 'kwargs') or ''}".strip(),
        f"source {g('dataset', 'name')}" + (f" classes {src_classes}" if src_classes else ""),
        f"target {g('target', 'name')}" + (f" classes {tgt_classes}" if tgt_classes else ""),
        f"pretrain {g('train', 'steps')} steps ({g('optimizer', 'name')} "
        f"{g('optimizer', 'learning_rate')})",
        f"fine-tune {ft.get('steps')} steps, batch <= {ft.get('batch_size')} "
        f"({fo.get('name')} {fo.get('learning_rate')})",
        f"trainable {ft.get('trainable')}"
        + (
            f" (freeze {ft.get('freeze_layers')})" if ft.get("trainable") == "all_but_first" else ""
        ),
        f"+dropout = dropout {ft.get('dropout')}, input dropout {ft.get('input_dropout')}",
        f"L2-SP {ft.get('l2_sp')}",
        f"head reuse asked: {ft.get('reuse_head')}",
        f"trials {g('num_trials')}",
    ]
    if g("transfer", "pretrained_workdir"):
        parts.insert(1, f"pretrained from {g('transfer', 'pretrained_workdir')}")
    if any(a in TICKET_ARMS for a in g("transfer", "arms") or ()):
        parts.append(
            f"tickets: {g('imp', 'rounds')} IMP rounds at {g('imp', 'prune_rate')} "
            f"({g('imp', 'scope')}), new head {g('transfer', 'ticket_head')}"
        )
    return "; ".join(parts)


def _dig(d, keys):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


_NOTES = (
    "Accuracies in % on the whole target test split, mean ± sample std (ddof=1) over trials; "
    "`min - max` over trials. Each trial draws its own target training subset (data seed "
    "`seed + trial`), so the spread includes which examples were drawn; the arms of one "
    "trial share the subset, the target init (the new head), the data order and the dropout "
    "keys. `test acc at early stop`: at the evaluation with the lowest validation loss "
    "(the validation split is carved from the target training split and is not part of "
    "`n_train`). Effects are paired differences a - b over trials, in percentage points; "
    "`a wins` counts trials where a was better. Figure: line = mean, band = min-max."
)


def write_report(workdir: str, out_dir: str | None = None) -> str:
    """Writes ``report.md`` and ``report.png`` of a transfer workdir; returns the tables.

    Raises:
      ValueError: no ``metrics.jsonl`` or no transfer record in it.
    """
    workdir = os.fspath(workdir)
    records = load_records(workdir)
    rows = summarize(records)
    eff = effects(records)
    out = os.fspath(out_dir) if out_dir is not None else workdir
    os.makedirs(out, exist_ok=True)
    cfg = None
    if os.path.exists(os.path.join(workdir, CONFIG)):
        with open(os.path.join(workdir, CONFIG)) as f:
            cfg = json.load(f)
    title = f"Transfer report: {os.path.basename(os.path.normpath(os.path.abspath(workdir)))}"
    _plot(rows, os.path.join(out, REPORT_PNG), title)
    src_acc = sorted(
        {
            (r["trial"], r["source_test_accuracy"])
            for r in records
            if r.get("source_test_accuracy") is not None
        }
    )
    table = format_table(rows)
    text = table + ("\n\n" + format_effects(eff) if eff else "")
    md = [f"# {title}", ""]
    line = _config_line(cfg)
    if line:
        md += [f"Config: {line}", ""]
    if src_acc:
        st = trial_stats([a for _, a in src_acc])
        m, s = st["mean"], st["std"]
        md += [
            f"Source (pretrained network) test accuracy on the source task: "
            f"{100 * m:.2f} ± {100 * s:.2f}% over {len(src_acc)} trials.",
            "",
        ]
    md += ["## Target test accuracy", "", table, ""]
    if eff:
        md += ["## Effects (paired by trial)", "", format_effects(eff), ""]
    md += [f"![{title}]({REPORT_PNG})", "", _NOTES, ""]
    with open(os.path.join(out, REPORT_MD), "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    return text
