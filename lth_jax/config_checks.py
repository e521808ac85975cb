"""Checks of the config values with a structure of their own (see :mod:`lth_jax.config`).

``imp.layer_rates`` (a sequence of ``(regex, rate)`` pairs), ``model.kwargs``
(a block of model attributes, each ``None`` or a value of its declared type)
and the rules tying ``imp.rewind`` to ``arms``, ``imp.finetune_lr`` and the
schedule (:func:`check_rewind`), and the ``gmp`` block (:func:`check_gmp`)
and the ``pai`` block (:func:`check_pai`); :func:`lth_jax.config.validate`
calls them (:func:`check_pai_data` is the runner's, once the data is loaded).
"""

from __future__ import annotations

import math
import re

from lth_jax import checks, gmp, models
from lth_jax.arms import PAI_ARMS
from lth_jax.checks import ConfigError
from lth_jax.optim import make_schedule
from lth_jax.pruning import SCOPES

__all__ = [
    "is_seq",
    "check_layer_rates",
    "check_model_kwargs",
    "check_rewind",
    "check_gmp",
    "check_pai",
    "check_pai_data",
]

#: Fine-tuning at the schedule's last learning rate (``imp.finetune_lr`` unset)
#: needs that rate to be at least this fraction of ``optimizer.learning_rate``.
FINETUNE_MIN_FRACTION = 1e-3


def is_seq(v) -> bool:
    """Whether ``v`` is a tuple or a list."""
    return isinstance(v, tuple | list)


def check_layer_rates(pairs) -> None:
    """Checks ``imp.layer_rates``: (regex, rate) pairs, valid regexes, rates in [0, 1)."""
    example = "(('head', 0.1),)"
    if not is_seq(pairs):
        raise ConfigError(
            f"imp.layer_rates must be a sequence of (regex, rate) pairs such as {example}, "
            f"got {pairs!r}"
        )
    seen = set()
    for entry in pairs:
        if not is_seq(entry) or len(entry) != 2 or not isinstance(entry[0], str):
            raise ConfigError(
                f"imp.layer_rates entries must be (regex, rate) pairs such as {example}, "
                f"got {entry!r}"
            )
        pattern, rate = entry
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(
                f"imp.layer_rates: {pattern!r} is not a valid regular expression ({e})"
            ) from None
        checks.number(rate, f"imp.layer_rates[{pattern!r}]", 0, 1, error=ConfigError)
        if pattern in seen:
            raise ConfigError(f"imp.layer_rates gives the pattern {pattern!r} twice")
        seen.add(pattern)


def check_model_kwargs(c, model_name: str, types: dict) -> None:
    """Checks ``c.model.kwargs``: set values have their ``types``; ``model_name`` takes them."""
    kwargs = c.model.kwargs
    if not hasattr(kwargs, "keys"):
        raise ConfigError(f"model.kwargs must be a block of model attributes, got {kwargs!r}")
    for key, value in kwargs.items():
        name, want = f"model.kwargs.{key}", types[key]
        if value is None:
            continue
        if want is int:
            checks.integer(value, name, 0, error=ConfigError)
        elif want is float:
            lo, hi = (0, 1) if key.endswith("dropout") else (0, math.inf)
            checks.number(value, name, lo, hi, error=ConfigError)
        elif want is bool:
            checks.boolean(value, name, error=ConfigError)
        elif want is str and not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        elif want is tuple and not is_seq(value):
            raise ConfigError(f"{name} must be a tuple such as (100, 100), got {value!r}")
    valid = models.kwargs_for(model_name)
    for key in (k for k, v in kwargs.items() if v is not None):
        if key not in valid:
            raise ConfigError(
                f"model.kwargs.{key} is not an attribute of model {model_name!r}; "
                f"its attributes are {', '.join(valid)}"
            )


def check_rewind(c, arms, rewind: str, finetune_lr, steps: int) -> None:
    """Checks the rules of ``imp.rewind`` with ``arms`` and ``imp.finetune_lr``.

    * ``reinit`` is refused with ``imp.rewind`` ``lr`` or ``finetune``: those
      retrain the pruned *trained* network from step ``imp.rewind_step``, and
      a fresh initialization trained for that budget only controls nothing
      (the re-init control is a run with ``imp.rewind=weights``).
    * ``imp.finetune_lr`` (a rate > 0) is read only with ``imp.rewind=finetune``.
    * ``imp.rewind=finetune`` without ``imp.finetune_lr`` trains at the
      schedule's rate at the last step, ``make_schedule(optimizer,
      train.steps)(train.steps - 1)``; it is refused when that is below
      :data:`FINETUNE_MIN_FRACTION` of ``optimizer.learning_rate`` (cosine or
      linear decay to 0, steep step decays): almost no training at all.
    """
    if "reinit" in arms and rewind != "weights":
        raise ConfigError(
            f"arms: 'reinit' is not defined with imp.rewind={rewind} (it would train a fresh "
            "initialization for the retraining budget only); leave it out of arms (random_mask "
            "is this mode's control) and run imp.rewind=weights for the re-init control"
        )
    if finetune_lr is not None:
        if rewind != "finetune":
            raise ConfigError(
                f"imp.finetune_lr is read only with imp.rewind=finetune, got imp.rewind={rewind}; "
                "leave imp.finetune_lr unset"
            )
        checks.number(finetune_lr, "imp.finetune_lr", 0, math.inf, lo_open=True, error=ConfigError)
    elif rewind == "finetune":
        base = float(c.optimizer.learning_rate)
        last = float(make_schedule(c.optimizer, steps)(steps - 1))
        if last < FINETUNE_MIN_FRACTION * base:
            raise ConfigError(
                f"imp.rewind=finetune trains at the schedule's last learning rate, {last:.3g} "
                f"(optimizer.schedule={c.optimizer.get('schedule')}, below "
                f"{FINETUNE_MIN_FRACTION:g} x optimizer.learning_rate={base:g}): set "
                "imp.finetune_lr to the rate to fine-tune at"
            )


