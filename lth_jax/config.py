"""Experiment configs: the base ConfigDict every preset starts from.

``base_config()`` holds every key the runners read, with defaults that are
no-ops where that makes sense (no regularization, no dropout, rewind to
initialization). The embedded default experiment, what ``lth-jax run`` runs
with no ``--config``, is :func:`default_config`: IMP on MNIST-1D with an MLP,
ticket vs random re-initialization vs random mask, 4 trials, rounds down to
about 5% of weights, a few minutes on 2 CPU cores, no download.

Presets under ``experiments/configs/`` define ``get_config()`` that starts
from ``base_config()`` and overrides keys. Any key can be overridden from the
command line: ``--config.imp.rounds=5``.
"""

from __future__ import annotations

import ml_collections

__all__ = ["base_config", "default_config", "get_config", "HARMLESS_KEYS"]

#: Keys that may differ when a workdir is resumed (they do not change results).
HARMLESS_KEYS = ("progress", "checkpoint.max_to_keep", "num_devices", "log_every")


def base_config() -> ml_collections.ConfigDict:
    """Every config key with its default. See the README for their meaning."""
    c = ml_collections.ConfigDict()
    c.kind = "lottery"  # lottery | instability
    c.seed = 0
    c.num_trials = 1
    c.arms = ("ticket", "reinit", "random_mask")
    c.progress = True
    c.num_devices = 0  # 0: every local device

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "mnist1d"
    c.dataset.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.dataset.val_size = ml_collections.FieldReference(None, field_type=int)
    c.dataset.train_size = ml_collections.FieldReference(None, field_type=float)
    c.dataset.augment = False
    c.dataset.classes = ml_collections.FieldReference(None, field_type=tuple)

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"
    c.model.kwargs = ml_collections.ConfigDict()

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 100
    c.train.eval_every = 100
    c.train.eval_batch_size = 1000

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # sgd | momentum | adam | adamw
    c.optimizer.learning_rate = 1e-3
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.schedule = "constant"  # constant | cosine | step | linear
    c.optimizer.warmup_steps = 0
    c.optimizer.step_boundaries = ()  # fractions of train.steps, for 'step'
    c.optimizer.step_factor = 0.1
    c.optimizer.l2 = 0.0  # coupled L2 (gradient of l2/2 ||w||^2), before the optimizer
    c.optimizer.weight_decay = 0.0  # decoupled, after the optimizer (AdamW)
    c.optimizer.l1 = 0.0  # proximal L1 (exact zeros), last in the chain
    c.optimizer.max_norm = 0.0  # max-norm of each unit's incoming weights; 0 = off

    c.imp = ml_collections.ConfigDict()
    c.imp.rounds = 5
    c.imp.prune_rate = 0.2
    c.imp.scope = "layerwise"  # layerwise | global
    c.imp.layer_rates = ml_collections.ConfigDict()  # {regex: rate}
    c.imp.rewind_step = 0
    c.imp.rewind = "weights"  # weights | lr | finetune
    c.imp.one_shot_density = ml_collections.FieldReference(None, field_type=float)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.max_to_keep = ml_collections.FieldReference(None, field_type=int)
    return c


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
    c.imp.layer_rates = ml_collections.ConfigDict({"head": 0.1})
    return c


def get_config() -> ml_collections.ConfigDict:
    """Alias of :func:`default_config`, so this file works as ``--config``."""
    return default_config()


# ----------------------------------------------------------------------------- validation

KINDS = ("lottery", "instability")
ARMS = ("ticket", "reinit", "random_mask")
REWINDS = ("weights", "lr", "finetune")


class ConfigError(ValueError):
    """A config value is out of range or unknown; the message is one plain line."""


