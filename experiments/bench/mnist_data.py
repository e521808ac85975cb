"""MNIST-sized random data, prepared as TFDS's ``mnist`` so that ``lth-jax run`` reads it.

There is no network here, and the real MNIST files cannot be made up (TFDS
checks them against their registered checksums). This writes random uint8
images of MNIST's shape (28 x 28 x 1) and sizes (60,000 training and 10,000
test images by default) and random labels 0-9 in MNIST's own file format
(IDX, as in ``train-images-idx3-ubyte`` ...), then prepares the ``mnist`` dataset from
them with TFDS's own builder and writer: TFDS's MNIST builder
(``tensorflow_datasets.image_classification.mnist.MNIST``) parses the files
and TFDS writes the TFRecord shards and ``dataset_info.json`` under
``<data_dir>/mnist/<version>/``. Only the download step is skipped (a
subclass, not registered, names the local files instead of downloading).
``lth-jax run --config.dataset.data_dir=<data_dir>`` then reads it through its
normal path (:func:`lth_jax.data.tfds_source.load_tfds`).

Then it reads both splits once through ``lth_jax.data.load``, as a first run
would, which keeps the arrays TFDS returned under ``<data_dir>/lth_jax_arrays/``
(:mod:`lth_jax.data.array_cache`): the timed run reads those, as every run after
a dataset's first does, without TensorFlow.

It also writes ``<data_dir>/mnist_arrays.npz`` (the same images and labels as
uint8 / int64 arrays) for the PyTorch peer, which holds the data in memory.

Run as a script, in its own process (it imports TensorFlow)::

    python experiments/bench/mnist_data.py DATA_DIR [--train 60000] [--test 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

import numpy as np

SHAPE = (28, 28)
CLASSES = 10


def random_mnist(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random MNIST-shaped uint8 images and labels.

    Args:
      n_train: training images.
      n_test: test images.
      seed: numpy seed.

    Returns:
      ``{"train_x", "train_y", "test_x", "test_y"}``: images ``(n, 28, 28)``
      uint8, labels ``(n,)`` int64 in ``[0, 10)``.
    """
    r = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        out[f"{split}_x"] = r.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
        out[f"{split}_y"] = r.integers(0, CLASSES, n).astype(np.int64)
    return out


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes ``array`` (uint8) in the IDX format of the (extracted) MNIST files."""
    magic = {1: 0x801, 3: 0x803}[array.ndim]
    with open(path, "wb") as f:
        f.write(struct.pack(">" + "I" * (1 + array.ndim), magic, *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def prepare(data_dir: str, n_train: int = 60000, n_test: int = 10000, seed: int = 0) -> dict:
    """Writes the random files and prepares TFDS ``mnist`` in ``data_dir``.

    Args:
      data_dir: the TFDS data directory (``--config.dataset.data_dir``).
      n_train: training images (MNIST: 60,000).
      n_test: test images (MNIST: 10,000).
      seed: numpy seed of the images and labels.

    Returns:
      ``{"train", "test", "seed", "prepare_s", "tfds_version", "path"}``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import registered
    from tensorflow_datasets.image_classification import mnist

    arrays = random_mnist(n_train, n_test, seed)
    raw = os.path.join(data_dir, "random_mnist_files")
    os.makedirs(raw, exist_ok=True)
    files = {}
    for split in ("train", "test"):
        for part, key in (("images", "x"), ("labels", "y")):
            p = os.path.join(raw, f"{split}-{part}-idx")
            write_idx(p, arrays[f"{split}_{key}"].astype(np.uint8))
            files[f"{split}_{part}"] = p
    np.savez(os.path.join(data_dir, "mnist_arrays.npz"), **arrays)

    with registered.skip_registration():

        class LocalMNIST(mnist.MNIST):
            """TFDS's MNIST builder reading local files (no download, no checksums)."""

            name = "mnist"

            def _split_generators(self, dl_manager):
                del dl_manager
                return [
                    tfds.core.SplitGenerator(
                        name=split,
                        gen_kwargs=dict(
                            num_examples=n,
                            data_path=files[f"{split}_images"],
                            label_path=files[f"{split}_labels"],
                        ),
                    )
                    for split, n in (("train", n_train), ("test", n_test))
                ]

    builder = LocalMNIST(data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    # One read through lth_jax, as any earlier run would do: it keeps the arrays TFDS
    # returned (lth_jax.data.array_cache), which the timed run then reads without TensorFlow.
    from lth_jax.data import load

    for split in ("train", "test"):
        load("mnist", split, data_dir=data_dir, download=False)
    return {
        "train": n_train,
        "test": n_test,
        "seed": seed,
        "prepare_s": round(time.perf_counter() - t0, 2),
        "tfds_version": tfds.__version__,
        "path": str(builder.data_dir),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--train", type=int, default=60000)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(prepare(a.data_dir, a.train, a.test, a.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
