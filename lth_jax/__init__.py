"""lth_jax: dropout, regularization, lottery tickets and transfer learning in JAX.

The primitives are pure functions over explicit pytrees and keys:

* :mod:`lth_jax.dropouts`: dropout and its relatives (``lth_jax.dropout`` is the
  plain inverted dropout function);
* :mod:`lth_jax.regularizers`: optax transforms for L2, weight decay, L1,
  elastic net and max-norm;
* :mod:`lth_jax.masks`: mask pytrees and where they are applied;
* :mod:`lth_jax.pruning`: magnitude and random pruning;
* :mod:`lth_jax.rng`: the one place keys are derived.

Submodules are imported lazily, so ``import lth_jax`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "arms",
    "checkpoint",
    "checks",
    "cli",
    "config",
    "curves",
    "data",
    "dropouts",
    "instability",
    "kinds",
    "lottery",
    "loop",
    "masks",
    "models",
    "optim",
    "parallel",
    "pruning",
    "regularizers",
    "regularizers_sp",
    "report",
    "rng",
    "sparse",
    "train",
    "transfer",
    "workdir",
)

__all__ = ["dropout", "__version__", *_SUBMODULES]


def __getattr__(name):
    if name == "dropout":
        from lth_jax.dropouts import dropout  # lazy: `import lth_jax` stays cheap

        return dropout
    if name in _SUBMODULES:
        return importlib.import_module(f"lth_jax.{name}")
    raise AttributeError(f"module 'lth_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
