"""Mask pytrees: which weights are alive, and where masks are applied.

A **mask** is a pytree with exactly the structure and shapes of the params it
masks, holding boolean arrays: ``True`` means the weight is alive. Leaves that
are not prunable are all ``True``. Masks are data, never constants baked into a
compiled program, so a new mask after a pruning round does not recompile
anything.

**Which leaves are prunable.** By default, a leaf is prunable when its name (the
last key of its path) is ``kernel`` and it has at least two dimensions: dense and
convolution weights, the output layer included; biases, batch-norm scales and
offsets are not. Override with ``prunable=``:

* a regular expression (``str``), searched in the leaf's path string
  (``"Dense_0/kernel"``), or
* a callable ``(path: str, leaf) -> bool``, or
* a pytree of Python bools shaped like the params.

**Where masks are applied.** Three places, all in this module:

* :func:`apply` zeroes pruned weights (``where(mask, params, 0)``): used when a
  mask is first set and at every rewind.
* :func:`keep_pruned` wraps any optax transformation (a whole chain, with
  momentum, Adam, weight decay, L1, ...): it zeroes the incoming gradients of
  pruned weights and the outgoing updates, so a pruned weight that is 0.0 stays
  exactly 0.0 after any number of steps. The mask lives in the optimizer state,
  so changing it needs no recompilation.
* Models never see masks: the train step passes ``apply(mask, params)``.

Example:
  >>> import jax.numpy as jnp
  >>> params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
  >>> mask = ones_like(params)
  >>> float(density(mask))
  1.0
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "path_str",
    "named_leaves",
    "prunable_tree",
    "ones_like",
    "apply",
    "density",
    "layer_density",
    "layer_alive",
    "layer_alive_runs",
    "run_densities",
    "count",
    "check_matches",
    "keep_pruned",
    "KeepPrunedState",
    "set_mask",
]

Prunable = str | Callable[[str, Any], bool] | Any | None


def path_str(path) -> str:
    """Turns a ``jax.tree_util`` key path into ``"Dense_0/kernel"`` form.

    Example:
      >>> import jax
      >>> flat, _ = jax.tree_util.tree_flatten_with_path({"Dense_0": {"kernel": 1}})
      >>> [path_str(path) for path, _ in flat]
      ['Dense_0/kernel']
    """
    parts = []
    for k in path:
        if hasattr(k, "key"):
            parts.append(str(k.key))
        elif hasattr(k, "idx"):
            parts.append(str(k.idx))
        elif hasattr(k, "name"):
            parts.append(str(k.name))
        else:
            parts.append(str(k))
    return "/".join(parts)


def named_leaves(tree) -> list[tuple[str, Any]]:
    """``[(path_string, leaf), ...]`` in ``jax.tree`` flatten order.

    Example:
      >>> named_leaves({"head": {"bias": 0, "kernel": 1}})
      [('head/bias', 0), ('head/kernel', 1)]
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_str(p), leaf) for p, leaf in flat]


def _default_prunable(path: str, leaf) -> bool:
    return path.split("/")[-1] == "kernel" and np.ndim(leaf) >= 2


def prunable_tree(tree, prunable: Prunable = None):
    """A pytree of Python bools: which leaves of ``tree`` are prunable.

    Args:
      tree: params (or a mask, which has the same paths and shapes).
      prunable: ``None`` for the default rule (leaves named ``kernel`` with
        ``ndim >= 2``), a regex searched in the path string, a callable
        ``(path, leaf) -> bool``, or a pytree of bools (returned as is after a
        structure check).

    Returns:
      A pytree of bools with the structure of ``tree``.

    Raises:
      ValueError: if a regex matches no leaf, or a bool pytree does not match.

    Example:
      >>> import jax.numpy as jnp
      >>> prunable_tree({"d": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}})
      {'d': {'bias': False, 'kernel': True}}
    """
    treedef = jax.tree.structure(tree)
    leaves = named_leaves(tree)
    if prunable is None:
        flags = [_default_prunable(p, x) for p, x in leaves]
    elif isinstance(prunable, str):
        rx = re.compile(prunable)
        flags = [bool(rx.search(p)) for p, _ in leaves]
        if not any(flags):
            raise ValueError(
                f"prunable pattern {prunable!r} matches no parameter; paths are: "
                + ", ".join(p for p, _ in leaves)
            )
    elif callable(prunable):
        flags = [bool(prunable(p, x)) for p, x in leaves]
    else:
        check_matches(tree, prunable, what="prunable tree")
        return prunable
    return jax.tree.unflatten(treedef, flags)


