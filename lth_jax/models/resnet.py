"""CIFAR ResNets (He et al., 2016, Section 4.2): ResNet-20 and its ``6n+2`` family.

Architecture: a 3x3 conv stem (16 channels) with batch norm and ReLU, then three
stages of ``n = (depth - 2) / 6`` basic blocks with 16, 32 and 64 channels (the
first block of stages 2 and 3 has stride 2), global average pooling and the
output layer ``Dense(num_classes, name='head')``. ResNet-20 has ``n = 3``.

A basic block is ``conv3x3 -> BN -> ReLU -> conv3x3 -> BN``, plus the shortcut,
then ReLU. Convolutions have no bias (batch norm follows each).

**Shortcuts.** Where a block changes shape the shortcut is, by default, a 1x1
convolution with stride 2 followed by batch norm (``shortcut='projection'``,
He et al.'s option B on the changing blocks only, as in open_lth's
``cifar_resnet``, the implementation Frankle et al. use for lottery tickets).
``shortcut='A'`` instead uses He et al.'s parameter-free option A: subsample by
2 and zero-pad the new channels. Other blocks use the identity.

Parameter counts (10 classes):

* ``resnet20`` (projection): 272,474 (open_lth's count)
* ``resnet20`` with ``shortcut='A'``: 269,722

Init: He normal (``nn.initializers.he_normal()``, a truncated normal of variance
``2 / fan_in``) for every kernel; batch norm scale 1, offset 0.

**Dropout placement.** ``input_dropout`` on the input image, ``dropout`` on the
pooled features that feed ``head``.

**Names.** ``stem_conv``, ``stem_bn``, blocks ``stage{s}_block{b}`` (``s`` from
1, ``b`` from 0) each holding ``conv1, bn1, conv2, bn2`` and, for projection
shortcuts, ``shortcut_conv, shortcut_bn``; output layer ``head``.

Training needs ``mutable=['batch_stats']``::

    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from lth_jax.models._common import (
    check_layer_fields,
    check_positive_int,
    check_positive_ints,
    maybe_dropout,
    resolve_activation,
)
from lth_jax.models.cpu_conv import conv_general_dilated

__all__ = ["ResNet", "BasicBlock", "SHORTCUTS"]

SHORTCUTS = ("projection", "A")


class BasicBlock(nn.Module):
    """A two-conv residual block (NHWC)."""

    features: int
    strides: int = 1
    shortcut: str = "projection"
    activation: Callable = nn.relu
    kernel_init: Callable = nn.initializers.he_normal()
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool = False):
        def bn(name):
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                name=name,
            )

        def conv(features, size, strides, name):
            return nn.Conv(
                features,
                (size, size),
                strides=(strides, strides),
                padding="SAME" if size > 1 else "VALID",
                use_bias=False,
                kernel_init=self.kernel_init,
                name=name,
                conv_general_dilated=conv_general_dilated,
            )

        y = conv(self.features, 3, self.strides, "conv1")(x)
        y = self.activation(bn("bn1")(y))
        y = conv(self.features, 3, 1, "conv2")(y)
        y = bn("bn2")(y)

        residual = x
        if self.strides != 1 or x.shape[-1] != self.features:
            if self.shortcut == "projection":
                residual = conv(self.features, 1, self.strides, "shortcut_conv")(x)
                residual = bn("shortcut_bn")(residual)
            else:  # option A: subsample, then zero-pad the new channels
                residual = x[:, :: self.strides, :: self.strides, :]
                extra = self.features - x.shape[-1]
                if extra < 0:
                    raise ValueError("shortcut='A' cannot reduce the number of channels")
                lo = extra // 2
                residual = jnp.pad(residual, ((0, 0), (0, 0), (0, 0), (lo, extra - lo)))
        return self.activation(y + residual)


class ResNet(nn.Module):
    """A CIFAR ResNet of depth ``6n + 2`` (inputs NHWC).

    Attributes:
      depth: total depth, ``6n + 2`` (20, 32, 44, 56, 110, ...).
      widths: channels of the three stages (the stem uses ``widths[0]``).
      num_classes: width of the output layer ``head``.
      shortcut: ``'projection'`` (1x1 conv + BN where the shape changes) or ``'A'``
        (zero-padded identity).
      activation: a callable or a name (default ``'relu'``).
      input_dropout: dropout rate on the input.
      dropout: dropout rate on the pooled features (before ``head``).
      kernel_init: initializer of every kernel (default ``he_normal()``).
      bn_momentum: batch-norm running-average momentum (0.9 = PyTorch's 0.1).
      bn_epsilon: batch-norm epsilon.
    """

    depth: int = 20
    widths: Sequence[int] = (16, 32, 64)
    num_classes: int = 10
    shortcut: str = "projection"
    activation: str | Callable = "relu"
    input_dropout: float = 0.0
    dropout: float = 0.0
    kernel_init: Callable = nn.initializers.he_normal()
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    def __post_init__(self):
        check_positive_int(self.depth, "depth")
        if (self.depth - 2) % 6 != 0 or self.depth < 8:
            raise ValueError(
                f"depth must be 6n + 2 with n >= 1 (20, 32, 56, ...), got {self.depth}"
            )
        check_positive_ints(self.widths, "widths", allow_empty=False)
        check_positive_int(self.num_classes, "num_classes")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")
        if self.shortcut == "A" and any(b < a for a, b in zip(self.widths, self.widths[1:])):
            raise ValueError("shortcut='A' needs non-decreasing widths")
        check_layer_fields(self, ("input_dropout", "dropout"), ("kernel_init",))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = resolve_activation(self.activation)
        n = (self.depth - 2) // 6
        x = maybe_dropout(x, self.input_dropout, train)
        x = nn.Conv(
            self.widths[0],
            (3, 3),
            padding="SAME",
            use_bias=False,
            kernel_init=self.kernel_init,
            name="stem_conv",
            conv_general_dilated=conv_general_dilated,
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            name="stem_bn",
        )(x)
        x = act(x)
        for s, width in enumerate(self.widths):
            for b in range(n):
                x = BasicBlock(
                    width,
                    strides=2 if (s > 0 and b == 0) else 1,
                    shortcut=self.shortcut,
                    activation=act,
                    kernel_init=self.kernel_init,
                    bn_momentum=self.bn_momentum,
                    bn_epsilon=self.bn_epsilon,
                    name=f"stage{s + 1}_block{b}",
                )(x, train=train)
        x = jnp.mean(x, axis=(1, 2))  # global average pool
        x = maybe_dropout(x, self.dropout, train)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="head")(x)
