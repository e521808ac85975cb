"""Fully connected networks: the general :class:`MLP`, LeNet-300-100 and friends.

Architecture: flatten the input to ``(N, D)``, optional input dropout, then for
each width in ``features``: ``Dense -> activation -> dropout``, then the output
layer ``Dense(num_classes, name='head')``, which returns logits.

Parameter names are ``Dense_0``, ``Dense_1``, ... for the hidden layers and
``head`` for the output layer; each has a ``kernel`` (prunable by default) and a
``bias``. Transfer learning replaces ``params['head']``.

Presets (see :func:`lth_jax.models.get`):

* ``lenet300_100``: 784-300-100-10, 266,610 parameters on 28x28 MNIST, Gaussian
  Glorot init and zero biases (Frankle & Carbin, 2019).
* ``mnist1d_mlp``: 40-100-100-10 for MNIST-1D, 15,210 parameters.
* Srivastava et al. (2014)'s dropout MNIST net is
  ``MLP(features=(1024, 1024, 1024), input_dropout=0.2, dropout=0.5)``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from lth_jax.models import count_params
  >>> model = MLP(features=(300, 100))
  >>> variables = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 28, 28, 1)))
  >>> count_params(variables["params"])
  266610
  >>> model.apply(variables, jnp.zeros((5, 28, 28, 1))).shape
  (5, 10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn

from lth_jax.models._common import (
    check_layer_fields,
    check_positive_int,
    check_positive_ints,
    dense_head,
    flatten,
    maybe_dropout,
    resolve_activation,
)

__all__ = ["MLP"]


class MLP(nn.Module):
    """A multilayer perceptron that flattens any input.

    Attributes:
      features: widths of the hidden layers (may be empty: a linear model).
      num_classes: width of the output layer ``head``.
      activation: a callable or a name (``'relu'``, ``'tanh'``, ...; see
        :data:`lth_jax.models._common.ACTIVATIONS`).
      input_dropout: dropout rate on the flattened input.
      dropout: dropout rate after each hidden activation (never after ``head``).
      kernel_init: initializer of every kernel, ``head`` included. Default:
        Gaussian Glorot (``nn.initializers.glorot_normal()``), as Frankle & Carbin.
      bias_init: initializer of every bias (default zeros).
    """

    features: Sequence[int] = (300, 100)
    num_classes: int = 10
    activation: str | Callable = "relu"
    input_dropout: float = 0.0
    dropout: float = 0.0
    kernel_init: Callable = nn.initializers.glorot_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    def __post_init__(self):
        check_positive_ints(self.features, "features")
        check_positive_int(self.num_classes, "num_classes")
        check_layer_fields(self, ("input_dropout", "dropout"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = resolve_activation(self.activation)
        x = flatten(x)
        x = maybe_dropout(x, self.input_dropout, train)
        return dense_head(self, x, self.features, act, train)