def check_matches(params, mask, what: str = "mask") -> None:
    """Raises ``ValueError`` naming the first path where ``mask`` and ``params`` differ.

    Example:
      >>> import numpy as np
      >>> check_matches({"kernel": np.zeros((2, 2))}, {"kernel": np.ones((2, 2), bool)})
      >>> check_matches({"kernel": np.zeros((2, 2))}, {"kernal": np.ones((2, 2), bool)})
      Traceback (most recent call last):
      ...
      ValueError: mask does not match the params tree: missing paths ['kernel'], ...
    """
    p_leaves = named_leaves(params)
    m_leaves = named_leaves(mask)
    p_paths = [p for p, _ in p_leaves]
    m_paths = [p for p, _ in m_leaves]
    if p_paths != m_paths:
        missing = sorted(set(p_paths) - set(m_paths))
        extra = sorted(set(m_paths) - set(p_paths))
        raise ValueError(
            f"{what} does not match the params tree: "
            f"missing paths {missing or '[]'}, unexpected paths {extra or '[]'}"
        )
    for (path, p), (_, m) in zip(p_leaves, m_leaves):
        if isinstance(m, bool):
            continue
        if np.shape(p) != np.shape(m):
            raise ValueError(
                f"{what} leaf {path!r} has shape {np.shape(m)}, params have {np.shape(p)}"
            )


def ones_like(params):
    """The all-alive mask for ``params`` (boolean ``True`` everywhere).

    Example:
      >>> import jax.numpy as jnp
      >>> ones_like({"kernel": jnp.zeros((2, 2))})["kernel"].dtype
      dtype('bool')
    """
    return jax.tree.map(lambda p: jnp.ones(jnp.shape(p), dtype=bool), params)


def apply(mask, params):
    """Zeroes the pruned weights: ``where(mask, params, 0)`` leaf by leaf.

    Works on params, gradients, updates or any tree with the params' structure.
    Exact: a pruned entry becomes ``0.0`` (never ``-0.0`` or a tiny number).

    Example:
      >>> import jax.numpy as jnp
      >>> apply({"w": jnp.array([True, False])}, {"w": jnp.array([3.0, 4.0])})["w"]
      Array([3., 0.], dtype=float32)
    """
    return jax.tree.map(
        lambda m, p: jnp.where(m, p, jnp.zeros((), jnp.result_type(p))), mask, params
    )


def count(mask, prunable: Prunable = None):
    """``(alive, total)`` over the prunable leaves, as int32 arrays.

    Example:
      >>> import jax.numpy as jnp
      >>> alive, total = count({"kernel": jnp.array([[True, False], [True, True]]),
      ...                       "bias": jnp.array([True, False])})
      >>> int(alive), int(total)
      (3, 4)
    """
    flags = jax.tree.leaves(prunable_tree(mask, prunable))
    leaves = jax.tree.leaves(mask)
    alive = sum((jnp.sum(m, dtype=jnp.int32) for m, f in zip(leaves, flags) if f), jnp.int32(0))
    total = sum(int(np.size(m)) for m, f in zip(leaves, flags) if f)
    return alive, jnp.int32(total)


def density(mask, prunable: Prunable = None):
    """Fraction of prunable weights still alive (a float32 scalar).

    Example:
      >>> import jax.numpy as jnp
      >>> float(density({"kernel": jnp.array([[True, False], [False, False]])}))
      0.25
    """
    alive, total = count(mask, prunable)
    return alive.astype(jnp.float32) / jnp.maximum(total, 1).astype(jnp.float32)


def layer_density(mask, prunable: Prunable = None) -> dict[str, Any]:
    """``{path: fraction alive}`` for each prunable leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> layer_density({"d": {"kernel": jnp.array([[True, False]])}})
      {'d/kernel': Array(0.5, dtype=float32)}
    """
    flags = jax.tree.leaves(prunable_tree(mask, prunable))
    return {
        path: jnp.mean(m.astype(jnp.float32))
        for (path, m), f in zip(named_leaves(mask), flags)
        if f
    }


def layer_alive(mask, prunable: Prunable = None) -> dict[str, Any]:
    """``{path: number of alive weights}`` (int32) for each prunable leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> layer_alive({"d": {"kernel": jnp.array([[True, False]])}})
      {'d/kernel': Array(1, dtype=int32)}
    """
    flags = jax.tree.leaves(prunable_tree(mask, prunable))
    return {
        path: jnp.sum(m, dtype=jnp.int32) for (path, m), f in zip(named_leaves(mask), flags) if f
    }


def layer_alive_runs(masks, prunable: Prunable = None) -> dict[str, np.ndarray]:
    """``{path: alive count per run}`` of run-batched ``masks``, counted on the host.

    Each leaf carries a leading run axis; the counts are exact integers
    (numpy ``int64``, shape ``(runs,)``), computed without compiling a program.
    Gather sharded masks first (:func:`lth_jax.parallel.to_host`).

    Example:
      >>> import numpy as np
      >>> layer_alive_runs({"d": {"kernel": np.array([[[True, False]], [[True, True]]])}})
      {'d/kernel': array([1, 2])}
    """
    masks = jax.tree.map(np.asarray, masks)
    one = jax.tree.map(lambda m: m[0], masks)  # which leaves are prunable: a run's shapes decide
    flags = jax.tree.leaves(prunable_tree(one, prunable))
    return {
        path: np.count_nonzero(np.asarray(m).reshape(np.shape(m)[0], -1), axis=1).astype(np.int64)
        for (path, m), f in zip(named_leaves(masks), flags)
        if f
    }


