"""Gradual magnitude pruning (arm ``gmp``): the cubic schedule, the final counts, exact zeros."""

import doctest
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import config as config_lib
from lth_jax import gmp, lottery, masks
from lth_jax.checks import set_value

TRIALS = 2


def tiny_config(arms=("ticket", "random_mask", "gmp"), **overrides):
    c = config_lib.default_config()
    c.num_trials = TRIALS
    c.progress = False
    c.model.kwargs.features = (32, 16)
    c.train.steps = 200
    c.train.eval_every = 20
    c.train.batch_size = 50
    c.imp.rounds = 2
    c.imp.prune_rate = 0.5
    c.num_devices = 1
    c.optimizer.name = "adam"
    c.optimizer.weight_decay = 1e-2  # decoupled decay after Adam: must not move pruned weights
    c.arms = arms
    for key, value in overrides.items():
        set_value(c, key, value)
    return c


GMP = {"gmp.every": 10, "gmp.start": 0.05}  # window [10, 150] of 200 steps, 14 updates


def _counts(tree, trial):
    return {
        p: int(np.asarray(m)[trial].sum())
        for p, m in masks.named_leaves(tree)
        if p.endswith("kernel")
    }


@pytest.fixture(scope="module")
def with_gmp():
    exp = lottery.Experiment(tiny_config(**GMP))
    s0, r0 = exp.dense_round()
    s1, r1 = exp.prune_round(s0, 1)
    compiled = exp.engine.compilations
    s2, r2 = exp.prune_round(s1, 2)
    return exp, (s0, s1, s2), r0 + r1 + r2, (compiled, exp.engine.compilations)


# ----------------------------------------------------------------------------- the schedule


def test_module_examples():
    result = doctest.testmod(gmp, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_cubic_schedule_is_zhu_and_gupta_eq_1_in_counts():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 5000))
        a_f = int(rng.integers(0, n + 1))
        t0 = int(rng.integers(0, 500))
        t1 = t0 + int(rng.integers(1, 3000))
        every = int(rng.integers(1, 400))
        bounds = gmp.boundaries(t0, t1, every)
        assert bounds[-1] == t1 and all(t0 < b <= t1 for b in bounds)
        gaps = np.diff([t0, *bounds])
        assert np.all(gaps[:-1] == every) and 0 < gaps[-1] <= every
        got = [gmp.target_count(n, a_f, b, t0, t1) for b in bounds]
        # s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, in alive counts from a_i = n.
        exact = [a_f + (n - a_f) * (1 - (b - t0) / (t1 - t0)) ** 3 for b in bounds]
        for g, x in zip(got, exact):
            assert abs(g - x) <= 0.5 + 1e-9
            if abs((x % 1) - 0.5) > 1e-6:
                assert g == np.floor(x + 0.5)  # round half up
        assert got[-1] == a_f  # the end: exactly the ticket's count
        assert all(a >= b for a, b in zip([n, *got], got))  # only shrinks
    assert gmp.window(0.0, 0.75, 100, 500) == (100, 400)  # fractions of the round's steps


def test_config_checks():
    ok = tiny_config(**GMP)
    config_lib.validate(ok)
    bad = {
        "gmp.start": (0.8, "gmp.start must be < gmp.end"),
        "gmp.end": (1.5, "gmp.end"),
        "gmp.every": (0, "gmp.every"),
    }
    for key, (value, msg) in bad.items():
        with pytest.raises(config_lib.ConfigError, match=msg):
            config_lib.validate(tiny_config(**{**GMP, key: value}))
    with pytest.raises(config_lib.ConfigError, match="read only by the arm 'gmp'"):
        config_lib.validate(tiny_config(("ticket",), **{"gmp.every": 10}))
    with pytest.raises(config_lib.ConfigError, match="imp.rewind=weights only"):
        config_lib.validate(tiny_config(("ticket", "gmp"), **{"imp.rewind": "lr"}))
    with pytest.raises(config_lib.ConfigError, match="no pruning step"):
        config_lib.validate(tiny_config(**{"gmp.start": 0.5, "gmp.end": 0.501}))


# ----------------------------------------------------------------------------- the arm


def test_final_mask_has_the_tickets_per_layer_counts(with_gmp):
    _, (_, s1, s2), records, _ = with_gmp
    for s in (s1, s2):
        for t in range(TRIALS):
            assert _counts(s["arms"]["gmp"]["mask"], t) == _counts(s["ticket"]["mask"], t)
    by = {(r["round"], r["arm"], r["trial"]): r for r in records}
    for rnd in (1, 2):
        for t in range(TRIALS):
            g, k = by[(rnd, "gmp", t)], by[(rnd, "ticket", t)]
            assert g["layer_density"] == k["layer_density"] and g["density"] == k["density"]
            assert g["layer_density"]["Dense_0/kernel"] < 1.0
    # Pruned by the gmp run's own weights, not the ticket's positions.
    t2 = s2["ticket"]["mask"]["Dense_0"]["kernel"]
    assert not np.array_equal(s2["arms"]["gmp"]["mask"]["Dense_0"]["kernel"], t2)


def test_trained_params_are_zero_where_pruned_under_adam_with_weight_decay(with_gmp):
    _, (_, s1, s2), _, _ = with_gmp
    for s in (s1, s2):
        arm = s["arms"]["gmp"]
        for m, p in zip(jax.tree.leaves(arm["mask"]), jax.tree.leaves(arm["params"])):
            m, p = np.asarray(m), np.asarray(p)
            assert np.all(p[~m] == 0.0) and not np.signbit(p[~m]).any()


