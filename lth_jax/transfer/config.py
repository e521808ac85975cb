"""The ``transfer`` kind's config: its blocks, its arms, and their validation.

See :mod:`lth_jax.transfer` for what each key does.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

import ml_collections

from lth_jax import checks, data
from lth_jax import config as config_lib
from lth_jax.checks import ConfigError
from lth_jax.transfer.surgery import TRAINABLE, head_is_new

__all__ = [
    "BASES",
    "MODIFIERS",
    "TICKET_ARMS",
    "TICKET_HEADS",
    "transfer_config",
    "validate",
    "parse_arm",
    "has_tickets",
    "source_config",
    "target_lottery_config",
    "data_train_size",
]

BASES = ("scratch", "pretrained")
MODIFIERS = ("dropout", "l2sp")
TICKET_ARMS = ("ticket_source", "ticket_source_reinit", "ticket_target", "random_mask")
TICKET_HEADS = ("source_density", "dense")


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


def has_tickets(config) -> bool:
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
    if not has_tickets(config):
        c.imp.rounds = 0
    c.checkpoint.max_to_keep = None
    return c


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
    c.dataset.train_size = data_train_size(train_size)
    c.dataset.augment = bool(t.augment)
    c.model.kwargs.dropout = 0.0
    c.model.kwargs.input_dropout = 0.0
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
    for key, opt in (("optimizer", config.get("optimizer")), ("finetune.optimizer", f.optimizer)):
        if opt is not None and opt.get("fused_adam_cpu") is True:
            raise config_lib.ConfigError(
                f"{key}.fused_adam_cpu is for lottery and instability runs; a transfer run "
                "trains with optax's Adam: set it to false"
            )
    arms = tuple(tc.arms)
    if not arms:
        raise config_lib.ConfigError("transfer.arms must name at least one arm")
    if len(set(arms)) != len(arms):
        raise config_lib.ConfigError(f"transfer.arms must not repeat an arm, got {list(arms)}")
    parsed = [parse_arm(a) for a in arms]
    if has_tickets(config) and int(config.imp.rounds) < 1:
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

    checks.choice(f.trainable, "finetune.trainable", TRAINABLE, error=ConfigError)
    k = checks.integer(f.freeze_layers, "finetune.freeze_layers", 0, error=ConfigError)
    if f.trainable == "all_but_first" and k < 1:
        raise config_lib.ConfigError(
            "finetune.freeze_layers must be >= 1 with finetune.trainable='all_but_first', got 0"
        )
    checks.boolean(f.reuse_head, "finetune.reuse_head", error=ConfigError)
    for key in ("dropout", "input_dropout"):
        checks.number(f[key], f"finetune.{key}", 0, 1, error=ConfigError)
    sp = checks.number(f.l2_sp, "finetune.l2_sp", 0, math.inf, error=ConfigError)
    if sp == 0 and any("l2sp" in mods for _, mods in parsed):
        raise config_lib.ConfigError("finetune.l2_sp must be > 0 for an arm with +l2sp, got 0")
    if f.reuse_head and tc.pretrained_workdir is None:
        count = lambda name, classes: len(classes) if classes else data.get_spec(name).num_classes
        n_src = count(config.dataset.name, config.dataset.classes)
        n_tgt = count(t.name, t.classes)
        head_is_new(n_src, n_tgt, reuse_head=True)  # raises on different counts
    checks.choice(tc.ticket_head, "transfer.ticket_head", TICKET_HEADS, error=ConfigError)
    r = checks.integer(tc.pretrained_round, "transfer.pretrained_round", 0, error=ConfigError)
    if tc.pretrained_workdir is None and r > int(source_config(config).imp.rounds):
        raise config_lib.ConfigError(
            f"transfer.pretrained_round={r} is past the source's last round "
            f"{source_config(config).imp.rounds}"
        )
    if tc.pretrained_workdir is not None and not os.path.isdir(tc.pretrained_workdir):
        raise config_lib.ConfigError(
            f"transfer.pretrained_workdir {tc.pretrained_workdir!r} is not a directory"
        )


def data_train_size(size):
    """``train_size`` for :func:`lth_jax.data.get_dataset`: ``1.0`` (all) is passed as ``None``."""
    return None if isinstance(size, float) and size == 1.0 else size
