"""L2-SP (Li, Grandvalet & Davoine, 2018): L2 toward the starting point, as an optax transform.

Plain L2 pulls every weight toward zero; **L2-SP** pulls the weights of a
fine-tuned network toward their *pretrained* values ``w0`` (the "starting
point"), so fine-tuning can move away from the pretrained solution only as far
as the data asks::

    penalty(w) = (strength / 2) * ||w - w0||^2     gradient: strength * (w - w0)

:func:`add_l2_sp` adds that gradient to the incoming gradient. Like the coupled
L2 of :func:`lth_jax.regularizers.add_l2`, it goes **before** the optimizer
(the optimizer's momentum, preconditioning and learning rate then apply to it,
exactly as if the penalty were in the loss)::

    optax.chain(add_l2_sp(0.01), optax.adam(1e-3))

**The anchor** ``w0`` lives in the transform's *state* (:class:`L2SPState`),
not in the closure: with ``anchor_params=None`` (the default) ``init(params)``
stores ``params`` themselves, i.e. the weights the run starts from. That is
what fine-tuning wants (the run starts at the pretrained weights), and it works
under ``jax.vmap`` over many runs with different anchors in one compiled
program. Pass ``anchor_params`` to anchor somewhere else.

**Which leaves** (``mask=``): by default kernels only (leaves named ``kernel``
with ``ndim >= 2``), as in :mod:`lth_jax.regularizers`; else a regex searched in
the path string (``"Dense_0/kernel"``), a callable ``(path, leaf) -> bool`` or a
pytree of bools (Python bools, or boolean arrays for per-entry selection). A new
output head has no pretrained value: leave it out (the paper regularizes it with
plain L2 instead; pair this with ``add_l2(..., mask="head/kernel")`` or the
optimizer's ``l2``). :func:`lth_jax.transfer.run` anchors every transferred
kernel and leaves the new head out.

Example:
  >>> import jax.numpy as jnp, optax
  >>> w0 = {"kernel": jnp.array([[1.0, 2.0]])}
  >>> tx = add_l2_sp(0.5)
  >>> state = tx.init(w0)                       # anchor = the starting weights
  >>> w = {"kernel": jnp.array([[3.0, 2.0]])}
  >>> g, _ = tx.update({"kernel": jnp.zeros((1, 2))}, state, w)
  >>> g["kernel"].tolist()                      # 0.5 * (w - w0)
  [[1.0, 0.0]]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lth_jax import masks as masks_lib
from lth_jax.regularizers import _coefficient, _leafwise, _selected_sum

__all__ = ["add_l2_sp", "l2_sp_penalty", "L2SPState"]


class L2SPState(NamedTuple):
    """State of :func:`add_l2_sp`: the anchor ``w0`` (a copy of the params tree)."""

    anchor: Any


def add_l2_sp(strength: float, anchor_params=None, mask=None) -> optax.GradientTransformation:
    """Adds ``strength * (w - w0)`` to the gradient. Place it BEFORE the optimizer.

    The gradient of ``(strength / 2) * ||w - w0||^2`` over the selected leaves
    (see :func:`l2_sp_penalty`), so ``optax.chain(add_l2_sp(a), opt)`` trains
    like ``loss + l2_sp_penalty(params, w0, a)`` with ``opt``.

    Args:
      strength: ``alpha >= 0`` of Li et al. (2018); ``0`` is a no-op.
      anchor_params: the starting point ``w0``; ``None`` stores the params
        given to ``init`` (the weights the run starts from).
      mask: which leaves (default: kernels with ``ndim >= 2``); see the module
        docstring.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`L2SPState`.

    Raises:
      ValueError: a negative or non-finite strength; ``update`` without params;
        an anchor whose tree does not match the params.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> w0 = {"kernel": jnp.array([[1.0]])}
      >>> tx = optax.chain(add_l2_sp(0.5), optax.sgd(1.0))
      >>> state = tx.init(w0)  # the anchor is the starting point
      >>> w = {"kernel": jnp.array([[3.0]])}
      >>> updates, _ = tx.update({"kernel": jnp.zeros((1, 1))}, state, w)
      >>> updates["kernel"].tolist()  # -lr * 0.5 * (3 - 1)
      [[-1.0]]
    """
    a = _coefficient(strength, "L2-SP strength")

    def init(params):
        anchor = params if anchor_params is None else anchor_params
        masks_lib.check_matches(params, anchor, what="L2-SP anchor")
        return L2SPState(anchor=jax.tree.map(lambda x: jnp.array(x, copy=True), anchor))

    pull = lambda u, p, w0: u + a * (p - w0).astype(jnp.result_type(u))
    return _leafwise(
        "add_l2_sp", lambda state: pull, mask, init=init, trees=lambda state: (state.anchor,)
    )


def l2_sp_penalty(params, anchor, strength: float, mask=None):
    """``(strength / 2) * sum ||w - w0||^2`` over the selected leaves (a scalar).

    The loss term whose gradient :func:`add_l2_sp` adds.

    Raises:
      ValueError: a negative or non-finite strength; an anchor whose tree or
        shapes do not match the params (as :func:`add_l2_sp` refuses it).

    Example:
      >>> import jax.numpy as jnp
      >>> float(l2_sp_penalty({"kernel": jnp.array([[3.0]])}, {"kernel": jnp.array([[1.0]])}, 0.5))
      1.0
    """
    a = _coefficient(strength, "L2-SP strength")
    masks_lib.check_matches(params, anchor, what="L2-SP anchor")
    # Every flag as an array: each leaf, selected or not, goes through jnp.where
    # (and its gradient too), and each leaf is summed in its own dtype.
    flags = jax.tree.map(jnp.asarray, masks_lib.prunable_tree(params, mask))
    square = lambda p, w0: jnp.square(p - w0)
    return 0.5 * a * _selected_sum(square, flags, params, anchor, dtype=None)
