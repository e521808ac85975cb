"""lth_jax: dropout, regularization, lottery tickets and transfer learning in JAX.

The primitives are pure functions over explicit pytrees and keys:

* :mod:`lth_jax.dropouts`: dropout and its relatives (``lth_jax.dropout`` is the
  plain inverted dropout function);
* :mod:`lth_jax.regularizers`: optax transforms for L2, weight decay, L1,
  elastic net and max-norm;
* :mod:`lth_jax.masks`: mask pytrees and where they are applied;
* :mod:`lth_jax.pruning`: magnitude and random pruning;
* :mod:`lth_jax.rng`: the one place keys are derived.

Submodules are imported lazily, on first use as an attribute
(``lth_jax.instability``), so ``import lth_jax`` stays cheap; ``dir(lth_jax)``
lists them all.
"""

from __future__ import annotations

import importlib
import pkgutil

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)

#: Every public submodule (a module or package of this folder whose name does not start
#: with ``_``), found on disk so that a new module can never be missing from ``dir(lth_jax)``.
_SUBMODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name[0] != "_"))

__all__ = ["dropout", "__version__", *_SUBMODULES]


def __getattr__(name):
    if name == "dropout":
        from lth_jax.dropouts import dropout  # lazy: `import lth_jax` stays cheap

        return dropout
    if name in _SUBMODULES:
        return importlib.import_module(f"lth_jax.{name}")
    raise AttributeError(f"module 'lth_jax' has no attribute {name!r}")


def __dir__():
    return sorted({n for n in globals() if n.startswith("__")} | set(__all__))
