"""Tests for lth_jax.regularizers: equivalences with penalized losses and optax, masks, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lth_jax import masks
from lth_jax.regularizers import (
    CountState,
    add_l1,
    add_l2,
    decoupled_weight_decay,
    elastic_net,
    l1_penalty,
    l2_penalty,
    max_norm,
    prox_l1,
    soft_threshold,
)
from lth_jax.regularizers_sp import l2_sp_penalty

HYP = settings(max_examples=25, deadline=None)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def _params(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {
        "Dense_0": {
            "kernel": jax.random.normal(k[0], (4, 3)),
            "bias": jax.random.normal(k[1], (3,)),
        },
        "Dense_1": {
            "kernel": jax.random.normal(k[2], (3, 2)),
            "bias": jax.random.normal(k[3], (2,)),
        },
    }


def _data(seed=1, n=16):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(kx, (n, 4)), jax.random.normal(ky, (n, 2))


def _loss(params, x, y):
    h = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    out = h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
    return jnp.mean((out - y) ** 2)


def _train(tx, params, loss_fn, steps, data):
    """``steps`` full-batch steps of ``tx`` on ``loss_fn``, compiled as one scan."""

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            g = jax.grad(loss_fn)(p, *data)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return p

    return run(params)


def _kernel_mask(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _all_transforms():
    return {
        "add_l2": add_l2(0.1),
        "add_l1": add_l1(0.1),
        "decoupled_weight_decay": decoupled_weight_decay(0.1, 0.5),
        "prox_l1": prox_l1(0.1, 0.5),
        "elastic_net": elastic_net(0.1, 0.2, 0.5),
        "max_norm": max_norm(0.5),
    }


# --------------------------------------------------------------------------- #
# Coupled L2 and L1 subgradient = penalty in the loss
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "make_opt",
    [lambda: optax.sgd(0.05, momentum=0.9), lambda: optax.adam(0.01)],
    ids=["sgd_momentum", "adam"],
)
def test_coupled_l2_equals_penalized_loss(make_opt):
    wd = 0.3
    params, data = _params(), _data()
    a = _train(optax.chain(add_l2(wd), make_opt()), params, _loss, 20, data)
    penalized = lambda p, x, y: _loss(p, x, y) + wd * l2_penalty(p)
    b = _train(make_opt(), params, penalized, 20, data)
    _assert_tree_close(a, b)
    # And the regularizer did something (on kernels).
    c = _train(make_opt(), params, _loss, 20, data)
    assert not np.allclose(a["Dense_0"]["kernel"], c["Dense_0"]["kernel"])


def test_add_l1_equals_l1_penalty_subgradient():
    s = 0.2
    params, data = _params(), _data()
    a = _train(optax.chain(add_l1(s), optax.sgd(0.05)), params, _loss, 10, data)
    penalized = lambda p, x, y: _loss(p, x, y) + s * l1_penalty(p)
    b = _train(optax.sgd(0.05), params, penalized, 10, data)
    _assert_tree_close(a, b)


def test_add_l1_adds_nothing_at_an_exact_zero():
    """sign(0) = 0: a zero weight whose loss gradient is 0 stays 0 (a pruned one); jax.grad
    of l1_penalty takes +strength there (JAX's derivative of abs at 0 is 1)."""
    p = {"kernel": jnp.array([[0.0, -0.0, 1.0, -2.0]])}
    zeros = jax.tree.map(jnp.zeros_like, p)
    tx = optax.chain(add_l1(0.1), optax.sgd(1.0))
    u, _ = tx.update(zeros, tx.init(p), p)
    np.testing.assert_array_equal(u["kernel"], np.float32([[0.0, 0.0, -0.1, 0.1]]))
    g = jax.grad(lambda q: 0.1 * l1_penalty(q))(p)["kernel"]
    np.testing.assert_array_equal(g[0, 2:], np.float32([0.1, -0.1]))  # the same away from 0
    assert (g[0, :2] != 0).all()  # and not at 0


def test_l2_sp_penalty_refuses_an_anchor_of_other_shapes():
    with pytest.raises(ValueError, match="L2-SP anchor"):
        l2_sp_penalty({"kernel": jnp.ones((3, 2))}, {"kernel": jnp.zeros((1, 2))}, 1.0)


def test_l2_penalty_gradient_is_what_add_l2_adds():
    params = _params()
    g = jax.grad(l2_penalty)(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = add_l2(1.0)
    u, _ = tx.update(zeros, tx.init(params), params)
    _assert_tree_close(g, u, rtol=0, atol=0)


def test_penalty_values_and_overrides():
    params = {"d": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0])}}
    assert float(l1_penalty(params)) == 3.0
    assert float(l2_penalty(params)) == 2.5
    assert float(l1_penalty(params, mask="bias")) == 5.0
    assert float(l2_penalty(params, mask=lambda path, leaf: True)) == 2.5 + 12.5
    bool_tree = {"d": {"kernel": jnp.array([[True, False]]), "bias": False}}
    assert float(l1_penalty(params, mask=bool_tree)) == 1.0


