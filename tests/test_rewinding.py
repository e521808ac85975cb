"""Rewinding modes that coincide: what the MNIST-1D rewinding study relies on."""

import json

from lth_jax import config as config_lib
from lth_jax import lottery
from lth_jax.checks import set_value

DROP = ("arm",)


def _config(**overrides):
    c = config_lib.default_config()
    c.num_trials = 2
    c.progress = False
    c.arms = ("ticket",)
    c.model.kwargs.features = (32, 16)
    c.train.steps = 100
    c.train.eval_every = 50
    c.train.batch_size = 50
    c.imp.rounds = 1
    c.imp.prune_rate = 0.5
    c.imp.rewind_step = 50
    c.num_devices = 1
    for key, value in overrides.items():
        set_value(c, key, value)
    return c


def _round1(c):
    exp = lottery.Experiment(c)
    s0, _ = exp.dense_round()
    _, recs = exp.prune_round(s0, 1)
    return json.dumps(recs, sort_keys=True)


def test_lr_rewinding_is_fine_tuning_under_a_constant_schedule():
    """Constant learning rate: replaying the schedule from k and training at its last rate agree."""
    lr = _round1(_config(**{"imp.rewind": "lr"}))
    ft = _round1(_config(**{"imp.rewind": "finetune"}))
    assert lr == ft


def test_they_differ_under_a_decaying_schedule():
    """The test above could fail: with a step schedule the two modes train differently."""
    over = {"optimizer.schedule": "step", "optimizer.step_boundaries": (0.75,)}
    lr = _round1(_config(**over, **{"imp.rewind": "lr"}))
    ft = _round1(_config(**over, **{"imp.rewind": "finetune", "imp.finetune_lr": 1e-4}))
    assert lr != ft
