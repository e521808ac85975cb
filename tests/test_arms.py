"""Arms beyond the ticket and its classic controls: one-shot pruning at the ticket's densities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import kernels, tiny_config

from lth_jax import arms, lottery, pruning


def _config(**overrides):
    return tiny_config(**{"arms": ("ticket", "one_shot"), **overrides})


@pytest.fixture(scope="module")
def rounds():
    exp = lottery.Experiment(_config())
    s0, r0 = exp.dense_round()
    s1, r1 = exp.prune_round(s0, 1)
    s2, r2 = exp.prune_round(s1, 2)
    return exp, (s0, s1, s2), (r0, r1, r2)


def test_one_shot_equals_the_ticket_after_one_round(rounds):
    """Round 1: one prune of the dense weights either way, so the same mask and the same run."""
    _, (s0, s1, _), (_, r1, _) = rounds
    for t in range(2):
        for p, m in kernels(s1["arms"]["one_shot"]["mask"], t).items():
            assert np.array_equal(m, kernels(s1["ticket"]["mask"], t)[p])
    by = {(r["arm"], r["trial"]): r for r in r1}
    for t in range(2):
        a, b = by[("ticket", t)], by[("one_shot", t)]
        assert a["final_test_accuracy"] == b["final_test_accuracy"]
        assert a["layer_density"] == b["layer_density"]


def test_one_shot_prunes_the_dense_weights_at_the_ticket_counts(rounds):
    _, (s0, _, s2), (_, _, r2) = rounds
    dense = s0["dense"]["params"]
    for t in range(2):
        ticket = kernels(s2["ticket"]["mask"], t)
        shot = kernels(s2["arms"]["one_shot"]["mask"], t)
        w = kernels(dense, t)
        for p in ticket:
            assert shot[p].sum() == ticket[p].sum()  # the ticket's per-layer count
            kept, gone = np.abs(w[p])[shot[p]], np.abs(w[p])[~shot[p]]
            assert kept.min() >= gone.max()  # the largest trained dense weights
        assert any(not np.array_equal(shot[p], ticket[p]) for p in ticket)  # not the ticket
    by = {(r["arm"], r["trial"]): r for r in r2}
    for t in range(2):
        assert by[("one_shot", t)]["layer_density"] == by[("ticket", t)]["layer_density"]


def test_one_shot_rewinds_as_the_ticket(rounds):
    """weights mode: the one-shot arm starts from the same rewind point as the ticket."""
    exp, (_, s1, _), _ = rounds
    arms_, params, _, mask, _, _ = exp.round_inputs(s1, 2)
    i, j = arms_.index("ticket"), arms_.index("one_shot")
    for leaf in jax.tree.leaves(params):
        assert np.array_equal(leaf[i * 2 : i * 2 + 2], leaf[j * 2 : j * 2 + 2])


def test_top_scores_like_keeps_counts_and_breaks_ties_by_position():
    scores = {"kernel": jnp.array([[1.0, 1.0, 1.0, 0.5]]), "bias": jnp.zeros(4)}
    like = {"kernel": jnp.array([[True, False, False, False]]), "bias": jnp.ones(4, bool)}
    out = pruning.top_scores_like(scores, like)
    assert out["kernel"].tolist() == [[False, False, True, False]]  # earlier ties go first
    assert out["bias"].all()  # not prunable: the mask's own leaf


def test_one_shot_needs_the_dense_network():
    inputs = arms.ArmInputs(source=None, mask=None, fresh=None, key=None)
    with pytest.raises(ValueError, match="dense"):
        arms.get("one_shot")(inputs)