# --------------------------------------------------------------------------- #
# Decoupled weight decay = AdamW
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "lr", [1e-2, optax.linear_schedule(1e-2, 1e-3, 10)], ids=["const", "schedule"]
)
def test_decoupled_decay_matches_adamw(lr):
    wd = 0.5
    params, data = _params(), _data()
    ours = optax.chain(optax.adam(lr), decoupled_weight_decay(wd, lr))
    ref = optax.adamw(lr, weight_decay=wd, mask=_kernel_mask)
    a = _train(ours, params, _loss, 15, data)
    b = _train(ref, params, _loss, 15, data)
    _assert_tree_close(a, b)
    # Coupled L2 with Adam is a different algorithm.
    c = _train(optax.chain(add_l2(wd), optax.adam(lr)), params, _loss, 15, data)
    assert not np.allclose(a["Dense_0"]["kernel"], c["Dense_0"]["kernel"], atol=1e-4)


def test_decoupled_decay_single_step_value():
    p = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}
    u0 = {"kernel": jnp.full((2, 2), 0.25), "bias": jnp.full((2,), 0.25)}
    tx = decoupled_weight_decay(0.1, 0.5)
    u, s = tx.update(u0, tx.init(p), p)
    np.testing.assert_allclose(u["kernel"], 0.25 - 0.5 * 0.1 * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(u["bias"], u0["bias"])
    assert isinstance(s, CountState) and int(s.count) == 1


# --------------------------------------------------------------------------- #
# Proximal L1 and elastic net
# --------------------------------------------------------------------------- #


def _sparse_problem():
    """Linear regression whose true weights are mostly zero."""
    kx, kn = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (64, 20))
    w_true = jnp.zeros((20, 1)).at[:3, 0].set(jnp.array([2.0, -1.5, 1.0]))
    y = x @ w_true + 0.1 * jax.random.normal(kn, (64, 1))
    loss = lambda p, x, y: 0.5 * jnp.mean(jnp.sum((x @ p["lin"]["kernel"] - y) ** 2, -1))
    params = {"lin": {"kernel": 0.1 * jax.random.normal(jax.random.PRNGKey(5), (20, 1))}}
    return params, loss, (x, y)


def test_prox_l1_gives_exact_zeros_subgradient_does_not():
    params, loss, data = _sparse_problem()
    lr, s = 0.05, 0.2
    prox = _train(optax.chain(optax.sgd(lr), prox_l1(s, lr)), params, loss, 300, data)
    sub = _train(optax.chain(add_l1(s), optax.sgd(lr)), params, loss, 300, data)
    zeros_prox = int(jnp.sum(prox["lin"]["kernel"] == 0.0))
    zeros_sub = int(jnp.sum(sub["lin"]["kernel"] == 0.0))
    assert zeros_prox > 0
    assert zeros_sub == 0
    # The large true weights survive the proximal step.
    assert bool(jnp.all(prox["lin"]["kernel"][:3, 0] != 0.0))


@HYP
@given(seed=seeds, l1=st.floats(0.0, 2.0), lr=st.floats(0.0, 1.0))
def test_elastic_net_reduces_to_prox_l1_at_l2_zero(seed, l1, lr):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    p = {"kernel": jax.random.normal(k1, (5, 4))}
    u = {"kernel": jax.random.normal(k2, (5, 4))}
    a_tx, b_tx = elastic_net(l1, 0.0, lr), prox_l1(l1, lr)
    a, _ = a_tx.update(u, a_tx.init(p), p)
    b, _ = b_tx.update(u, b_tx.init(p), p)
    np.testing.assert_array_equal(a["kernel"], b["kernel"])
    # And prox_l1 is soft-thresholding of p + u.
    new = optax.apply_updates(p, b)["kernel"]
    np.testing.assert_allclose(
        new, soft_threshold(p["kernel"] + u["kernel"], lr * l1), rtol=1e-5, atol=1e-6
    )
    z = p["kernel"] + u["kernel"]
    np.testing.assert_array_equal(new == 0.0, jnp.abs(z) <= jnp.float32(lr * l1))


