"""Experiment configs: the base ConfigDict every preset starts from.

``base_config()`` declares every key the runners read, with its type and a
default that is a no-op where that makes sense (no regularization, no dropout,
rewind to initialization). The embedded default experiment, what ``lth-jax
run`` runs with no ``--config``, is :func:`default_config`: IMP on MNIST-1D
with an MLP, ticket vs random re-initialization vs random mask, 4 trials,
rounds down to about 5% of weights, a few minutes on 2 CPU cores, no download.

Presets under ``lth_jax/configs/`` define ``get_config()`` that starts
from ``base_config()`` and overrides keys. Any key can be overridden from the
command line: ``--config.imp.rounds=5``. A key that is not declared is an
error (with the nearest declared key), in a config file as on the command line.

Some keys have a structure of their own:

* ``imp.layer_rates``: per-layer pruning rates, an ordered sequence of
  ``(regex, rate)`` pairs such as ``(("Conv_", 0.15), ("head", 0.1))``
  (default ``()``). A prunable leaf takes the rate of the *first* pattern, in
  the order written, that matches its path (see :mod:`lth_jax.pruning`).
* ``model.kwargs``: the model attributes of :data:`MODEL_KWARGS`, each
  ``None`` by default, meaning "the model's default";
  :func:`model_kwargs` gives those set, as keyword arguments for
  :func:`lth_jax.models.get`.
* ``instability.num_points`` (points on the interpolation path, default 11)
  and ``instability.batch_norm`` (``recompute``, the default, or
  ``interpolate``: the running statistics of each interpolated network, see
  :mod:`lth_jax.instability`): read by the ``instability`` kind only; another
  kind leaves the block as it is.

``imp.rewind`` ties other keys (:func:`lth_jax.config_checks.check_rewind`):
the ``reinit`` arm needs ``imp.rewind=weights``; ``imp.finetune_lr`` (default
``None``) is the constant rate of ``imp.rewind=finetune`` and is read by no
other mode; without it fine-tuning trains at the schedule's last rate, which
must then be at least 1e-3 of ``optimizer.learning_rate``. The ``gmp`` block
(``start``, ``end``, ``every``) is read by the ``gmp`` arm only
(:func:`lth_jax.config_checks.check_gmp`); the ``pai`` block (``scope``,
``batch_size``, ``synflow_iterations``) by the pruning-at-initialization arms
only (``snip``, ``grasp``, ``synflow`` and their checks; ``check_pai``).

``seed`` and ``seed + num_trials - 1`` (a transfer trial t seeds with seed + t)
are in ``[0, 2^32)``: JAX keys hold 32-bit seeds (:data:`lth_jax.rng.SEED_LIMIT`).

``config.json`` files written before these keys were declared hold
``imp.layer_rates`` as a ``{regex: rate}`` object and only the
``model.kwargs`` that were set; :func:`upgrade_json` converts them.
"""

from __future__ import annotations

import difflib
import math
import os

import ml_collections

from lth_jax import arms, checks, data, events, fused_adam, models, rng
from lth_jax import workdir as wd
from lth_jax.checks import ConfigError
from lth_jax.config_base import MODEL_KWARGS, base_config, upgrade_json
from lth_jax.config_checks import (
    check_gmp,
    check_layer_rates,
    check_model_kwargs,
    check_pai,
    check_rewind,
    is_seq,
)
from lth_jax.curves import EARLY_STOP_METRICS
from lth_jax.optim import OPTIMIZERS, SCHEDULES
from lth_jax.pruning import SCOPES

__all__ = [
    "base_config",
    "default_config",
    "get_config",
    "validate",
    "known_keys",
    "model_kwargs",
    "upgrade_json",
    "ConfigError",
    "HARMLESS_KEYS",
    "MODEL_KWARGS",
]

#: Keys that may differ when a workdir is resumed (they do not change results).
HARMLESS_KEYS = wd.HARMLESS_KEYS


def default_config() -> ml_collections.ConfigDict:
    """The embedded default: IMP on MNIST-1D, runs offline in a few minutes.

    MLP 40-100-100-10, Adam 1e-3, batch 100, 3,000 steps (75 epochs of the 4,000
    training examples less 500 for validation), layerwise pruning of 20% per
    round and 10% of the output layer, rewinding to initialization, 13 rounds
    (down to about 5.5% of the hidden weights), 4 trials.
    """
    c = base_config()
    c.num_trials = 4
    c.model.name = "mlp"
    c.model.kwargs.features = (100, 100)
    c.train.steps = 3000
    c.train.batch_size = 100
    c.train.eval_every = 100
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.imp.rounds = 13
    c.imp.prune_rate = 0.2
    c.imp.layer_rates = (("head", 0.1),)
    return c


def get_config() -> ml_collections.ConfigDict:
    """Alias of :func:`default_config`, so this file works as ``--config``."""
    return default_config()


# ----------------------------------------------------------------------------- model kwargs


