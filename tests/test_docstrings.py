"""The examples in the docstrings of the public API run and print what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "lth_jax.dropouts",
    "lth_jax.regularizers",
    "lth_jax.regularizers_sp",
    "lth_jax.masks",
    "lth_jax.pruning",
    "lth_jax.rng",
    "lth_jax.optim",
    "lth_jax.curves",
    "lth_jax.checks",
    "lth_jax.sparse.fileformat",
    "lth_jax.data.pipeline",
    "lth_jax.models",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} docstring examples of {name} failed"
