"""Rewinding modes that coincide: what the MNIST-1D rewinding study relies on."""

import json

from tiny import tiny_config

from lth_jax import lottery

DROP = ("arm",)


def _config(**overrides):
    base = {"arms": ("ticket",), "imp.rounds": 1, "imp.rewind_step": 50}
    return tiny_config(**{**base, **overrides})


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
