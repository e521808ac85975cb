"""Datasets as numpy arrays, and batching/augmentation in JAX from keys.

Loading (numpy, on the host):

* :func:`load` ``(name, split, data_dir=None, manual_dir=None, download=None)
  -> (inputs, labels)``: one split of ``mnist``, ``fashion_mnist``,
  ``cifar10``, ``cifar100`` (through TFDS; needs TensorFlow, the ``tf`` extra)
  or ``mnist1d`` (generated locally and cached; no TensorFlow).
* :func:`get_dataset` ``(name, data_dir=None, val_size=None, seed=0,
  train_size=None, classes=None, normalize=True, ...) -> Dataset``: train /
  validation / test, normalized with the training statistics.
* :func:`default_data_dir`: ``$LTH_JAX_DATA_DIR``, else ``$TFDS_DATA_DIR``,
  else ``~/tensorflow_datasets``.
* :class:`DatasetUnavailableError`: raised at once when a TFDS dataset is not
  available offline; the message says what to put where.

Offline use and the ``download`` argument are described in
:mod:`lth_jax.data.tfds_source`; MNIST-1D's cache in :mod:`lth_jax.data.mnist1d`.

In JAX (jittable, usable inside ``lax.scan`` with the data on device), from
:mod:`lth_jax.data.pipeline`: :func:`steps_per_epoch`,
:func:`permutation`, :func:`epoch_permutation`, :func:`batch_indices`,
:func:`step_indices`, :func:`eval_batches`,
:func:`random_crop_flip`, :func:`crop_flip`.
"""

from __future__ import annotations

from lth_jax.data.datasets import Dataset, get_dataset, load
from lth_jax.data.pipeline import (
    batch_indices,
    crop_flip,
    epoch_permutation,
    eval_batches,
    permutation,
    random_crop_flip,
    step_indices,
    steps_per_epoch,
)
from lth_jax.data.registry import (
    DATASETS,
    DatasetSpec,
    DatasetUnavailableError,
    default_data_dir,
    get_spec,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "DatasetUnavailableError",
    "batch_indices",
    "crop_flip",
    "default_data_dir",
    "epoch_permutation",
    "eval_batches",
    "get_dataset",
    "get_spec",
    "load",
    "permutation",
    "random_crop_flip",
    "step_indices",
    "steps_per_epoch",
]
