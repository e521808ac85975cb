"""Convolution gradients as canonical convolutions on a CPU (lth_jax.models.cpu_conv)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from lth_jax import loop, masks, models
from lth_jax.config import base_config
from lth_jax.models import VGG, ConvNet
from lth_jax.models.cpu_conv import canonical_backward, conv_general_dilated
from lth_jax.train import Engine

CASES = [  # input shape, kernel shape, strides, padding
    ((3, 9, 9, 4), (3, 3, 4, 5), (1, 1), "SAME"),
    ((3, 9, 9, 4), (3, 3, 4, 5), (2, 2), "SAME"),
    ((3, 10, 9, 4), (3, 3, 4, 5), (2, 2), ((1, 1), (1, 1))),
    ((3, 9, 9, 4), (1, 1, 4, 5), (2, 2), "VALID"),
    ((3, 8, 8, 4), (3, 3, 4, 5), (2, 2), "VALID"),
    ((2, 7, 7, 3), (5, 5, 3, 2), (3, 3), ((2, 0), (0, 1))),
    ((3, 40, 4), (5, 4, 6), (1,), "SAME"),
    ((3, 40, 4), (5, 4, 6), (2,), ((1, 1),)),
]


def _specs(x):
    return ("NWC", "WIO", "NWC") if x.ndim == 3 else ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("xs,ws,strides,padding", CASES)
def test_forward_and_gradients_are_lax_conv(xs, ws, strides, padding):
    key = jax.random.PRNGKey(0)
    x, w = jax.random.normal(key, xs), jax.random.normal(jax.random.fold_in(key, 1), ws)
    kw = dict(dimension_numbers=_specs(x))
    ref = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, **kw)
    new = lambda x, w: conv_general_dilated(x, w, strides, padding, **kw)

    @jax.jit
    def vjp(x, w, dy):
        with canonical_backward():
            y, back = jax.vjp(new, x, w)
        return y, back(dy)

    y_ref, back = jax.vjp(ref, x, w)
    dy = jax.random.normal(jax.random.fold_in(key, 2), y_ref.shape)
    y, grads = vjp(x, w, dy)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    for got, want in zip(grads, back(dy)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_only_inside_the_context_and_for_plain_convolutions():
    x, w, w2 = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 4)), jnp.ones((3, 3, 2, 4))
    kw = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def custom(w, **extra):  # a new function each time: traces are cached per function
        f = lambda x, w: conv_general_dilated(x, w, (1, 1), "SAME", **kw, **extra)
        return "custom_vjp" in str(jax.make_jaxpr(f)(x, w))

    assert not custom(w)  # outside canonical_backward: lax's convolution
    with canonical_backward():
        assert custom(w)
        assert not custom(w2, feature_group_count=2)
        assert not custom(w, rhs_dilation=(2, 2))
    # Forward-mode differentiation outside the context (as saliency's Hessian products).
    f = lambda w: jnp.sum(conv_general_dilated(x, w, (1, 1), "SAME", **kw) ** 2)
    jax.jvp(jax.grad(f), (w,), (w,))


def _non_canonical(hlo_text):
    labels = re.findall(r"dim_labels=(\S+?)[,\s]", hlo_text)
    assert labels, "no convolution in the program"
    return [lb for lb in labels if lb not in ("b01f_01io->b01f", "b0f_0io->b0f")]


class _Images:
    def __init__(self):
        r = np.random.default_rng(0)
        make = lambda n: (r.normal(size=(n, 8, 8, 3)).astype(np.float32), r.integers(0, 10, n))
        self.train_x, self.train_y = make(64)
        self.val_x, self.val_y = make(16)
        self.test_x, self.test_y = make(16)


def test_the_compiled_loop_has_only_canonical_convolutions():
    """Inside the engine's scan every convolution is canonical (XLA's fast kernels); the
    same step scanned without canonical_backward is not, which is what this guards."""
    model = ConvNet(conv_features=((4,),), fc_features=(8,))
    engine = Engine(model, _Images(), base_config().optimizer, steps=4, batch_size=8, eval_every=4)
    params, bs = engine.init(jax.random.split(jax.random.PRNGKey(0), 1))
    mask = jax.vmap(masks.ones_like)(params)
    keys = jax.random.key_data(jax.random.split(jax.random.PRNGKey(1), 1))
    text = engine.lower(params, bs, mask, keys, keys).compile().as_text()
    assert "while" in text and _non_canonical(text) == []

    one = jax.tree.map(lambda a: a[0], params)
    x, y = jnp.asarray(_Images().train_x[:8]), jnp.arange(8) % 10

    def steps(p):
        def body(p, _):
            g = jax.grad(lambda p: loop.cross_entropy(model.apply({"params": p}, x), y))(p)
            return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), None

        return lax.scan(body, p, None, length=2)[0]

    assert _non_canonical(jax.jit(steps).lower(one).compile().as_text())


@pytest.mark.parametrize(
    "model,shape",
    [
        (models.get("conv2"), (4, 32, 32, 3)),
        (models.get("resnet20"), (4, 32, 32, 3)),
        (VGG(plan=(8, "M", 16)), (4, 16, 16, 3)),
        (models.get("cnn1d"), (4, 40)),
    ],
    ids=["conv2", "resnet20", "vgg", "cnn1d"],
)
def test_conv_models_get_lax_gradients_under_the_canonical_backward(model, shape):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    variables = model.init({"params": jax.random.PRNGKey(1)}, x)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({**variables, "params": p}, x), jnp.arange(shape[0]) % 10
    ).mean()
    want = jax.grad(loss)(variables["params"])
    with canonical_backward():
        got = jax.jit(jax.grad(loss))(variables["params"])
        assert "custom_vjp" in str(jax.make_jaxpr(jax.grad(loss))(variables["params"]))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