def _plain(value):
    """``value`` with every list or tuple, at any depth, a tuple."""
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def model_kwargs(config) -> dict:
    """The ``model.kwargs`` that are set (not ``None``), as plain Python values.

    Sequences are tuples (also when the config was read back from JSON lists).
    These are the keyword arguments of :func:`lth_jax.models.get` besides
    ``num_classes``.

    Example:
      >>> c = default_config()
      >>> model_kwargs(c)
      {'features': (100, 100)}
    """
    kwargs = config.model.kwargs
    return {k: _plain(v) for k, v in kwargs.items() if v is not None}


# ----------------------------------------------------------------------------- old config.json


# ----------------------------------------------------------------------------- validation

KINDS = ("lottery", "instability")
ARMS = arms.LOTTERY_ARMS
REWINDS = ("weights", "lr", "finetune")
BATCH_NORM = ("recompute", "interpolate")


def known_keys() -> list[str]:
    """Every key of :func:`base_config` (dotted, leaves only), sorted."""
    return sorted(checks.flatten(base_config()))


def _check_unknown_keys(c) -> None:
    known = known_keys()
    names = set(known)
    # A block where a key is declared (an old-style {regex: rate}) stays one key:
    # its check says what the key must be.
    for key in checks.flatten(c, keep=known):
        if key not in names:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigError(f"unknown config key {key}{hint}")


def validate(c) -> None:
    """Checks every value the runners read; raises :class:`ConfigError`.

    Handles the ``lottery`` and ``instability`` kinds; a ``transfer`` config
    is validated by ``lth_jax.transfer.config.validate``. Unknown keys (a typo
    such as ``train.stpes``) are errors too. Checks needing the data or the
    model (batch size vs. dataset size, ``imp.layer_rates`` patterns vs.
    parameter paths, model attribute values) are done by the runner as soon as
    those are known, still before any training.
    """
    if not hasattr(c, "keys"):
        raise ConfigError(
            f"the config must be an ml_collections.ConfigDict, got {type(c).__name__}"
        )
    if c.get("kind") == "transfer":
        raise ConfigError(
            "kind 'transfer' configs are validated by lth_jax.transfer.config.validate"
        )
    _check_unknown_keys(c)

    def value(key):
        v = checks.get(c, key)
        if v is checks.MISSING:
            raise ConfigError(f"config key {key} is missing")
        return v

    def check(fn, key, *args, **kwargs):
        return fn(value(key), key, *args, error=ConfigError, **kwargs)

    inf = math.inf
    kind = check(checks.choice, "kind", KINDS)
    seed, top = value("seed"), rng.SEED_LIMIT - 1
    if not checks.is_int(seed) or not 0 <= seed <= top:
        raise ConfigError(f"seed must be an integer in [0, {top}] (2^32 - 1), got {seed!r}")
    trials = check(checks.integer, "num_trials", 1)
    if seed + trials - 1 > top:  # a transfer trial t seeds its data with seed + t
        raise ConfigError(f"seed + num_trials - 1 must be <= {top}, got {seed} + {trials} - 1")
    check(checks.integer, "num_devices", 0)
    check(checks.boolean, "progress")
    arms = value("arms")
    if not is_seq(arms):
        raise ConfigError(f"arms must be a list of {', '.join(ARMS)}; got {arms!r}")
    arms = tuple(arms)
    if not arms or any(a not in ARMS for a in arms):
        bad = [a for a in arms if a not in ARMS]
        raise ConfigError(
            f"arms must be a non-empty list of {', '.join(ARMS)}; got {bad or 'none'}"
        )
    if len(set(arms)) != len(arms):
        raise ConfigError(f"arms must not repeat an arm, got {list(arms)}")
    if "ticket" not in arms:
        raise ConfigError(f"arms must include 'ticket' (IMP prunes the ticket), got {list(arms)}")

    check(checks.choice, "dataset.name", tuple(data.DATASETS))
    d = value("dataset.data_dir")
    if d is not None and (not isinstance(d, str) or not d):
        raise ConfigError(f"dataset.data_dir must be a directory path or None, got {d!r}")
    if value("dataset.val_size") is not None:
        check(checks.integer, "dataset.val_size", 1)
    if value("dataset.train_size") is not None:
        check(checks.number, "dataset.train_size", 0, inf, lo_open=True)
    check(checks.boolean, "dataset.augment")
    classes = value("dataset.classes")
    if classes is not None and (
        not is_seq(classes) or not classes or not all(checks.is_int(x) and x >= 0 for x in classes)
    ):
        raise ConfigError(
            f"dataset.classes must be None or a list of class labels >= 0, got {classes!r}"
        )
    model_name = check(checks.choice, "model.name", models.names())
    check_model_kwargs(c, model_name, MODEL_KWARGS)

    steps = check(checks.integer, "train.steps", 1)
    check(checks.integer, "train.batch_size", 1)
    every = check(checks.integer, "train.eval_every", 1)
    check(checks.integer, "train.eval_batch_size", 1)
    check(checks.choice, "train.early_stop_metric", EARLY_STOP_METRICS)
    if steps % every:
        raise ConfigError(f"train.eval_every must divide train.steps={steps}, got {every}")

    check(checks.choice, "optimizer.name", OPTIMIZERS)
    check(checks.number, "optimizer.learning_rate", 0, inf, lo_open=True)
    check(checks.number, "optimizer.momentum", 0, 1)
    check(checks.boolean, "optimizer.nesterov")
    check(checks.choice, "optimizer.schedule", SCHEDULES)
    w = check(checks.integer, "optimizer.warmup_steps", 0)
    if w > steps:
        raise ConfigError(f"optimizer.warmup_steps must be <= train.steps={steps}, got {w}")
    bounds = value("optimizer.step_boundaries")
    if not is_seq(bounds):
        raise ConfigError(
            f"optimizer.step_boundaries must be a list of fractions in (0, 1), got {bounds!r}"
        )
    for b in bounds:
        if not checks.is_number(b) or not 0 < b < 1:
            raise ConfigError(f"optimizer.step_boundaries must be fractions in (0, 1), got {b!r}")
    check(checks.number, "optimizer.step_factor", 0, inf, lo_open=True)
    check(checks.boolean, "optimizer.max_norm_head")
    for key in ("l2", "weight_decay", "l1", "max_norm"):
        check(checks.number, f"optimizer.{key}", 0, inf)
    if check(checks.boolean, "optimizer.fused_adam_cpu"):
        try:
            fused_adam.check(c.optimizer)
        except fused_adam.Unusable as e:
            raise ConfigError(str(e)) from None

    rounds = check(checks.integer, "imp.rounds", 0)
    rate = check(checks.number, "imp.prune_rate", 0, 1)
    one_shot = value("imp.one_shot_density")
    if rounds > 0 and rate == 0 and one_shot is None:
        raise ConfigError("imp.prune_rate must be in (0, 1) when imp.rounds > 0, got 0")
    check(checks.choice, "imp.scope", SCOPES)
    check_layer_rates(value("imp.layer_rates"))
    k = check(checks.integer, "imp.rewind_step", 0)
    if k >= steps:
        raise ConfigError(
            f"imp.rewind_step must be < train.steps={steps} (later rounds train from it to "
            f"train.steps), got {k}"
        )
    if k % every:
        raise ConfigError(
            f"imp.rewind_step must be a multiple of train.eval_every={every}, got {k}"
        )
    rewind = check(checks.choice, "imp.rewind", REWINDS)
    check_rewind(c, arms, rewind, value("imp.finetune_lr"), steps)
    check_gmp(c, arms, rewind, base_config().gmp)
    check_pai(c, arms, rewind, base_config().pai)
    if one_shot is not None:
        check(checks.number, "imp.one_shot_density", 0, 1, lo_open=True)
        if rounds != 1:
            raise ConfigError(f"imp.one_shot_density needs imp.rounds=1, got {rounds}")
    check(checks.integer, "instability.num_points", 2)
    check(checks.choice, "instability.batch_norm", BATCH_NORM)
    for key, default in checks.flatten(base_config().instability, "instability.").items():
        if kind != "instability" and value(key) != default:
            raise ConfigError(
                f"{key}={value(key)!r} is read only by kind 'instability': set "
                f"--config.kind=instability, or leave {key} at its default {default!r}"
            )
    if value("checkpoint.max_to_keep") is not None:
        check(checks.integer, "checkpoint.max_to_keep", 2)
    check(checks.integer, "checkpoint.every_steps", 0)
    check(checks.boolean, "log.tensorboard")
    check(checks.boolean, "log.wandb")
    check(checks.boolean, "log.lines")
    events.check(c)  # log.wandb without the wandb package