def test_elastic_net_formula():
    p = {"kernel": jnp.array([[0.5, -3.0, 1.0]])}
    u = {"kernel": jnp.array([[0.0, 0.5, 1.0]])}
    tx = elastic_net(0.5, 2.0, 0.5)
    du, _ = tx.update(u, tx.init(p), p)
    new = optax.apply_updates(p, du)["kernel"]
    # z = [0.5, -2.5, 2.0]; soft(z, 0.25) = [0.25, -2.25, 1.75]; / (1 + 0.5 * 2) = 2.
    np.testing.assert_allclose(new, [[0.125, -1.125, 0.875]], rtol=1e-6)


def test_prox_l1_follows_schedule():
    # lr(count) = 0.1 * (count + 1); with zero updates a weight of 10 shrinks by
    # lr(t) * strength at step t, so after 4 steps by 0.1 * (1+2+3+4) * 2 = 2.
    sched = lambda count: 0.1 * (count + 1)
    tx = prox_l1(2.0, sched)
    p = {"kernel": jnp.array([[10.0, -10.0, 0.15]])}
    s = tx.init(p)
    zeros = jax.tree.map(jnp.zeros_like, p)
    update = jax.jit(tx.update)
    history = []
    for _ in range(4):
        u, s = update(zeros, s, p)
        p = optax.apply_updates(p, u)
        history.append(np.asarray(p["kernel"][0]))
    assert int(s.count) == 4
    np.testing.assert_allclose(history[0], [9.8, -9.8, 0.0], rtol=1e-6)
    np.testing.assert_allclose(history[1], [9.4, -9.4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(history[-1], [8.0, -8.0, 0.0], rtol=1e-6)
    # A constant learning rate gives a different (constant) threshold.
    tx_c = prox_l1(2.0, 0.1)
    pc = {"kernel": jnp.array([[10.0]])}
    sc = tx_c.init(pc)
    for _ in range(4):
        u, sc = tx_c.update({"kernel": jnp.zeros((1, 1))}, sc, pc)
        pc = optax.apply_updates(pc, u)
    np.testing.assert_allclose(pc["kernel"], 9.2, rtol=1e-6)


def test_prox_l1_inside_keep_pruned_keeps_pruned_at_zero():
    params, loss, data = _sparse_problem()
    mask = {"lin": {"kernel": jnp.arange(20).reshape(20, 1) % 2 == 0}}
    params = masks.apply(mask, params)
    tx = masks.keep_pruned(
        optax.chain(optax.sgd(0.05), decoupled_weight_decay(0.1, 0.05), prox_l1(0.01, 0.05)),
        mask,
    )
    out = _train(tx, params, loss, 20, data)
    np.testing.assert_array_equal(out["lin"]["kernel"][~mask["lin"]["kernel"]], 0.0)


# --------------------------------------------------------------------------- #
# Max-norm
# --------------------------------------------------------------------------- #


@HYP
@given(seed=seeds, c=st.floats(0.1, 5.0), scale=st.floats(0.01, 10.0))
def test_max_norm_bounds_column_norms(seed, c, scale):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    p = {"kernel": scale * jax.random.normal(k1, (6, 5)), "bias": 100.0 * jnp.ones(5)}
    u = {"kernel": scale * jax.random.normal(k2, (6, 5)), "bias": jnp.ones(5)}
    tx = max_norm(c)
    du, _ = tx.update(u, tx.init(p), p)
    new = optax.apply_updates(p, du)
    z = p["kernel"] + u["kernel"]
    z_norms = jnp.linalg.norm(z, axis=0)
    norms = jnp.linalg.norm(new["kernel"], axis=0)
    assert bool(jnp.all(norms <= c * (1 + 1e-5)))
    big = z_norms > c
    np.testing.assert_allclose(norms[big], c, rtol=1e-5)  # projected onto the sphere
    np.testing.assert_allclose(new["kernel"][:, ~big], z[:, ~big], rtol=1e-5, atol=1e-6)
    # Projection is along the column: direction is kept.
    np.testing.assert_allclose(new["kernel"] / norms, z / z_norms, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(du["bias"], u["bias"])  # bias untouched


def test_max_norm_small_columns_exactly_unchanged_and_conv():
    p = {"kernel": jnp.array([[0.3, 3.0], [0.4, 4.0]])}
    tx = max_norm(1.0)
    du, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    new = optax.apply_updates(p, du)["kernel"]
    np.testing.assert_array_equal(new[:, 0], p["kernel"][:, 0])
    np.testing.assert_allclose(new[:, 1], [0.6, 0.8], rtol=1e-6)
    # HWIO conv kernel: one norm per output channel (over H, W, I).
    conv = {"kernel": 3.0 * jax.random.normal(jax.random.PRNGKey(0), (3, 3, 2, 4))}
    du, _ = tx.update(jax.tree.map(jnp.zeros_like, conv), tx.init(conv), conv)
    newc = optax.apply_updates(conv, du)["kernel"]
    np.testing.assert_allclose(jnp.sqrt(jnp.sum(newc**2, axis=(0, 1, 2))), 1.0, rtol=1e-5)
    # axis=0 is the default for a Dense kernel; axis=1 bounds rows instead.
    q = {"kernel": jax.random.normal(jax.random.PRNGKey(1), (4, 3)) * 3}
    zeros = jax.tree.map(jnp.zeros_like, q)
    a, _ = max_norm(1.0, axis=0).update(zeros, optax.EmptyState(), q)
    b, _ = tx.update(zeros, optax.EmptyState(), q)
    np.testing.assert_array_equal(a["kernel"], b["kernel"])
    r, _ = max_norm(1.0, axis=1).update(zeros, optax.EmptyState(), q)
    rows = jnp.linalg.norm(optax.apply_updates(q, r)["kernel"], axis=1)
    assert bool(jnp.all(rows <= 1.0 + 1e-5))
    with pytest.raises(ValueError, match="out of range"):
        max_norm(1.0, axis=2).update(zeros, optax.EmptyState(), q)


# --------------------------------------------------------------------------- #
# Which leaves: default kernels, overrides
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", list(_all_transforms()))
def test_biases_untouched_by_default_and_kernels_changed(name):
    tx = _all_transforms()[name]
    params = jax.tree.map(lambda p: 3.0 * p, _params())
    u_in = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), params)
    u, _ = tx.update(u_in, tx.init(params), params)
    for layer in ("Dense_0", "Dense_1"):
        np.testing.assert_array_equal(u[layer]["bias"], u_in[layer]["bias"])
        assert not np.allclose(u[layer]["kernel"], u_in[layer]["kernel"])


@pytest.mark.parametrize("name", list(_all_transforms()))
def test_each_transform_jits(name):
    tx = _all_transforms()[name]
    params = _params()
    g = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)
    state = tx.init(params)
    eager, s1 = tx.update(g, state, params)
    jitted, s2 = jax.jit(tx.update)(g, state, params)
    _assert_tree_close(eager, jitted, rtol=1e-6, atol=1e-7)
    assert jax.tree.structure(s1) == jax.tree.structure(s2)
    # Chains with an optimizer, jitted.
    chain = optax.chain(optax.sgd(0.1), tx)
    u, _ = jax.jit(chain.update)(g, chain.init(params), params)
    assert jax.tree.structure(u) == jax.tree.structure(params)


