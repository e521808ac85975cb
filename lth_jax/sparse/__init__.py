"""A pruned network as a real sparse model: load an exported file, predict with sparse matmuls.

``lth-jax export`` (:mod:`lth_jax.sparse.export`) writes one run of a lottery
workdir to a file (:mod:`lth_jax.sparse.fileformat`: compressed sparse rows
per kernel in a ``.npz``, no pickle, JSON metadata). :func:`load` reads it
back as a :class:`SparseModel`::

    from lth_jax import data, sparse

    model = sparse.load("ticket.npz")
    x, y = data.load("mnist1d", "test")        # raw inputs, as the dataset gives them
    logits = model.predict(x)                  # normalized as the run did, then the network
    (logits.argmax(-1) == y).mean()            # the run's final_test_accuracy

**How each layer runs** (``backend``, default ``"bcsr"``):

* **Dense layers** (every ``flax.linen.Dense`` of the model, ``head``
  included): ``y = x @ W + b`` as a sparse-dense product of
  ``jax.experimental.sparse``: the file's CSR of ``W`` (inputs x outputs) is
  transposed once at load time to ``W^T`` (outputs x inputs), held as a
  ``BCSR`` matrix (``backend="bcsr"``) or a ``BCOO`` matrix
  (``backend="bcoo"``), and ``y = (W^T @ x^T)^T``; only the alive weights are
  stored and multiplied. The Flax model runs as it is, with
  ``flax.linen.intercept_methods`` replacing each Dense layer's call by that
  product (activations, dropout at inference, pooling, batch norm: the
  model's own code).
* **Conv layers** are **not** computed sparse: their kernels are stored
  sparse in the file and densified at load time, and the model's own dense
  ``lax.conv`` runs (a sparse im2col product was not worth it at these
  sizes). The file is small; memory and compute at inference are the dense
  network's for these layers.
* ``backend="dense"`` densifies every kernel and runs the plain Flax model:
  the reference the benchmark compares against.

Inputs are normalized as the run did, ``(x - mean) / std`` in float32 with
the training-set statistics stored in the file (per channel, the last axis,
for images; one scalar for MNIST-1D), exactly as
:func:`lth_jax.data.get_dataset` does. The sparse products add the kept
weights in another order than a dense matmul, so logits differ from the
engine's in the last bits; an example whose two top logits are that close
may change class (the tests allow one example of the test set).

How fast this is on a CPU, against dense and masked dense and ``scipy.sparse``,
is measured, not promised: ``python experiments/benchmark.py --sparse`` and the
README's Performance section.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from lth_jax import models
from lth_jax.sparse.fileformat import CSR, csr_transpose, flat, nest, read, save

__all__ = ["SparseModel", "load", "save", "read", "BACKENDS"]

#: How Dense layers run: ``jax.experimental.sparse`` BCSR or BCOO, or dense.
BACKENDS = ("bcsr", "bcoo", "dense")


def _plain(value):
    return tuple(_plain(v) for v in value) if isinstance(value, list | tuple) else value


def build_model(meta: dict) -> nn.Module:
    """The Flax model a file's metadata names (``model.name``, ``kwargs``, ``num_classes``)."""
    m = meta["model"]
    kwargs = {k: _plain(v) for k, v in (m.get("kwargs") or {}).items() if v is not None}
    return models.get(m["name"], num_classes=int(m["num_classes"]), **kwargs)


def _matrix(csr: CSR, backend: str):
    """``W^T`` (outputs x inputs) of a 2-D kernel stored as CSR ``W``."""
    rows, cols = csr.matrix
    data, indices, indptr = csr_transpose(csr.data, csr.indices, csr.indptr, cols)
    data = jnp.asarray(data, jnp.float32)
    if backend == "bcsr":
        return jsparse.BCSR(
            (data, jnp.asarray(indices), jnp.asarray(indptr)),
            shape=(cols, rows),
            indices_sorted=True,
            unique_indices=True,
        )
    row_of = np.repeat(np.arange(cols, dtype=np.int32), np.diff(indptr))
    coo = jnp.asarray(np.stack([row_of, indices], axis=1))
    return jsparse.BCOO((data, coo), shape=(cols, rows), indices_sorted=True, unique_indices=True)


def _module_params(params, path: str):
    for part in path.split("/"):
        params = params.get(part, {}) if isinstance(params, dict) else {}
    return params


def _forward(model, matrices, params, batch_stats, x):
    """Logits of ``model`` on normalized ``x``, each Dense in ``matrices`` as a sparse product."""

    def intercept(next_fun, args, kwargs, ctx):
        mod = ctx.module
        if ctx.method_name == "__call__" and isinstance(mod, nn.Dense):
            key = "/".join(mod.path)
            if key in matrices:
                h = args[0]
                y = (matrices[key] @ h.reshape(-1, h.shape[-1]).T).T
                bias = _module_params(params, key).get("bias")
                if mod.use_bias and bias is not None:
                    y = y + bias
                return y.reshape(*h.shape[:-1], y.shape[-1])
        return next_fun(*args, **kwargs)

    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    with nn.intercept_methods(intercept):
        return model.apply(variables, x, train=False)


