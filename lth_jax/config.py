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

__all__ = [
    "base_config",
    "default_config",
    "get_config",
    "validate",
    "known_keys",
    "ConfigError",
    "HARMLESS_KEYS",
    "OPEN_KEYS",
]

#: Keys that may differ when a workdir is resumed (they do not change results).
HARMLESS_KEYS = (
    "progress",
    "checkpoint.max_to_keep",
    "checkpoint.every_steps",
    "num_devices",
    "log_every",
    "dataset.data_dir",
)


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
    # Mid-round checkpoints: also save at the end of the first chunk at or after
    # every multiple of this many steps of a round (0 = only at round ends).
    c.checkpoint.every_steps = 0
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

KINDS = ("lottery", "instability", "transfer")
ARMS = ("ticket", "reinit", "random_mask")
REWINDS = ("weights", "lr", "finetune")

#: Config blocks whose keys are free-form (any key below them is accepted):
#: ``imp.layer_rates`` maps regexes to rates, ``model.kwargs`` holds model
#: attributes, ``instability`` is the optional block of that kind.
OPEN_KEYS = ("imp.layer_rates", "model.kwargs", "instability")


class ConfigError(ValueError):
    """A config value is out of range or unknown; the message is one plain line."""

    def __init__(self, msg: str = ""):
        lines = [line.strip() for line in str(msg).splitlines() if line.strip()]
        super().__init__("; ".join(lines))