def check_drift(
    workdir: str,
    config,
    base=None,
    growable=("imp.rounds",),
    results=("metrics.jsonl", "checkpoints"),
) -> None:
    """Refuses ``workdir`` if it holds a run of a config whose results would differ.

    :func:`lth_jax.workdir.check_config_drift` with this module's rules: the
    keys of :data:`HARMLESS_KEYS` may differ, ``config.json`` files of older
    versions are upgraded first (:func:`upgrade_json`), a key one side lacks
    counts only when the other side's value is not its default in ``base``
    (default :func:`base_config`), and the keys in ``growable`` may grow
    (``imp.rounds``: the run is extended). A workdir with ``results`` but no
    ``config.json`` is refused.

    Raises:
      ConfigError: naming the differing keys, with both values.
    """
    try:
        wd.check_config_drift(
            workdir,
            wd.config_to_json(config),
            defaults=wd.config_to_json(base_config() if base is None else base),
            harmless=HARMLESS_KEYS,
            growable=growable,
            upgrade=upgrade_json,
            results=results,
        )
    except wd.DriftError as e:
        # A config.json written before the key: upgrade_json read its GraSP arms' temperature as 1.
        if not any(k == "pai.grasp_temperature" and a == 1.0 for k, a, _ in e.differences):
            raise
        saved = wd.read_json(os.path.join(workdir, wd.CONFIG)) or {}
        if "grasp_temperature" in saved.get("pai", {}):
            raise
        why = "its GraSP arms ran at temperature 1 (before pai.grasp_temperature existed)"
        advice = f"--config.pai.grasp_temperature=1 resumes it; or {e.advice}"
        raise wd.DriftError(f"{e.problem}: {why}", advice, e.differences) from None
