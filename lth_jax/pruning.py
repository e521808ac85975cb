"""Magnitude pruning and its random control, as pure functions on mask pytrees.

The rules, exactly:

* **What a round removes.** ``rate`` is the fraction of the weights *still
  alive* to remove. In a group of ``n`` alive weights, ``k = floor(rate * n +
  1/2)`` are removed (round half up), computed exactly in integers with the
  rate as the decimal written (``0.65`` is 13/20) for any rate of at most four
  decimals, otherwise in float32 (``_num_to_remove``). After ``L`` rounds at rate ``p`` a layer
  of ``n`` weights keeps ``n (1-p)^L`` weights to within one per round.
* **Ranking.** Alive weights are ranked by ``|w|`` ascending; the ``k``
  smallest are removed. Ties are broken by position: the weight that comes
  first (leaf order of ``jax.tree.leaves``, then row-major flat index) is
  removed first. Exactly ``k`` weights go, never ``k`` plus ties.
* **Scope.** ``"layerwise"`` ranks and counts within each prunable leaf
  separately (Frankle & Carbin). ``"global"`` ranks all alive prunable weights
  of all layers together by raw magnitude (no per-layer normalization) and
  removes ``k = round(rate * total alive)``.
* **Per-layer rates.** ``layer_rates``, a sequence of ``(pattern, rate)``
  pairs such as ``(("Conv_", 0.15), ("head", 0.1))``, gives the leaves whose
  path (``"Dense_2/kernel"``) matches the regex ``pattern`` (``re.search``)
  their own rate, pruned within the layer. Patterns are tried in the order
  written and the first that matches a leaf gives its rate. A mapping
  ``{pattern: rate}`` is accepted too, tried in its iteration order (the order
  written, for a ``dict``). In ``global`` scope those leaves leave the global
  pool and are pruned layerwise at their own rate; the rest are ranked
  globally at ``rate``. A pattern that matches no prunable leaf, or only
  leaves an earlier pattern already took, is an error.
* **One-shot to a density.** Pruning once to an overall density ``d`` (of
  the prunable weights) is IMP's per-layer schedule at a real number of
  rounds ``L``: a layer with rate ``r_l`` (its own, else ``rate``) goes to
  density ``(1 - r_l)^L``, with ``L >= 0`` solved (by bisection) so that the
  prunable weights as a whole are at ``d``. Without ``layer_rates`` every
  layer goes to ``d``. See :func:`one_shot_rates`.
* **No revival.** A pruned weight is never alive again: new masks are
  ``old_mask & keep``.
* **Prunable leaves** follow :mod:`lth_jax.masks` (default: ``kernel`` leaves
  with ``ndim >= 2``); other leaves stay all-alive.

All functions are jittable and vmappable over a leading trial axis (the mask
is data; ``rate``, ``scope`` and ``layer_rates`` are static).

Pruning at initialization (SNIP, GraSP, SynFlow: their scores, masks and
rules) is :mod:`lth_jax.saliency`; its score functions are re-exported here.
"""

from __future__ import annotations

import fractions
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import checks
from lth_jax import masks as masks_lib
from lth_jax.saliency import grasp_scores, keep_top_like, snip_scores, synflow_scores

__all__ = [
    "magnitude_prune",
    "random_prune",
    "random_mask_like",
    "top_scores_like",
    "rate_for_density",
    "one_shot_rates",
    "OneShot",
    "resolve_layer_rates",
    "check_rate",
    "snip_scores",
    "grasp_scores",
    "synflow_scores",
]

SCOPES = ("layerwise", "global")

#: Per-layer rates: ``(pattern, rate)`` pairs in the order they are tried, or a
#: mapping ``{pattern: rate}`` (its iteration order).
LayerRates = Sequence[tuple[str, float]] | Mapping[str, float]


def check_rate(rate, name: str = "rate") -> float:
    """Validates a pruning rate in ``[0, 1)`` and returns it as a float.

    Any real number is accepted (NumPy scalars included); booleans and NaN are not.

    Example:
      >>> check_rate(0.2)
      0.2
      >>> check_rate(1.0)
      Traceback (most recent call last):
      ...
      ValueError: rate must be a number in [0, 1), got 1.0
    """
    if isinstance(rate, numbers.Real) and not isinstance(rate, bool):
        rate = float(rate)
    return checks.number(rate, name, 0, 1)


