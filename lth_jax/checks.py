"""Value checks and dotted keys: the one place inputs are checked and nested keys are walked.

Every check takes the value and the name to show, returns the value (as the
right Python type) and raises ``error`` (``ValueError`` unless told otherwise;
the config uses :class:`ConfigError`) with one plain line naming the value and
what is allowed::

    >>> number(0.5, "imp.prune_rate", 0, 1)
    0.5
    >>> integer(-1, "seed")
    Traceback (most recent call last):
    ...
    ValueError: seed must be an integer >= 0, got -1

Booleans are never numbers here (``True`` is not an integer ``1``), NaN is in
no range. Dotted keys (``"imp.prune_rate"``) walk nested mappings and
``ConfigDict`` s: :func:`get`, :func:`set_value`, :func:`flatten`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ConfigError",
    "with_detail",
    "first_line",
    "is_int",
    "is_number",
    "integer",
    "number",
    "boolean",
    "choice",
    "MISSING",
    "get",
    "set_value",
    "flatten",
]


class ConfigError(ValueError):
    """A config value is out of range or unknown; the message is one plain line.

    ``detail``: further lines, such as the steps that fix it, which the CLI prints as they
    are under the error's line (``str(error)`` is that line alone). :func:`with_detail`
    makes one from a multi-line message; raise it ``from`` that error, so a traceback
    shows the whole message too.
    """

    def __init__(self, msg: str = "", detail: str = ""):
        lines = [line.strip() for line in str(msg).splitlines() if line.strip()]
        super().__init__("; ".join(lines))
        self.detail = str(detail).strip("\n")


def with_detail(e: BaseException, prefix: str = "", cls: type = ConfigError) -> ConfigError:
    """A :class:`ConfigError` (or subclass ``cls``) of ``e``'s message: its first line the
    error's, after ``prefix``, and the rest the error's ``detail``.

    Example:
      >>> e = with_detail(RuntimeError("no data\\n  put the files in d/"), "target: ")
      >>> str(e), e.detail
      ('target: no data', '  put the files in d/')
    """
    lines = [line.rstrip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return cls(prefix + type(e).__name__)
    return cls(prefix + lines[0].strip(), detail="\n".join(lines[1:]))


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of ``e``'s message (cut at ``limit`` characters), or its type.

    Example:
      >>> first_line(ValueError("shapes differ\\nmore detail"))
      'shapes differ'
    """
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(e).__name__


def is_int(v) -> bool:
    """Whether ``v`` is a Python or numpy integer (not a bool)."""
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def is_number(v) -> bool:
    """Whether ``v`` is a real Python or numpy number (int or float, not a bool)."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def integer(value, name: str, lo: int = 0, error: type[Exception] = ValueError) -> int:
    """``value`` if it is an integer ``>= lo``."""
    if not is_int(value) or value < lo:
        raise error(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _interval(lo, hi, lo_open, hi_open) -> str:
    return f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def number(
    value,
    name: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
    hi_open: bool = True,
    error: type[Exception] = ValueError,
) -> float:
    """``float(value)`` if it is a real number in the interval (``[lo, hi)`` by default).

    ``hi = inf`` with ``hi_open`` means finite; the message names the interval.
    """
    ok = is_number(value) and value == value
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise error(
            f"{name} must be a number in {_interval(lo, hi, lo_open, hi_open)}, got {value!r}"
        )
    return float(value)


def boolean(value, name: str, error: type[Exception] = ValueError) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {value!r}")
    return value


def choice(value, name: str, allowed: Sequence[str], error: type[Exception] = ValueError) -> str:
    """``value`` if it is one of the strings ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise error(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    return value


# ----------------------------------------------------------------------------- dotted keys

#: Returned by :func:`get` for a key that is not there, when no default is given
#: (one object: a pickled copy is this one again).
MISSING: Any = type(
    "Missing", (), {"__repr__": lambda self: "<missing>", "__reduce__": lambda self: "MISSING"}
)()


def _is_mapping(node) -> bool:
    return isinstance(node, Mapping) or (hasattr(node, "keys") and not isinstance(node, str))


def get(tree, key: str, default: Any = MISSING):
    """The value at the dotted ``key`` of nested mappings, or ``default``.

    Example:
      >>> get({"imp": {"rounds": 3}}, "imp.rounds"), get({"imp": {}}, "imp.rounds", None)
      (3, None)
    """
    node = tree
    for part in key.split("."):
        if not _is_mapping(node) or part not in node:
            return default
        node = node[part]
    return node


def set_value(tree, key: str, value) -> None:
    """Sets the dotted ``key`` of nested mappings (the parents must exist).

    Raises:
      KeyError: a parent is missing or not a mapping.
    """
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        if not _is_mapping(node) or part not in node:
            raise KeyError(key)
        node = node[part]
    node[leaf] = value


def flatten(tree, prefix: str = "", keep: Sequence[str] = ()) -> dict[str, Any]:
    """``{dotted key: value}`` of the leaves of nested mappings.

    Blocks named in ``keep`` (dotted) stay whole, as one value.

    Example:
      >>> flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}}, keep=("b.d",))
      {'a': 1, 'b.c': 2, 'b.d': {'e': 3}}
    """
    out: dict[str, Any] = {}
    for k in tree.keys():
        key = f"{prefix}{k}"
        v = tree[k]
        if _is_mapping(v) and key not in keep:
            out.update(flatten(v, key + ".", keep))
        else:
            out[key] = v
    return out
