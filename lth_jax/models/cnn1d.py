"""A small 1-D CNN for MNIST-1D (Greydanus, 2020), after the paper's ``ConvBase``.

Architecture (input ``(N, L)``, reshaped to ``(N, L, 1)``; MNIST-1D has
``L = 40``): three 1-D convolutions of 25 channels with stride 2 and padding 1,
kernel sizes 5, 3, 3, each followed by ReLU; then flatten and the output layer
``Dense(num_classes, name='head')``. On length 40 the feature lengths are
19, 10 and 5, so the head sees 5 x 25 = 125 features, exactly as the
reference ``ConvBase(channels=25, linear_in=125)``.

Parameter count (``L = 40``, 10 classes): 150 + 1,900 + 1,900 + 1,260 = **5,210**.
The MNIST-1D paper reports about 94% test accuracy for this CNN (4,000 training
examples, Adam).

Init: He normal (``nn.initializers.he_normal()``) kernels, zero biases.

**Dropout placement.** ``input_dropout`` on the input signal, ``conv_dropout``
after each convolution's activation, ``dropout`` on the flattened features that
feed ``head``.

**Names.** ``Conv_0, Conv_1, Conv_2`` and ``head``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from lth_jax.models import count_params
  >>> model = CNN1D()
  >>> variables = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 40)))
  >>> count_params(variables["params"])
  5210
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn

from lth_jax.models._common import (
    check_layer_fields,
    check_positive_int,
    check_positive_ints,
    flatten,
    maybe_dropout,
    resolve_activation,
)
from lth_jax.models.cpu_conv import conv_general_dilated

__all__ = ["CNN1D"]


class CNN1D(nn.Module):
    """A 1-D CNN over ``(N, L)`` or ``(N, L, C)`` inputs.

    Attributes:
      channels: channels of every convolution.
      kernel_sizes: one kernel size per convolution (their number is the depth).
      strides: stride of every convolution.
      padding: zero padding on each side of every convolution.
      num_classes: width of the output layer ``head``.
      activation: a callable or a name (default ``'relu'``).
      input_dropout: dropout rate on the input.
      conv_dropout: dropout rate after each convolution's activation.
      dropout: dropout rate on the flattened features (before ``head``).
      kernel_init: initializer of every kernel (default ``he_normal()``).
      bias_init: initializer of every bias (default zeros).
    """

    channels: int = 25
    kernel_sizes: Sequence[int] = (5, 3, 3)
    strides: int = 2
    padding: int = 1
    num_classes: int = 10
    activation: str | Callable = "relu"
    input_dropout: float = 0.0
    conv_dropout: float = 0.0
    dropout: float = 0.0
    kernel_init: Callable = nn.initializers.he_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    def __post_init__(self):
        check_positive_int(self.channels, "channels")
        check_positive_ints(self.kernel_sizes, "kernel_sizes", allow_empty=False)
        check_positive_int(self.strides, "strides")
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"padding must be a non-negative int, got {self.padding!r}")
        check_positive_int(self.num_classes, "num_classes")
        check_layer_fields(self, ("input_dropout", "conv_dropout", "dropout"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = resolve_activation(self.activation)
        if x.ndim == 2:
            x = x[..., None]
        elif x.ndim != 3:
            raise ValueError(f"CNN1D expects inputs (N, L) or (N, L, C), got shape {x.shape}")
        x = maybe_dropout(x, self.input_dropout, train)
        for size in self.kernel_sizes:
            x = nn.Conv(
                self.channels,
                (size,),
                strides=(self.strides,),
                padding=((self.padding, self.padding),),
                kernel_init=self.kernel_init,
                bias_init=self.bias_init,
                conv_general_dilated=conv_general_dilated,
            )(x)
            x = act(x)
            x = maybe_dropout(x, self.conv_dropout, train)
        x = flatten(x)
        x = maybe_dropout(x, self.dropout, train)
        return nn.Dense(
            self.num_classes, kernel_init=self.kernel_init, bias_init=self.bias_init, name="head"
        )(x)