def _rate_pairs(layer_rates: LayerRates | None) -> list[tuple[str, float]]:
    """``layer_rates`` as checked ``(pattern, rate)`` pairs, in the order they are tried."""
    if layer_rates is None:
        return []
    if isinstance(layer_rates, Mapping) or hasattr(layer_rates, "keys"):
        entries = list(layer_rates.items())
    elif isinstance(layer_rates, str) or not isinstance(layer_rates, Sequence):
        raise ValueError(
            f"layer_rates must be a sequence of (pattern, rate) pairs, got {layer_rates!r}"
        )
    else:
        entries = list(layer_rates)
    pairs = []
    for entry in entries:
        if (
            isinstance(entry, str)
            or not isinstance(entry, Sequence)
            or len(entry) != 2
            or not isinstance(entry[0], str)
        ):
            raise ValueError(f"layer_rates entries must be (pattern, rate) pairs, got {entry!r}")
        pattern, r = entry
        pairs.append((pattern, check_rate(r, f"layer rate {pattern!r}")))
    return pairs


def resolve_layer_rates(
    tree, rate: float, layer_rates: LayerRates | None = None, prunable=None
) -> list[tuple[float, bool] | None]:
    """The rate of each leaf, in ``jax.tree.leaves`` order.

    Each entry is ``None`` for a leaf that is not prunable, else ``(rate,
    own)`` where ``own`` says the rate came from a ``layer_rates`` pattern (such
    a leaf is always pruned within itself): the first pattern, in the order
    given, that matches the leaf's path.

    Raises:
      ValueError: a pattern that matches no prunable leaf (or only leaves an
        earlier pattern took), an entry that is not a ``(pattern, rate)``
        pair, or a rate outside ``[0, 1)``.

    Example:
      >>> import numpy as np
      >>> tree = {"Dense_0": {"bias": np.zeros(3), "kernel": np.zeros((4, 3))},
      ...         "head": {"bias": np.zeros(2), "kernel": np.zeros((3, 2))}}
      >>> resolve_layer_rates(tree, 0.2, (("head", 0.1),))
      [None, (0.2, False), None, (0.1, True)]
      >>> resolve_layer_rates(tree, 0.2, (("kernel", 0.5), ("head", 0.1)))
      Traceback (most recent call last):
      ...
      ValueError: layer rate pattern 'head' only matches leaves an earlier pattern took: head/kernel
    """
    rate = check_rate(rate)
    flags = jax.tree.leaves(masks_lib.prunable_tree(tree, prunable))
    paths = [p for p, _ in masks_lib.named_leaves(tree)]
    compiled = [(pattern, re.compile(pattern), r) for pattern, r in _rate_pairs(layer_rates)]
    used = set()
    rates: list[tuple[float, bool] | None] = []
    for path, f in zip(paths, flags):
        entry = (rate, False) if f else None
        if f:
            for pattern, rx, r in compiled:
                if rx.search(path):
                    entry = (r, True)
                    used.add(pattern)
                    break
        rates.append(entry)
    unused = [p for p, _, _ in compiled if p not in used]
    if unused:
        prunable_paths = [p for p, f in zip(paths, flags) if f]
        rx = re.compile(unused[0])
        shadowed = [p for p in prunable_paths if rx.search(p)]
        if shadowed:
            raise ValueError(
                f"layer rate pattern {unused[0]!r} only matches leaves an earlier pattern "
                f"took: {', '.join(shadowed)}"
            )
        raise ValueError(
            f"layer rate pattern {unused[0]!r} matches no prunable parameter; "
            f"prunable paths are: {', '.join(prunable_paths)}"
        )
    return rates


#: The largest denominator of a rate counted exactly: ``4 q^2 + q < 2^31`` keeps int32 exact.
_MAX_DENOMINATOR = 23_170


