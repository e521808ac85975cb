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


def test_random_mask_prunes_the_trained_ticket_at_random_with_lr_rewinding():
    """Round 2 with imp.rewind=lr: random_mask draws among the previous ticket's alive weights
    (the network it starts from), at the ticket's per-layer counts, so no alive weight starts
    at a pruned weight's 0; in weights mode the draw is over every weight, as before."""
    import jax
    import numpy as np

    from lth_jax import masks

    c = tiny_config(
        **{
            "imp.rewind": "lr",
            "arms": ("ticket", "random_mask"),
            "imp.rounds": 2,
            "imp.prune_rate": 0.5,
        }
    )
    exp = lottery.Experiment(c)
    st, _ = exp.dense_round()
    st1, _ = exp.prune_round(st, 1)
    arms, params, _, mask, _, _ = exp.round_inputs(st1, 2)
    assert list(arms) == ["ticket", "random_mask"]
    t = c.num_trials
    prev = masks.named_leaves(jax.tree.map(np.asarray, st1["ticket"]["mask"]))
    flags = jax.tree.leaves(masks.prunable_tree(st1["ticket"]["mask"]))
    named = zip(masks.named_leaves(jax.tree.map(np.asarray, params)), masks.named_leaves(mask))
    for ((path, w), (_, m)), (_, old), prunable in zip(named, prev, flags):
        m = np.asarray(m)
        ticket, rand = m[:t], m[t:]
        if not prunable:
            continue
        assert np.all(rand <= old), path  # inside the previous ticket mask
        counts = lambda a: a.reshape(t, -1).sum(axis=1)
        assert np.array_equal(counts(rand), counts(ticket)), path
        assert not np.any((w[t:] == 0) & rand), path  # every alive weight starts trained
        assert not np.array_equal(rand, ticket), path  # random, not the ticket's choice
