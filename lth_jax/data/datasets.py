"""``load`` (one split as arrays) and ``get_dataset`` (train/val/test, normalized).

:func:`get_dataset` turns the two published splits into three:

* **Validation** is carved from the training split. With
  ``perm = numpy.random.default_rng(seed).permutation(n_train)``, the
  validation set is ``perm[:val_size]`` and the training set
  ``perm[val_size:val_size + train_size]`` (both sorted back into the original
  order). The choice depends only on ``seed``, ``val_size``, the class filter
  and the dataset, so the same validation set is used for every
  ``train_size``, and smaller training subsets are nested in larger ones.
  Default ``val_size``: 5,000 for the image datasets (Frankle & Carbin hold out
  5,000 MNIST training images), 500 for MNIST-1D.
* **Normalization** (``normalize=True``) subtracts the mean and divides by the
  standard deviation of the final training set (after ``classes`` and
  ``train_size``), per channel: images (NHWC) reduce over N, H and W; MNIST-1D
  signals ``(N, L)`` are one channel and reduce over everything. The same
  statistics are applied to validation and test, and returned in the
  :class:`Dataset` (``mean``, ``std``).
* **Classes** (``classes=(5, 6, 7, 8, 9)``) keeps only those labels, in train
  and test, and relabels ``classes[i]`` to ``i`` (for transfer between class
  subsets).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from lth_jax.data.mnist1d import load_mnist1d
from lth_jax.data.registry import get_spec
from lth_jax.data.tfds_source import load_tfds

__all__ = ["Dataset", "load", "get_dataset"]


class Dataset(NamedTuple):
    """Train/validation/test arrays of one dataset, ready to put on device.

    Attributes:
      train_x, train_y, val_x, val_y, test_x, test_y: inputs (float32) and
        labels (int32).
      num_classes: number of classes (``len(classes)`` when filtered).
      name: the dataset name.
      mean, std: the normalization statistics (zeros/ones when not normalized).
      train_idx, val_idx: positions of the training and validation examples in
        the original training split (before any class filter).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    name: str
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None


