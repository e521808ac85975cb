"""Conv-2, Conv-4 and Conv-6: the VGG-like CIFAR-10 networks of Frankle & Carbin (2019).

Architecture (Frankle & Carbin, Figure 2 / Appendix): blocks of 3x3 convolutions
with ``'SAME'`` padding and ReLU, each block followed by 2x2 max-pooling with
stride 2, then fully connected layers 256, 256 and the output layer:

* Conv-2: ``64, 64, pool``
* Conv-4: ``64, 64, pool, 128, 128, pool``
* Conv-6: ``64, 64, pool, 128, 128, pool, 256, 256, pool``

then ``FC 256, FC 256, FC 10``. Every kernel uses Gaussian Glorot init, biases
are zero. Parameter counts on 32x32x3 inputs (weights and biases):

==========  ===========
Conv-2      4,301,642
Conv-4      2,425,930
Conv-6      2,262,602
==========  ===========

The paper's table lists Conv-6 as 1.7M parameters, but its own layer list
(reproduced here) gives 2,262,602 with biases (2,261,184 weights, 1,418 biases); we follow the
layer list.

**Dropout placement.** ``input_dropout`` on the input image, ``conv_dropout``
after each max-pool (end of each conv block), ``dropout`` after each hidden FC
activation (Frankle & Carbin give the rate of their dropout experiments, 0.5,
but not where it is applied: this placement is ours). None is applied after
``head``.

**Names.** Convolutions are ``Conv_0, Conv_1, ...``, hidden FC layers
``Dense_0, Dense_1`` and the output layer ``head``; all weights are ``kernel``
leaves.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from lth_jax.models import count_params
  >>> model = ConvNet(conv_features=((64, 64),))
  >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  >>> count_params(shapes["params"])
  4301642
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
from lth_jax.models.cpu_conv import conv_general_dilated

__all__ = ["ConvNet", "CONV2", "CONV4", "CONV6"]

CONV2 = ((64, 64),)
CONV4 = ((64, 64), (128, 128))
CONV6 = ((64, 64), (128, 128), (256, 256))


class ConvNet(nn.Module):
    """Frankle & Carbin's Conv-2/4/6 family (inputs NHWC).

    Attributes:
      conv_features: one tuple of widths per block; each block is its 3x3 convs
        followed by a 2x2 max-pool (stride 2).
      fc_features: widths of the hidden fully connected layers.
      num_classes: width of the output layer ``head``.
      activation: a callable or a name (default ``'relu'``).
      input_dropout: dropout rate on the input.
      conv_dropout: dropout rate after each max-pool.
      dropout: dropout rate after each hidden FC activation.
      kernel_init: initializer of every kernel (default ``glorot_normal()``).
      bias_init: initializer of every bias (default zeros).
    """

    conv_features: Sequence[Sequence[int]] = CONV2
    fc_features: Sequence[int] = (256, 256)
    num_classes: int = 10
    activation: str | Callable = "relu"
    input_dropout: float = 0.0
    conv_dropout: float = 0.0
    dropout: float = 0.0
    kernel_init: Callable = nn.initializers.glorot_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    def __post_init__(self):
        if isinstance(self.conv_features, str) or not isinstance(self.conv_features, Sequence):
            raise ValueError(
                f"conv_features must be a sequence of blocks, got {self.conv_features!r}"
            )
        for block in self.conv_features:
            check_positive_ints(block, "each block of conv_features", allow_empty=False)
        check_positive_ints(self.fc_features, "fc_features")
        check_positive_int(self.num_classes, "num_classes")
        check_layer_fields(self, ("input_dropout", "conv_dropout", "dropout"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = resolve_activation(self.activation)
        x = maybe_dropout(x, self.input_dropout, train)
        for block in self.conv_features:
            for width in block:
                x = nn.Conv(
                    width,
                    (3, 3),
                    padding="SAME",
                    kernel_init=self.kernel_init,
                    bias_init=self.bias_init,
                    conv_general_dilated=conv_general_dilated,
                )(x)
                x = act(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = maybe_dropout(x, self.conv_dropout, train)
        x = flatten(x)
        return dense_head(self, x, self.fc_features, act, train)