@pytest.mark.parametrize("name", list(_all_transforms()))
def test_missing_params_raises(name):
    tx = _all_transforms()[name]
    params = _params()
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params), None)


def test_regex_mask_override():
    params = jax.tree.map(lambda p: 3.0 * p, _params())
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = add_l2(0.5, mask="Dense_0/kernel")
    u, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(u["Dense_0"]["kernel"], 0.5 * params["Dense_0"]["kernel"])
    np.testing.assert_array_equal(u["Dense_1"]["kernel"], 0.0)
    np.testing.assert_array_equal(u["Dense_0"]["bias"], 0.0)
    # A regex can select biases too.
    tx = decoupled_weight_decay(0.5, 1.0, mask=r"bias$")
    u, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(u["Dense_1"]["bias"], -0.5 * params["Dense_1"]["bias"])
    np.testing.assert_array_equal(u["Dense_1"]["kernel"], 0.0)
    # A regex that matches nothing is an error at init.
    with pytest.raises(ValueError, match="matches no parameter"):
        add_l2(0.5, mask="nothing_here").init(params)


def test_callable_and_bool_tree_masks():
    params = jax.tree.map(lambda p: 3.0 * p, _params())
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = prox_l1(100.0, 1.0, mask=lambda path, leaf: path.startswith("Dense_1"))
    u, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, u)
    np.testing.assert_array_equal(new["Dense_1"]["kernel"], 0.0)
    np.testing.assert_array_equal(new["Dense_1"]["bias"], 0.0)
    np.testing.assert_array_equal(new["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    # A bool pytree with an array leaf selects entry by entry.
    sel = jax.tree.map(lambda p: False, params)
    sel["Dense_0"]["kernel"] = jnp.zeros((4, 3), bool).at[0].set(True)
    tx = add_l1(1.0, mask=sel)
    u, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_array_equal(
        u["Dense_0"]["kernel"][0], jnp.sign(params["Dense_0"]["kernel"][0])
    )
    np.testing.assert_array_equal(u["Dense_0"]["kernel"][1:], 0.0)
    np.testing.assert_array_equal(u["Dense_1"]["kernel"], 0.0)


def test_dtype_of_updates_is_kept():
    params = {"kernel": jnp.ones((3, 3), jnp.bfloat16)}
    tx = optax.chain(
        add_l2(0.1), optax.sgd(0.1), prox_l1(0.1, optax.constant_schedule(0.1)), max_norm(1.0)
    )
    u, _ = tx.update(params, tx.init(params), params)
    assert u["kernel"].dtype == jnp.bfloat16


# --------------------------------------------------------------------------- #
# Bad arguments
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "make, bad",
    [
        (lambda: add_l2(-0.1), "-0.1"),
        (lambda: add_l1(-1.0), "-1.0"),
        (lambda: decoupled_weight_decay(-1e-4, 0.1), "-0.0001"),
        (lambda: decoupled_weight_decay(1e-4, -0.1), "-0.1"),
        (lambda: prox_l1(-0.5, 0.1), "-0.5"),
        (lambda: prox_l1(0.5, -0.1), "-0.1"),
        (lambda: elastic_net(-1.0, 0.0, 0.1), "-1.0"),
        (lambda: elastic_net(0.0, -2.0, 0.1), "-2.0"),
        (lambda: add_l2(float("nan")), "nan"),
        (lambda: add_l2("big"), "'big'"),
    ],
)
def test_negative_strengths_raise(make, bad):
    with pytest.raises(ValueError, match=">= 0") as err:
        make()
    assert bad in str(err.value)


@pytest.mark.parametrize("c", [0.0, -1.0, float("inf")])
def test_bad_max_value_raises(c):
    with pytest.raises(ValueError, match="> 0") as err:
        max_norm(c)
    assert repr(c) in str(err.value)


def test_max_norm_head_false_constrains_hidden_units_only():
    """optimizer.max_norm_head=False: the output layer ``head`` is left free."""
    import ml_collections

    from lth_jax import optim

    opt = ml_collections.ConfigDict(
        {"name": "sgd", "l2": 0.0, "weight_decay": 0.0, "l1": 0.0, "max_norm": 1.0}
    )
    params = {
        "Dense_0": {"kernel": jnp.full((4, 3), 2.0), "bias": jnp.full((3,), 5.0)},
        "head": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.zeros(2)},
    }
    zeros = jax.tree.map(jnp.zeros_like, params)
    for head, want_head in ((True, 1.0), (False, 12**0.5)):  # column norm of head's kernel
        opt.max_norm_head = head
        tx = optim.optimizer_chain(opt, 0.1)
        u, _ = tx.update(zeros, tx.init(params), params)
        new = optax.apply_updates(params, u)
        norms = lambda k: jnp.sqrt(jnp.sum(jnp.square(k), axis=0))
        assert jnp.allclose(norms(new["Dense_0"]["kernel"]), 1.0)
        assert jnp.allclose(norms(new["head"]["kernel"]), want_head, rtol=1e-6)
        assert jnp.array_equal(new["Dense_0"]["bias"], params["Dense_0"]["bias"])
