"""The sparse model file: compressed sparse rows per kernel in a ``.npz``, JSON metadata.

A file is a zip archive written by ``numpy.savez_compressed`` and read with
``numpy.load(path, allow_pickle=False)``: no pickle anywhere. Its members:

``metadata``
    UTF-8 JSON as a ``uint8`` array (``json.loads(bytes(z["metadata"]))``):
    ``format`` (``"lth_jax.sparse"``), ``version`` (1), ``model`` (``name``,
    ``kwargs``, ``num_classes``), ``input`` (the dataset, the input shape and
    its normalization), ``source`` and ``record`` (where the weights come from,
    the run's recorded accuracy: see :mod:`lth_jax.sparse.export`), ``tensors``
    (one entry per array below: ``storage`` ``"csr"`` or ``"dense"``, its
    ``shape``; CSR entries also ``matrix`` ``[rows, cols]`` and ``nnz``) and
    ``sizes`` (``dense_float32_bytes``: every parameter and batch-norm
    statistic at 4 bytes; ``weights``, ``prunable``, ``alive``).
``params/<path>/data``, ``params/<path>/indices``, ``params/<path>/indptr``
    a prunable kernel (a leaf named ``kernel`` with at least two dimensions)
    in compressed sparse rows (the layout of ``scipy.sparse.csr_matrix``) of
    its 2-D view ``kernel.reshape(prod(shape[:-1]), shape[-1])``: rows are
    inputs (for a conv kernel ``(h, w, in)`` flattened row-major), columns are
    outputs. ``data`` float32, the alive weights row by row; ``indices``
    their columns, ``uint16`` when the kernel has at most 65,536 outputs, else
    ``int32``; ``indptr`` (``rows + 1``) ``int32`` (``int64`` from ``2**31``
    entries). The stored entries are the mask's alive positions, so
    ``nnz`` is the number of weights kept (a kept weight that is exactly 0.0
    is stored too).
``params/<path>``, ``batch_stats/<path>``
    every other leaf, dense (biases, batch-norm scales and statistics), with
    the mask applied.

``<path>`` is the leaf's path in the Flax variables, ``/``-joined
(``Dense_0/kernel``). Example of reading a kernel back without this package::

    z = numpy.load(path, allow_pickle=False)
    meta = json.loads(bytes(z["metadata"]))
    t = meta["tensors"]["params/Dense_0/kernel"]
    w = scipy.sparse.csr_matrix((z["params/Dense_0/kernel/data"],
                                 z["params/Dense_0/kernel/indices"],
                                 z["params/Dense_0/kernel/indptr"]),
                                shape=t["matrix"]).toarray().reshape(t["shape"])

This module needs numpy only (no JAX).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "CSR",
    "FORMAT",
    "VERSION",
    "is_kernel",
    "to_csr",
    "from_csr",
    "csr_transpose",
    "flat",
    "nest",
    "save",
    "read",
]

FORMAT = "lth_jax.sparse"
VERSION = 1
META = "metadata"


class CSR(NamedTuple):
    """A kernel read back: its compressed sparse rows and shapes."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple  # the kernel's shape
    matrix: tuple  # (rows, cols) of its 2-D view

    def dense(self) -> np.ndarray:
        """The kernel as a dense float32 array of its shape."""
        return from_csr(self.data, self.indices, self.indptr, self.shape)


def is_kernel(path: str, leaf) -> bool:
    """Whether a leaf is stored sparse: named ``kernel``, at least two dimensions."""
    return path.split("/")[-1] == "kernel" and np.ndim(leaf) >= 2


def to_csr(kernel, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, indices, indptr)`` of the alive entries of ``kernel``'s 2-D view.

    Example:
      >>> import numpy as np
      >>> k = np.array([[1.0, 0.0], [2.0, 3.0], [0.0, 0.0]], np.float32)
      >>> data, indices, indptr = to_csr(k, k != 0)
      >>> data.tolist(), indices.tolist(), indptr.tolist()
      ([1.0, 2.0, 3.0], [0, 0, 1], [0, 1, 3, 3])
    """
    k = np.asarray(kernel)
    m = np.asarray(mask, dtype=bool)
    if m.shape != k.shape:
        raise ValueError(f"mask of shape {m.shape} for a kernel of shape {k.shape}")
    cols = k.shape[-1]
    k2, m2 = k.reshape(-1, cols), m.reshape(-1, cols)
    rows_i, cols_i = np.nonzero(m2)  # row-major: sorted by row, then column
    nnz = rows_i.size
    data = k2[rows_i, cols_i].astype(np.float32)
    indices = cols_i.astype(np.uint16 if cols <= 2**16 else np.int32)
    counts = np.bincount(rows_i, minlength=k2.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32 if nnz < 2**31 else np.int64)
    return data, indices, indptr


def from_csr(data, indices, indptr, shape) -> np.ndarray:
    """The dense array of shape ``shape`` that :func:`to_csr` stored (zeros elsewhere)."""
    shape = tuple(int(s) for s in shape)
    cols = shape[-1]
    rows = int(np.prod(shape[:-1]))
    out = np.zeros((rows, cols), np.float32)
    row_of = np.repeat(np.arange(rows), np.diff(np.asarray(indptr, np.int64)))
    out[row_of, np.asarray(indices, np.int64)] = data
    return out.reshape(shape)


def csr_transpose(data, indices, indptr, cols: int):
    """``(data, indices, indptr)`` of the transpose (``cols`` rows), indices ``int32``.

    Example:
      >>> import numpy as np
      >>> d, i, p = csr_transpose(np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]),
      ...                         np.array([0, 1, 3, 3]), 2)
      >>> d.tolist(), i.tolist(), p.tolist()
      ([1.0, 2.0, 3.0], [0, 1, 1], [0, 2, 3])
    """
    indptr = np.asarray(indptr, np.int64)
    indices = np.asarray(indices, np.int64)
    row_of = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.argsort(indices, kind="stable")  # by column, then row
    counts = np.bincount(indices, minlength=cols)
    new_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return np.asarray(data)[order], row_of[order].astype(np.int32), new_ptr


def flat(tree, prefix: str = "") -> dict[str, Any]:
    """``{"a/b": leaf}`` of a nested dict (the Flax variables' layout)."""
    out = {}
    for k, v in (tree or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "/"))
        else:
            out[key] = v
    return out


