"""A small lottery config for in-process engine tests: a few seconds a round on 2 CPU cores."""

from __future__ import annotations

import numpy as np

from lth_jax import config as config_lib
from lth_jax import masks
from lth_jax.checks import set_value


def tiny_config(**overrides):
    """The built-in default made small, then ``overrides`` (dotted keys) applied.

    2 trials, MLP 32-16, 100 steps evaluated every 50, batch 50, 2 rounds at
    rate 0.5, one device, no progress bars; the default arms.
    """
    c = config_lib.default_config()
    c.num_trials = 2
    c.progress = False
    c.model.kwargs.features = (32, 16)
    c.train.steps = 100
    c.train.eval_every = 50
    c.train.batch_size = 50
    c.imp.rounds = 2
    c.imp.prune_rate = 0.5
    c.num_devices = 1
    for key, value in overrides.items():
        set_value(c, key, value)
    return c


def kernels(tree, trial):
    """``{path: array}`` of ``tree``'s kernels (dense and conv weights) for one ``trial``."""
    return {p: np.asarray(v)[trial] for p, v in masks.named_leaves(tree) if p.endswith("kernel")}
