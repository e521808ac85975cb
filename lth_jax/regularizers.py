"""Weight regularizers as optax transformations, plus the matching loss penalties.

Each factory returns an ``optax.GradientTransformation`` that chains with any
optax optimizer through ``optax.chain``. **Where it goes in the chain is part
of its meaning** (the order confusion of optax issues #308 and #364):

* **Before the optimizer** (they edit the *gradient*, so the optimizer's
  preconditioning, momentum and learning rate apply to them, exactly as if the
  penalty were in the loss): :func:`add_l2` (coupled L2) and :func:`add_l1`
  (L1 subgradient)::

      optax.chain(add_l2(5e-4), optax.sgd(0.1, momentum=0.9))

* **After the optimizer** (they edit the *update*, i.e. the step
  ``new_params = params + update``, with an explicit learning rate that should
  be the optimizer's): :func:`decoupled_weight_decay` (AdamW style),
  :func:`prox_l1`, :func:`elastic_net` and :func:`max_norm`. The proximal and
  projection steps must be **last**, so that they see the final step::

      optax.chain(optax.adam(1e-3), decoupled_weight_decay(1e-4, 1e-3))
      optax.chain(optax.sgd(0.1), prox_l1(1e-3, 0.1))
      optax.chain(optax.sgd(0.1), max_norm(3.0))

  Used with :func:`lth_jax.masks.keep_pruned`, put the whole chain inside it.

**Which leaves.** By default every transform and penalty acts on *kernels
only*: leaves named ``kernel`` with ``ndim >= 2`` (dense and conv weights), as
in :func:`lth_jax.masks.prunable_tree`. Biases, batch-norm scales and offsets
are untouched. ``mask=`` overrides it with a regex searched in the path string
(``"Dense_0/kernel"``), a callable ``(path, leaf) -> bool``, or a pytree of
bools shaped like the params (Python bools, or boolean arrays for per-entry
selection).

**Learning rates** of the after-the-optimizer transforms are a float or an
optax schedule ``count -> lr``; the state is :class:`CountState`, whose count
starts at 0 and goes up by one per update, exactly like
``optax.scale_by_learning_rate``, so a schedule here stays in step with the
same schedule given to the optimizer.

All strengths are non-negative Python numbers; bad values raise ``ValueError``
naming the value and the allowed range. Transforms that need the params raise
``ValueError`` when ``update`` is called without them.

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> params = {"d": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  >>> tx = optax.chain(add_l2(0.1), optax.sgd(1.0))
  >>> grads = jax.tree.map(jnp.zeros_like, params)
  >>> u, _ = tx.update(grads, tx.init(params), params)
  >>> round(float(u["d"]["kernel"][0, 0]), 6), abs(float(u["d"]["bias"][0]))  # bias untouched
  (-0.1, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth_jax import checks
from lth_jax import masks as masks_lib

__all__ = [
    "add_l2",
    "decoupled_weight_decay",
    "add_l1",
    "prox_l1",
    "elastic_net",
    "max_norm",
    "l1_penalty",
    "l2_penalty",
    "CountState",
    "soft_threshold",
]

ScalarOrSchedule = float | Callable[[Any], Any]

_NO_PARAMS = "{name} needs the params: call tx.update(updates, state, params) with params"

#: Selection flags decided at trace time (the others are arrays, applied with ``jnp.where``).
_STATIC = (bool, np.bool_)


class CountState(NamedTuple):
    """State of the schedule-aware transforms: the number of updates so far (int32)."""

    count: jax.Array


# --------------------------------------------------------------------------- #
# Shared machinery: argument checks, leaf selection, schedules
# --------------------------------------------------------------------------- #


def _coefficient(value, name: str, positive: bool = False) -> float:
    """``float(value)`` for a finite Python number ``>= 0`` (``> 0`` if ``positive``)."""
    if checks.is_number(value):
        v = float(value)
        if math.isfinite(v) and (v > 0.0 if positive else v >= 0.0):
            return v
    bound = "> 0" if positive else ">= 0"
    raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_lr(learning_rate, name: str = "learning_rate"):
    if callable(learning_rate) or isinstance(learning_rate, jax.Array):  # a schedule, or traced
        return learning_rate
    return _coefficient(learning_rate, name)


def _leafwise(
    name: str,
    rule: Callable[[Any], Callable[..., Any]],
    mask,
    init: Callable[[Any], Any] = lambda params: optax.EmptyState(),
    advance: Callable[[Any], Any] = lambda state: state,
    trees: Callable[[Any], tuple] = lambda state: (),
) -> optax.GradientTransformation:
    """A transformation that applies a per-leaf rule to the leaves ``mask`` selects.

    Every transform of this module and of :mod:`lth_jax.regularizers_sp` is
    this wrapper around its per-leaf math (optax's ``masked``, plus per-entry
    selection):

    * ``rule(state)`` gives ``fn(u, p, *xs)``: the new update of one selected
      leaf from its update ``u``, its param ``p`` and its leaves ``xs`` of the
      extra pytrees ``trees(state)`` (e.g. an anchor). The result is cast back
      to ``u``'s dtype; unselected leaves keep ``u`` as is.
    * The selection is :func:`lth_jax.masks.prunable_tree` of the params and
      ``mask``: a Python bool takes the leaf whole or leaves it alone (``fn`` is
      not called), a boolean array selects entry by entry with ``jnp.where``.
    * ``init(params)`` is the state (``optax.EmptyState()`` by default); the
      state returned by ``update`` is ``advance(state)`` (unchanged by default).
      ``init`` checks the mask; ``update`` without params raises ``ValueError``.
    """

    def init_fn(params):
        state = init(params)
        masks_lib.prunable_tree(params, mask)  # fail early on a bad mask
        return state

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS.format(name=name))
        fn = rule(state)
        flags = masks_lib.prunable_tree(params, mask)

        def leaf(flag, u, p, *xs):
            if isinstance(flag, _STATIC):
                return fn(u, p, *xs).astype(jnp.result_type(u)) if flag else u
            return jnp.where(flag, fn(u, p, *xs), u).astype(jnp.result_type(u))

        return jax.tree.map(leaf, flags, updates, params, *trees(state)), advance(state)

    return optax.GradientTransformation(init_fn, update_fn)


def _scheduled(name: str, rule, learning_rate, mask) -> optax.GradientTransformation:
    """:func:`_leafwise` with a :class:`CountState`; ``rule(lr)`` gets the step's learning rate.

    ``lr`` is ``learning_rate(count)`` for a schedule, else ``learning_rate``;
    the count goes up by one per update (as in ``optax.scale_by_learning_rate``).
    """
    lr = _check_lr(learning_rate)
    return _leafwise(
        name,
        lambda state: rule(lr(state.count) if callable(lr) else lr),
        mask,
        init=lambda params: CountState(count=jnp.zeros([], jnp.int32)),
        advance=lambda state: CountState(optax.safe_increment(state.count)),
    )


def _selected_sum(term, flags, *trees, dtype=jnp.float32):
    """``sum(term(*leaves))`` over the entries ``flags`` selects: a scalar, float32 by default.

    ``flags`` is a selection as in :func:`_leafwise` and ``trees`` are pytrees
    shaped like it, walked together as by ``jax.tree.map``. Each leaf's sum is
    taken in ``dtype`` (``None``: the term's own dtype) and added, in leaf
    order, to a float32 zero; a Python ``False`` leaf adds nothing.
    """
    flat, treedef = jax.tree.flatten(flags)
    total = jnp.zeros([], jnp.float32)
    for flag, *leaves in zip(flat, *(treedef.flatten_up_to(t) for t in trees)):
        if isinstance(flag, _STATIC):
            if flag:
                total = total + jnp.sum(term(*leaves), dtype=dtype)
        else:
            total = total + jnp.sum(jnp.where(flag, term(*leaves), 0.0), dtype=dtype)
    return total


def soft_threshold(z, threshold):
    """The proximal operator of ``threshold * |.|``: ``sign(z) * max(|z| - threshold, 0)``.

    Example:
      >>> import jax.numpy as jnp
      >>> soft_threshold(jnp.array([-2.0, 0.5, 3.0]), 1.0).tolist()
      [-1.0, 0.0, 2.0]
    """
    return jnp.sign(z) * jnp.maximum(jnp.abs(z) - threshold, 0.0)


# --------------------------------------------------------------------------- #
# Before the optimizer: gradient terms
# --------------------------------------------------------------------------- #


def add_l2(weight_decay: float, mask=None) -> optax.GradientTransformation:
    """Coupled L2: adds ``weight_decay * p`` to the gradient. Place it BEFORE the optimizer.

    This is the gradient of ``(weight_decay / 2) * ||p||^2``, so
    ``optax.chain(add_l2(wd), opt)`` is the same as training on ``loss +
    wd * l2_penalty(params)`` with ``opt``: the optimizer rescales the term
    (with Adam it is divided by the second-moment estimate, which is why AdamW
    exists; see :func:`decoupled_weight_decay`). With plain SGD the two kinds
    of decay coincide.

    Args:
      weight_decay: coefficient ``>= 0``.
      mask: which leaves (default: kernels with ``ndim >= 2``); see the module
        docstring.

    Returns:
      An ``optax.GradientTransformation`` with ``optax.EmptyState``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> p = {"kernel": jnp.array([[2.0]])}
      >>> tx = optax.chain(add_l2(0.5), optax.sgd(0.1))
      >>> u, _ = tx.update({"kernel": jnp.array([[0.0]])}, tx.init(p), p)
      >>> round(float(u["kernel"][0, 0]), 6)  # -lr * wd * p
      -0.1
    """
    wd = _coefficient(weight_decay, "weight_decay")
    return _leafwise("add_l2", lambda state: lambda u, p: u + wd * p, mask)


def add_l1(strength: float, mask=None) -> optax.GradientTransformation:
    """L1 subgradient: adds ``strength * sign(p)`` to the gradient. Place it BEFORE the optimizer.

    The gradient of ``strength * sum |p|`` wherever no weight is exactly 0, so
    there it equals training on ``loss + strength * l1_penalty(params)``. At a
    weight of exactly 0 it adds nothing: ``sign(0) = 0``, the subgradient of
    least norm, so a zero weight whose loss gradient is 0 (a pruned one) stays
    0; ``jax.grad`` of :func:`l1_penalty` takes ``+strength`` there instead
    (JAX's derivative of ``abs`` at 0 is 1). Weights oscillate around zero but
    almost never land exactly on it; use :func:`prox_l1` for exact zeros.

    Args:
      strength: coefficient ``>= 0``.
      mask: which leaves (default: kernels with ``ndim >= 2``).

    Returns:
      An ``optax.GradientTransformation`` with ``optax.EmptyState``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = {"kernel": jnp.array([[-2.0, 0.0, 3.0]])}
      >>> tx = add_l1(0.1)
      >>> u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
      >>> u["kernel"].tolist()
      [[-0.10000000149011612, 0.0, 0.10000000149011612]]
    """
    s = _coefficient(strength, "l1 strength")
    return _leafwise("add_l1", lambda state: lambda u, p: u + s * jnp.sign(p), mask)


# --------------------------------------------------------------------------- #
# After the optimizer: update terms, proximal steps and projections
# --------------------------------------------------------------------------- #


def decoupled_weight_decay(
    weight_decay: float, learning_rate: ScalarOrSchedule, mask=None
) -> optax.GradientTransformation:
    """Decoupled weight decay (Loshchilov & Hutter): place it AFTER the optimizer.

    Adds ``-learning_rate(count) * weight_decay * p`` to the update, so the
    decay is not rescaled by the optimizer's preconditioner.
    ``optax.chain(optax.adam(lr), decoupled_weight_decay(wd, lr, mask))`` is
    ``optax.adamw(lr, weight_decay=wd, mask=mask)`` with the same ``mask``
    (without one, this decays kernels only and ``optax.adamw`` every leaf,
    biases and norm scales too). Pass the optimizer's learning rate (or the
    same schedule).

    Args:
      weight_decay: coefficient ``>= 0`` (per unit learning rate, as in AdamW).
      learning_rate: a float ``>= 0`` or an optax schedule of the step count.
      mask: which leaves (default: kernels with ``ndim >= 2``).

    Returns:
      An ``optax.GradientTransformation`` with :class:`CountState`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> p = {"kernel": jnp.array([[1.0]])}
      >>> tx = optax.chain(optax.sgd(0.1), decoupled_weight_decay(0.5, 0.1))
      >>> u, _ = tx.update({"kernel": jnp.array([[0.0]])}, tx.init(p), p)
      >>> round(float(u["kernel"][0, 0]), 6)
      -0.05
    """
    wd = _coefficient(weight_decay, "weight_decay")

    def rule(lr):
        step = lr * wd
        return lambda u, p: u - step * p

    return _scheduled("decoupled_weight_decay", rule, learning_rate, mask)


def prox_l1(
    strength: float, learning_rate: ScalarOrSchedule, mask=None
) -> optax.GradientTransformation:
    """Proximal L1 (soft-thresholding, ISTA): place it AFTER the optimizer.

    After the optimizer and any update term (decoupled weight decay); only a
    projection (:func:`max_norm`, which keeps zeros at zero) may follow.

    With ``z = p + u`` the point the optimizer steps to, the new params are
    ``soft_threshold(z, learning_rate(count) * strength)``: entries with ``|z|``
    at most the threshold become exactly ``0.0``, the others shrink towards 0 by
    the threshold. The update returned is ``new_p - p``. With ``optax.sgd(lr)``
    this is proximal gradient descent on ``loss + strength * sum |p|``; with
    other optimizers it is the usual heuristic.

    Args:
      strength: L1 coefficient ``>= 0``.
      learning_rate: the optimizer's learning rate, a float or an optax schedule.
      mask: which leaves (default: kernels with ``ndim >= 2``).

    Returns:
      An ``optax.GradientTransformation`` with :class:`CountState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> p = {"kernel": jnp.array([[0.05, -1.0]])}
      >>> tx = optax.chain(optax.sgd(1.0), prox_l1(0.1, 1.0))
      >>> u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
      >>> optax.apply_updates(p, u)["kernel"].tolist()
      [[0.0, -0.8999999761581421]]
    """
    s = _coefficient(strength, "l1 strength")

    def rule(lr):
        thr = lr * s
        return lambda u, p: soft_threshold(p + u, thr) - p

    return _scheduled("prox_l1", rule, learning_rate, mask)


def elastic_net(
    l1: float, l2: float, learning_rate: ScalarOrSchedule, mask=None
) -> optax.GradientTransformation:
    """Proximal elastic net: place it AFTER the optimizer (where :func:`prox_l1` goes).

    The proximal step of ``l1 * |p| + (l2 / 2) * p^2``: with ``z = p + u`` and
    ``lr = learning_rate(count)``, the new params are
    ``soft_threshold(z, lr * l1) / (1 + lr * l2)``, and the update is
    ``new_p - p``. With ``l2 = 0`` it is :func:`prox_l1`; with ``l1 = 0`` it is
    an implicit (proximal) L2 shrinkage.

    Args:
      l1: L1 coefficient ``>= 0``.
      l2: L2 coefficient ``>= 0``.
      learning_rate: the optimizer's learning rate, a float or an optax schedule.
      mask: which leaves (default: kernels with ``ndim >= 2``).

    Returns:
      An ``optax.GradientTransformation`` with :class:`CountState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> p = {"kernel": jnp.array([[0.05, -1.1]])}
      >>> tx = optax.chain(optax.sgd(1.0), elastic_net(0.1, 1.0, 1.0))
      >>> u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
      >>> [round(v, 6) for v in optax.apply_updates(p, u)["kernel"][0].tolist()]
      [0.0, -0.5]
    """
    a = _coefficient(l1, "l1 strength")
    b = _coefficient(l2, "l2 strength")
    rule = lambda lr: lambda u, p: soft_threshold(p + u, lr * a) / (1.0 + lr * b) - p
    return _scheduled("elastic_net", rule, learning_rate, mask)


def max_norm(max_value: float, axis=None, mask=None) -> optax.GradientTransformation:
    """Max-norm constraint (Srivastava et al. 2014): place it LAST, after any proximal step.

    After the step ``z = p + u``, each unit's incoming weight vector is
    projected onto the ball of radius ``max_value``: if its L2 norm exceeds
    ``max_value`` it is scaled down to exactly that norm, otherwise it is left
    as is. The update returned is ``projected - p``. With ``axis=None`` the norm
    is taken over all axes but the last, so for a Dense kernel ``(in, out)`` the
    vector of unit ``j`` is column ``j`` and for an HWIO conv kernel it is
    output channel ``j``'s whole filter. The paper uses ``max_value`` of 3 to 4
    together with dropout.

    Args:
      max_value: the largest allowed norm, ``> 0``.
      axis: the axes to take the norm over (an int or a tuple, as in Keras'
        ``MaxNorm``); ``None``: all but the last.
      mask: which leaves (default: kernels with ``ndim >= 2``).

    Returns:
      An ``optax.GradientTransformation`` with ``optax.EmptyState``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> p = {"kernel": jnp.array([[3.0, 0.3], [4.0, 0.4]])}
      >>> tx = max_norm(1.0)
      >>> u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
      >>> [round(v, 6) for v in optax.apply_updates(p, u)["kernel"].ravel().tolist()]
      [0.6, 0.3, 0.8, 0.4]
    """
    c = _coefficient(max_value, "max_value", positive=True)
    if axis is not None and not isinstance(axis, (int, tuple, list)):
        raise ValueError(f"axis must be None, an int or a tuple of ints, got {axis!r}")

    def axes_for(ndim: int) -> tuple[int, ...]:
        if axis is None:
            return tuple(range(ndim - 1))
        ax = (axis,) if isinstance(axis, int) else tuple(axis)
        for a in ax:
            if not -ndim <= a < ndim:
                raise ValueError(
                    f"max_norm axis {a} is out of range for a leaf with {ndim} dimensions; "
                    f"allowed range is [{-ndim}, {ndim - 1}]"
                )
        return tuple(sorted({a % ndim for a in ax}))

    def project(u, p):
        z = p + u
        norm = jnp.sqrt(jnp.sum(jnp.square(z), axis=axes_for(z.ndim), keepdims=True))
        scale = jnp.where(norm > c, c / jnp.where(norm > c, norm, 1.0), 1.0)
        return z * scale - p

    return _leafwise("max_norm", lambda state: project, mask)


# --------------------------------------------------------------------------- #
# Penalties, for the loss or for reporting
# --------------------------------------------------------------------------- #


def l1_penalty(params, mask=None):
    """``sum |p|`` over the selected leaves (default: kernels), a float32 scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> float(l1_penalty({"d": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.ones(2)}}))
      3.0
    """
    return _selected_sum(jnp.abs, masks_lib.prunable_tree(params, mask), params)


def l2_penalty(params, mask=None):
    """``0.5 * sum p^2`` over the selected leaves (default: kernels), a float32 scalar.

    Its gradient is ``p`` on the selected leaves, which is what :func:`add_l2`
    adds with ``weight_decay=1``.

    Example:
      >>> import jax.numpy as jnp
      >>> float(l2_penalty({"d": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.ones(2)}}))
      2.5
    """
    half_square = lambda p: 0.5 * jnp.square(p)
    return _selected_sum(half_square, masks_lib.prunable_tree(params, mask), params)