def _fail(msg: str):
    raise ConfigError(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(c, key: str, lo: int = 0) -> int:
    v = _get(c, key)
    if not _is_int(v) or v < lo:
        _fail(f"{key} must be an integer >= {lo}, got {v!r}")
    return v


def _num(c, key: str, lo: float, hi: float, lo_open=False, hi_open=True) -> float:
    v = _get(c, key)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    if ok:
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        _fail(f"{key} must be a number in {lb}{lo}, {hi}{rb}, got {v!r}")
    return float(v)


def _choice(c, key: str, allowed) -> str:
    v = _get(c, key)
    if v not in allowed:
        _fail(f"{key} must be one of {', '.join(map(str, allowed))}; got {v!r}")
    return v


def _get(c, key: str):
    node = c
    for part in key.split("."):
        if part not in node:
            _fail(f"config key {key} is missing")
        node = node[part]
    return node


def validate(c) -> None:
    """Checks every value the runners read; raises :class:`ConfigError`.

    Checks needing the data or the model (batch size vs. dataset size,
    ``imp.layer_rates`` patterns vs. parameter paths) are done by the runner as
    soon as those are known, still before any training.
    """
    from lth_jax import data, models
    from lth_jax.pruning import SCOPES
    from lth_jax.train import OPTIMIZERS, SCHEDULES

    inf = float("inf")
    _choice(c, "kind", KINDS)
    _int(c, "seed", 0)
    _int(c, "num_trials", 1)
    _int(c, "num_devices", 0)
    arms = tuple(_get(c, "arms"))
    if not arms or any(a not in ARMS for a in arms):
        bad = [a for a in arms if a not in ARMS]
        _fail(f"arms must be a non-empty list of {', '.join(ARMS)}; got {bad or 'none'}")
    if len(set(arms)) != len(arms):
        _fail(f"arms must not repeat an arm, got {list(arms)}")
    if "ticket" not in arms:
        _fail(f"arms must include 'ticket' (IMP prunes the ticket), got {list(arms)}")

    _choice(c, "dataset.name", tuple(data.DATASETS))
    if c.dataset.val_size is not None:
        _int(c, "dataset.val_size", 1)
    if c.dataset.train_size is not None:
        _num(c, "dataset.train_size", 0, inf, lo_open=True)
    _choice(c, "model.name", models.names())

    steps = _int(c, "train.steps", 1)
    _int(c, "train.batch_size", 1)
    every = _int(c, "train.eval_every", 1)
    _int(c, "train.eval_batch_size", 1)
    if steps % every:
        _fail(f"train.eval_every must divide train.steps={steps}, got {every}")

    _choice(c, "optimizer.name", OPTIMIZERS)
    _num(c, "optimizer.learning_rate", 0, inf, lo_open=True)
    _num(c, "optimizer.momentum", 0, 1)
    _choice(c, "optimizer.schedule", SCHEDULES)
    w = _int(c, "optimizer.warmup_steps", 0)
    if w > steps:
        _fail(f"optimizer.warmup_steps must be <= train.steps={steps}, got {w}")
    for b in c.optimizer.step_boundaries:
        if not isinstance(b, (int, float)) or not 0 < b < 1:
            _fail(f"optimizer.step_boundaries must be fractions in (0, 1), got {b!r}")
    _num(c, "optimizer.step_factor", 0, inf, lo_open=True)
    for key in ("l2", "weight_decay", "l1", "max_norm"):
        _num(c, f"optimizer.{key}", 0, inf)

    rounds = _int(c, "imp.rounds", 0)
    rate = _num(c, "imp.prune_rate", 0, 1)
    if rounds > 0 and rate == 0 and c.imp.one_shot_density is None:
        _fail("imp.prune_rate must be in (0, 1) when imp.rounds > 0, got 0")
    _choice(c, "imp.scope", SCOPES)
    for pattern, r in dict(c.imp.layer_rates).items():
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 <= r < 1:
            _fail(f"imp.layer_rates[{pattern!r}] must be a number in [0, 1), got {r!r}")
    k = _int(c, "imp.rewind_step", 0)
    if k > steps:
        _fail(f"imp.rewind_step must be <= train.steps={steps}, got {k}")
    if k % every:
        _fail(f"imp.rewind_step must be a multiple of train.eval_every={every}, got {k}")
    _choice(c, "imp.rewind", REWINDS)
    if c.imp.one_shot_density is not None:
        _num(c, "imp.one_shot_density", 0, 1, lo_open=True)
        if rounds != 1:
            _fail(f"imp.one_shot_density needs imp.rounds=1, got {rounds}")
    if c.checkpoint.max_to_keep is not None:
        _int(c, "checkpoint.max_to_keep", 2)
