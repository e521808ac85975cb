"""The datasets lth_jax knows, where their files live, and the errors it raises.

This module is a leaf: it imports neither TensorFlow, TFDS nor mnist1d, so the
rest of the data package can share it without import cycles or slow imports.

**Default data directory** (:func:`default_data_dir`): the first of

1. the environment variable ``LTH_JAX_DATA_DIR``,
2. the environment variable ``TFDS_DATA_DIR`` (TFDS's own),
3. ``~/tensorflow_datasets`` (TFDS's own default),

so a dataset that ``tfds build`` prepared is found where TFDS would put it, and
one directory (config key ``dataset.data_dir``) holds every dataset, MNIST-1D's
cache included (under ``<data_dir>/mnist1d/``).
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DatasetUnavailableError",
    "TensorFlowMissingError",
    "default_data_dir",
    "get_spec",
]


class DatasetUnavailableError(RuntimeError):
    """A dataset is neither prepared locally nor preparable without a download.

    The message names the dataset, the directories searched, the files to put
    where, and the command that prepares the dataset on a machine with network.
    """


class TensorFlowMissingError(DatasetUnavailableError, ImportError):
    """A TFDS dataset was asked for and TensorFlow is not installed.

    A :class:`DatasetUnavailableError` (the dataset cannot be loaded here, and
    callers that handle that handle this too) and an ``ImportError`` (what it
    was before).
    """


class DatasetSpec(NamedTuple):
    """Static facts about one dataset.

    Attributes:
      name: the lth_jax name (``"mnist"``, ...).
      source: ``"tfds"`` (TFDS built-in builder) or ``"mnist1d"`` (generated).
      tfds_name: the TFDS builder name, or ``None``.
      num_classes: number of label classes.
      input_shape: shape of one input as :func:`lth_jax.data.load` returns it.
      default_val_size: examples held out of the training split for validation
        by :func:`lth_jax.data.get_dataset` when ``val_size`` is not given.
    """

    name: str
    source: str
    tfds_name: str | None
    num_classes: int
    input_shape: tuple[int, ...]
    default_val_size: int


# Frankle & Carbin (2019) hold out 5,000 of MNIST's 60,000 training images for
# validation; we use the same count for every image dataset, and 500 of
# MNIST-1D's 4,000 (the same 1/8 as 5,000 of CIFAR's 50,000 would be 1/10).
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", "tfds", "mnist", 10, (28, 28, 1), 5000),
    "fashion_mnist": DatasetSpec("fashion_mnist", "tfds", "fashion_mnist", 10, (28, 28, 1), 5000),
    "cifar10": DatasetSpec("cifar10", "tfds", "cifar10", 10, (32, 32, 3), 5000),
    "cifar100": DatasetSpec("cifar100", "tfds", "cifar100", 100, (32, 32, 3), 5000),
    "mnist1d": DatasetSpec("mnist1d", "mnist1d", None, 10, (40,), 500),
}


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``.

    Raises:
      ValueError: ``name`` is not a known dataset; the message lists the valid
        names.

    Example:
      >>> get_spec("mnist1d").num_classes
      10
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def default_data_dir() -> str:
    """The data directory used when none is given (see the module docstring).

    Example:
      >>> isinstance(default_data_dir(), str)
      True
    """
    for var in ("LTH_JAX_DATA_DIR", "TFDS_DATA_DIR"):
        value = os.environ.get(var)
        if value:
            return os.path.expanduser(value)
    return os.path.expanduser(os.path.join("~", "tensorflow_datasets"))


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    """``data_dir`` with ``~`` expanded, or :func:`default_data_dir` if ``None``."""
    if data_dir is None:
        return default_data_dir()
    return os.path.expanduser(os.fspath(data_dir))
