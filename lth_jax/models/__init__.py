"""The model zoo: Flax linen classifiers and a registry of named presets.

Every model is a pure ``flax.linen`` module with the call signature
``model(x, train: bool = False)`` returning logits of shape ``(N, num_classes)``::

    variables = model.init({"params": key}, x, train=False)
    logits = model.apply(variables, x, train=True, rngs={"dropout": key})

Models with batch norm (``vgg19_bn``, ``resnet20``) keep ``batch_stats``; train
with ``mutable=["batch_stats"]``. ``train=False`` is deterministic and needs no
rng; a ``'dropout'`` rng is needed only with ``train=True`` and a dropout rate
above zero.

**Conventions.** Dense and conv weights are leaves named ``kernel`` (prunable by
the default rule of :mod:`lth_jax.masks`); biases and batch-norm ``scale`` /
``bias`` are not. The output layer of every model is named ``head``
(``params["head"]["kernel"]``, ``params["head"]["bias"]``), so transfer learning
replaces ``params["head"]``. Every model accepts ``num_classes`` (default 10),
``input_dropout`` and ``dropout`` (see each module for where dropout goes), and
most accept ``kernel_init`` and ``activation``.

Registry (``get(name, **kwargs)``; kwargs override the preset's defaults, except
those a preset fixes):

==================  =================================  ===================
name                model                              parameters (10 cl.)
==================  =================================  ===================
``mlp``             :class:`MLP`, default 300-100      depends on input
``lenet300_100``    MLP 784-300-100-10                 266,610
``mnist1d_mlp``     MLP 40-100-100-10                  15,210
``conv2``           :class:`ConvNet` Conv-2            4,301,642
``conv4``           Conv-4                             2,425,930
``conv6``           Conv-6                             2,262,602
``vgg19``           :class:`VGG` VGG-19, no BN         20,029,514
``vgg19_bn``        VGG-19 with batch norm             20,040,522
``resnet20``        :class:`ResNet` depth 20           272,474
``cnn1d``           :class:`CNN1D` (MNIST-1D)          5,210
==================  =================================  ===================

Example:
  >>> import jax, jax.numpy as jnp
  >>> model = get("lenet300_100")
  >>> variables = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 784)))
  >>> count_params(variables["params"])
  266610
  >>> get("mlp", features=(1024, 1024, 1024), input_dropout=0.2, dropout=0.5).dropout
  0.5
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from lth_jax.models.cnn1d import CNN1D
from lth_jax.models.conv import CONV2, CONV4, CONV6, ConvNet
from lth_jax.models.mlp import MLP
from lth_jax.models.resnet import BasicBlock, ResNet
from lth_jax.models.vgg import VGG, VGG19

__all__ = [
    "get",
    "names",
    "kwargs_for",
    "count_params",
    "MLP",
    "ConvNet",
    "VGG",
    "ResNet",
    "BasicBlock",
    "CNN1D",
]


@dataclasses.dataclass(frozen=True)
class _Entry:
    cls: type[nn.Module]
    fixed: dict[str, Any]  # set by the preset; cannot be overridden
    defaults: dict[str, Any]  # set by the preset; can be overridden
    doc: str


_REGISTRY: dict[str, _Entry] = {
    "mlp": _Entry(MLP, {}, {}, "MLP, hidden widths `features` (default 300, 100)"),
    "lenet300_100": _Entry(MLP, {"features": (300, 100)}, {}, "LeNet-300-100 (Frankle & Carbin)"),
    "mnist1d_mlp": _Entry(MLP, {"features": (100, 100)}, {}, "MNIST-1D MLP 40-100-100-10"),
    "conv2": _Entry(ConvNet, {"conv_features": CONV2, "fc_features": (256, 256)}, {}, "Conv-2"),
    "conv4": _Entry(ConvNet, {"conv_features": CONV4, "fc_features": (256, 256)}, {}, "Conv-4"),
    "conv6": _Entry(ConvNet, {"conv_features": CONV6, "fc_features": (256, 256)}, {}, "Conv-6"),
    "vgg19": _Entry(VGG, {"plan": VGG19, "batch_norm": False}, {}, "CIFAR VGG-19 without BN"),
    "vgg19_bn": _Entry(VGG, {"plan": VGG19, "batch_norm": True}, {}, "CIFAR VGG-19 with BN"),
    "resnet20": _Entry(ResNet, {"depth": 20, "widths": (16, 32, 64)}, {}, "CIFAR ResNet-20"),
    "cnn1d": _Entry(CNN1D, {}, {}, "MNIST-1D CNN (3 convs of 25 channels, 5,210 params)"),
}

_NOT_KWARGS = ("parent", "name")


def names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(names())}")
    return _REGISTRY[name]


def kwargs_for(name: str) -> list[str]:
    """The keyword arguments :func:`get` accepts for model ``name``, sorted."""
    entry = _entry(name)
    fields = [f.name for f in dataclasses.fields(entry.cls) if f.init]
    return sorted(f for f in fields if f not in _NOT_KWARGS and f not in entry.fixed)


def get(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name``, with ``kwargs`` as module attributes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = get("mlp", features=(100, 100), num_classes=10, dropout=0.1)
      >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 40)))["params"]
      >>> sorted(params)
      ['Dense_0', 'Dense_1', 'head']

    Raises:
      ValueError: ``name`` is not registered (the message lists the valid names),
        a kwarg tries to change what the preset fixes (e.g. ``features`` of
        ``lenet300_100``), or a value is invalid (e.g. ``dropout=1.5``).
      TypeError: a kwarg is not an attribute of the model (the message lists the
        valid ones).
    """
    entry = _entry(name)
    fixed = sorted(k for k in kwargs if k in entry.fixed)
    if fixed:
        raise ValueError(
            f"model {name!r} fixes {', '.join(f'{k}={entry.fixed[k]!r}' for k in fixed)}; "
            f"use the general {entry.cls.__name__} model to change "
            f"{'it' if len(fixed) == 1 else 'them'}"
        )
    valid = kwargs_for(name)
    unknown = sorted(k for k in kwargs if k not in valid)
    if unknown:
        raise TypeError(
            f"model {name!r} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(valid)}"
        )
    return entry.cls(**{**entry.defaults, **kwargs, **entry.fixed})


def count_params(params) -> int:
    """Total number of scalars in a pytree of arrays (or ``jax.ShapeDtypeStruct``).

    Pass ``variables["params"]`` to count parameters only (a whole ``variables``
    dict also counts ``batch_stats``).

    Example:
      >>> import jax.numpy as jnp
      >>> count_params({"d": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}})
      16
    """
    return int(sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(params)))
