"""The optimizer of a config's ``optimizer`` block: the optax chain and its schedule.

The chain, in order (each part only when its strength is non-zero)::

    keep_pruned(inject_hyperparams(chain(
        add_l2(l2),                        # coupled L2: before the optimizer
        sgd | momentum | adam,             # scaled by the injected learning rate
        decoupled_weight_decay(wd, lr),    # decoupled: after the optimizer
        prox_l1(l1, lr),                   # proximal L1: exact zeros
        max_norm(c),                       # projection: last
    )))

``max_norm`` constrains every kernel's units, the output layer's included;
with ``optimizer.max_norm_head = False`` only the hidden units' (every kernel
but those of the layer named ``head``), as Srivastava et al. 2014 describe it.

``keep_pruned`` (:mod:`lth_jax.masks`) holds the mask and zeroes the update of
every pruned weight after the whole chain, so pruned weights stay exactly 0
under momentum and weight decay. The learning rate is injected: the engine sets
it every step from the schedule (:func:`set_learning_rate`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from lth_jax import masks as masks_lib
from lth_jax import regularizers as reg

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "make_schedule",
    "make_optimizer",
    "optimizer_chain",
    "set_learning_rate",
    "FixedLR",
    "fixed_rate",
]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "linear")


def make_schedule(opt, total_steps: int) -> Callable[[Any], Any]:
    """The learning-rate schedule of an ``optimizer`` config block.

    ``constant``, ``cosine`` (to 0 at ``total_steps``), ``linear`` (to 0) or
    ``step`` (multiply by ``step_factor`` at each of ``step_boundaries``, given
    as fractions of ``total_steps``), after ``warmup_steps`` of linear warmup
    from 0.

    Example:
      >>> import ml_collections
      >>> opt = ml_collections.ConfigDict(dict(learning_rate=0.1, schedule="step",
      ...     warmup_steps=0, step_boundaries=(0.5,), step_factor=0.1))
      >>> round(float(make_schedule(opt, 100)(60)), 4)
      0.01
    """
    lr = float(opt.learning_rate)
    warmup = int(opt.get("warmup_steps", 0) or 0)
    name = opt.get("schedule", "constant")
    rest = max(total_steps - warmup, 1)
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, rest)
    elif name == "linear":
        main = optax.linear_schedule(lr, 0.0, rest)
    elif name == "step":
        bounds = {
            max(int(round(float(b) * total_steps)) - warmup, 0): float(opt.get("step_factor", 0.1))
            for b in opt.get("step_boundaries", ())
        }
        main = optax.piecewise_constant_schedule(lr, bounds)
    else:
        raise ValueError(f"optimizer.schedule must be one of {SCHEDULES}, got {name!r}")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def optimizer_chain(opt, learning_rate) -> optax.GradientTransformation:
    """The chain inside :func:`make_optimizer`'s ``inject_hyperparams`` (no mask).

    ``opt`` is the config's ``optimizer`` block, ``learning_rate`` a float, a
    schedule or the injected (traced) learning rate. Used as is by
    :func:`lth_jax.transfer.make_finetune_optimizer` inside its freezing and L2-SP wrappers.
    """
    name = opt.name
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, got {name!r}")
    parts = []
    if opt.get("l2", 0.0):
        parts.append(reg.add_l2(float(opt.l2)))
    if name == "sgd":
        parts.append(optax.sgd(learning_rate))
    elif name == "momentum":
        parts.append(
            optax.sgd(learning_rate, momentum=float(opt.momentum), nesterov=bool(opt.nesterov))
        )
    else:
        parts.append(optax.adam(learning_rate))
    if opt.get("weight_decay", 0.0):
        parts.append(reg.decoupled_weight_decay(float(opt.weight_decay), learning_rate))
    if opt.get("l1", 0.0):
        parts.append(reg.prox_l1(float(opt.l1), learning_rate))
    if opt.get("max_norm", 0.0):
        hidden = not opt.get("max_norm_head", True)
        parts.append(reg.max_norm(float(opt.max_norm), mask=_hidden_kernels if hidden else None))
    return optax.chain(*parts)


def _hidden_kernels(path: str, leaf) -> bool:
    """Kernels (``ndim >= 2``) outside the output layer ``head``: the hidden units' weights."""
    return path.split("/")[-1] == "kernel" and leaf.ndim >= 2 and not path.startswith("head/")


def make_optimizer(opt) -> optax.GradientTransformation:
    """The optax chain of an ``optimizer`` config block, wrapped to keep masks.

    The chain is the one drawn in this module's docstring (each part only when
    its strength is non-zero). ``adamw`` builds the same chain as ``adam``:
    ``weight_decay`` is decoupled for every optimizer name, and its default is 0
    (``optax.adamw``'s is 1e-4), so set it. The learning rate is a
    hyperparameter set by the engine every step from the schedule.
    """
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, got {opt.name!r}")

    def factory(learning_rate):
        return optimizer_chain(opt, learning_rate)

    return masks_lib.keep_pruned(
        optax.inject_hyperparams(factory)(learning_rate=float(opt.learning_rate))
    )


class FixedLR(NamedTuple):
    """A constant learning rate for a whole fit (fine-tuning at ``imp.finetune_lr``).

    :meth:`lth_jax.train.Engine.fit` takes it as ``fixed_lr_step`` (where an
    int step means the schedule's rate at that step); see :func:`fixed_rate`.
    """

    rate: float


def fixed_rate(schedule, fixed_lr_step) -> float:
    """The constant learning rate of a fit, as a float; -1.0 to follow the schedule.

    ``fixed_lr_step`` is ``None`` (follow the schedule), an int step (the
    schedule's rate at that step, in float32 as the schedule gives it) or a
    :class:`FixedLR`. The compiled chunk takes the result as data, so a new
    rate never recompiles it.

    Example:
      >>> import optax
      >>> s = optax.linear_schedule(1.0, 0.0, 10)
      >>> fixed_rate(s, None), fixed_rate(s, 5), fixed_rate(s, FixedLR(1e-3))
      (-1.0, 0.5, 0.001)
    """
    if fixed_lr_step is None:
        return -1.0
    if isinstance(fixed_lr_step, FixedLR):
        return float(fixed_lr_step.rate)
    return float(jnp.float32(schedule(jnp.int32(fixed_lr_step))))


def set_learning_rate(opt_state: masks_lib.KeepPrunedState, lr):
    """``opt_state`` (of :func:`make_optimizer`'s layout) with the injected learning rate ``lr``."""
    inner = opt_state.inner_state
    hp = dict(inner.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, dtype=jnp.result_type(hp["learning_rate"]))
    return opt_state._replace(inner_state=inner._replace(hyperparams=hp))
