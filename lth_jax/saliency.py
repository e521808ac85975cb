"""Pruning at initialization: SNIP, GraSP and SynFlow scores, and masks from them.

Pure functions on params pytrees; every one is jittable and vmappable over a
leading trial axis (masks and counts are data). The score functions take the
network as a callable, so they work outside the lottery engine too:

* :func:`snip_scores` ``(loss_fn, params, batch)``: ``|g ⊙ w|`` (Lee et al. 2019);
* :func:`grasp_scores` ``(loss_fn, params, batch)``: ``-w ⊙ (H g)`` (Wang et al. 2020),
  with :func:`hessian_vector_product` (``jax.jvp`` of ``jax.grad``);
* :func:`synflow_scores` ``(apply_fn, params, input_shape)``: ``|∂R/∂w ⊙ w|`` on
  ``|w|`` with an all-ones input (Tanaka et al. 2020), and :func:`synflow_mask`, its
  iterative pruning (100 steps, exponential schedule of densities).

``loss_fn(params, batch)`` returns a scalar loss; ``apply_fn(params, x)`` the
network's outputs. :mod:`lth_jax.pruning` re-exports the three score functions.

**Which weights are kept** (all three are *kept-highest* rules once GraSP's
sign is folded in): SNIP and SynFlow keep the weights with the highest score;
GraSP *removes* the weights with the highest ``S = -w ⊙ Hg`` (Wang et al.,
eq. 8 and "remove the top p fraction"), i.e. keeps the lowest ``S``, the
highest ``w ⊙ Hg``. :func:`keep_top_like` turns scores into a mask: in
``layerwise`` scope each prunable leaf keeps as many weights as a given mask
(this round's ticket) keeps there; in ``global`` scope the highest scores over
all prunable weights together, as many as the given mask keeps in all. Ties go
by position, as everywhere in :mod:`lth_jax.pruning`: of equal scores the one
earlier in ``jax.tree.leaves`` order, then row-major order, is removed first.
Normalizing the scores by their sum (SNIP's ``s_j / sum_k s_k``, GraSP's code)
is one positive number for the whole network: it changes no ranking and is
left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lth_jax import masks as masks_lib

__all__ = [
    "METHODS",
    "snip_scores",
    "grasp_scores",
    "hessian_vector_product",
    "synflow_scores",
    "synflow_mask",
    "keep_top_like",
]

#: The pruning-at-initialization methods (arm names of :mod:`lth_jax.arms`).
METHODS = ("snip", "grasp", "synflow")

SCOPES = ("layerwise", "global")

LossFn = Callable[[Any, Any], jax.Array]


def snip_scores(loss_fn: LossFn, params, batch):
    """SNIP's connection sensitivity (Lee et al. 2019), ``|∂L/∂w ⊙ w|`` for every leaf.

    Lee et al., eq. 6: ``s_j = |g_j(w; D)| / sum_k |g_k(w; D)|`` with
    ``g_j = ∂L(c ⊙ w; D) / ∂c_j`` at ``c = 1``, which is ``w_j ∂L/∂w_j``; the
    sum is one positive number and is left out. Kept: the highest scores.

    Args:
      loss_fn: ``loss_fn(params, batch)`` -> scalar (the training loss).
      params: the weights to score (the initialization).
      batch: what ``loss_fn`` takes besides the params (a batch of training data).

    Returns:
      The scores, a pytree like ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> loss = lambda p, x: jnp.sum(x @ p["w"])
      >>> w = {"w": jnp.array([[2.0], [-3.0]])}
      >>> snip_scores(loss, w, jnp.array([[1.0, 1.0]]))["w"].tolist()
      [[2.0], [3.0]]
    """
    grads = jax.grad(loss_fn)(params, batch)
    return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, params)


def hessian_vector_product(loss_fn: LossFn, params, batch, v):
    """``H v``, ``H`` the Hessian of ``loss_fn(., batch)`` at ``params``, without forming ``H``.

    Forward over reverse: the directional derivative of ``jax.grad(loss_fn)``
    along ``v`` (``jax.jvp``), one gradient's cost or two.

    Example:
      >>> import jax.numpy as jnp
      >>> loss = lambda p, _: p["a"] ** 2 * p["b"]     # H = [[2b, 2a], [2a, 0]]
      >>> hv = hessian_vector_product(loss, {"a": 1.0, "b": 3.0}, None, {"a": 1.0, "b": 0.0})
      >>> float(hv["a"]), float(hv["b"])
      (6.0, 2.0)
    """
    grad = lambda p: jax.grad(loss_fn)(p, batch)
    return jax.jvp(grad, (params,), (v,))[1]


def grasp_scores(loss_fn: LossFn, params, batch, prunable=None):
    """GraSP's score (Wang et al. 2020, eq. 8), ``S(-w) = -w ⊙ (H g)``.

    ``g = ∇L(w)`` and ``H = ∇²L(w)`` on ``batch``; ``S`` approximates the
    change of the gradient norm ``g^T g`` when a weight is removed (up to a
    factor 2), so a high ``S`` means its removal preserves (or raises) the
    gradient flow: **GraSP removes the highest** ``S`` **and keeps the
    lowest** (to keep the highest of something, use ``-S = w ⊙ Hg``). As in
    the authors' code, ``g`` is the gradient with respect to the prunable
    weights only (``g`` is 0 on the other leaves, so ``(Hg)_w = H_ww g_w``);
    the product is :func:`hessian_vector_product`. The authors' code also
    divides the logits by a temperature ``T = 200`` (``pruner/GraSP.py``); this
    function uses ``loss_fn`` as given (wrap it to divide by ``T``, as the
    ``grasp`` arm does with ``pai.grasp_temperature``).

    Args:
      loss_fn, params, batch: as for :func:`snip_scores`.
      prunable: which leaves are prunable (see :mod:`lth_jax.masks`; default
        ``kernel`` leaves with ``ndim >= 2``).

    Returns:
      ``S`` for every leaf (those of non-prunable leaves too, unused by the arms).

    Example (one weight, ``L = w^3``: ``g = 3w^2``, ``H = 6w``, ``S = -w 6w 3w^2``):
      >>> import jax.numpy as jnp
      >>> loss = lambda p, _: jnp.sum(p["kernel"] ** 3)
      >>> grasp_scores(loss, {"kernel": jnp.array([[1.0, -2.0]])}, None)["kernel"].tolist()
      [[-18.0, -288.0]]
    """
    flags = masks_lib.prunable_tree(params, prunable)
    grads = jax.grad(loss_fn)(params, batch)
    g = jax.tree.map(lambda x, f: x if f else jnp.zeros_like(x), grads, flags)
    hg = hessian_vector_product(loss_fn, params, batch, g)
    return jax.tree.map(lambda w, h: -w * h, params, hg)


def synflow_scores(apply_fn: Callable[[Any, jax.Array], jax.Array], params, input_shape, mask=None):
    """SynFlow's synaptic saliency (Tanaka et al. 2020), ``|∂R/∂w ⊙ w|`` at ``|w|``, data-free.

    Tanaka et al., eq. 2 and Algorithm 1: every parameter is replaced by its
    absolute value (biases and batch-norm scales and offsets too), the input is
    all ones, ``R = 1^T (prod_l |W_l|) 1`` is the sum of the network's output,
    and ``S(w) = ∂R/∂w ⊙ w`` (non-negative). Kept: the highest scores. With a
    ``mask``, pruned weights are 0 first (their score is 0). Float32 like the
    params: ``R`` can overflow for very deep, wide networks.

    Args:
      apply_fn: ``apply_fn(params, x)`` -> outputs; deterministic (eval mode).
      params: the weights to score.
      input_shape: one example's shape; the input is ``ones((1, *input_shape))``.
      mask: optional mask pytree (pruned weights set to 0 before scoring).

    Example (a 2-layer linear net ``x W1 W2``: ``S(W1_ij) = |W1_ij| sum_k |W2_jk|``):
      >>> import jax.numpy as jnp
      >>> p = {"a": jnp.array([[1.0, -2.0]]), "b": jnp.array([[3.0], [-4.0]])}
      >>> s = synflow_scores(lambda p, x: x @ p["a"] @ p["b"], p, (1,))
      >>> s["a"].tolist(), s["b"].tolist()
      ([[3.0, 8.0]], [[3.0], [8.0]])
    """
    if mask is not None:
        params = masks_lib.apply(mask, params)
    abs_params = jax.tree.map(jnp.abs, params)
    ones = jnp.ones((1, *tuple(input_shape)), jnp.result_type(*jax.tree.leaves(abs_params)))
    grads = jax.grad(lambda p: jnp.sum(apply_fn(p, ones)))(abs_params)
    return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, abs_params)


def synflow_mask(
    apply_fn,
    params,
    like,
    input_shape,
    iterations: int = 100,
    scope: str = "layerwise",
    prunable=None,
):
    """Iterative SynFlow (Tanaka et al. 2020, Algorithm 1) to ``like``'s densities.

    Starting from the dense network, step ``k = 1 .. n`` (``n = iterations``)
    scores the masked network with :func:`synflow_scores` and keeps the
    highest scores among the weights still alive, at density ``d^(k/n)`` (the
    exponential schedule): in ``layerwise`` scope each prunable leaf with
    ``a`` of its ``N`` weights alive in ``like`` keeps ``max(a, round(N
    (a/N)^(k/n)))`` weights; in ``global`` scope all prunable weights
    together keep that many of the totals. Step ``n`` lands exactly on
    ``like``'s counts; a pruned weight never comes back.

    Args:
      apply_fn, input_shape: as for :func:`synflow_scores`.
      params: the weights to prune (the initialization).
      like: the mask whose counts to reach (this round's ticket).
      iterations: ``n``, the pruning steps (100 in the paper).
      scope: ``"layerwise"`` or ``"global"``.
      prunable: which leaves are prunable (see :mod:`lth_jax.masks`).

    Returns:
      The mask; non-prunable leaves are ``like``'s.
    """
    flags = _check(like, scope, prunable)
    leaves, treedef = jax.tree.flatten(like)
    leaves = [jnp.asarray(m, bool) for m in leaves]
    target = _counts(leaves, flags, scope)
    sizes = [m.size for m, f in zip(leaves, flags) if f]
    sizes = sizes if scope == "layerwise" else [sum(sizes)]
    n = int(iterations)

    def body(k, alive):
        frac = k.astype(jnp.float32) / n
        counts = []
        for a, size in zip(target, sizes):
            d = a.astype(jnp.float32) / size
            at_k = jnp.round(size * d**frac).astype(jnp.int32)
            counts.append(jnp.where(k == n, a, jnp.maximum(a, at_k)))
        scores = synflow_scores(apply_fn, params, input_shape, treedef.unflatten(alive))
        return _keep_top(jax.tree.leaves(scores), alive, counts, flags, scope)

    start = [jnp.ones_like(m) if f else m for m, f in zip(leaves, flags)]
    return treedef.unflatten(jax.lax.fori_loop(1, n + 1, body, start))


def keep_top_like(scores, like, scope: str = "layerwise", prunable=None):
    """The mask keeping the highest ``scores`` at ``like``'s counts, from all weights.

    ``layerwise``: each prunable leaf keeps as many weights as it has alive in
    ``like`` (the same as :func:`lth_jax.pruning.top_scores_like`);
    ``global``: the highest scores over all prunable leaves together, as many
    as ``like`` has alive in all, so each layer's count is the method's own.
    Every weight is a candidate (``like`` gives counts, not positions); ties
    are removed in position order. Non-prunable leaves are ``like``'s.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> k = lambda *v: {"kernel": jnp.array([v])}
      >>> s = {"a": k(0.9, 0.8), "b": k(0.1, 0.7)}
      >>> like = {"a": k(True, False), "b": k(True, False)}
      >>> [m.tolist() for m in jax.tree.leaves(keep_top_like(s, like))]
      [[[True, False]], [[False, True]]]
      >>> [m.tolist() for m in jax.tree.leaves(keep_top_like(s, like, "global"))]
      [[[True, True]], [[False, False]]]
    """
    flags = _check(like, scope, prunable)
    leaves, treedef = jax.tree.flatten(like)
    leaves = [jnp.asarray(m, bool) for m in leaves]
    counts = _counts(leaves, flags, scope)
    alive = [jnp.ones_like(m) if f else m for m, f in zip(leaves, flags)]
    return treedef.unflatten(_keep_top(treedef.flatten_up_to(scores), alive, counts, flags, scope))


# ----------------------------------------------------------------------------- helpers


def _check(like, scope, prunable) -> list[bool]:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    return jax.tree.leaves(masks_lib.prunable_tree(like, prunable))


def _counts(leaves, flags, scope) -> list[jax.Array]:
    """Alive counts (int32) of the prunable leaves (``layerwise``), or their total (``global``)."""
    counts = [jnp.sum(m, dtype=jnp.int32) for m, f in zip(leaves, flags) if f]
    return counts if scope == "layerwise" else [sum(counts, jnp.int32(0))]


def _keep_top(score_leaves, alive, counts: Sequence[jax.Array], flags, scope):
    """Keeps, among ``alive`` weights, the ``counts`` highest scores (per leaf or over all)."""
    idx = [i for i, f in enumerate(flags) if f]
    ranked = [
        jnp.where(alive[i], score_leaves[i].astype(jnp.float32), -jnp.inf).reshape(-1) for i in idx
    ]
    out = list(alive)
    if scope == "layerwise":
        kept = [_top(r, c) for r, c in zip(ranked, counts)]
    else:
        flat = _top(jnp.concatenate(ranked), counts[0])
        kept, start = [], 0
        for r in ranked:
            kept.append(flat[start : start + r.size])
            start += r.size
    for i, k in zip(idx, kept):
        out[i] = k.reshape(alive[i].shape)
    return out


def _top(flat, count):
    """``count`` highest of ``flat``; of equal values the earlier position is dropped first."""
    order = jnp.argsort(flat, stable=True)
    rank = jnp.empty_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    return rank >= flat.size - count
