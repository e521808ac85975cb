"""The experiment kinds: ``{kind: (config, validate, check_drift, run, report)}``, read by the CLI.

A config's ``kind`` names its row. Each field is a function:

* ``config()``: the base config of the kind (every key with its default);
* ``validate(config)``: raises :class:`~lth_jax.checks.ConfigError` (one line);
* ``check_drift(workdir, config)``: raises :class:`~lth_jax.checks.ConfigError`
  (one line, naming the keys) when ``workdir`` holds a run of another config, by
  the kind's rules (what may grow, what counts as results);
* ``run(config, workdir, *, overwrite=False, progress=None)``: runs or resumes
  the experiment in ``workdir``, returns its records;
* ``report(workdir, out_dir=None)``: writes ``report.md`` / ``report.png``,
  returns the tables as text.

The functions are named as ``"module:function"`` and imported on first use,
so ``lth-jax report`` never imports JAX and adding a kind touches this table
only.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from lth_jax.checks import ConfigError

__all__ = ["Kind", "KINDS", "get", "names"]


class Kind(NamedTuple):
    """One experiment kind, each field a ``"module:function"`` name (see :func:`get`)."""

    config: str
    validate: str
    check_drift: str
    run: str
    report: str


KINDS: dict[str, Kind] = {
    "lottery": Kind(
        config="lth_jax.config:base_config",
        validate="lth_jax.config:validate",
        check_drift="lth_jax.config:check_drift",
        run="lth_jax.lottery:run",
        report="lth_jax.report:write_report",
    ),
    "instability": Kind(
        config="lth_jax.config:base_config",
        validate="lth_jax.config:validate",
        check_drift="lth_jax.config:check_drift",
        run="lth_jax.instability:run",
        report="lth_jax.report:write_report",
    ),
    "transfer": Kind(
        config="lth_jax.transfer.config:transfer_config",
        validate="lth_jax.transfer.config:validate",
        check_drift="lth_jax.transfer.runner:check_drift",
        run="lth_jax.transfer.runner:run",
        report="lth_jax.report.transfer:write_report",
    ),
}


def _resolve(name: str) -> Any:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


class _Resolved(NamedTuple):
    config: Any
    validate: Any
    check_drift: Any
    run: Any
    report: Any


def names() -> tuple[str, ...]:
    """The kinds, in table order."""
    return tuple(KINDS)


def get(kind: str) -> _Resolved:
    """The functions of ``kind``.

    Raises:
      ConfigError: an unknown kind (naming the known ones).
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return _Resolved(*(_resolve(n) for n in KINDS[kind]))
