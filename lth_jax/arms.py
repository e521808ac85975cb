"""Arms: where each run of a round starts. One small registered function per arm.

An arm turns what a round offers (:class:`ArmInputs`: the weights to rewind
to, this round's mask, a fresh initialization, keys) into the starting point
``(params, batch_stats, mask)`` of its runs, every leaf with a leading trial
axis. The engine masks the params and gives every run a fresh optimizer state;
all arms of a trial share the data order and dropout keys, so arms differ only
in what their function returns.

==========================  ==============================  ========================
arm                         mask                            weights
==========================  ==============================  ========================
``ticket``                  this round's mask               the rewind source
``reinit``                  this round's mask               a fresh init
``random_mask``             random, with the same per-      the rewind source
                            layer counts
``one_shot``                the trained *dense* network     the rewind source
                            magnitude-pruned at once to     (``weights`` mode), or
                            the mask's per-layer counts     the trained dense weights
                                                            (``lr``/``finetune``)
==========================  ==============================  ========================

``one_shot`` is Frankle & Carbin's one-shot pruning at the ticket's densities:
in round ``r`` it keeps, in every layer, as many weights as the ticket keeps,
the ones largest in magnitude after the dense training of round 0
(:func:`lth_jax.pruning.top_scores_like`, ties by position), so iterative and
one-shot pruning are compared at exactly the same per-layer densities.

Transfer uses the same functions under its own names, with its own inputs
(:mod:`lth_jax.transfer.runner`): ``pretrained`` and ``ticket_source`` are
``ticket`` (the source weights, with an all-ones mask or the source ticket's
mask), ``scratch`` and ``ticket_source_reinit`` are ``reinit``.

Adding an arm: write ``def my_arm(inputs): ...`` here, register it with
``@register("my_arm")`` and, for IMP runs, add its name to :data:`LOTTERY_ARMS`
(the names ``config.arms`` accepts). Transfer's own arms (``ticket_target``,
an IMP run on the target, and the ``+dropout`` / ``+l2sp`` modifiers, which
change training rather than the starting point) stay in
:mod:`lth_jax.transfer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lth_jax import pruning

__all__ = ["ArmInputs", "ArmFn", "register", "get", "names", "LOTTERY_ARMS"]


class ArmInputs(NamedTuple):
    """What an arm may start from; every array has a leading trial axis.

    Attributes:
      source: ``source()`` -> ``(params, batch_stats)``, the weights to rewind
        to (the rewind point ``theta_k``, the trained weights for
        ``lr``/``finetune`` rewinding, or the source weights in transfer).
      mask: this round's mask (the ticket's).
      fresh: ``fresh()`` -> ``(params, batch_stats)`` of a new initialization
        (computed only when an arm asks).
      key: ``key(purpose)`` -> the ``(trials, 2)`` keys of this round for
        ``purpose`` (see :mod:`lth_jax.rng`).
      prev: the previous round's state (``{"init", "rewind", "ticket", ...}``),
        or ``None``.
      dense: ``dense()`` -> ``(params, batch_stats)`` of the trained dense
        network (round 0), or ``None`` where a run does not keep it.
      rewind: ``imp.rewind`` (``weights``, ``lr`` or ``finetune``).
    """

    source: Callable[[], tuple[Any, Any]]
    mask: Any
    fresh: Callable[[], tuple[Any, Any]]
    key: Callable[[str], jax.Array]
    prev: Any = None
    dense: Callable[[], tuple[Any, Any]] | None = None
    rewind: str = "weights"


ArmFn = Callable[[ArmInputs], tuple[Any, Any, Any]]

_REGISTRY: dict[str, ArmFn] = {}

#: The arms of an IMP run (``config.arms``), in the order the docs list them.
LOTTERY_ARMS = ("ticket", "reinit", "random_mask", "one_shot")


def register(*names: str) -> Callable[[ArmFn], ArmFn]:
    """Registers an arm function under one or more names."""

    def deco(fn: ArmFn) -> ArmFn:
        for name in names:
            if name in _REGISTRY:
                raise ValueError(f"arm {name!r} is registered twice")
            _REGISTRY[name] = fn
        return fn

    return deco


def get(name: str) -> ArmFn:
    """The function of arm ``name``.

    Raises:
      KeyError: an unknown arm (naming the known ones).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown arm {name!r}; arms are {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Every registered arm name."""
    return tuple(_REGISTRY)


# ----------------------------------------------------------------------------- the arms


@register("ticket", "pretrained", "ticket_source")
def rewound(inputs: ArmInputs):
    """The mask on the weights to rewind to: the winning ticket (Frankle & Carbin)."""
    params, batch_stats = inputs.source()
    return params, batch_stats, inputs.mask


@register("reinit", "scratch", "ticket_source_reinit")
def reinitialized(inputs: ArmInputs):
    """The mask on a fresh initialization (key purpose ``reinit``): the random re-init control."""
    params, batch_stats = inputs.fresh()
    return params, batch_stats, inputs.mask


_random_masks = jax.jit(jax.vmap(pruning.random_mask_like))


@register("random_mask")
def random_mask(inputs: ArmInputs):
    """A random mask with the mask's per-layer counts (key purpose ``random_mask``), rewound."""
    params, batch_stats = inputs.source()
    return params, batch_stats, _random_masks(inputs.key("random_mask"), inputs.mask)


_top_like = jax.jit(jax.vmap(pruning.top_scores_like))


@register("one_shot")
def one_shot(inputs: ArmInputs):
    """The trained dense network pruned in one shot to the mask's per-layer counts, rewound.

    Key-free: the mask is a function of the dense training of round 0 and of
    this round's ticket counts only.
    """
    if inputs.dense is None:
        raise ValueError("arm 'one_shot' needs the trained dense network (ArmInputs.dense)")
    dense_params, dense_bs = inputs.dense()
    mask = _top_like(jax.tree.map(jnp.abs, dense_params), inputs.mask)
    if inputs.rewind == "weights":
        params, batch_stats = inputs.source()
    else:
        params, batch_stats = dense_params, dense_bs
    return params, batch_stats, mask
