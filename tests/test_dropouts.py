"""Tests for lth_jax.dropouts: statistics, gradients, keys, wrappers, targeted and MC dropout."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lth_jax
from lth_jax.dropouts import (
    DropConnectDense,
    Dropout,
    MCPrediction,
    dropconnect,
    dropout,
    mc_predict,
    predictive_entropy,
    targeted_dropout,
    targeted_weights,
)

HYP = settings(max_examples=20, deadline=None)
rates = st.floats(min_value=0.05, max_value=0.95)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def _key(seed=0):
    return jax.random.PRNGKey(seed)


# --------------------------------------------------------------------------- #
# dropout: statistics
# --------------------------------------------------------------------------- #


def test_package_level_name_is_the_function():
    assert lth_jax.dropout is dropout


@HYP
@given(rate=rates, seed=seeds)
def test_keep_fraction_is_one_minus_rate(rate, seed):
    n = 20_000
    y = dropout(_key(seed), jnp.ones(n), rate)
    keep = float(jnp.mean(y != 0))
    p = 1.0 - rate
    assert abs(keep - p) <= 5 * math.sqrt(p * (1 - p) / n)
    # Kept units are scaled by exactly 1/(1-rate) (in float32), dropped are 0.
    vals = np.unique(np.asarray(y))
    assert set(vals.tolist()) <= {0.0, float(np.float32(1.0) * np.float32(1.0 / p))}


@HYP
@given(rate=st.floats(min_value=0.1, max_value=0.8), seed=seeds)
def test_mean_is_preserved(rate, seed):
    num = 4000
    x = jax.random.normal(_key(seed + 1), (6,)) + 2.0
    keys = jax.random.split(_key(seed), num)
    ys = jax.vmap(lambda k: dropout(k, x, rate))(keys)
    mean = jnp.mean(ys, axis=0)
    # Per entry: y = x * B / (1-r), B ~ Bernoulli(1-r); std = |x| sqrt(r/(1-r)).
    std = jnp.abs(x) * math.sqrt(rate / (1 - rate)) / math.sqrt(num)
    assert bool(jnp.all(jnp.abs(mean - x) <= 5 * std + 1e-6))


@HYP
@given(rate=rates, seed=seeds)
def test_gradient_flows_only_through_kept_units(rate, seed):
    x = jax.random.uniform(_key(seed + 7), (64,), minval=0.5, maxval=2.0)
    key = _key(seed)
    y = dropout(key, x, rate)
    g = jax.grad(lambda x: jnp.sum(dropout(key, x, rate)))(x)
    kept = y != 0
    scale = np.float32(1.0) / np.float32(1.0 - rate)
    np.testing.assert_array_equal(np.asarray(g)[~np.asarray(kept)], 0.0)
    np.testing.assert_allclose(np.asarray(g)[np.asarray(kept)], scale, rtol=1e-6)
    # And the output is exactly x * scale on the kept units.
    np.testing.assert_allclose(
        np.asarray(y)[np.asarray(kept)], np.asarray(x * scale)[kept], rtol=1e-6
    )


def test_same_key_same_mask_different_keys_differ():
    x = jnp.ones((32, 32))
    a = dropout(_key(0), x, 0.5)
    b = dropout(_key(0), x, 0.5)
    c = dropout(_key(1), x, 0.5)
    np.testing.assert_array_equal(a, b)
    assert bool(jnp.any(a != c))


def test_new_style_typed_keys_work():
    y = dropout(jax.random.key(0), jnp.ones(100), 0.5)
    assert set(np.unique(np.asarray(y)).tolist()) == {0.0, 2.0}


def test_rate_one_gives_zeros_and_zero_gradients():
    x = jnp.arange(1.0, 9.0)
    y = dropout(_key(), x, 1.0)
    np.testing.assert_array_equal(y, 0.0)
    g = jax.grad(lambda x: jnp.sum(dropout(_key(), x, 1.0) ** 2))(x)
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_array_equal(g, 0.0)
    gj = jax.jit(jax.grad(lambda x: jnp.sum(dropout(_key(), x, 1.0))))(x)
    np.testing.assert_array_equal(gj, 0.0)


def test_rate_one_needs_no_key():
    np.testing.assert_array_equal(dropout(None, jnp.ones(3), 1.0), 0.0)


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_deterministic_is_identity(rate):
    x = jax.random.normal(_key(2), (5, 7))
    y = dropout(_key(0), x, rate, deterministic=True)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dropout(None, x, rate, deterministic=True), x)  # no key needed
    g = jax.grad(lambda x: jnp.sum(dropout(None, x, rate, deterministic=True)))(x)
    np.testing.assert_array_equal(g, 1.0)


def test_rate_zero_is_identity_without_key():
    x = jax.random.normal(_key(2), (5, 7))
    np.testing.assert_array_equal(dropout(None, x, 0.0), x)


def test_missing_key_raises():
    with pytest.raises(ValueError, match="key"):
        dropout(None, jnp.ones(3), 0.5)


def test_dropped_entries_are_exact_zero_even_for_inf():
    x = jnp.full((200,), jnp.inf)
    y = dropout(_key(0), x, 0.5)
    assert bool(jnp.any(y == 0)) and bool(jnp.all((y == 0) | jnp.isinf(y)))


@pytest.mark.parametrize("dims", [(1, 2), (-3, -2)])
def test_broadcast_dims_drop_whole_channels(dims):
    x = jnp.ones((4, 5, 5, 32))
    y = dropout(_key(3), x, 0.5, broadcast_dims=dims)
    # Each (example, channel) is all kept or all dropped.
    per_channel = y.reshape(4, 25, 32)
    assert bool(jnp.all(per_channel == per_channel[:, :1, :]))
    kept = per_channel[:, 0, :] != 0
    assert 0 < int(kept.sum()) < kept.size  # both kinds happen
    # Channel masks differ across examples (dim 0 is not broadcast).
    assert bool(jnp.any(kept[0] != kept[1]) or jnp.any(kept[1] != kept[2]))


def test_broadcast_dims_keep_fraction():
    x = jnp.ones((64, 3, 3, 64))
    y = dropout(_key(9), x, 0.25, broadcast_dims=(1, 2))
    kept = np.asarray(y[:, 0, 0, :] != 0)
    n, p = kept.size, 0.75
    assert abs(kept.mean() - p) <= 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "half"])
def test_bad_rate_raises(rate):
    with pytest.raises(ValueError, match=r"\[0, 1\]") as err:
        dropout(_key(), jnp.ones(3), rate)
    assert repr(rate) in str(err.value) or str(rate) in str(err.value)


@pytest.mark.parametrize("dims", [(2,), (-3,), (0, 5)])
def test_bad_broadcast_dims_raise(dims):
    with pytest.raises(ValueError, match="out of range") as err:
        dropout(_key(), jnp.ones((2, 3)), 0.5, broadcast_dims=dims)
    assert "[-2, 1]" in str(err.value)


def test_works_under_jit_and_vmap():
    x = jax.random.normal(_key(1), (4, 16))
    f = jax.jit(lambda k, x: dropout(k, x, 0.4, broadcast_dims=(0,)))
    np.testing.assert_array_equal(f(_key(0), x), dropout(_key(0), x, 0.4, broadcast_dims=(0,)))
    keys = jax.random.split(_key(0), 3)
    ys = jax.vmap(lambda k: dropout(k, x, 0.4))(keys)
    for i in range(3):
        np.testing.assert_array_equal(ys[i], dropout(keys[i], x, 0.4))
    # vmap over the data with one shared key.
    yv = jax.vmap(lambda row: dropout(_key(5), row, 0.4))(x)
    for i in range(4):  # each row as alone: the same key, so the same mask for every row
        np.testing.assert_array_equal(yv[i], dropout(_key(5), x[i], 0.4))
    assert (yv == 0).any() and ((yv[0] == 0) == (yv[1] == 0)).all()


def test_dtype_is_kept():
    y = dropout(_key(0), jnp.ones(16, jnp.bfloat16), 0.5)
    assert y.dtype == jnp.bfloat16


# --------------------------------------------------------------------------- #
# Flax wrapper
# --------------------------------------------------------------------------- #


class _Probe(nn.Module):
    """Draws the key the Dropout module would draw at the same place."""

    @nn.compact
    def __call__(self, x):
        return self.make_rng("dropout")


def test_flax_dropout_equals_pure_function_with_drawn_key():
    x = jnp.arange(1.0, 41.0).reshape(5, 8)
    key = _key(11)
    drawn = _Probe().apply({}, x, rngs={"dropout": key})
    y = Dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": key})
    np.testing.assert_array_equal(y, dropout(drawn, x, 0.5))
    assert bool(jnp.any(y != x))


def test_flax_dropout_broadcast_and_custom_collection():
    x = jnp.ones((2, 3, 3, 8))
    m = Dropout(0.5, broadcast_dims=(1, 2), rng_collection="noise")
    y = m.apply({}, x, deterministic=False, rngs={"noise": _key(0)})
    assert bool(jnp.all(y == y[:, :1, :1, :]))


def test_flax_deterministic_path_needs_no_rng():
    x = jax.random.normal(_key(), (3, 4))
    np.testing.assert_array_equal(Dropout(0.5).apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(Dropout(0.5, deterministic=True).apply({}, x), x)
    np.testing.assert_array_equal(Dropout(0.0).apply({}, x, deterministic=False), x)
    np.testing.assert_array_equal(Dropout(1.0).apply({}, x, deterministic=False), 0.0)
    with pytest.raises(Exception, match="dropout"):
        Dropout(0.5).apply({}, x, deterministic=False)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Dense(16)(x))
        x = Dropout(0.5)(x, deterministic=not train)
        return nn.Dense(3)(x)


def test_flax_dropout_inside_a_model():
    model = _MLP()
    x = jnp.ones((4, 5))
    v = model.init(_key(0), x, train=False)
    a = model.apply(v, x, train=True, rngs={"dropout": _key(1)})
    b = model.apply(v, x, train=True, rngs={"dropout": _key(1)})
    c = model.apply(v, x, train=True, rngs={"dropout": _key(2)})
    e = model.apply(v, x, train=False)
    np.testing.assert_array_equal(a, b)
    assert bool(jnp.any(a != c)) and bool(jnp.any(a != e))
    g = jax.grad(
        lambda p: jnp.sum(model.apply({"params": p}, x, train=True, rngs={"dropout": _key(1)}))
    )(v["params"])
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))


# --------------------------------------------------------------------------- #
# DropConnect
# --------------------------------------------------------------------------- #


@HYP
@given(rate=rates, seed=seeds)
def test_dropconnect_masks_and_rescales_weights(rate, seed):
    w = jax.random.uniform(_key(seed + 1), (64, 32), minval=0.5, maxval=1.5)
    out = dropconnect(_key(seed), w, rate)
    kept = np.asarray(out != 0)
    np.testing.assert_allclose(
        np.asarray(out)[kept], np.asarray(w * np.float32(1.0 / (1.0 - rate)))[kept], rtol=1e-6
    )
    p, n = 1 - rate, w.size
    assert abs(kept.mean() - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_dropconnect_deterministic_identity():
    w = jax.random.normal(_key(), (3, 4))
    np.testing.assert_array_equal(dropconnect(_key(), w, 0.5, deterministic=True), w)


def test_dropconnect_dense_layer():
    m = DropConnectDense(6, rate=0.5)
    x = jax.random.normal(_key(1), (4, 5))
    v = m.init(_key(0), x, deterministic=True)
    k, b = v["params"]["kernel"], v["params"]["bias"]
    np.testing.assert_allclose(m.apply(v, x, deterministic=True), x @ k + b, rtol=1e-5)
    key = _key(7)
    drawn = _Probe().apply({}, x, rngs={"dropout": key})
    y = m.apply(v, x, deterministic=False, rngs={"dropout": key})
    np.testing.assert_allclose(y, x @ dropconnect(drawn, k, 0.5) + b, rtol=1e-5, atol=1e-6)
    assert bool(jnp.any(jnp.abs(y - (x @ k + b)) > 1e-4))
    no_bias = DropConnectDense(6, rate=0.5, use_bias=False)
    assert "bias" not in no_bias.init(_key(0), x, deterministic=True)["params"]


# --------------------------------------------------------------------------- #
# Targeted dropout
# --------------------------------------------------------------------------- #


@HYP
@given(
    shape=st.sampled_from([(1, 1), (7, 3), (12, 5)]),
    frac=st.floats(0.0, 1.0),
    rate=st.floats(0.0, 1.0),
    seed=seeds,
)
def test_targeted_dropout_only_drops_smallest_per_unit(shape, frac, rate, seed):
    n_in, n_out = shape
    w = jax.random.normal(_key(seed + 1), shape)
    targeted = np.asarray(targeted_weights(w, frac))
    out = np.asarray(targeted_dropout(_key(seed), w, rate, frac))
    wn = np.asarray(w)
    k = math.floor(frac * n_in + 0.5)
    # Exactly k targeted per column, and they are the k smallest |w| of the column.
    np.testing.assert_array_equal(targeted.sum(axis=0), k)
    for j in range(n_out):
        t, u = np.abs(wn[targeted[:, j], j]), np.abs(wn[~targeted[:, j], j])
        if t.size and u.size:
            assert t.max() <= u.min()
    changed = out != wn
    assert not np.any(changed & ~targeted)  # untargeted never touched
    np.testing.assert_array_equal(out[changed], 0.0)  # dropped -> 0
    np.testing.assert_array_equal(out[~changed], wn[~changed])  # kept: no rescaling
    if rate == 1.0:
        np.testing.assert_array_equal(out[targeted], 0.0)


def test_targeted_dropout_drops_about_rate_of_the_targeted():
    w = jax.random.normal(_key(0), (200, 50))
    rate, frac = 0.3, 0.5
    targeted = np.asarray(targeted_weights(w, frac))
    dropped = np.asarray(targeted_dropout(_key(1), w, rate, frac) != w)
    n = targeted.sum()
    assert n == 100 * 50
    assert abs(dropped[targeted].mean() - rate) <= 5 * math.sqrt(rate * (1 - rate) / n)
    assert not dropped[~targeted].any()


def test_targeted_dropout_conv_kernel_and_whole_tensor():
    w = jax.random.normal(_key(3), (3, 3, 4, 8))  # HWIO: 36 weights per output channel
    t = np.asarray(targeted_weights(w, 0.25))
    np.testing.assert_array_equal(t.sum(axis=(0, 1, 2)), 9)
    tg = np.asarray(targeted_weights(w, 0.25, axis=None))
    assert tg.sum() == 72
    assert np.abs(np.asarray(w))[tg].max() <= np.abs(np.asarray(w))[~tg].min()
    t0 = np.asarray(targeted_weights(jnp.asarray(w).reshape(36, 8).T, 0.25, axis=0))
    np.testing.assert_array_equal(t0.T, t.reshape(36, 8))


def test_targeted_dropout_deterministic_grad_and_errors():
    w = jax.random.normal(_key(), (10, 4))
    np.testing.assert_array_equal(targeted_dropout(_key(), w, 0.5, 0.5, deterministic=True), w)
    out = targeted_dropout(_key(1), w, 0.5, 0.5)
    g = jax.grad(lambda w: jnp.sum(targeted_dropout(_key(1), w, 0.5, 0.5)))(w)
    np.testing.assert_array_equal(g, (out == w).astype(jnp.float32))
    jitted = jax.jit(lambda k, w: targeted_dropout(k, w, 0.5, 0.5))
    np.testing.assert_array_equal(jitted(_key(1), w), out)
    with pytest.raises(ValueError, match="target_fraction"):
        targeted_dropout(_key(), w, 0.5, 1.2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        targeted_dropout(_key(), w, -0.5, 0.5)


# --------------------------------------------------------------------------- #
# Monte Carlo dropout
# --------------------------------------------------------------------------- #


def _mc_fn(rate):
    w = jax.random.normal(_key(42), (6, 5))

    def apply_fn(key, x):
        return dropout(key, x, rate) @ w * 3.0

    return apply_fn


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_mc_predict_shapes_and_ranges(rate):
    x = jax.random.normal(_key(0), (7, 6))
    out = jax.jit(lambda k, x: mc_predict(_mc_fn(rate), k, x, 16))(_key(1), x)
    assert isinstance(out, MCPrediction)
    assert out.mean_probs.shape == (7, 5)
    assert out.entropy.shape == (7,)
    assert out.mutual_information.shape == (7,)
    assert out.sample_probs.shape == (16, 7, 5)
    np.testing.assert_allclose(jnp.sum(out.mean_probs, -1), 1.0, atol=1e-5)
    np.testing.assert_allclose(jnp.sum(out.sample_probs, -1), 1.0, atol=1e-5)
    assert bool(jnp.all(out.entropy >= 0))
    assert bool(jnp.all(out.entropy <= math.log(5) + 1e-5))
    assert bool(jnp.all(out.mutual_information >= 0))
    assert bool(jnp.all(out.mutual_information <= out.entropy + 1e-6))
    if rate == 0.0:
        np.testing.assert_array_equal(out.sample_probs, out.sample_probs[:1].repeat(16, 0))
        np.testing.assert_allclose(out.mutual_information, 0.0, atol=1e-5)
    else:
        assert bool(jnp.any(out.sample_probs[0] != out.sample_probs[1]))
        assert float(jnp.max(out.mutual_information)) > 1e-4


def test_mc_predict_uses_split_keys_and_jits():
    x = jax.random.normal(_key(0), (3, 6))
    f = _mc_fn(0.5)
    out = jax.jit(lambda k, x: mc_predict(f, k, x, 4))(_key(1), x)
    keys = jax.random.split(_key(1), 4)
    for s in range(4):
        np.testing.assert_allclose(out.sample_probs[s], jax.nn.softmax(f(keys[s], x)), rtol=1e-5)
    np.testing.assert_allclose(out.entropy, predictive_entropy(out.mean_probs), rtol=1e-6)


def test_mc_predict_with_flax_model_and_uniform_entropy():
    model = _MLP()
    x = jnp.ones((2, 5))
    v = model.init(_key(0), x, train=False)
    out = mc_predict(lambda k, x: model.apply(v, x, train=True, rngs={"dropout": k}), _key(1), x, 8)
    assert out.mean_probs.shape == (2, 3)
    uniform = mc_predict(lambda k, x: jnp.zeros((2, 4)), _key(0), x, 3)
    np.testing.assert_allclose(uniform.entropy, math.log(4), rtol=1e-6)  # nats


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_mc_predict_bad_num_samples(n):
    with pytest.raises(ValueError, match="num_samples"):
        mc_predict(_mc_fn(0.5), _key(), jnp.ones((1, 6)), n)


def test_predictive_entropy_zero_log_zero():
    np.testing.assert_allclose(predictive_entropy(jnp.array([1.0, 0.0, 0.0])), 0.0)
