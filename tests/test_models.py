"""Tests for the model zoo (lth_jax.models)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth_jax import models
from lth_jax.dropouts import Dropout
from lth_jax.models import CNN1D, MLP, VGG, ConvNet, ResNet, count_params


def _key(seed):
    # RBG keys: on CPU, XLA compiles the initializers of a whole model several times faster
    # than with the default threefry keys, which dominated this file's runtime. The models
    # do not care which PRNG implementation their keys use.
    return jax.random.key(seed, impl="rbg")


KEY = _key(0)

INPUT_SHAPES = {
    "mlp": (28, 28, 1),
    "lenet300_100": (784,),
    "mnist1d_mlp": (40,),
    "cnn1d": (40,),
    "conv2": (32, 32, 3),
    "conv4": (32, 32, 3),
    "conv6": (32, 32, 3),
    "vgg19": (32, 32, 3),
    "vgg19_bn": (32, 32, 3),
    "resnet20": (32, 32, 3),
}
BN_MODELS = {"vgg19_bn", "resnet20"}
EXACT_COUNTS = {
    "mlp": 266_610,  # default features (300, 100) on 28x28x1
    "lenet300_100": 266_610,
    "mnist1d_mlp": 15_210,
    "cnn1d": 5_210,
    "conv2": 4_301_642,
    "conv4": 2_425_930,
    "conv6": 2_262_602,
    "vgg19": 20_029_514,
    "vgg19_bn": 20_040_522,
    "resnet20": 272_474,
}


def _x(name, n=2, seed=0):
    return jax.random.normal(_key(seed), (n, *INPUT_SHAPES[name]))


def _shapes(model, x):
    """Variables of ``model`` as ShapeDtypeStructs (no computation)."""
    return jax.eval_shape(lambda: model.init({"params": KEY}, x, train=False))


# --------------------------------------------------------------------------- registry


def test_names():
    assert models.names() == sorted(INPUT_SHAPES)
    assert set(models.names()) == set(EXACT_COUNTS)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'nope'") as info:
        models.get("nope")
    for name in models.names():
        assert name in str(info.value)


def test_unknown_kwarg_is_type_error_listing_valid_kwargs():
    with pytest.raises(TypeError, match="unexpected keyword argument.*'widht'.*valid:.*dropout"):
        models.get("mlp", widht=3)


def test_fixed_kwarg_of_a_preset_is_value_error():
    with pytest.raises(ValueError, match="fixes features"):
        models.get("lenet300_100", features=(10,))
    with pytest.raises(ValueError, match="fixes depth"):
        models.get("resnet20", depth=32)
    with pytest.raises(ValueError, match="fixes batch_norm"):
        models.get("vgg19", batch_norm=True)
    assert "features" not in models.kwargs_for("lenet300_100")
    assert "features" in models.kwargs_for("mlp")


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("mlp", {"dropout": 1.5}, "dropout"),
        ("mlp", {"input_dropout": -0.1}, "input_dropout"),
        ("mlp", {"num_classes": 0}, "num_classes"),
        ("mlp", {"features": (100, -1)}, "features"),
        ("mlp", {"activation": "nope"}, "activation"),
        ("mlp", {"kernel_init": 3}, "kernel_init"),
        ("conv2", {"conv_dropout": 1.0}, "conv_dropout"),
        ("resnet20", {"shortcut": "C"}, "shortcut"),
        ("cnn1d", {"kernel_sizes": ()}, "kernel_sizes"),
        ("vgg19", {"dropout": "0.5"}, "dropout"),
    ],
)
def test_bad_values_are_value_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.get(name, **kwargs)


def test_direct_construction_validates_too():
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=21)
    with pytest.raises(ValueError, match="plan"):
        VGG(plan=(64, "X"))


def test_count_params():
    assert count_params({"a": jnp.ones((3, 4)), "b": [jnp.ones(5), jnp.ones(())]}) == 18
    assert count_params({}) == 0


# --------------------------------------------------------------------------- shapes and counts


@pytest.mark.parametrize("name", sorted(INPUT_SHAPES))
def test_param_count_exact(name):
    variables = _shapes(models.get(name), _x(name, 1))
    assert count_params(variables["params"]) == EXACT_COUNTS[name]
    assert ("batch_stats" in variables) == (name in BN_MODELS)


def test_param_count_ranges():
    vgg = count_params(_shapes(models.get("vgg19"), _x("vgg19", 1))["params"])
    assert 19_500_000 < vgg < 20_500_000
    resnet = count_params(_shapes(models.get("resnet20"), _x("resnet20", 1))["params"])
    assert 260_000 < resnet < 280_000
    option_a = models.get("resnet20", shortcut="A")
    assert count_params(_shapes(option_a, _x("resnet20", 1))["params"]) == 269_722


def test_mlp_variants():
    # MNIST-1D MLP 40-100-100-10 as the general mlp
    mlp = models.get("mlp", features=(100, 100))
    assert count_params(_shapes(mlp, jnp.zeros((1, 40)))["params"]) == 15_210
    # Srivastava et al. (2014) dropout MNIST net is expressible
    net = models.get("mlp", features=(1024, 1024, 1024), input_dropout=0.2, dropout=0.5)
    assert (net.input_dropout, net.dropout) == (0.2, 0.5)
    params = _shapes(net, jnp.zeros((1, 784)))["params"]
    assert count_params(params) == 784 * 1024 + 2 * 1024 * 1024 + 10 * 1024 + 3 * 1024 + 10


@pytest.mark.parametrize("name", sorted(INPUT_SHAPES))
def test_output_shape_kernels_and_head(name):
    model = models.get(name, num_classes=7)
    x = _x(name, 3)
    variables = _shapes(model, x)
    out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert out.shape == (3, 7)
    params = variables["params"]
    assert params["head"]["kernel"].shape[-1] == 7
    assert params["head"]["bias"].shape == (7,)
    # Every weight matrix / conv filter is a leaf named "kernel"; nothing else is >= 2-D.
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        last = path[-1].key
        assert (last == "kernel") == (leaf.ndim >= 2), (path, leaf.shape)
        assert last in ("kernel", "bias", "scale"), path


def test_head_is_the_only_difference_between_num_classes():
    a = _shapes(models.get("conv2"), _x("conv2", 1))["params"]
    b = _shapes(models.get("conv2", num_classes=100), _x("conv2", 1))["params"]
    for k in a:
        same = jax.tree.map(lambda u, v: u.shape == v.shape, a[k], b[k])
        assert all(jax.tree.leaves(same)) == (k != "head"), k


def test_mlp_flattens_any_input_and_uses_glorot_zero_bias():
    model = models.get("lenet300_100")
    x = jnp.ones((2, 28, 28, 1))
    params = model.init({"params": KEY}, x)["params"]
    assert params["Dense_0"]["kernel"].shape == (784, 300)
    assert not np.any(np.asarray(params["Dense_0"]["bias"]))
    std = float(jnp.std(params["Dense_0"]["kernel"]))
    assert std == pytest.approx(np.sqrt(2 / (784 + 300)), rel=0.1)
    y = model.apply({"params": params}, x.reshape(2, 784))
    np.testing.assert_allclose(y, model.apply({"params": params}, x), rtol=1e-6)


def test_kernel_init_and_activation_are_overridable():
    model = models.get("mlp", features=(5,), kernel_init=nn.initializers.zeros, activation="tanh")
    params = model.init({"params": KEY}, jnp.ones((1, 4)))["params"]
    assert not np.any(np.asarray(params["Dense_0"]["kernel"]))
    x = -jnp.ones((1, 4))
    params = {"Dense_0": {"kernel": jnp.ones((4, 1)), "bias": jnp.zeros(1)},
              "head": {"kernel": jnp.ones((1, 1)), "bias": jnp.zeros(1)}}  # fmt: skip
    for activation, expected in [("relu", 0.0), ("identity", -4.0), (jnp.tanh, np.tanh(-4.0))]:
        mlp = MLP(features=(1,), num_classes=1, activation=activation)
        np.testing.assert_allclose(mlp.apply({"params": params}, x), [[expected]], rtol=1e-6)


def test_cnn1d_accepts_channels_last_input():
    model = models.get("cnn1d")
    variables = model.init({"params": KEY}, _x("cnn1d"))
    x = _x("cnn1d")
    np.testing.assert_allclose(
        model.apply(variables, x), model.apply(variables, x[..., None]), rtol=1e-6
    )


# --------------------------------------------------------------------------- dropout


def _dropout_calls(model, x, train):
    """(rate, deterministic, input shape) of every Dropout call; traced only, never run."""
    calls = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, Dropout) and context.method_name == "__call__":
            calls.append((context.module.rate, kwargs.get("deterministic"), args[0].shape))
        return next_fun(*args, **kwargs)

    variables = _shapes(model, x)
    mutable = ["batch_stats"] if "batch_stats" in variables else False
    with nn.intercept_methods(interceptor):
        jax.eval_shape(
            lambda v, k: model.apply(v, x, train=train, rngs={"dropout": k}, mutable=mutable),
            variables,
            _key(1),
        )
    return calls


PLACEMENT_CASES = [
    # (model name, dropout kwarg, shapes of the inputs of the Dropout layers, batch 2)
    ("mlp", "input_dropout", [(2, 784)]),
    ("mlp", "dropout", [(2, 300), (2, 100)]),
    ("conv2", "input_dropout", [(2, 32, 32, 3)]),
    ("conv2", "conv_dropout", [(2, 16, 16, 64)]),
    ("conv2", "dropout", [(2, 256), (2, 256)]),
    ("conv6", "conv_dropout", [(2, 16, 16, 64), (2, 8, 8, 128), (2, 4, 4, 256)]),
    ("vgg19", "input_dropout", [(2, 32, 32, 3)]),
    (
        "vgg19_bn",
        "conv_dropout",
        [(2, 16, 16, 64), (2, 8, 8, 128), (2, 4, 4, 256), (2, 2, 2, 512)],
    ),
    ("vgg19", "dropout", [(2, 512)]),
    ("resnet20", "input_dropout", [(2, 32, 32, 3)]),
    ("resnet20", "dropout", [(2, 64)]),
    ("cnn1d", "input_dropout", [(2, 40, 1)]),
    ("cnn1d", "conv_dropout", [(2, 19, 25), (2, 10, 25), (2, 5, 25)]),
    ("cnn1d", "dropout", [(2, 125)]),
]


@pytest.mark.parametrize(
    "name, which, shapes", PLACEMENT_CASES, ids=[f"{c[0]}-{c[1]}" for c in PLACEMENT_CASES]
)
def test_dropout_placement(name, which, shapes):
    x = _x(name, 2)
    model = models.get(name, **{which: 0.3})
    assert _dropout_calls(model, x, train=True) == [(0.3, False, s) for s in shapes]
    assert all(det for _, det, _ in _dropout_calls(model, x, train=False))
    assert _dropout_calls(models.get(name), x, train=True) == []  # rate 0: no layer at all


# One small model per family and one dropout kwarg each (placement is tested above).
_SMALL_CONV = dict(conv_features=((8,),), fc_features=(16,))
_SMALL_VGG = dict(plan=(8, "M", 16, "M", 16))
_SMALL_RESNET = dict(depth=8, widths=(4, 8))
BEHAVIOUR_CASES = [
    ("mlp", MLP, {}, (28, 28, 1), "dropout"),
    ("conv", ConvNet, _SMALL_CONV, (8, 8, 3), "conv_dropout"),
    ("vgg", VGG, _SMALL_VGG, (8, 8, 3), "dropout"),
    ("vgg_bn", VGG, dict(_SMALL_VGG, batch_norm=True), (8, 8, 3), "conv_dropout"),
    ("resnet", ResNet, _SMALL_RESNET, (8, 8, 3), "input_dropout"),
    ("cnn1d", CNN1D, {}, (40,), "dropout"),
]


@pytest.mark.parametrize(
    "cls, kwargs, shape, which",
    [c[1:] for c in BEHAVIOUR_CASES],
    ids=[f"{c[0]}-{c[4]}" for c in BEHAVIOUR_CASES],
)
def test_dropout_behaviour(cls, kwargs, shape, which):
    x = jax.random.normal(_key(1), (4, *shape))
    plain = cls(**kwargs)
    model = cls(**kwargs, **{which: 0.5})
    variables = model.init({"params": KEY}, x, train=False)
    has_bn = "batch_stats" in variables

    def run(m, train, key=None):
        rngs = None if key is None else {"dropout": key}
        if train and has_bn:
            return m.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])[0]
        return m.apply(variables, x, train=train, rngs=rngs)

    # Evaluation is deterministic, needs no rng, and equals the model without dropout.
    y_eval = run(model, False)
    np.testing.assert_array_equal(y_eval, run(model, False))
    np.testing.assert_array_equal(y_eval, run(plain, False))
    # Training: same key -> same output; different keys -> different outputs.
    k1, k2 = _key(11), _key(12)
    y1 = run(model, True, k1)
    np.testing.assert_array_equal(y1, run(model, True, k1))
    assert not np.allclose(y1, run(model, True, k2))
    y_plain = run(plain, True)  # no dropout: no rng needed, even when training
    assert not np.allclose(y1, y_plain)
    if not has_bn:  # without dropout or batch norm, train and eval agree
        np.testing.assert_array_equal(y_plain, y_eval)
    # Training with dropout but without a 'dropout' rng fails loudly.
    with pytest.raises(Exception, match="dropout"):
        run(model, True)


def test_batch_norm_train_uses_batch_statistics_and_updates_them():
    model = ResNet(depth=8, widths=(4, 8))  # resnet20's code path, cheaper
    x = _x("resnet20", 4)[:, :8, :8] * 3.0 + 1.0
    variables = model.init({"params": KEY}, x)
    y_train, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(y_train, model.apply(variables, x, train=False))
    before = variables["batch_stats"]["stem_bn"]["mean"]
    assert not np.allclose(before, updates["batch_stats"]["stem_bn"]["mean"])
    assert set(variables["params"]["stage2_block0"]) >= {"shortcut_conv", "shortcut_bn"}
    assert "shortcut_conv" not in variables["params"]["stage1_block0"]


def test_resnet_option_a_shortcut_runs():
    model = ResNet(depth=8, widths=(4, 8), shortcut="A")
    x = _x("resnet20", 2)[:, :8, :8]
    variables = model.init({"params": KEY}, x)
    assert "shortcut_conv" not in variables["params"]["stage2_block0"]
    assert model.apply(variables, x).shape == (2, 10)


# --------------------------------------------------------------------------- training


def _train_losses(model, x, y, steps, lr, dropout_key=None):
    """Init ``model`` and take ``steps`` Adam steps on one batch; return the loss before each
    step and after the last one (``steps + 1`` values).

    Batch-norm statistics are updated (``mutable=['batch_stats']``) and carried along.
    Everything, init included, is one compiled program: on CPU that is cheaper than eager
    init plus a compiled step.
    """
    tx = optax.adam(lr)
    rngs = None if dropout_key is None else {"dropout": dropout_key}

    def loss_fn(params, state):
        if state:
            logits, new_state = model.apply(
                {"params": params, **state}, x, train=True, rngs=rngs, mutable=list(state)
            )
        else:
            logits, new_state = model.apply({"params": params}, x, train=True, rngs=rngs), {}
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

    def step(carry, _):
        params, state, opt_state = carry
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state), loss

    @jax.jit
    def train(key):
        variables = model.init({"params": key}, x, train=False)
        params = variables.pop("params")
        carry = (params, variables, tx.init(params))
        # The last step's loss is the loss after `steps` updates.
        return jax.lax.scan(step, carry, None, length=steps + 1)[1]

    losses = np.asarray(train(KEY))
    assert np.isfinite(losses).all(), losses
    return losses


TRAIN_CASES = {
    # name: (batch, steps, learning rate, kwargs)
    "mlp": (16, 5, 1e-3, {"dropout": 0.2}),
    "lenet300_100": (16, 5, 1e-3, {}),
    "mnist1d_mlp": (16, 5, 1e-3, {}),
    "cnn1d": (16, 5, 1e-3, {"conv_dropout": 0.1}),
    "conv2": (8, 3, 1e-4, {"dropout": 0.5}),
    "conv4": (8, 3, 1e-4, {}),
    "conv6": (8, 3, 1e-4, {}),
    "vgg19": (2, 2, 1e-5, {}),  # 1e-4 overshoots on this 20M-parameter net without BN
    "vgg19_bn": (2, 2, 1e-4, {}),
    "resnet20": (8, 3, 1e-3, {}),
}


@pytest.mark.parametrize(
    "name",
    [  # conv4 and conv6 are conv2 with more blocks: conv2 covers the same code
        pytest.param(n, marks=pytest.mark.slow) if n in ("conv4", "conv6") else n
        for n in sorted(TRAIN_CASES)
    ],
)
def test_training_reduces_loss(name):
    assert set(TRAIN_CASES) == set(models.names())
    batch, steps, lr, kwargs = TRAIN_CASES[name]
    model = models.get(name, **kwargs)
    x = _x(name, batch, seed=3)
    y = jnp.arange(batch) % 10
    # A fixed dropout key, so initial and final losses see the same dropout mask.
    key = _key(5) if any(v for k, v in kwargs.items() if "dropout" in k) else None
    losses = _train_losses(model, x, y, steps, lr, dropout_key=key)
    assert losses[-1] < losses[0], losses