def load(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of a dataset as ``(inputs, labels)`` numpy arrays.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"`` or
        ``"mnist1d"``.
      split: ``"train"`` or ``"test"``, optionally sliced TFDS-style
        (``"train[:1000]"``, ``"test[50%:]"``).
      data_dir: data directory (default :func:`~lth_jax.data.default_data_dir`).
      manual_dir: TFDS datasets only: where original files were put by hand
        (default ``<data_dir>/downloads/manual``).
      download: TFDS datasets only: ``True``, ``False``, or ``None`` for
        "when the network is reachable" (see :mod:`lth_jax.data.tfds_source`).

    Returns:
      ``(inputs, labels)``. Images: float32 NHWC in ``[0, 1]`` (``(N, 28, 28,
      1)`` for MNIST, ``(N, 32, 32, 3)`` for CIFAR). MNIST-1D: float32 ``(N,
      40)``. Labels: int32.

    Raises:
      ValueError: unknown ``name`` (the message lists the valid names).
      TensorFlowMissingError: a TFDS dataset without TensorFlow installed
        (an ``ImportError`` and a ``DatasetUnavailableError``).
      DatasetUnavailableError: a TFDS dataset that is not available offline.

    Example:
      >>> x, y = load("mnist1d", "test[:5]")  # doctest: +SKIP
      >>> x.shape, x.dtype, y.dtype  # doctest: +SKIP
      ((5, 40), dtype('float32'), dtype('int32'))
    """
    spec = get_spec(name)
    if spec.source == "mnist1d":
        return load_mnist1d(split, data_dir=data_dir)
    return load_tfds(name, split, data_dir=data_dir, manual_dir=manual_dir, download=download)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_fraction(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, numbers.Integral))


def _resolve_val_size(val_size, n: int) -> int:
    if _is_int(val_size):
        v = int(val_size)
        if v < 0:
            raise ValueError(f"val_size must be >= 0, got {val_size}")
    elif _is_fraction(val_size) and 0.0 <= val_size < 1.0:
        v = int(round(float(val_size) * n))
    else:
        raise ValueError(f"val_size must be a count >= 0 or a fraction in [0, 1), got {val_size!r}")
    if v >= n:
        raise ValueError(
            f"val_size={val_size} leaves no training data: the training split has {n} examples"
        )
    return v


def _resolve_train_size(train_size, available: int) -> int:
    if train_size is None:
        return available
    if _is_int(train_size):
        t = int(train_size)
    elif _is_fraction(train_size) and 0.0 < train_size <= 1.0:
        t = max(1, int(round(float(train_size) * available)))
    else:
        raise ValueError(
            f"train_size must be a count >= 1 or a fraction in (0, 1], got {train_size!r}"
        )
    if not 1 <= t <= available:
        raise ValueError(
            f"train_size={train_size} must be in [1, {available}] "
            "(the training examples left after the validation split)"
        )
    return t


def _class_filter(classes, num_classes: int) -> np.ndarray | None:
    if classes is None:
        return None
    classes = list(classes) if isinstance(classes, Sequence | np.ndarray) else None
    if not classes or not all(_is_int(c) or isinstance(c, np.integer) for c in classes):
        raise ValueError(f"classes must be a non-empty sequence of ints, got {classes!r}")
    arr = np.asarray(classes, dtype=np.int64)
    if len(set(arr.tolist())) != len(arr) or arr.min() < 0 or arr.max() >= num_classes:
        raise ValueError(f"classes must be distinct labels in [0, {num_classes}), got {classes}")
    return arr


def _relabel(x, y, classes):
    """Keeps examples whose label is in ``classes``; maps ``classes[i]`` to ``i``."""
    lookup = np.full(max(int(classes.max()), int(y.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    new = lookup[y]
    keep = np.nonzero(new >= 0)[0]
    return x[keep], new[keep].astype(np.int32), keep


def _channel_stats(x: np.ndarray, axes: tuple[int, ...], chunk: int = 4096):
    """Mean and std over ``axes`` in float64, in chunks of examples (bounded memory).

    A zero std (a constant channel) is replaced by 1.
    """
    mean = x.mean(axis=axes, dtype=np.float64)
    sq = np.zeros_like(mean)
    for start in range(0, len(x), chunk):
        d = x[start : start + chunk].astype(np.float64) - mean
        sq += np.square(d).sum(axis=axes)
    std = np.sqrt(sq / max(x.size // max(mean.size, 1), 1))
    return mean, np.where(std > 0, std, 1.0)


def get_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    val_size: int | float | None = None,
    seed: int = 0,
    train_size: int | float | None = None,
    classes: Sequence[int] | None = None,
    normalize: bool = True,
    manual_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> Dataset:
    """Loads a dataset split into train / validation / test (see the module docstring).

    Args:
      name: a dataset name (see :func:`load`).
      data_dir: data directory (default :func:`~lth_jax.data.default_data_dir`).
      val_size: validation examples carved from the training split: a count,
        or a fraction in ``[0, 1)``; default 5,000 (500 for MNIST-1D).
      seed: seed of the validation/subsampling choice.
      train_size: keep this many of the remaining training examples (a count,
        or a fraction in ``(0, 1]``); default all.
      classes: keep only these labels and relabel ``classes[i] -> i``.
      normalize: standardize with the training set's per-channel mean and std.
      manual_dir, download: passed to :func:`load`.

    Returns:
      A :class:`Dataset`.

    Raises:
      ValueError: bad ``val_size``, ``train_size`` or ``classes`` (e.g.
        ``val_size`` not smaller than the training split).
    """
    spec = get_spec(name)
    if not _is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    wanted = _class_filter(classes, spec.num_classes)
    # Validate cheap arguments before loading anything.
    if val_size is not None:
        _resolve_val_size(val_size, np.iinfo(np.int64).max)
    _resolve_train_size(train_size, np.iinfo(np.int64).max)

    load_kw = dict(data_dir=data_dir, manual_dir=manual_dir, download=download)
    train_x, train_y = load(name, "train", **load_kw)
    test_x, test_y = load(name, "test", **load_kw)
    orig_idx = np.arange(len(train_y))
    num_classes = spec.num_classes
    if wanted is not None:
        train_x, train_y, orig_idx = _relabel(train_x, train_y, wanted)
        test_x, test_y, _ = _relabel(test_x, test_y, wanted)
        num_classes = len(wanted)

    n = len(train_y)
    v = _resolve_val_size(spec.default_val_size if val_size is None else val_size, n)
    t = _resolve_train_size(train_size, n - v)
    perm = np.random.default_rng(seed).permutation(n)
    val_pos = np.sort(perm[:v])
    train_pos = np.sort(perm[v : v + t])

    tx, vx = train_x[train_pos], train_x[val_pos]
    axes = tuple(range(tx.ndim - 1)) if tx.ndim >= 3 else tuple(range(tx.ndim))
    if normalize:
        mean, std = _channel_stats(tx, axes)
    else:
        shape = tx.shape[-1:] if tx.ndim >= 3 else ()
        mean, std = np.zeros(shape), np.ones(shape)
    mean, std = mean.astype(np.float32), std.astype(np.float32)

    def norm(x):  # ((x - mean) / std) as float32, dividing in place (one array less)
        if not normalize:
            return x.astype(np.float32)
        out = x - mean
        return np.divide(out, std, out=out).astype(np.float32, copy=False)

    return Dataset(
        train_x=norm(tx),
        train_y=train_y[train_pos].astype(np.int32),
        val_x=norm(vx),
        val_y=train_y[val_pos].astype(np.int32),
        test_x=norm(test_x),
        test_y=test_y.astype(np.int32),
        num_classes=num_classes,
        name=name,
        mean=mean,
        std=std,
        train_idx=orig_idx[train_pos],
        val_idx=orig_idx[val_pos],
    )
