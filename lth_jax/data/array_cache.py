"""Plain-array copies of prepared TFDS splits, so that later runs read them without TensorFlow.

Reading a TFDS split needs TensorFlow: seconds of import and about half a
gigabyte of memory in every process. The first time
:func:`lth_jax.data.tfds_source.load_tfds` reads a split from a prepared copy
in ``data_dir``, it also writes the arrays it read (the uint8 images and the
labels, exactly as TFDS gave them) to::

    <data_dir>/lth_jax_arrays/<name>/<version>/<split>.npz

with a fingerprint of the prepared copy: the names, sizes and modification
times of the files in ``<data_dir>/<name>/<version>/``. A later load of the
same split reads that file instead, importing neither TensorFlow nor TFDS,
when

* ``<data_dir>/<name>/`` holds exactly one prepared version (a folder named
  like ``3.0.1`` with a ``dataset_info.json``), the one recorded, and
* its fingerprint is unchanged (a re-prepared copy has new files).

Otherwise TFDS reads the split as before. The arrays are the ones TFDS read,
so every result is the same bit for bit. Nothing is written when TFDS read
from anywhere but that prepared copy (TFDS's mock data in tests reads its
own), when the folder cannot be written, or when ``LTH_JAX_ARRAY_CACHE=0``
(or ``off``, ``false``, ``no``), which also turns reading off. A file is
written to a temporary name and renamed, so a crash leaves no partial file;
one that cannot be read is ignored.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.parse

import numpy as np

__all__ = ["ENV", "FOLDER", "lookup", "prepared_version_dir", "store"]

ENV = "LTH_JAX_ARRAY_CACHE"
FOLDER = "lth_jax_arrays"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_OFF = ("0", "off", "false", "no")


def _enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in _OFF


def prepared_version_dir(data_dir: str, tfds_name: str) -> str | None:
    """The one prepared version folder of ``tfds_name`` in ``data_dir``, or ``None``.

    ``None`` when there is none or more than one (TFDS then picks by its own
    registry, which only TFDS knows).
    """
    root = os.path.join(data_dir, tfds_name)
    try:
        names = os.listdir(root)
    except OSError:
        return None
    found = [
        os.path.join(root, n)
        for n in names
        if _VERSION.match(n) and os.path.isfile(os.path.join(root, n, "dataset_info.json"))
    ]
    return found[0] if len(found) == 1 else None


def _fingerprint(version_dir: str) -> list:
    out = []
    for name in sorted(os.listdir(version_dir)):
        st = os.stat(os.path.join(version_dir, name))
        out.append([name, st.st_size, st.st_mtime_ns])
    return out


def _path(data_dir: str, tfds_name: str, version: str, split: str) -> str:
    safe = urllib.parse.quote(split, safe="")
    return os.path.join(data_dir, FOLDER, tfds_name, version, f"{safe}.npz")


def lookup(data_dir: str, tfds_name: str, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(images, labels)`` of ``split`` as TFDS read them before, or ``None``.

    ``None`` when the copy is off, missing, unreadable or not of the prepared
    copy now in ``data_dir``.
    """
    if not _enabled():
        return None
    version_dir = prepared_version_dir(data_dir, tfds_name)
    if version_dir is None:
        return None
    path = _path(data_dir, tfds_name, os.path.basename(version_dir), split)
    try:
        with np.load(path, allow_pickle=False) as f:
            if json.loads(str(f["fingerprint"])) != _fingerprint(version_dir):
                return None
            return f["images"], f["labels"]
    except (OSError, KeyError, ValueError):
        return None


def store(
    data_dir: str,
    tfds_name: str,
    split: str,
    read_from: str,
    images: np.ndarray,
    labels: np.ndarray,
) -> str | None:
    """Writes the arrays TFDS read from ``read_from``; returns the file, or ``None``.

    Args:
      data_dir: the data directory of the load.
      tfds_name: the TFDS name of the dataset.
      split: the split string as given to TFDS.
      read_from: the folder TFDS read (its builder's ``data_dir``): nothing is
        written unless it is the one prepared version in ``data_dir``.
      images, labels: what TFDS gave, before any conversion.
    """
    if not _enabled():
        return None
    version_dir = prepared_version_dir(data_dir, tfds_name)
    if version_dir is None or os.path.realpath(read_from) != os.path.realpath(version_dir):
        return None
    path = _path(data_dir, tfds_name, os.path.basename(version_dir), split)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    images=images,
                    labels=labels,
                    fingerprint=np.array(json.dumps(_fingerprint(version_dir))),
                )
            os.chmod(tmp, 0o644)  # as a plain file would be (mkstemp makes it private)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError:
        return None
    return path