def nest(items: dict[str, Any]) -> dict:
    """The nested dict of ``{"a/b": leaf}`` (inverse of :func:`flat`)."""
    out: dict = {}
    for key, v in items.items():
        *parents, leaf = key.split("/")
        d = out
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = v
    return out


def save(path: str, params, mask, batch_stats, metadata: dict) -> dict:
    """Writes ``params`` (masked by ``mask``) and ``batch_stats`` to ``path``.

    Prunable kernels go in compressed sparse rows, every other leaf dense (see
    the module docstring). ``metadata`` (JSON-able) is stored with
    ``format``, ``version``, ``tensors`` and ``sizes`` added. The file is
    written to a temporary name in the same folder and renamed, so ``path``
    never holds a partial file.

    Returns:
      The metadata as stored, plus ``file_bytes``.
    """
    fp, fm, fb = flat(params), flat(mask), flat(batch_stats)
    if set(fp) != set(fm):
        raise ValueError("the mask does not have the params' structure")
    arrays: dict[str, np.ndarray] = {}
    tensors: dict[str, dict] = {}
    sizes = {"weights": 0, "prunable": 0, "alive": 0, "dense_float32_bytes": 0}
    for p, leaf in fp.items():
        leaf, m = np.asarray(leaf), np.asarray(fm[p], dtype=bool)
        name = f"params/{p}"
        sizes["weights"] += leaf.size
        if is_kernel(p, leaf):
            data, indices, indptr = to_csr(leaf, m)
            arrays.update({f"{name}/data": data, f"{name}/indices": indices})
            arrays[f"{name}/indptr"] = indptr
            tensors[name] = {
                "storage": "csr",
                "shape": list(leaf.shape),
                "matrix": [len(indptr) - 1, int(leaf.shape[-1])],
                "nnz": int(data.size),
            }
            sizes["prunable"] += leaf.size
            sizes["alive"] += int(data.size)
        else:
            arrays[name] = np.where(m, leaf, np.zeros((), leaf.dtype))
            tensors[name] = {"storage": "dense", "shape": list(leaf.shape)}
    for p, leaf in fb.items():
        arrays[f"batch_stats/{p}"] = np.asarray(leaf)
        tensors[f"batch_stats/{p}"] = {"storage": "dense", "shape": list(np.shape(leaf))}
    n_all = sizes["weights"] + sum(int(np.size(v)) for v in fb.values())
    sizes["dense_float32_bytes"] = 4 * n_all
    meta = {"format": FORMAT, "version": VERSION, **metadata, "tensors": tensors, "sizes": sizes}
    arrays[META] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return {**meta, "file_bytes": os.path.getsize(path)}


def read(path: str) -> tuple[dict, dict, dict]:
    """``(metadata, params, batch_stats)`` of a file :func:`save` wrote.

    ``params`` and ``batch_stats`` are nested dicts; a sparse kernel is a
    :class:`CSR` (``.dense()`` densifies it), every other leaf a numpy array.

    Raises:
      ValueError: not such a file (no metadata, another format or version, a
        member missing).
    """
    with np.load(path, allow_pickle=False) as z:
        if META not in z.files:
            raise ValueError(f"{path} is not an lth_jax sparse model file (no metadata)")
        meta = json.loads(bytes(z[META]).decode("utf-8"))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(
                f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}, "
                f"expected {FORMAT!r} version {VERSION}"
            )
        params, stats = {}, {}
        try:
            for name, t in meta["tensors"].items():
                kind, _, p = name.partition("/")
                if t["storage"] == "csr":
                    parts = [z[f"{name}/{k}"] for k in ("data", "indices", "indptr")]
                    params[p] = CSR(*parts, tuple(t["shape"]), tuple(t["matrix"]))
                else:
                    (params if kind == "params" else stats)[p] = z[name]
        except KeyError as e:
            raise ValueError(f"{path}: member {e} is missing") from None
    return meta, nest(params), nest(stats)
