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
``gmp``                     all alive, pruned *while it     the rewind source
                            trains* (cubic schedule) to     (``weights`` mode only)
                            the mask's per-layer counts
``snip``                    the rewind source pruned at     the rewind source
                            once, highest ``|g * w|`` kept  (``weights`` mode only)
``grasp``                   the same, lowest ``-w * Hg``    the rewind source
                            kept (highest ``w * Hg``)       (``weights`` mode only)
``synflow``                 the same, iterative SynFlow     the rewind source
                            (100 steps, data-free)          (``weights`` mode only)
``<method>_shuffled``       the method's mask shuffled at   the rewind source
                            random within each layer
``<method>_reinit``         the method's mask               a fresh init
==========================  ==============================  ========================

``one_shot`` is Frankle & Carbin's one-shot pruning at the ticket's densities:
in round ``r`` it keeps, in every layer, as many weights as the ticket keeps,
the ones largest in magnitude after the dense training of round 0
(:func:`lth_jax.pruning.top_scores_like`, ties by position), so iterative and
one-shot pruning are compared at exactly the same per-layer densities.

``gmp`` is Zhu & Gupta's gradual magnitude pruning within one training run:
it starts dense from the rewind point and, inside the compiled loop, prunes
every ``gmp.every`` steps between ``gmp.start`` and ``gmp.end`` (fractions of
the round's steps) on a cubic schedule, by magnitude within each layer, to
exactly the ticket's per-layer counts (rule: :mod:`lth_jax.gmp`). Its function
returns the ticket's mask as the *final* mask; the runner turns it into an
all-alive start and a schedule (:func:`lth_jax.gmp.plan`).

``snip``, ``grasp`` and ``synflow`` prune at initialization (Lee et al. 2019,
Wang et al. 2020, Tanaka et al. 2020): each scores the weights the ticket
rewinds to (``theta_k``, the initialization when ``imp.rewind_step = 0``) and
keeps, from all of them, the highest scores at this round's counts: per layer
at the ticket's per-layer counts (``pai.scope = "layerwise"``), or over all
prunable weights at the ticket's overall count (``"global"``, the method's own
allocation). Scores and rules, with the papers' equations:
:mod:`lth_jax.saliency`. SNIP and GraSP use ``pai.batch_size`` training
examples drawn with key purpose ``pai`` (the same batch for both), the
training loss in train mode (batch statistics; dropout, if any, keyed by that
key too), no augmentation, GraSP's with the logits divided by
``pai.grasp_temperature`` (default 200, as in the authors' code); SynFlow uses
no data: ``|params|``, an all-ones input, ``pai.synflow_iterations`` steps,
the model in eval mode with batch-norm statistics mean 0 and variance 1 (an
initialization's: batch norm is then ``|scale| x / sqrt(1 + eps) + |bias|``).
``<method>_shuffled`` and ``<method>_reinit`` are the sanity checks of Frankle
et al. 2021: the method's mask shuffled within each layer
(:func:`lth_jax.pruning.random_mask_like`, key purpose ``<method>_shuffled``)
on the same weights, and the method's mask on a fresh initialization (key
purpose ``reinit``, the ``reinit`` arm's). A method's mask is computed once
per round for all its arms, one jitted call vmapped over trials
(:class:`PaI`). They need ``imp.rewind=weights``.

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

import collections
import functools
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lth_jax import masks as masks_lib
from lth_jax import pruning, saliency

__all__ = ["ArmInputs", "ArmFn", "register", "get", "names", "LOTTERY_ARMS", "PAI_ARMS", "PaI"]


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
      pai: this round's :class:`PaI` (pruning-at-initialization masks), or
        ``None`` where a run offers none.
    """

    source: Callable[[], tuple[Any, Any]]
    mask: Any
    fresh: Callable[[], tuple[Any, Any]]
    key: Callable[[str], jax.Array]
    prev: Any = None
    dense: Callable[[], tuple[Any, Any]] | None = None
    rewind: str = "weights"
    pai: Any = None


ArmFn = Callable[[ArmInputs], tuple[Any, Any, Any]]

_REGISTRY: dict[str, ArmFn] = {}

#: The arms of an IMP run (``config.arms``), in the order the docs list them.
LOTTERY_ARMS = ("ticket", "reinit", "random_mask", "one_shot", "gmp")

#: The pruning-at-initialization arms: each method and its two sanity checks.
PAI_ARMS = tuple(f"{m}{v}" for m in saliency.METHODS for v in ("", "_shuffled", "_reinit"))
LOTTERY_ARMS += PAI_ARMS


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


#: ``random_mask_like`` of every trial; ``within`` (optional) limits each trial's draw.
_random_masks = jax.jit(
    jax.vmap(lambda key, mask, within=None: pruning.random_mask_like(key, mask, within=within))
)


@register("random_mask")
def random_mask(inputs: ArmInputs):
    """A random mask with the mask's per-layer counts (key purpose ``random_mask``), rewound.

    With ``imp.rewind`` ``lr`` or ``finetune`` the source is the ticket's
    trained network of the previous round, pruned to the previous ticket mask:
    the random mask is drawn among that mask's alive weights (random pruning of
    that network), so no alive weight starts at a pruned weight's 0.
    """
    params, batch_stats = inputs.source()
    within = None if inputs.rewind == "weights" else inputs.prev["ticket"]["mask"]
    return params, batch_stats, _random_masks(inputs.key("random_mask"), inputs.mask, within)


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


@register("gmp")
def gradual(inputs: ArmInputs):
    """Gradual magnitude pruning from the rewind source to the mask's per-layer counts.

    Returns the mask as the run's *final* mask: :func:`lth_jax.gmp.plan`
    starts the run all-alive and schedules its pruning (:mod:`lth_jax.gmp`).
    """
    if inputs.rewind != "weights":
        raise ValueError(f"arm 'gmp' needs imp.rewind=weights, got {inputs.rewind!r}")
    params, batch_stats = inputs.source()
    return params, batch_stats, inputs.mask


# ----------------------------------------------------------------------------- pruning at init


def _pai_start(inputs: ArmInputs, method: str, variant: str = ""):
    if inputs.pai is None:
        raise ValueError(f"arm {method + variant!r} needs ArmInputs.pai (pruning at init)")
    if inputs.rewind != "weights":
        raise ValueError(f"arm {method + variant!r} needs imp.rewind=weights, not {inputs.rewind}")
    mask = inputs.pai.mask(method, inputs)
    if variant == "_shuffled":
        mask = _random_masks(inputs.key(method + variant), mask)
    params, batch_stats = inputs.fresh() if variant == "_reinit" else inputs.source()
    return params, batch_stats, mask


@register("snip")
def snip(inputs: ArmInputs):
    """SNIP (Lee et al. 2019): the rewind source pruned at once, highest ``|g * w|`` kept."""
    return _pai_start(inputs, "snip")


@register("grasp")
def grasp(inputs: ArmInputs):
    """GraSP (Wang et al. 2020): the rewind source pruned at once, highest ``-w * Hg`` removed."""
    return _pai_start(inputs, "grasp")


@register("synflow")
def synflow(inputs: ArmInputs):
    """SynFlow (Tanaka et al. 2020): the rewind source pruned by iterative synaptic flow."""
    return _pai_start(inputs, "synflow")


def _sanity_check(method: str, variant: str) -> ArmFn:
    def arm(inputs: ArmInputs):
        return _pai_start(inputs, method, variant)

    arm.__name__ = arm.__qualname__ = f"{method}{variant}"
    what = {
        "_shuffled": "shuffled at random within each layer, on the rewind source",
        "_reinit": "on a fresh initialization (key purpose ``reinit``)",
    }[variant]
    arm.__doc__ = f"Frankle et al. 2021's sanity check: the ``{method}`` mask {what}."
    return arm


for _method in saliency.METHODS:
    for _variant in ("_shuffled", "_reinit"):
        register(_method + _variant)(_sanity_check(_method, _variant))


class PaI:
    """One round's pruning-at-initialization masks, each computed once for all its arms.

    ``PaI(engine, config.pai).mask(method, inputs)`` is the mask of ``method``
    (``snip``, ``grasp`` or ``synflow``) for every trial: the weights of
    ``inputs.source()`` scored (:mod:`lth_jax.saliency`) and cut to
    ``inputs.mask``'s counts in ``pai.scope`` (module docstring). One call of a
    function jitted and vmapped over trials, compiled once per engine, method,
    ``pai`` settings and shape (:data:`PAI_TRACES` counts the traces).

    Args:
      engine: the run's :class:`lth_jax.train.Engine` (its model, and its
        training data on the device).
      pai: the ``pai`` config block (``scope``, ``batch_size``, ``synflow_iterations``,
        ``grasp_temperature``).
    """

    def __init__(self, engine, pai):
        self.engine, self.pai, self._masks = engine, pai, {}

    def mask(self, method: str, inputs: ArmInputs):
        """The ``(trials, ...)`` mask of ``method`` this round (computed at the first call)."""
        if method not in self._masks:
            p = self.pai
            t = float(p.grasp_temperature) if method == "grasp" else 1.0
            spec = (method, p.scope, int(p.batch_size), int(p.synflow_iterations), t)
            fn = _mask_fn(self.engine, *spec)
            params, batch_stats = inputs.source()
            train = self.engine.device_data["train"]
            self._masks[method] = fn(inputs.key("pai"), params, batch_stats, inputs.mask, train)
        return self._masks[method]


#: Times each method's mask function was traced, over all engines (once per shape).
PAI_TRACES: collections.Counter = collections.Counter()
_MASK_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _mask_fn(engine, *spec):
    """The jitted, trial-vmapped mask function of ``spec``: ``(method, scope, batch,
    iterations, temperature)``."""
    fns = _MASK_FNS.setdefault(engine, {})
    if spec not in fns:
        one = functools.partial(_pai_mask, weakref.ref(engine), *spec)
        fns[spec] = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None)))
    return fns[spec]


def _pai_mask(
    engine_ref, method, scope, batch_size, iterations, temp, key, params, bs, like, train
):
    """One trial's mask of ``method``; ``train`` is the ``(x, y)`` training set."""
    PAI_TRACES[method] += 1  # at trace time only
    engine = engine_ref()
    model, has_bs = engine.model, engine.has_batch_stats
    if method == "synflow":  # eval mode, batch-norm statistics of an initialization
        is_var = lambda path: masks_lib.path_str(path).split("/")[-1] == "var"
        init_stats = lambda path, a: jnp.ones_like(a) if is_var(path) else jnp.zeros_like(a)
        stats = jax.tree_util.tree_map_with_path(init_stats, bs)
        apply_fn = lambda p, x: model.apply(
            {"params": p, **({"batch_stats": stats} if has_bs else {})}, x, train=False
        )
        shape = engine.dataset.train_x.shape[1:]
        return saliency.synflow_mask(apply_fn, params, like, shape, iterations, scope)
    data_key, dropout_key = jax.random.split(key)
    x_all, y_all = train
    idx = jax.random.choice(data_key, x_all.shape[0], (batch_size,), replace=False)

    def loss_fn(p, batch):  # the training loss (logits / temp): train mode, dropout keyed
        x, y = batch
        variables = {"params": p, **({"batch_stats": bs} if has_bs else {})}
        out = model.apply(
            variables,
            x,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"] if has_bs else False,
        )
        logits = out[0] if has_bs else out
        if temp != 1.0:  # GraSP's temperature (pai.grasp_temperature)
            logits = logits / temp
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    batch = (x_all[idx], y_all[idx])
    if method == "snip":
        keep = saliency.snip_scores(loss_fn, params, batch)
    else:  # GraSP removes the highest S = -w * Hg: keep the highest -S
        keep = jax.tree.map(jnp.negative, saliency.grasp_scores(loss_fn, params, batch))
    return saliency.keep_top_like(keep, like, scope)
