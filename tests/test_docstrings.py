"""The examples in the docstrings of the public API run and print what they show.

Every module with examples is listed (a test fails for one that is not).
"""

import doctest
import importlib
import os

import pytest

MODULES = [
    "lth_jax.dropouts",
    "lth_jax.regularizers",
    "lth_jax.regularizers_sp",
    "lth_jax.masks",
    "lth_jax.pruning",
    "lth_jax.saliency",
    "lth_jax.gmp",
    "lth_jax.rng",
    "lth_jax.optim",
    "lth_jax.fused_adam",
    "lth_jax.config",
    "lth_jax.config_base",
    "lth_jax.curves",
    "lth_jax.checks",
    "lth_jax.cli_overrides",
    "lth_jax.instability",
    "lth_jax.sparse.fileformat",
    "lth_jax.data.pipeline",
    "lth_jax.data.registry",
    "lth_jax.data.mnist1d",
    "lth_jax.models",
    "lth_jax.models.mlp",
    "lth_jax.models.conv",
    "lth_jax.models.cnn1d",
    "lth_jax.models.cpu_conv",
    "lth_jax.transfer.surgery",
    "lth_jax.report.files",
    "lth_jax.report.paired",
    "lth_jax.report.pool",
    "lth_jax.report.tables",
    "lth_jax.sweep",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    """Each example runs with only the module's public names (``from module import *``),
    so one that uses ``jax``, ``np`` or ``optax`` must import it, as a user's code would."""
    module = importlib.import_module(name)
    public = {n: getattr(module, n) for n in module.__all__}
    result = doctest.testmod(
        module,
        globs=public,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} docstring examples of {name} failed"


def test_every_module_with_examples_is_listed():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lth_jax")
    found = set()
    for folder, _, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            if f.endswith(".py") and ">>> " in open(path, encoding="utf-8").read():
                rel = os.path.relpath(path, os.path.dirname(root))[: -len(".py")]
                found.add(rel.replace(os.sep, ".").removesuffix(".__init__"))
    assert found - set(MODULES) - UNLISTED == set()


#: Modules whose examples are all skipped (``# doctest: +SKIP``: they read a dataset).
UNLISTED = {"lth_jax.data.datasets"}
