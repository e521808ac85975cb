"""VGG for CIFAR, in the style of open_lth's ``cifar_vgg`` (Frankle et al.).

Architecture: 3x3 convolutions (``'SAME'`` padding, with bias), each followed
by batch norm when ``batch_norm=True`` and by ReLU; ``'M'`` is a 2x2 max-pool
with stride 2. VGG-19's plan is::

    64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M,
    512, 512, 512, 512

then global average pooling over space and one output layer
``Dense(num_classes, name='head')``. On 32x32 inputs the last feature map is
2x2, so global average pooling equals open_lth's ``AvgPool2d(2)``.

Parameter counts (10 classes; they do not depend on the input size):

* ``vgg19`` (no batch norm): 20,029,514
* ``vgg19_bn``: 20,040,522 (the convolutions keep their biases, as in open_lth;
  batch norm adds a scale and an offset per channel, 11,008 in all, plus
  ``batch_stats`` that are not parameters).

Init: He normal (``nn.initializers.he_normal()``, a truncated normal of variance
``2 / fan_in``) for every kernel, zero biases; open_lth uses Kaiming normal.

**Dropout placement.** ``input_dropout`` on the input image, ``conv_dropout``
after each max-pool, ``dropout`` on the pooled features that feed ``head``.

**Names.** Convolutions ``Conv_0 ... Conv_15``, batch norms
``BatchNorm_0 ...``, output layer ``head``. Batch-norm ``scale``/``bias`` are
not kernels, so the default prunable rule skips them.

Training with ``batch_norm=True`` needs ``mutable=['batch_stats']``::

    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from lth_jax.models._common import (
    check_layer_fields,
    check_positive_int,
    maybe_dropout,
    resolve_activation,
)
from lth_jax.models.cpu_conv import conv_general_dilated

__all__ = ["VGG", "VGG11", "VGG13", "VGG16", "VGG19"]

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)
VGG13 = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG19 = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, 256, "M",
    512, 512, 512, 512, "M",
    512, 512, 512, 512,
)  # fmt: skip


class VGG(nn.Module):
    """A CIFAR VGG (inputs NHWC).

    Attributes:
      plan: the layer plan: ints are 3x3 conv widths, ``'M'`` a 2x2 max-pool.
      num_classes: width of the output layer ``head``.
      batch_norm: batch norm after every convolution (before the activation).
      activation: a callable or a name (default ``'relu'``).
      input_dropout: dropout rate on the input.
      conv_dropout: dropout rate after each max-pool.
      dropout: dropout rate on the globally pooled features (before ``head``).
      kernel_init: initializer of every kernel (default ``he_normal()``).
      bn_momentum: batch-norm running-average momentum (0.9 = PyTorch's 0.1).
      bn_epsilon: batch-norm epsilon.
    """

    plan: Sequence[int | str] = VGG19
    num_classes: int = 10
    batch_norm: bool = False
    activation: str | Callable = "relu"
    input_dropout: float = 0.0
    conv_dropout: float = 0.0
    dropout: float = 0.0
    kernel_init: Callable = nn.initializers.he_normal()
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    def __post_init__(self):
        if isinstance(self.plan, str) or not isinstance(self.plan, Sequence):
            raise ValueError(f"plan must be a sequence of ints and 'M', got {self.plan!r}")
        for item in self.plan:
            if item != "M":
                check_positive_int(item, "every entry of plan other than 'M'")
        check_positive_int(self.num_classes, "num_classes")
        if not isinstance(self.batch_norm, bool):
            raise ValueError(f"batch_norm must be a bool, got {self.batch_norm!r}")
        check_layer_fields(self, ("input_dropout", "conv_dropout", "dropout"), ("kernel_init",))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = resolve_activation(self.activation)
        x = maybe_dropout(x, self.input_dropout, train)
        for item in self.plan:
            if item == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                x = maybe_dropout(x, self.conv_dropout, train)
                continue
            x = nn.Conv(
                item,
                (3, 3),
                padding="SAME",
                kernel_init=self.kernel_init,
                conv_general_dilated=conv_general_dilated,
            )(x)
            if self.batch_norm:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=self.bn_momentum,
                    epsilon=self.bn_epsilon,
                )(x)
            x = act(x)
        x = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))  # global average pool
        x = maybe_dropout(x, self.dropout, train)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="head")(x)