def _dense_modules(model, params: dict, batch_stats: dict, input_shape) -> set[str]:
    """Paths of the ``nn.Dense`` modules whose 2-D kernel is in ``params`` (traced, not run)."""
    seen: set[str] = set()

    def intercept(next_fun, args, kwargs, ctx):
        mod = ctx.module
        if ctx.method_name == "__call__" and isinstance(mod, nn.Dense):
            k = _module_params(params, "/".join(mod.path)).get("kernel")
            if isinstance(k, CSR) and len(k.shape) == 2:
                seen.add("/".join(mod.path))
        return next_fun(*args, **kwargs)

    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(tuple(a.shape), jnp.float32),
        params,
        is_leaf=lambda a: isinstance(a, CSR),
    )
    variables = {"params": abstract}
    if batch_stats:
        variables["batch_stats"] = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch_stats
        )
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    with nn.intercept_methods(intercept):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return seen


class SparseModel:
    """An exported network: :meth:`predict` from raw inputs, :meth:`forward` from normalized.

    Attributes:
      metadata: the file's JSON metadata (model, input normalization, source
        run, recorded accuracy, tensors, sizes).
      model: the Flax model.
      backend: ``"bcsr"``, ``"bcoo"`` or ``"dense"`` (see the module docstring).
      matrices: ``{module path: W^T}`` of the Dense layers computed sparse.
      params, batch_stats: every other variable, dense (conv kernels densified).
      mean, std: the input normalization (float32).

    Args:
      path: a file written by ``lth-jax export`` (or :func:`lth_jax.sparse.save`).
      backend: one of :data:`BACKENDS`.
    """

    def __init__(self, path: str, backend: str = "bcsr"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        meta, params, stats = read(path)
        self.metadata, self.backend = meta, backend
        self.model = build_model(meta)
        inp = meta["input"]
        self.mean = np.asarray(inp["mean"], np.float32)
        self.std = np.asarray(inp["std"], np.float32)
        self.input_shape = tuple(inp["shape"])
        sparse_dense = set()
        if backend != "dense":
            sparse_dense = _dense_modules(self.model, params, stats, self.input_shape)
        self.matrices, dense = {}, {}
        for p, v in flat(params).items():
            module = p.rpartition("/")[0]
            if isinstance(v, CSR) and module in sparse_dense:
                self.matrices[module] = _matrix(v, backend)
            else:
                dense[p] = jnp.asarray(v.dense() if isinstance(v, CSR) else v)
        self.params = nest(dense)
        self.batch_stats = jax.tree.map(jnp.asarray, stats)
        self._jit = jax.jit(functools.partial(_forward, self.model))

    def normalize(self, raw) -> np.ndarray:
        """``(raw - mean) / std`` in float32, as the run normalized its data."""
        x = np.asarray(raw, dtype=np.float32)
        return ((x - self.mean) / self.std).astype(np.float32)

    def forward(self, x) -> jax.Array:
        """Logits of already-normalized inputs ``x`` (one compiled call per batch shape)."""
        return self._jit(self.matrices, self.params, self.batch_stats, jnp.asarray(x))

    def predict(self, raw_inputs, batch_size: int = 1000) -> np.ndarray:
        """Logits ``(N, num_classes)`` of raw inputs, normalized as the run did.

        Args:
          raw_inputs: ``(N, *input_shape)`` as :func:`lth_jax.data.load` gives
            them (MNIST-1D signals, images in ``[0, 1]``).
          batch_size: examples per compiled call.
        """
        x = self.normalize(raw_inputs)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"inputs of shape {x.shape[1:]}, the model takes {self.input_shape}")
        outs = [
            np.asarray(self.forward(x[i : i + batch_size])) for i in range(0, len(x), batch_size)
        ]
        if not outs:
            return np.zeros((0, int(self.metadata["model"]["num_classes"])), np.float32)
        return np.concatenate(outs)

    def accuracy(self, raw_inputs, labels, batch_size: int = 1000) -> float:
        """Fraction of ``raw_inputs`` whose top logit is the label."""
        pred = self.predict(raw_inputs, batch_size).argmax(-1)
        return float(np.mean(pred == np.asarray(labels)))

    def __repr__(self) -> str:
        m, s = self.metadata["model"], self.metadata["sizes"]
        return (
            f"SparseModel({m['name']}, {s['alive']:,} of {s['prunable']:,} prunable weights, "
            f"{len(self.matrices)} sparse Dense layers, backend={self.backend})"
        )


def load(path: str, backend: str = "bcsr") -> SparseModel:
    """The :class:`SparseModel` of a file written by ``lth-jax export``."""
    return SparseModel(path, backend=backend)