def check_gmp(c, arms, rewind: str, defaults) -> None:
    """Checks the ``gmp`` block (the ``gmp`` arm, :mod:`lth_jax.gmp`).

    * ``gmp.start`` in ``[0, 1)``, ``gmp.end`` in ``(0, 1]``, ``start < end``,
      ``gmp.every`` an integer ``>= 1``;
    * with the ``gmp`` arm: ``imp.rewind=weights`` (the arm starts dense from
      the rewind point), and a window of at least one step once rounded to
      steps of the round (``imp.rewind_step`` to ``train.steps``);
    * without it: every ``gmp`` key at its default (``defaults``), since no
      other arm reads them.
    """
    g = c.gmp
    start = checks.number(g.start, "gmp.start", 0, 1, hi_open=True, error=ConfigError)
    end = checks.number(g.end, "gmp.end", 0, 1, lo_open=True, hi_open=False, error=ConfigError)
    checks.integer(g.every, "gmp.every", 1, error=ConfigError)
    if start >= end:
        raise ConfigError(f"gmp.start must be < gmp.end, got {start} and {end}")
    if gmp.ARM not in arms:
        for key, default in defaults.items():
            if g[key] != default:
                raise ConfigError(
                    f"gmp.{key}={g[key]!r} is read only by the arm 'gmp': add it to arms, "
                    f"or leave gmp.{key} at its default {default!r}"
                )
        return
    if rewind != "weights":
        raise ConfigError(
            f"arms: 'gmp' is defined with imp.rewind=weights only (it trains dense from the "
            f"rewind point and prunes while training), got imp.rewind={rewind}"
        )
    k, steps = int(c.imp.rewind_step), int(c.train.steps)
    t0, t1 = gmp.window(start, end, k, steps)
    if t1 <= t0:
        raise ConfigError(
            f"gmp.start={start} and gmp.end={end} give no pruning step in a round of "
            f"{steps - k} steps; widen the window"
        )


def check_pai(c, arms, rewind: str, defaults) -> None:
    """Checks the ``pai`` block (the pruning-at-initialization arms, :mod:`lth_jax.saliency`).

    * ``pai.scope`` ``layerwise`` or ``global``, ``pai.batch_size`` and
      ``pai.synflow_iterations`` integers ``>= 1``, ``pai.grasp_temperature`` a number ``> 0``;
    * with a ``snip``, ``grasp`` or ``synflow`` arm (or their ``_shuffled`` /
      ``_reinit``): ``imp.rewind=weights`` (they prune the weights the ticket
      rewinds to; ``lr`` and ``finetune`` keep trained weights);
    * without one: every ``pai`` key at its default (``defaults``), since no
      other arm reads them. ``pai.batch_size`` against the training set:
      :func:`check_pai_data`, once the data is loaded.
    """
    p = c.pai
    checks.choice(p.scope, "pai.scope", SCOPES, error=ConfigError)
    checks.integer(p.batch_size, "pai.batch_size", 1, error=ConfigError)
    checks.integer(p.synflow_iterations, "pai.synflow_iterations", 1, error=ConfigError)
    checks.number(p.grasp_temperature, "pai.grasp_temperature", 0, lo_open=True, error=ConfigError)
    used = [a for a in arms if a in PAI_ARMS]
    if not used:
        for key, default in defaults.items():
            if p[key] != default:
                raise ConfigError(
                    f"pai.{key}={p[key]!r} is read only by the arms {', '.join(PAI_ARMS[::3])} "
                    f"and their _shuffled/_reinit checks: add one to arms, or leave pai.{key} "
                    f"at its default {default!r}"
                )
    elif rewind != "weights":
        raise ConfigError(
            f"arms: {used[0]!r} prunes the weights the ticket rewinds to and needs "
            f"imp.rewind=weights, got imp.rewind={rewind}"
        )


def check_pai_data(c, n_train: int) -> None:
    """Refuses a ``pai.batch_size`` above ``n_train`` when a SNIP or GraSP arm draws its batch."""
    if any(a.split("_")[0] in ("snip", "grasp") for a in c.arms) and c.pai.batch_size > n_train:
        raise ConfigError(
            f"pai.batch_size must be <= the training set size ({n_train} examples of "
            f"{c.dataset.name}), got {c.pai.batch_size}"
        )