def _fail(msg: str):
    raise ConfigError(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(c, key: str, lo: int = 0) -> int:
    v = _get(c, key)
    if not _is_int(v) or v < lo:
        _fail(f"{key} must be an integer >= {lo}, got {v!r}")
    return v


def _num(c, key: str, lo: float, hi: float, lo_open=False, hi_open=True) -> float:
    v = _get(c, key)
    ok = _is_num(v) and v == v
    if ok:
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        _fail(f"{key} must be a number in {lb}{lo}, {hi}{rb}, got {v!r}")
    return float(v)


def _bool(c, key: str) -> bool:
    v = _get(c, key)
    if not isinstance(v, bool):
        _fail(f"{key} must be True or False, got {v!r}")
    return v


def _choice(c, key: str, allowed) -> str:
    v = _get(c, key)
    if not isinstance(v, str) or v not in allowed:
        _fail(f"{key} must be one of {', '.join(map(str, allowed))}; got {v!r}")
    return v


def _get(c, key: str):
    node = c
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            _fail(f"config key {key} is missing")
        node = node[part]
    return node


def _flat_keys(d, prefix="") -> list[str]:
    out = []
    for k in d.keys():
        key = f"{prefix}{k}"
        v = d[k]
        if any(key == o for o in OPEN_KEYS):
            out.append(key)
        elif hasattr(v, "keys") and not isinstance(v, str):
            out.extend(_flat_keys(v, key + "."))
        else:
            out.append(key)
    return out


def known_keys() -> list[str]:
    """Every key of :func:`base_config` (open blocks as one key each), sorted."""
    return sorted(set(_flat_keys(base_config())) | set(OPEN_KEYS))


def _check_unknown_keys(c) -> None:
    import difflib

    known = known_keys()
    for key in _flat_keys(c):
        if key in known or any(key.startswith(o + ".") for o in OPEN_KEYS):
            continue
        near = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        _fail(f"unknown config key {key}{hint}")


def validate(c) -> None:
    """Checks every value the runners read; raises :class:`ConfigError`.

    Unknown keys (a typo such as ``train.stpes``) are errors too. Checks needing
    the data or the model (batch size vs. dataset size, ``imp.layer_rates``
    patterns vs. parameter paths, model kwargs) are done by the runner as soon
    as those are known, still before any training.
    """
    import re

    from lth_jax import data, models
    from lth_jax.pruning import SCOPES
    from lth_jax.train import OPTIMIZERS, SCHEDULES

    if not hasattr(c, "keys"):
        _fail(f"the config must be an ml_collections.ConfigDict, got {type(c).__name__}")
    inf = float("inf")
    if c.get("kind") == "transfer":  # its own blocks; it validates its lottery configs here
        from lth_jax import transfer

        transfer.validate(c)
        return
    _check_unknown_keys(c)
    _choice(c, "kind", KINDS)
    _int(c, "seed", 0)
    _int(c, "num_trials", 1)
    _int(c, "num_devices", 0)
    _bool(c, "progress")
    arms = _get(c, "arms")
    if isinstance(arms, str) or not isinstance(arms, (tuple, list)):
        _fail(f"arms must be a list of {', '.join(ARMS)}; got {arms!r}")
    arms = tuple(arms)
    if not arms or any(a not in ARMS for a in arms):
        bad = [a for a in arms if a not in ARMS]
        _fail(f"arms must be a non-empty list of {', '.join(ARMS)}; got {bad or 'none'}")
    if len(set(arms)) != len(arms):
        _fail(f"arms must not repeat an arm, got {list(arms)}")
    if "ticket" not in arms:
        _fail(f"arms must include 'ticket' (IMP prunes the ticket), got {list(arms)}")

    _choice(c, "dataset.name", tuple(data.DATASETS))
    d = c.dataset.data_dir
    if d is not None and (not isinstance(d, str) or not d):
        _fail(f"dataset.data_dir must be a directory path or None, got {d!r}")
    if c.dataset.val_size is not None:
        _int(c, "dataset.val_size", 1)
    if c.dataset.train_size is not None:
        _num(c, "dataset.train_size", 0, inf, lo_open=True)
    _bool(c, "dataset.augment")
    classes = c.dataset.classes
    if classes is not None and (
        isinstance(classes, str)
        or not isinstance(classes, (tuple, list))
        or not classes
        or not all(_is_int(x) and x >= 0 for x in classes)
    ):
        _fail(f"dataset.classes must be None or a list of class labels >= 0, got {classes!r}")
    _choice(c, "model.name", models.names())
    if not hasattr(_get(c, "model.kwargs"), "keys"):
        _fail(f"model.kwargs must be a dict of model attributes, got {c.model.kwargs!r}")

    steps = _int(c, "train.steps", 1)
    _int(c, "train.batch_size", 1)
    every = _int(c, "train.eval_every", 1)
    _int(c, "train.eval_batch_size", 1)
    if steps % every:
        _fail(f"train.eval_every must divide train.steps={steps}, got {every}")

    _choice(c, "optimizer.name", OPTIMIZERS)
    _num(c, "optimizer.learning_rate", 0, inf, lo_open=True)
    _num(c, "optimizer.momentum", 0, 1)
    _bool(c, "optimizer.nesterov")
    _choice(c, "optimizer.schedule", SCHEDULES)
    w = _int(c, "optimizer.warmup_steps", 0)
    if w > steps:
        _fail(f"optimizer.warmup_steps must be <= train.steps={steps}, got {w}")
    bounds = _get(c, "optimizer.step_boundaries")
    if isinstance(bounds, str) or not isinstance(bounds, (tuple, list)):
        _fail(f"optimizer.step_boundaries must be a list of fractions in (0, 1), got {bounds!r}")
    for b in bounds:
        if not _is_num(b) or not 0 < b < 1:
            _fail(f"optimizer.step_boundaries must be fractions in (0, 1), got {b!r}")
    _num(c, "optimizer.step_factor", 0, inf, lo_open=True)
    for key in ("l2", "weight_decay", "l1", "max_norm"):
        _num(c, f"optimizer.{key}", 0, inf)

    rounds = _int(c, "imp.rounds", 0)
    rate = _num(c, "imp.prune_rate", 0, 1)
    if rounds > 0 and rate == 0 and c.imp.one_shot_density is None:
        _fail("imp.prune_rate must be in (0, 1) when imp.rounds > 0, got 0")
    _choice(c, "imp.scope", SCOPES)
    layer_rates = _get(c, "imp.layer_rates")
    if not hasattr(layer_rates, "keys"):
        _fail(f"imp.layer_rates must be a dict {{regex: rate}}, got {layer_rates!r}")
    for pattern, r in dict(layer_rates).items():
        try:
            re.compile(pattern)
        except re.error as e:
            _fail(f"imp.layer_rates: {pattern!r} is not a valid regular expression ({e})")
        if not _is_num(r) or not 0 <= r < 1:
            _fail(f"imp.layer_rates[{pattern!r}] must be a number in [0, 1), got {r!r}")
    k = _int(c, "imp.rewind_step", 0)
    if k >= steps:
        _fail(
            f"imp.rewind_step must be < train.steps={steps} (later rounds train from it to "
            f"train.steps), got {k}"
        )
    if k % every:
        _fail(f"imp.rewind_step must be a multiple of train.eval_every={every}, got {k}")
    _choice(c, "imp.rewind", REWINDS)
    if c.imp.one_shot_density is not None:
        _num(c, "imp.one_shot_density", 0, 1, lo_open=True)
        if rounds != 1:
            _fail(f"imp.one_shot_density needs imp.rounds=1, got {rounds}")
    if c.checkpoint.max_to_keep is not None:
        _int(c, "checkpoint.max_to_keep", 2)
    _int(c, "checkpoint.every_steps", 0)
