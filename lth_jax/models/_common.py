"""Helpers shared by the model zoo: argument checks, activations and dropout."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lth_jax import checks
from lth_jax.dropouts import Dropout

__all__ = [
    "ACTIVATIONS",
    "resolve_activation",
    "check_dropout_rate",
    "check_positive_int",
    "check_positive_ints",
    "check_init",
    "check_layer_fields",
    "maybe_dropout",
    "flatten",
]

ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "silu": nn.silu,
    "swish": nn.swish,
    "softplus": nn.softplus,
    "identity": lambda x: x,
}


def resolve_activation(activation: str | Callable) -> Callable:
    """Return the activation function named by ``activation`` (or ``activation`` itself)."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        f"unknown activation {activation!r}; expected a callable or one of {sorted(ACTIVATIONS)}"
    )


def check_dropout_rate(rate: Any, name: str) -> None:
    """Raise ValueError unless ``0 <= rate < 1`` (a dropout probability).

    Any real number is accepted (NumPy scalars included); booleans and NaN are not.
    """
    if isinstance(rate, numbers.Real) and not isinstance(rate, bool):
        rate = float(rate)
    checks.number(rate, name, 0, 1)


def check_positive_int(value: Any, name: str) -> None:
    """Raise ValueError unless ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_positive_ints(values: Any, name: str, allow_empty: bool = True) -> None:
    """Raise ValueError unless ``values`` is a sequence of positive ints."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of positive ints, got {values!r}")
    if not allow_empty and len(values) == 0:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        check_positive_int(v, f"every entry of {name}")


def check_init(init: Any, name: str) -> None:
    """Raise ValueError unless ``init`` is callable (an initializer)."""
    if not callable(init):
        raise ValueError(f"{name} must be an initializer (callable), got {init!r}")


def check_layer_fields(
    module: Any, rates: Sequence[str], inits: Sequence[str] = ("kernel_init", "bias_init")
) -> None:
    """The checks every model runs on its shared fields, in this order.

    ``module.activation`` (a known name or a callable), each dropout rate
    named in ``rates`` (``0 <= rate < 1``) and each initializer named in
    ``inits`` (callable). Raises ``ValueError`` naming the first bad field.
    """
    resolve_activation(module.activation)
    for name in rates:
        check_dropout_rate(getattr(module, name), name)
    for name in inits:
        check_init(getattr(module, name), name)


def maybe_dropout(x, rate: float, train: bool):
    """Apply :class:`lth_jax.dropouts.Dropout` with ``rate`` when ``rate > 0``.

    Must be called inside a ``@nn.compact`` method. With ``rate == 0`` no module
    is created and ``x`` is returned unchanged, so a model without dropout never
    needs a ``'dropout'`` rng, even with ``train=True``.
    """
    if rate > 0.0:
        return Dropout(rate)(x, deterministic=not train)
    return x


def dense_head(module, x, widths, act, train: bool):
    """Hidden dense layers (activation, then dropout ``module.dropout``) and the ``head``.

    Must be called inside ``module``'s ``@nn.compact`` method: the layers are
    ``module``'s own (``Dense_0``, ``Dense_1``, ..., ``head``), initialized with
    its ``kernel_init`` and ``bias_init``.
    """
    inits = {"kernel_init": module.kernel_init, "bias_init": module.bias_init}
    for width in widths:
        x = maybe_dropout(act(nn.Dense(width, **inits)(x)), module.dropout, train)
    return nn.Dense(module.num_classes, name="head", **inits)(x)


def flatten(x):
    """Flatten all but the leading (batch) axis."""
    return x.reshape((x.shape[0], -1))
