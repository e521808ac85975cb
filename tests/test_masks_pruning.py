"""Masks, pruning and key derivation: the invariants of DESIGN.md."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lth_jax import masks, pruning, rng


def make_params(key, shapes=((6, 5), (5, 4), (4, 3))):
    keys = jax.random.split(key, len(shapes))
    return {
        f"Dense_{i}": {"kernel": jax.random.normal(k, s), "bias": jnp.ones(s[-1])}
        for i, (k, s) in enumerate(zip(keys, shapes))
    }


# ---------------------------------------------------------------- rng


def test_rng_derive_is_a_pure_function_of_its_inputs():
    a = rng.derive(3, trial=1, round=2, purpose="data")
    assert np.array_equal(a, rng.derive(3, 1, 2, "data"))
    others = [
        rng.derive(4, 1, 2, "data"),
        rng.derive(3, 0, 2, "data"),
        rng.derive(3, 1, 3, "data"),
        rng.derive(3, 1, 2, "init"),
    ]
    for o in others:
        assert not np.array_equal(a, o)


def test_rng_derive_vmaps_over_trials():
    keys = jax.vmap(lambda t: rng.derive(0, t, 0, "init"))(jnp.arange(3))
    for t in range(3):
        assert np.array_equal(keys[t], rng.derive(0, t, 0, "init"))


def test_rng_bad_purpose():
    with pytest.raises(ValueError, match="purpose"):
        rng.derive(0, purpose="")


# ---------------------------------------------------------------- masks


def test_default_prunable_is_kernels_only():
    params = make_params(jax.random.PRNGKey(0))
    flags = masks.prunable_tree(params)
    assert flags["Dense_0"]["kernel"] and not flags["Dense_0"]["bias"]
    assert masks.prunable_tree(params, "Dense_2")["Dense_2"]["bias"]
    assert not masks.prunable_tree(params, "Dense_2")["Dense_0"]["kernel"]


def test_prunable_pattern_matching_nothing_raises():
    params = make_params(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="Conv_9"):
        masks.prunable_tree(params, "Conv_9")


def test_apply_and_density():
    params = make_params(jax.random.PRNGKey(0))
    mask = masks.ones_like(params)
    mask["Dense_0"]["kernel"] = mask["Dense_0"]["kernel"].at[0].set(False)
    out = masks.apply(mask, params)
    assert np.all(np.asarray(out["Dense_0"]["kernel"][0]) == 0.0)
    assert np.array_equal(out["Dense_1"]["kernel"], params["Dense_1"]["kernel"])
    total = 30 + 20 + 12
    assert float(masks.density(mask)) == pytest.approx((total - 5) / total)
    assert float(masks.layer_density(mask)["Dense_0/kernel"]) == pytest.approx(25 / 30)


def test_mismatched_mask_names_the_path():
    params = make_params(jax.random.PRNGKey(0))
    bad = masks.ones_like(params)
    bad["Dense_1"]["kernel"] = jnp.ones((3, 3), bool)
    with pytest.raises(ValueError, match="Dense_1/kernel"):
        pruning.magnitude_prune(params, bad, 0.2)
    bad = masks.ones_like(params)
    del bad["Dense_2"]
    with pytest.raises(ValueError, match="Dense_2"):
        pruning.magnitude_prune(params, bad, 0.2)


# ---------------------------------------------------------------- pruning rules


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_bad_rate_raises(rate):
    params = make_params(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pruning.magnitude_prune(params, masks.ones_like(params), rate)


def test_bad_scope_and_unmatched_layer_rate_raise():
    params = make_params(jax.random.PRNGKey(0))
    m = masks.ones_like(params)
    with pytest.raises(ValueError, match="scope"):
        pruning.magnitude_prune(params, m, 0.2, scope="per_neuron")
    with pytest.raises(ValueError, match="Output"):
        pruning.magnitude_prune(params, m, 0.2, layer_rates={"Output": 0.1})


def test_ties_broken_by_position_exactly_k_removed():
    params = {"kernel": jnp.ones((2, 5))}
    new = pruning.magnitude_prune(params, masks.ones_like(params), 0.3)
    # k = round(0.3 * 10) = 3: the first three positions go, not every tied weight.
    assert new["kernel"].reshape(-1).tolist() == [False] * 3 + [True] * 7


def _alive_sets(params, mask):
    return {
        p: np.asarray(m)
        for (p, m), f in zip(masks.named_leaves(mask), jax.tree.leaves(masks.prunable_tree(mask)))
        if f
    }


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rate=st.floats(0.05, 0.9))
def test_layerwise_ranking_equals_per_layer_sort(seed, rate):
    params = make_params(jax.random.PRNGKey(seed))
    new = pruning.magnitude_prune(params, masks.ones_like(params), rate)
    for path, kept in _alive_sets(params, new).items():
        layer, _ = path.split("/")
        w = np.abs(np.asarray(params[layer]["kernel"])).reshape(-1)
        k = int(np.floor(rate * w.size + 0.5))
        order = np.lexsort((np.arange(w.size), w))  # by |w|, then index
        expected = np.ones(w.size, bool)
        expected[order[:k]] = False
        assert np.array_equal(kept.reshape(-1), expected), path


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rate=st.floats(0.05, 0.9))
def test_global_ranking_equals_sort_of_all_prunable_magnitudes(seed, rate):
    params = make_params(jax.random.PRNGKey(seed))
    new = pruning.magnitude_prune(params, masks.ones_like(params), rate, scope="global")
    flat = np.concatenate(
        [np.abs(np.asarray(params[f"Dense_{i}"]["kernel"])).ravel() for i in range(3)]
    )
    k = int(np.floor(rate * flat.size + 0.5))
    order = np.lexsort((np.arange(flat.size), flat))
    expected = np.ones(flat.size, bool)
    expected[order[:k]] = False
    got = np.concatenate([np.asarray(new[f"Dense_{i}"]["kernel"]).ravel() for i in range(3)])
    assert np.array_equal(got, expected)
    # Biases are not prunable and stay alive.
    assert all(bool(np.all(new[f"Dense_{i}"]["bias"])) for i in range(3))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rate=st.floats(0.05, 0.5),
    rounds=st.integers(1, 6),
    scope=st.sampled_from(["layerwise", "global"]),
)
def test_density_after_rounds_and_no_revival(seed, rate, rounds, scope):
    shapes = ((40, 30), (30, 20), (20, 10))
    key = jax.random.PRNGKey(seed)
    mask = masks.ones_like(make_params(key, shapes))
    for r in range(rounds):
        # Fresh "trained" weights every round: pruning must still never revive.
        params = make_params(jax.random.fold_in(key, r), shapes)
        new = pruning.magnitude_prune(params, mask, rate, scope=scope)
        for old_leaf, new_leaf in zip(jax.tree.leaves(mask), jax.tree.leaves(new)):
            assert not np.any(np.asarray(new_leaf) & ~np.asarray(old_leaf))
        mask = new
    if scope == "layerwise":
        for (path, m), shape in zip(
            [(p, m) for p, m in masks.named_leaves(mask) if p.endswith("kernel")], shapes
        ):
            n = shape[0] * shape[1]
            assert abs(int(np.sum(m)) - round((1 - rate) ** rounds * n)) <= rounds, path
    else:
        n = sum(a * b for a, b in shapes)
        assert abs(int(masks.count(mask)[0]) - round((1 - rate) ** rounds * n)) <= rounds


def test_layer_rates_frankle_carbin_output_at_half_rate():
    params = make_params(jax.random.PRNGKey(1), ((100, 50), (50, 40), (40, 10)))
    mask = masks.ones_like(params)
    for scope in ("layerwise", "global"):
        new = pruning.magnitude_prune(params, mask, 0.2, scope=scope, layer_rates={"Dense_2/": 0.1})
        assert int(new["Dense_2"]["kernel"].sum()) == 400 - 40
    new = pruning.magnitude_prune(params, mask, 0.2, layer_rates={"Dense_2/": 0.1})
    assert int(new["Dense_0"]["kernel"].sum()) == 4000
    assert int(new["Dense_1"]["kernel"].sum()) == 1600


def test_layer_rates_first_match_in_written_order():
    params = make_params(jax.random.PRNGKey(1), ((100, 50), (50, 40), (40, 10)))
    mask = masks.ones_like(params)
    # "Dense_1" first: Dense_1 at 10%, the other layers at the catch-all's 50%.
    new = pruning.magnitude_prune(params, mask, 0.2, layer_rates=(("Dense_1", 0.1), ("Dense", 0.5)))
    alive = {k: int(v["kernel"].sum()) for k, v in new.items()}
    assert alive == {"Dense_0": 2500, "Dense_1": 1800, "Dense_2": 200}
    # A mapping is tried in its iteration order, not sorted: the same result.
    as_dict = pruning.magnitude_prune(params, mask, 0.2, layer_rates={"Dense_1": 0.1, "Dense": 0.5})
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(as_dict)):
        np.testing.assert_array_equal(a, b)
    # The catch-all first leaves "Dense_1" nothing: an error, not a silent no-op.
    with pytest.raises(ValueError, match="'Dense_1' only matches leaves an earlier pattern took"):
        pruning.magnitude_prune(params, mask, 0.2, layer_rates=(("Dense", 0.5), ("Dense_1", 0.1)))
    # Lists (a config read back from JSON) work as pairs.
    rates = pruning.resolve_layer_rates(params, 0.2, [["Dense_1", 0.1]])
    assert [r for r in rates if r is not None] == [(0.2, False), (0.1, True), (0.2, False)]


@pytest.mark.parametrize(
    "layer_rates,match",
    [
        ("Dense_1", "sequence of"),
        ((("Dense_1",),), "pairs"),
        ((("Dense_1", 0.1, 0.2),), "pairs"),
        (((1, 0.1),), "pairs"),
        ((("Dense_1", 1.0),), r"layer rate 'Dense_1' must be a number in \[0, 1\)"),
        ((("Dense_1", "x"),), r"\[0, 1\)"),
    ],
)
def test_layer_rates_entries_are_checked(layer_rates, match):
    params = make_params(jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match=match):
        pruning.resolve_layer_rates(params, 0.2, layer_rates)


def test_random_prune_same_per_layer_counts_as_magnitude():
    params = make_params(jax.random.PRNGKey(2), ((30, 20), (20, 10)))
    mask = masks.ones_like(params)
    mag = pruning.magnitude_prune(params, mask, 0.35, layer_rates={"Dense_1": 0.1})
    rnd = pruning.random_prune(jax.random.PRNGKey(0), mask, 0.35, layer_rates={"Dense_1": 0.1})
    for a, b in zip(jax.tree.leaves(mag), jax.tree.leaves(rnd)):
        assert int(np.sum(a)) == int(np.sum(b))
    assert not np.array_equal(mag["Dense_0"]["kernel"], rnd["Dense_0"]["kernel"])


def test_random_mask_like_keeps_counts_and_differs_by_key():
    params = make_params(jax.random.PRNGKey(3))
    ticket = pruning.magnitude_prune(params, masks.ones_like(params), 0.6)
    a = pruning.random_mask_like(jax.random.PRNGKey(0), ticket)
    b = pruning.random_mask_like(jax.random.PRNGKey(1), ticket)
    for t, x in zip(jax.tree.leaves(ticket), jax.tree.leaves(a)):
        assert int(np.sum(t)) == int(np.sum(x))
    assert not np.array_equal(a["Dense_0"]["kernel"], b["Dense_0"]["kernel"])
    assert bool(np.all(a["Dense_0"]["bias"]))


def test_pruning_jits_and_vmaps_without_recompiling_per_mask():
    params = make_params(jax.random.PRNGKey(4))
    traces = []

    @jax.jit
    def prune(p, m):
        traces.append(1)
        return pruning.magnitude_prune(p, m, 0.2)

    m = masks.ones_like(params)
    for _ in range(4):
        m = prune(params, m)
    assert len(traces) == 1
    assert int(masks.count(m)[0]) < int(masks.count(masks.ones_like(params))[0])


def test_rate_for_density():
    assert pruning.rate_for_density(0.5, 0.1) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        pruning.rate_for_density(0.5, 0.6)


# ---------------------------------------------------------------- keep_pruned


def _chains():
    from lth_jax import regularizers as reg

    return {
        "sgd_momentum_wd": optax.chain(
            optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9, nesterov=True)
        ),
        "adamw": optax.adamw(1e-2, weight_decay=0.1),
        "adam_l2_l1_prox": optax.chain(
            reg.add_l2(1e-2), reg.add_l1(1e-3), optax.adam(1e-2), reg.prox_l1(1e-3, 1e-2)
        ),
        "adam_maxnorm": optax.chain(optax.adam(1e-2), reg.max_norm(0.5)),
    }


@pytest.mark.parametrize("name", ["sgd_momentum_wd", "adamw", "adam_l2_l1_prox", "adam_maxnorm"])
def test_pruned_weights_stay_exactly_zero_under_any_chain(name):
    key = jax.random.PRNGKey(5)
    params = make_params(key)
    mask = pruning.magnitude_prune(params, masks.ones_like(params), 0.5)
    params = masks.apply(mask, params)
    tx = masks.keep_pruned(_chains()[name])
    state = masks.set_mask(tx.init(params), mask)
    x = jax.random.normal(jax.random.fold_in(key, 1), (16, 6))

    def loss(p):
        h = x
        for i in range(3):
            h = h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
        return jnp.mean(h**2) + jnp.mean(jnp.cos(h))

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        # Make the gradient of pruned weights non-zero on purpose.
        g = jax.tree.map(lambda x: x + 1.0, g)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for _ in range(200):
        params, state = step(params, state)
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params)):
        dead = np.asarray(p)[~np.asarray(m)]
        assert np.all(dead == 0.0)
    alive = np.asarray(params["Dense_0"]["kernel"])[np.asarray(mask["Dense_0"]["kernel"])]
    assert np.any(alive != 0.0)


def test_keep_pruned_new_mask_does_not_recompile():
    params = make_params(jax.random.PRNGKey(6))
    tx = masks.keep_pruned(optax.adam(1e-2))
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(1)
        u, s = tx.update(p, s, p)
        return optax.apply_updates(p, u), s

    mask = masks.ones_like(params)
    for rate in (0.2, 0.2, 0.2):
        mask = pruning.magnitude_prune(params, mask, rate)
        state = masks.set_mask(tx.init(params), mask)
        p, state = step(masks.apply(mask, params), state)
        assert np.all(
            np.asarray(p["Dense_0"]["kernel"])[~np.asarray(mask["Dense_0"]["kernel"])] == 0
        )
    assert len(traces) == 1


def test_set_mask_rejects_wrong_state_or_tree():
    params = make_params(jax.random.PRNGKey(6))
    with pytest.raises(ValueError, match="keep_pruned"):
        masks.set_mask(optax.adam(1e-2).init(params), masks.ones_like(params))
    tx = masks.keep_pruned(optax.sgd(0.1))
    bad = masks.ones_like(params)
    bad["Dense_0"]["kernel"] = jnp.ones((2, 2), bool)
    with pytest.raises(ValueError, match="Dense_0/kernel"):
        masks.set_mask(tx.init(params), bad)


@pytest.mark.parametrize(
    "rate, n, k",
    [(0.65, 90, 59), (0.53, 50, 27), (0.13, 450, 59), (0.15, 10, 2), (0.2, 235_200, 47_040)],
)
def test_a_round_removes_floor_rate_n_plus_half_exactly(rate, n, k):
    """k = floor(rate * n + 1/2) with the rate as written: at an exact half, float32
    arithmetic removed one weight too few (0.65 of 90 is 58.5: 59 go, not 58)."""
    mask = {"kernel": np.ones((1, n), bool)}
    w = {"kernel": np.random.default_rng(0).standard_normal((1, n)).astype(np.float32)}
    assert n - int(pruning.magnitude_prune(w, mask, rate)["kernel"].sum()) == k
    assert n - int(pruning.random_prune(jax.random.PRNGKey(0), mask, rate)["kernel"].sum()) == k


def test_the_count_is_exact_beyond_float32_integers():
    """Above 2^24 alive weights a float32 count is off by one; the integer one is not."""
    from lth_jax.pruning import _num_to_remove

    assert int(_num_to_remove(0.5, jnp.int32(20_000_001))) == 10_000_001
    assert int(_num_to_remove(0.2, jnp.int32(2**31 - 1))) == 429_496_729
    assert int(_num_to_remove(0.9999, jnp.int32(2**31 - 1))) == 2_147_268_899
    # A rate of more decimals (a one-shot rate, say) is counted in float32, not snapped to
    # a nearby fraction: near 0 and 1 that would remove nothing, or every weight.
    assert int(_num_to_remove(1e-5, jnp.int32(1_000_000))) == 10
    assert int(_num_to_remove(0.99998, jnp.int32(235_200))) == 235_195
    assert int(_num_to_remove(1 - 0.8**2.5, jnp.int32(1000))) == 428  # floor(427.6 + 0.5)