def run_densities(masks, prunable: Prunable = None):
    """Per run of run-batched ``masks``: the density and ``{path: density}`` of prunable leaves.

    From exact integer counts (:func:`layer_alive_runs`; a float32 division
    would misstate 1.0). Returns ``(densities, layer_densities)``, two lists
    with one entry per run; a density is ``None`` when no leaf is prunable.

    Example:
      >>> import numpy as np
      >>> run_densities({"d": {"kernel": np.array([[[True, False]], [[True, True]]])}})
      ([0.5, 1.0], [{'d/kernel': 0.5}, {'d/kernel': 1.0}])
    """
    alive = layer_alive_runs(masks, prunable)
    sizes = {p: int(np.prod(np.shape(m)[1:])) for p, m in named_leaves(masks) if p in alive}
    total = sum(sizes.values())
    runs = range(np.shape(jax.tree.leaves(masks)[0])[0])
    densities = [sum(int(v[j]) for v in alive.values()) / total if total else None for j in runs]
    layers = [{p: int(v[j]) / sizes[p] for p, v in alive.items()} for j in runs]
    return densities, layers


class KeepPrunedState(NamedTuple):
    """State of :func:`keep_pruned`: the current mask and the inner state."""

    mask: Any
    inner_state: Any


def keep_pruned(inner: optax.GradientTransformation, mask=None) -> optax.GradientTransformation:
    """Wraps an optax transformation so pruned weights stay exactly zero.

    The wrapper masks the gradients going in (so momentum and Adam moments of
    pruned weights stay zero) and the updates coming out (so nothing the chain
    adds afterwards, such as decoupled weight decay or a proximal step, can move
    a pruned weight). Put the *whole* chain inside: ``keep_pruned(optax.chain(
    add_l2(...), optax.adam(lr), decoupled_weight_decay(wd, lr)))`` (from
    :mod:`lth_jax.regularizers`; ``optax.add_decayed_weights`` after the
    optimizer would add ``+wd * p`` to an update already scaled by ``-lr``, so
    weights would grow).

    It keeps zeros: a pruned weight that is not 0 when training starts keeps
    its value (its updates are zeroed too). Apply the mask to the weights first
    (:func:`apply`), as the engine does when it rewinds.

    The mask is held in the state, not in the closure: build the transformation
    once, then start each round with ``set_mask(tx.init(params), mask)``. The
    compiled update function is reused for every mask.

    Args:
      inner: any ``optax.GradientTransformation``.
      mask: the mask placed in the state by ``init``; ``None`` means all alive.

    Returns:
      A ``GradientTransformation`` with state :class:`KeepPrunedState`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = {"kernel": jnp.array([[1.0, 2.0]])}
      >>> mask = {"kernel": jnp.array([[True, False]])}
      >>> tx = keep_pruned(optax.adamw(0.1, weight_decay=0.1))
      >>> state = set_mask(tx.init(params), mask)
      >>> params = apply(mask, params)
      >>> g = {"kernel": jnp.array([[1.0, 1.0]])}
      >>> u, state = tx.update(g, state, params)
      >>> float(optax.apply_updates(params, u)["kernel"][0, 1])
      0.0
    """

    def init_fn(params):
        m = ones_like(params) if mask is None else mask
        return KeepPrunedState(mask=m, inner_state=inner.init(params))

    def update_fn(updates, state, params=None):
        updates = apply(state.mask, updates)
        updates, inner_state = inner.update(updates, state.inner_state, params)
        return apply(state.mask, updates), KeepPrunedState(state.mask, inner_state)

    return optax.GradientTransformation(init_fn, update_fn)


def set_mask(state: KeepPrunedState, mask) -> KeepPrunedState:
    """Returns ``state`` with its mask replaced (structure-checked).

    The mask is data in the state, so a jitted step compiled for one mask runs
    any other of the same shapes without recompiling.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = {"kernel": jnp.ones((2, 2))}
      >>> tx = keep_pruned(optax.sgd(0.1))
      >>> state = set_mask(tx.init(params), {"kernel": jnp.array([[True, False], [True, True]])})
      >>> updates, _ = tx.update({"kernel": jnp.ones((2, 2))}, state, params)
      >>> updates["kernel"].tolist()
      [[-0.10000000149011612, 0.0], [-0.10000000149011612, -0.10000000149011612]]
    """
    if not isinstance(state, KeepPrunedState):
        raise ValueError(f"set_mask expects the state of keep_pruned, got {type(state).__name__}")
    check_matches(state.mask, mask)
    return state._replace(mask=jax.tree.map(lambda m: jnp.asarray(m, dtype=bool), mask))