def test_gmp_starts_dense_from_the_rewind_point(with_gmp):
    exp, (_, s1, _), _, _ = with_gmp
    arms, params, _, mask, k, _ = exp.round_inputs(s1, 2)
    start, sched = gmp.plan(exp.config, arms, mask, TRIALS)
    i, j = arms.index("ticket"), arms.index("gmp")
    rows = lambda a, j: a[j * TRIALS : (j + 1) * TRIALS]
    for leaf in jax.tree.leaves(params):  # the ticket's rewind source
        assert np.array_equal(rows(leaf, i), rows(leaf, j))
    for m, m0 in zip(jax.tree.leaves(start), jax.tree.leaves(mask)):
        assert np.asarray(rows(m, j)).all()  # all alive
        assert np.array_equal(rows(m, i), rows(m0, i))  # other arms: their own mask
    steps = np.asarray(sched.steps)
    assert (steps[i * TRIALS : (i + 1) * TRIALS] == -1).all()  # no update for other arms
    assert steps[j * TRIALS].tolist() == list(range(20, 150, 10)) + [150]


def test_mask_only_shrinks_and_pruned_weights_stay_zero_during_training(with_gmp):
    """Chunk by chunk (every 20 steps; updates every 10, so some fall inside a chunk)."""
    exp, (_, s1, s2), _, _ = with_gmp
    arms, params, bs, mask, k, _ = exp.round_inputs(s1, 2)
    start, sched = gmp.plan(exp.config, arms, mask, TRIALS)
    keys = lambda purpose: jnp.tile(exp.keys(2, purpose), (len(arms), 1))
    runs = exp.engine.new_runs(params, bs, start, keys("data"), keys("dropout"), sched)
    j = arms.index("gmp")
    gmp_rows = lambda tree: [np.asarray(a)[j * TRIALS : (j + 1) * TRIALS] for a in tree]
    prev = gmp_rows(jax.tree.leaves(start))
    final = [np.asarray(m)[0] for m in jax.tree.leaves(s2["ticket"]["mask"])]
    names = [p for p, _ in masks.named_leaves(start)]
    t0, t1 = gmp.window(0.05, 0.75, 0, 200)
    assert (t0, t1) == (10, 150)
    before, counts = exp.engine.compilations, []
    for s0 in range(k, exp.config.train.steps, exp.config.train.eval_every):
        runs, _ = exp.engine.chunk(runs, s0, jnp.float32(-1))
        counts.append(exp.engine.compilations)
        cur = gmp_rows(jax.tree.leaves(runs.opt_state.mask))
        w = gmp_rows(jax.tree.leaves(runs.params))
        done = [b for b in gmp.boundaries(t0, t1, 10) if b <= s0 + 20]
        for name, m, m0, p, f in zip(names, cur, prev, w, final):
            assert not (m & ~m0).any()  # no revival
            assert np.all(p[~m] == 0.0)  # exact zeros from the update on
            if done and name.endswith("kernel"):
                want = gmp.target_count(f.size, int(f.sum()), done[-1], t0, t1)
                assert m[0].sum() == want, (name, s0)
        prev = cur
    # All arms in one call (fit calls it per arm): compiled at the first chunk, never again.
    assert counts[0] <= before + 1 and set(counts) == {counts[0]}
    # The same as the round's fit: the final mask and weights.
    for a, b in zip(prev, jax.tree.leaves(s2["arms"]["gmp"]["mask"])):
        assert np.array_equal(a, np.asarray(b))


def test_one_compile_per_shape(with_gmp):
    _, _, _, (after_round_1, after_round_2) = with_gmp
    assert after_round_1 == 1  # dense round (T runs) and pruning rounds (an arm's T runs a call)
    assert after_round_2 == after_round_1  # round 2: no new compilation


def test_other_arms_are_bit_identical_without_gmp(with_gmp):
    _, _, records, _ = with_gmp
    exp = lottery.Experiment(tiny_config(("ticket", "random_mask")))
    s0, r0 = exp.dense_round()
    s1, r1 = exp.prune_round(s0, 1)
    _, r2 = exp.prune_round(s1, 2)
    dump = lambda recs: [json.dumps(r, sort_keys=True) for r in recs]
    assert dump(r0 + r1 + r2) == dump([r for r in records if r["arm"] != "gmp"])


def test_mid_round_resume_is_bit_identical(with_gmp):
    exp, (_, s1, s2), _, _ = with_gmp
    saved = {}

    def on_chunk(step, get_state):
        if step == 100:
            saved["state"] = (step, *get_state())

    arms, params, bs, mask, k, _ = exp.round_inputs(s1, 2)
    start, sched = gmp.plan(exp.config, arms, mask, TRIALS)
    full = exp._fit(params, bs, start, 2, k, gmp=sched, on_chunk=on_chunk)
    resumed = exp._fit(params, bs, start, 2, k, gmp=sched, resume=saved["state"])
    for a, b in zip(*(jax.tree.leaves((o.params, o.mask)) for o in (full, resumed))):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(full.mask), jax.tree.leaves(s2["arms"]["gmp"]["mask"])):
        assert np.array_equal(np.asarray(a)[-TRIALS:], np.asarray(b))
