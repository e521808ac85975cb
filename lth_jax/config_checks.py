"""Checks of the config values with a structure of their own (see :mod:`lth_jax.config`).

``imp.layer_rates`` (a sequence of ``(regex, rate)`` pairs) and
``model.kwargs`` (a block of model attributes, each ``None`` or a value of
its declared type); :func:`lth_jax.config.validate` calls them.
"""

from __future__ import annotations

import math
import re

from lth_jax import checks, models
from lth_jax.checks import ConfigError

__all__ = ["is_seq", "check_layer_rates", "check_model_kwargs"]


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
