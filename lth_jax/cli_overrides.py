"""How ``lth-jax run`` reads ``--config.KEY=VALUE``: keys checked, values parsed, one-line errors.

The overrides go through ``ml_collections.config_flags`` (absl flags). Before
that, :func:`check_override_keys` refuses a key the config lacks (with the
nearest one), and :func:`explained` makes each key's parser say what it takes.
After it, :func:`drop_other_model_kwargs` clears the ``model.kwargs`` a new
``--config.model.name`` does not take, so a config's kwargs for its own model
do not block switching models on the command line.
"""

from __future__ import annotations

import ast
import difflib
import re

from absl import flags
from ml_collections.config_flags import config_path, tuple_parser

from lth_jax import checks

__all__ = [
    "UsageError",
    "one_line",
    "check_override_keys",
    "explained",
    "absl_error",
    "drop_other_model_kwargs",
]


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


def one_line(text: str) -> str:
    """``text``'s non-empty lines joined by ``"; "``."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


#: An override, as ``config_flags`` finds them (``--config.KEY``, ``--noconfig.KEY``).
_OVERRIDE = re.compile(r"-{1,2}(no)?config\.")


def _keys_and_blocks(config) -> list[str]:
    out = set()
    for key in checks.flatten(config):
        parts = key.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(out)


def _is_block(value) -> bool:
    return value is checks.MISSING or hasattr(value, "keys")


def _override_key(arg: str) -> str:
    """The dotted key of an override argument (``--config.train.steps=10``: ``train.steps``)."""
    return arg.split("=", 1)[0].split(".", 1)[1]


def check_override_keys(config, argv: list[str]) -> None:
    """Every ``--config.KEY`` names a key of ``config`` (``--noconfig.KEY`` a boolean one)."""
    for arg in argv:
        m = _OVERRIDE.match(arg)
        if not m:
            continue
        flag, key = arg.split("=", 1)[0], _override_key(arg)
        if not key:
            raise UsageError(f"{flag}: the key is empty")
        if checks.get(config, key) is checks.MISSING:
            parts = key.split(".")
            leaf = next(
                (
                    p
                    for p in (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1))
                    if not _is_block(checks.get(config, p))
                ),
                None,
            )
            if leaf is not None:
                hint = f"; {leaf} has no keys, it is set whole (--config.{leaf}=VALUE)"
            else:
                near = difflib.get_close_matches(key, _keys_and_blocks(config), n=1)
                hint = f"; did you mean --config.{near[0]}?" if near else ""
            raise UsageError(f"unknown config key {key} in {flag}{hint}")
        if m.group(1) and config_path.get_type(key, config) is not bool:
            raise UsageError(f"{flag}: {key} is not a true/false key")


def _word(text: str):
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def explained(inner):
    """``inner`` (an absl parser) with errors saying what the key takes."""
    if isinstance(inner, flags.BooleanParser):
        expect = "must be true or false"
    elif isinstance(inner, flags.IntegerParser):
        expect = "must be an integer"
    elif isinstance(inner, flags.FloatParser):
        expect = "must be a number"
    elif isinstance(inner, tuple_parser.TupleParser):
        expect = "must be a tuple: a Python literal such as (100, 100), or words a,b"
    else:
        expect = "must be a dict literal such as \"{'key': 1}\""
    words = isinstance(inner, tuple_parser.TupleParser)

    class Explained(flags.ArgumentParser):
        def parse(self, argument):
            if (
                words
                and isinstance(argument, str)
                and "," in argument
                and not any(ch in argument for ch in "()[]{}'\"")
            ):
                return tuple(_word(w) for w in argument.split(",") if w.strip())
            try:
                return inner.parse(argument)
            except (TypeError, ValueError):
                raise ValueError(expect) from None

        def flag_type(self):
            return inner.flag_type()

    return Explained()


def absl_error(e: BaseException) -> str:
    """absl's message for bad flags as one line (``--KEY=VALUE: what it takes``)."""
    msg = one_line(str(e))
    if msg.startswith("flag --"):  # IllegalFlagValueError: "flag --NAME=VALUE: why"
        return msg[len("flag ") :]
    missing = re.match(r"Missing value for flag (\S+)$", msg)
    if missing:
        return f"{missing.group(1)} needs a value ({missing.group(1)}=VALUE)"
    return msg


def drop_other_model_kwargs(config, before: str, argv: list[str]) -> list[str]:
    """Clears the ``model.kwargs`` that a new ``model.name`` does not take; returns their keys.

    ``before``: ``model.name`` as the config file set it; ``argv``: the
    command's arguments. Only when ``--config.model.name`` changed the model:
    a kwarg set on the command line stays (the model check then names it).

    Example:
      >>> import ml_collections
      >>> c = ml_collections.ConfigDict({"model": {"name": "cnn1d", "kwargs": {
      ...     "features": (100, 100), "channels": None}}})
      >>> drop_other_model_kwargs(c, "mlp", ["--config.model.name=cnn1d"])
      ['features']
      >>> c.model.kwargs.features is None
      True
    """
    from lth_jax import models  # here: help and report run without JAX

    name = checks.get(config, "model.name")
    if name == before or not isinstance(name, str) or name not in models.names():
        return []
    given = {_override_key(a) for a in argv if _OVERRIDE.match(a)}
    takes = set(models.kwargs_for(name))
    dropped = []
    for key, value in config.model.kwargs.items():
        if value is not None and key not in takes and f"model.kwargs.{key}" not in given:
            config.model.kwargs[key] = None
            dropped.append(key)
    return dropped