def _num_to_remove(rate: float, alive):
    """``floor(rate * alive + 1/2)`` exactly, in int32 arithmetic (any ``alive`` < 2^31).

    ``rate`` counts as the decimal it is written as (``0.65`` is 13/20, so 0.65
    of 90 is 58.5 and 59 go): exact for every rate whose fraction has a
    denominator up to 23,170 (every rate of at most four decimals), with
    ``rate = p/q`` and ``alive = a * 2q + b``: ``k = 2pa + floor((2pb + q) / 2q)``.
    Another rate (the one-shot rates ``1 - (1 - r)^L``, say) is counted in
    float32 arithmetic, which can be one weight off at an exact half.
    """
    frac = fractions.Fraction(repr(float(rate)))  # the decimal written: 0.65 is 13/20
    alive = jnp.asarray(alive, jnp.int32)
    if frac.denominator > _MAX_DENOMINATOR:  # more decimals (one-shot rates): float32
        return jnp.floor(jnp.float32(rate) * alive.astype(jnp.float32) + 0.5).astype(jnp.int32)
    p, q = frac.numerator, frac.denominator
    a, b = alive // (2 * q), alive % (2 * q)
    return 2 * p * a + (2 * p * b + q) // (2 * q)


def _prune_by_scores(scores_fn, mask, rate, scope, layer_rates, prunable):
    """Removes, by ascending score, the number of alive weights the rules give."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    leaves, treedef = jax.tree.flatten(mask)
    leaves = [jnp.asarray(m, dtype=bool) for m in leaves]
    rates = resolve_layer_rates(mask, rate, layer_rates, prunable)
    scores = scores_fn(leaves)
    out = list(leaves)
    global_idx = []
    for i, (m, entry) in enumerate(zip(leaves, rates)):
        if entry is None:
            continue
        r, own = entry
        if scope == "global" and not own:
            global_idx.append(i)
        else:
            out[i] = _prune_group([m], [scores[i]], r)[0]
    if global_idx:
        pruned = _prune_group(
            [leaves[i] for i in global_idx], [scores[i] for i in global_idx], rate
        )
        for i, m in zip(global_idx, pruned):
            out[i] = m
    return jax.tree.unflatten(treedef, out)


def _prune_group(group_masks, group_scores, rate):
    """Exact top-k removal over a group of leaves ranked together."""
    sizes = [int(np.size(m)) for m in group_masks]
    flat_mask = jnp.concatenate([m.reshape(-1) for m in group_masks])
    flat_scores = jnp.concatenate([s.reshape(-1).astype(jnp.float32) for s in group_scores])
    alive = jnp.sum(flat_mask, dtype=jnp.int32)
    k = _num_to_remove(rate, alive)
    # Dead weights rank last so they are never counted among the k removed.
    ranked = jnp.where(flat_mask, flat_scores, jnp.inf)
    order = jnp.argsort(ranked, stable=True)  # ties: lower flat index first
    rank = jnp.empty_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    new_flat = flat_mask & (rank >= k)
    out, start = [], 0
    for m, n in zip(group_masks, sizes):
        out.append(new_flat[start : start + n].reshape(m.shape))
        start += n
    return out


def magnitude_prune(
    params,
    mask,
    rate: float,
    scope: str = "layerwise",
    layer_rates: LayerRates | None = None,
    prunable=None,
):
    """Removes ``rate`` of the alive prunable weights with the smallest ``|w|``.

    See the module docstring for the exact counting, ranking and tie rules.

    Args:
      params: trained parameters (a pytree).
      mask: current mask, a pytree of bools shaped like ``params``.
      rate: fraction of the alive weights to remove, in ``[0, 1)``.
      scope: ``"layerwise"`` or ``"global"``.
      layer_rates: optional per-layer rates, ``(regex, rate)`` pairs tried in
        order (or a mapping ``{regex: rate}``, in its iteration order).
      prunable: which leaves are prunable (see :mod:`lth_jax.masks`).

    Returns:
      The new mask (a subset of ``mask``).

    Raises:
      ValueError: bad rate or scope, a mask that does not match ``params``, or
        a ``layer_rates`` pattern that matches no prunable leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> from lth_jax import masks
      >>> params = {"d": {"kernel": jnp.array([[0.1, -3.0], [2.0, -0.5]])}}
      >>> new = magnitude_prune(params, masks.ones_like(params), rate=0.5)
      >>> new["d"]["kernel"].tolist()
      [[False, True], [True, False]]
    """
    masks_lib.check_matches(params, mask)
    p_leaves = jax.tree.leaves(params)
    return _prune_by_scores(
        lambda _: [jnp.abs(p) for p in p_leaves], mask, rate, scope, layer_rates, prunable
    )


def random_prune(
    key,
    mask,
    rate: float,
    scope: str = "layerwise",
    layer_rates: LayerRates | None = None,
    prunable=None,
):
    """Like :func:`magnitude_prune` with uniform random scores.

    Removes the same number of weights per layer (``layerwise``, or any layer
    named in ``layer_rates``) as magnitude pruning would, chosen uniformly at
    random among the alive ones. In ``global`` scope it removes the same total
    at random, so per-layer counts follow the layer sizes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lth_jax import masks
      >>> m = random_prune(jax.random.PRNGKey(0), {"kernel": jnp.ones((4, 5), bool)}, 0.2)
      >>> int(m["kernel"].sum())
      16
    """

    def scores(leaves):
        keys = jax.random.split(key, len(leaves))
        return [jax.random.uniform(k, m.shape) for k, m in zip(keys, leaves)]

    return _prune_by_scores(scores, mask, rate, scope, layer_rates, prunable)


def random_mask_like(key, mask, prunable=None, within=None):
    """A fresh random mask with exactly the per-layer alive counts of ``mask``.

    This is the random-mask control of the lottery-ticket papers: same layerwise
    sparsity as the ticket, positions drawn uniformly at random (independently
    of which weights the ticket kept). Non-prunable leaves stay all-alive.

    ``within`` (a mask of the same structure, or ``None``: every position)
    limits the draw to its alive positions: random pruning of a network that is
    already pruned to ``within``, whose alive counts must be at least ``mask``'s.
    An all-alive ``within`` draws the same mask as ``None``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> m = {"kernel": jnp.array([[True, False, False, True]])}
      >>> int(random_mask_like(jax.random.PRNGKey(1), m)["kernel"].sum())
      2
      >>> w = {"kernel": jnp.array([[True, True, False, False]])}
      >>> random_mask_like(jax.random.PRNGKey(1), m, within=w)["kernel"].tolist()
      [[True, True, False, False]]
    """
    flags = jax.tree.leaves(masks_lib.prunable_tree(mask, prunable))
    leaves, treedef = jax.tree.flatten(mask)
    inside = [None] * len(leaves) if within is None else jax.tree.leaves(within)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, m, w, f in zip(keys, leaves, inside, flags):
        m = jnp.asarray(m, dtype=bool)
        if not f:
            out.append(m)
            continue
        alive = jnp.sum(m, dtype=jnp.int32)
        draws = jax.random.uniform(k, (m.size,))
        if w is not None:  # outside ``within``: after every draw in [0, 1)
            draws = jnp.where(jnp.asarray(w, bool).reshape(-1), draws, 2.0)
        # The ``alive`` positions with the lowest draws (ties: lower index first):
        # one stable sort, its inverse permutation by a scatter.
        order = jnp.argsort(draws, stable=True)
        keep = jnp.zeros((m.size,), bool).at[order].set(jnp.arange(m.size) < alive)
        out.append(keep.reshape(m.shape))
    return jax.tree.unflatten(treedef, out)


def rate_for_density(current_density: float, target_density: float) -> float:
    """The one-shot rate that takes ``current_density`` to ``target_density``.

    Example:
      >>> round(rate_for_density(1.0, 0.2), 6)
      0.8
    """
    if not 0.0 < target_density <= current_density <= 1.0:
        raise ValueError(
            f"target density must be in (0, current density={current_density}], "
            f"got {target_density!r}"
        )
    return 1.0 - target_density / current_density


class OneShot(NamedTuple):
    """The rates of one-shot pruning to an overall density (see :func:`one_shot_rates`).

    Attributes:
      rate: the rate of the prunable leaves without their own rate (each
        layer in ``layerwise`` scope, the global pool in ``global`` scope).
      layer_rates: the same ``(pattern, rate)`` pairs as given, in the same
        order, each with its one-shot rate; ``None`` when none were given.
      rounds: ``L``, the real number of IMP rounds these rates equal.
    """

    rate: float
    layer_rates: tuple[tuple[str, float], ...] | None
    rounds: float


def one_shot_rates(
    tree, density: float, rate: float, layer_rates: LayerRates | None = None, prunable=None
) -> OneShot:
    """Per-layer one-shot rates that reach overall ``density`` as IMP would.

    IMP at ``rate`` (and each ``layer_rates`` pattern at its own rate ``r_l``)
    leaves a layer at density ``(1 - r_l)^L`` after ``L`` rounds. One-shot
    pruning to ``density`` is that schedule at a real ``L >= 0``: the one at
    which the prunable weights as a whole are at ``density``,
    ``sum_l n_l (1 - r_l)^L = density * sum_l n_l`` (``n_l`` the size of
    prunable leaf ``l``, ``r_l`` its own rate or ``rate``), solved by
    bisection. Every leaf with its own rate is then pruned at ``1 - (1 -
    r_l)^L``, every other one at ``1 - (1 - rate)^L``; in ``global`` scope
    those others are one pool at that rate, so the equation and the rates are
    the same in both scopes. Counts round as in every prune (module
    docstring), so each layer is within one weight of its density. Without
    ``layer_rates`` every layer goes to ``density`` itself (rate ``1 -
    density``, whatever ``rate`` is).

    Args:
      tree: params or their shapes (``jax.ShapeDtypeStruct`` s will do).
      density: the overall density to reach, in ``(0, 1]``.
      rate, layer_rates, prunable: as for :func:`magnitude_prune`.

    Raises:
      ValueError: ``density`` out of ``(0, 1]``, or below what the layers
        whose rate is 0 keep on their own (no ``L`` reaches it), or a bad
        ``layer_rates``.

    Example:
      >>> import numpy as np
      >>> tree = {"Dense_0": {"kernel": np.zeros((30, 30))}, "head": {"kernel": np.zeros((10, 10))}}
      >>> shot = one_shot_rates(tree, 0.2, 0.2, (("head", 0.1),))
      >>> round(shot.rounds, 3), round(1 - shot.rate, 4), round(1 - shot.layer_rates[0][1], 4)
      (7.847, 0.1736, 0.4375)
    """
    if not (checks.is_number(density) and 0.0 < density <= 1.0):
        raise ValueError(f"density must be a number in (0, 1], got {density!r}")
    entries = resolve_layer_rates(tree, rate, layer_rates, prunable)
    pairs = _rate_pairs(layer_rates)
    rate = check_rate(rate)
    if not pairs:
        r = rate_for_density(1.0, float(density))
        return OneShot(r, None, math.log(density) / math.log1p(-rate) if rate else math.nan)
    sizes = [math.prod(np.shape(x)) for x in jax.tree.leaves(tree)]
    groups = [(n, 1.0 - e[0]) for n, e in zip(sizes, entries) if e is not None]
    total = float(sum(n for n, _ in groups))
    kept = lambda L: sum(n * keep**L for n, keep in groups) / total  # noqa: E731
    floor = sum(n for n, keep in groups if keep == 1.0) / total
    if density < 1.0 and density <= floor:
        raise ValueError(
            f"density {density} is out of reach: the layers pruned at rate 0 alone keep "
            f"{floor:.4g} of the prunable weights"
        )
    lo, hi = 0.0, 0.0 if density == 1.0 else 1.0
    while kept(hi) > density:
        lo, hi = hi, 2 * hi
    while lo < (mid := 0.5 * (lo + hi)) < hi:  # bisection to the last bit
        lo, hi = (mid, hi) if kept(mid) > density else (lo, mid)
    L = hi
    at = lambda r: min(1.0 - (1.0 - r) ** L, np.nextafter(1.0, 0.0))  # noqa: E731
    return OneShot(at(rate), tuple((p, at(r)) for p, r in pairs), L)


def top_scores_like(scores, mask, prunable=None):
    """The mask keeping, in each prunable leaf, ``mask``'s count of the highest ``scores``.

    The per-layer counts come from ``mask`` (for example this round's
    ticket), the positions from ``scores`` (a pytree shaped like the params):
    with ``n`` weights and ``a`` alive in a leaf of ``mask``, the ``n - a``
    lowest scores are removed, ties removed in position order as in
    :func:`magnitude_prune`. One-shot magnitude pruning at the ticket's
    per-layer densities is ``top_scores_like(abs(trained dense params),
    ticket_mask)``. Non-prunable leaves are ``mask``'s, unchanged.

    Example:
      >>> import jax.numpy as jnp
      >>> s = {"kernel": jnp.array([[0.3, 0.1, 0.2, 0.4]])}
      >>> m = {"kernel": jnp.array([[True, True, False, False]])}
      >>> top_scores_like(s, m)["kernel"].tolist()
      [[True, False, False, True]]
    """
    return keep_top_like(scores, mask, "layerwise", prunable)
