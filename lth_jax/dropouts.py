"""Dropout and its relatives, as pure functions of an explicit key, plus Flax wrappers.

The rules, exactly:

* **Inverted dropout** (:func:`dropout`). Each unit is kept independently with
  probability ``1 - rate`` and a kept unit is multiplied by ``1 / (1 - rate)``,
  so ``E[dropout(x)] = x`` and nothing changes at test time. Dropped units are
  exactly ``0.0`` and their gradient is exactly ``0.0``; the gradient of a kept
  unit is ``1 / (1 - rate)``. ``rate`` is in ``[0, 1]``: ``rate == 0`` or
  ``deterministic=True`` returns ``x`` itself (no key needed), ``rate == 1``
  returns zeros with zero (never NaN) gradients. The same key gives the same
  mask. ``broadcast_dims`` shares one mask entry along those axes: for NHWC
  activations ``broadcast_dims=(1, 2)`` drops whole channels (spatial dropout,
  Tompson et al. 2015).
* **DropConnect** (:func:`dropconnect`, Wan et al. 2013): the same Bernoulli
  mask and inverted scaling applied to a weight tensor, ``D * W / (1 - rate)``.
  One mask per call (per batch), not one per example.
* **Targeted dropout** (:func:`targeted_dropout`, Gomez et al. 2019, weight
  variant). Per output unit (each slice along ``axis``; for a Dense kernel
  ``(in, out)`` that is each column, for an HWIO conv kernel each output
  channel), the ``k = floor(target_fraction * n + 1/2)`` weights of smallest
  ``|w|`` among that unit's ``n`` weights are *targeted* (ties broken by
  position: the lower flat index is targeted first). Each targeted weight is
  dropped independently with probability ``rate``; untargeted weights are never
  touched. As in the paper, **kept weights are not rescaled**. ``axis=None``
  ranks over the whole tensor instead.
* **Monte Carlo dropout** (:func:`mc_predict`, Gal & Ghahramani 2016): the
  model is run ``num_samples`` times with dropout on, each with its own key
  from ``jax.random.split(key, num_samples)`` (vmapped, one compiled program).
  Entropies are in **nats** (natural log), with ``0 log 0 = 0``.

Everything here works under ``jax.jit``, ``jax.vmap`` and ``jax.grad``; the
``rate``, ``deterministic``, ``broadcast_dims``, ``target_fraction`` and
``axis`` arguments are static (Python values).

Example:
  >>> import jax, jax.numpy as jnp
  >>> y = dropout(jax.random.PRNGKey(0), jnp.ones(8), 0.5)
  >>> sorted(set(y.tolist())) in ([0.0, 2.0], [2.0], [0.0])
  True
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import checks

__all__ = [
    "dropout",
    "dropconnect",
    "targeted_dropout",
    "targeted_weights",
    "mc_predict",
    "MCPrediction",
    "predictive_entropy",
    "Dropout",
    "DropConnectDense",
]


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #


def _check_unit_interval(value, name: str) -> float:
    """Validates a real number in ``[0, 1]`` (NumPy scalars too) and returns it as a float."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
    return checks.number(value, name, 0, 1, hi_open=False)


def _normalize_dims(dims: Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(dims, int):
        dims = (dims,)
    out = []
    for d in dims:
        if not isinstance(d, (int, np.integer)) or not -ndim <= d < ndim:
            raise ValueError(
                f"{name} entry {d!r} is out of range for an array with {ndim} dimensions; "
                f"allowed range is [{-ndim}, {ndim - 1}]"
            )
        out.append(int(d) % ndim)
    return tuple(sorted(set(out)))


# --------------------------------------------------------------------------- #
# Pure functions
# --------------------------------------------------------------------------- #


def dropout(
    key,
    x,
    rate: float,
    *,
    deterministic: bool = False,
    broadcast_dims: Sequence[int] = (),
):
    """Inverted dropout: keep each unit with probability ``1 - rate``, scale by ``1/(1-rate)``.

    Args:
      key: a PRNG key (``jax.random.PRNGKey`` or ``jax.random.key``). May be
        ``None`` when ``deterministic`` or ``rate`` is 0 or 1.
      x: the array to drop units of (any float dtype; the result has its dtype).
      rate: drop probability, a Python number in ``[0, 1]``.
      deterministic: if ``True``, return ``x`` unchanged (test time).
      broadcast_dims: axes along which the mask is shared (the mask has size 1
        there). ``(1, 2)`` on NHWC drops whole channels.

    Returns:
      An array like ``x``: dropped units are ``0``, kept units ``x / (1-rate)``.

    Raises:
      ValueError: ``rate`` outside ``[0, 1]``, a broadcast dim out of range, or
        ``key`` is ``None`` when a mask has to be drawn.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> key = jax.random.PRNGKey(0)
      >>> x = jnp.ones((2, 4, 4, 3))
      >>> y = dropout(key, x, 0.5, broadcast_dims=(1, 2))
      >>> bool(jnp.all((y == y[:, :1, :1, :])))  # whole channels kept or dropped
      True
      >>> bool(jnp.all(dropout(key, x, 0.5, deterministic=True) == x))
      True
    """
    rate = _check_unit_interval(rate, "dropout rate")
    x = jnp.asarray(x)
    dims = _normalize_dims(broadcast_dims, x.ndim, "broadcast_dims")
    if deterministic or rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    if key is None:
        raise ValueError("dropout needs a PRNG key when rate is in (0, 1) and not deterministic")
    keep_prob = 1.0 - rate
    mask_shape = tuple(1 if i in dims else s for i, s in enumerate(x.shape))
    keep = jax.random.bernoulli(key, keep_prob, mask_shape)
    keep = jnp.broadcast_to(keep, x.shape)
    scale = jnp.asarray(1.0 / keep_prob, dtype=x.dtype)
    # where (not multiply by the mask) keeps dropped entries exactly 0 even for
    # inf/NaN inputs, and its gradient is exactly 0 there.
    return jnp.where(keep, x * scale, jnp.zeros((), dtype=x.dtype))


def dropconnect(key, w, rate: float, *, deterministic: bool = False):
    """DropConnect: the inverted-dropout mask applied to a weight tensor, ``D * W / (1-rate)``.

    Each weight is kept independently with probability ``1 - rate`` and scaled
    by ``1 / (1 - rate)`` (the same rules as :func:`dropout`), so the expected
    weight is ``W``. Apply it to the kernel before the matmul; one mask per call.

    Args:
      key: a PRNG key (may be ``None`` when no mask is drawn).
      w: a weight tensor (e.g. a Dense kernel ``(in, out)``).
      rate: drop probability in ``[0, 1]``.
      deterministic: if ``True``, return ``w`` unchanged.

    Returns:
      The masked, rescaled weights.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w = dropconnect(jax.random.PRNGKey(1), jnp.ones((3, 4)), 0.75)
      >>> set(w.ravel().tolist()) <= {0.0, 4.0}
      True
    """
    return dropout(key, w, rate, deterministic=deterministic)


def targeted_weights(w, target_fraction: float, *, axis: int | None = -1):
    """Which weights :func:`targeted_dropout` may drop: the smallest ``|w|`` per unit.

    Args:
      w: a weight tensor.
      target_fraction: fraction in ``[0, 1]`` of each unit's weights to target.
      axis: the output-unit axis (``-1``: columns of a Dense ``(in, out)``
        kernel, output channels of an HWIO conv kernel); ``None`` ranks the
        whole tensor together.

    Returns:
      A boolean array shaped like ``w``; exactly ``floor(target_fraction * n +
      1/2)`` entries are ``True`` per unit of ``n`` weights.

    Example:
      >>> import jax.numpy as jnp
      >>> w = jnp.array([[0.1, 5.0], [-3.0, 0.2], [2.0, -0.3]])
      >>> targeted_weights(w, 0.34).tolist()  # 1 of 3 per column
      [[True, False], [False, True], [False, False]]
    """
    frac = _check_unit_interval(target_fraction, "target_fraction")
    w = jnp.asarray(w)
    if axis is not None:
        if w.ndim == 0:
            raise ValueError("targeted dropout needs a weight tensor with at least 1 dimension")
        (axis,) = _normalize_dims((axis,), w.ndim, "axis")
    n = w.size if axis is None else w.size // w.shape[axis]
    k = math.floor(frac * n + 0.5)  # in Python (double) so the count is exact
    return _smallest_per_unit(w, jnp.int32(k), axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def _smallest_per_unit(w, k, axis: int | None):
    """The ``k`` smallest ``|w|`` of each slice along ``axis`` (all of ``w`` if ``None``)."""
    mags = jnp.abs(w)
    if axis is None:
        flat = mags.reshape(-1, 1)
    else:
        moved = jnp.moveaxis(mags, axis, -1)
        flat = moved.reshape(-1, moved.shape[-1])
    order = jnp.argsort(flat, axis=0, stable=True)  # ties: lower index first
    rank = jnp.argsort(order, axis=0, stable=True)
    targeted = rank < k
    if axis is None:
        return targeted.reshape(w.shape)
    return jnp.moveaxis(targeted.reshape(moved.shape), -1, axis)


def targeted_dropout(
    key,
    w,
    rate: float,
    target_fraction: float,
    *,
    deterministic: bool = False,
    axis: int | None = -1,
):
    """Targeted dropout (Gomez et al. 2019, weight variant); kept weights are not rescaled.

    Per output unit (slice along ``axis``), the ``target_fraction`` of weights
    with the smallest ``|w|`` are targeted (see :func:`targeted_weights` for the
    exact count and tie rule); each targeted weight is set to ``0`` with
    probability ``rate``, independently. All other weights pass unchanged, and,
    following the paper, no weight is rescaled. Gradients flow to every weight
    not dropped (the ranking itself carries no gradient).

    Args:
      key: a PRNG key (may be ``None`` when no mask is drawn).
      w: a weight tensor, e.g. a Dense kernel ``(in, out)``.
      rate: drop probability of a targeted weight, in ``[0, 1]``.
      target_fraction: fraction of each unit's weights targeted, in ``[0, 1]``.
      deterministic: if ``True``, return ``w`` unchanged (evaluation of the
        dense network; the authors' code instead evaluates with every targeted
        weight zeroed, i.e. pruned: use :func:`targeted_weights` for that).
      axis: output-unit axis (default ``-1``, the columns); ``None`` ranks over
        the whole tensor.

    Returns:
      ``w`` with some targeted weights zeroed.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w = jnp.array([[0.1, 5.0], [-3.0, 0.2], [2.0, -0.3]])
      >>> out = targeted_dropout(jax.random.PRNGKey(0), w, 1.0, 0.34)
      >>> out.tolist()  # rate 1: every targeted weight dropped, no rescaling
      [[0.0, 5.0], [-3.0, 0.0], [2.0, -0.30000001192092896]]
    """
    rate = _check_unit_interval(rate, "targeted dropout rate")
    targeted = targeted_weights(w, target_fraction, axis=axis)
    w = jnp.asarray(w)
    if deterministic or rate == 0.0:
        return w
    if rate == 1.0:
        drop = targeted
    else:
        if key is None:
            raise ValueError("targeted_dropout needs a PRNG key when rate is in (0, 1)")
        drop = targeted & jax.random.bernoulli(key, rate, w.shape)
    return jnp.where(drop, jnp.zeros((), dtype=w.dtype), w)


# --------------------------------------------------------------------------- #
# Monte Carlo dropout
# --------------------------------------------------------------------------- #


class MCPrediction(NamedTuple):
    """The result of :func:`mc_predict` (``C`` classes, ``S`` samples).

    Attributes:
      mean_probs: ``(..., C)`` mean over samples of the softmax probabilities.
      entropy: ``(...)`` predictive entropy ``H[mean_probs]`` in nats, in
        ``[0, log C]``.
      mutual_information: ``(...)`` BALD score ``H[mean] - mean_s H[p_s]`` in
        nats (epistemic part; clipped at 0 against rounding).
      sample_probs: ``(S, ..., C)`` the probabilities of each sample.
    """

    mean_probs: Any
    entropy: Any
    mutual_information: Any
    sample_probs: Any


def predictive_entropy(probs, axis: int = -1):
    """Entropy ``-sum p log p`` in nats along ``axis``, with ``0 log 0 = 0``.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(predictive_entropy(jnp.array([0.5, 0.5]))), 6)
      0.693147
    """
    probs = jnp.asarray(probs)
    return -jnp.sum(jax.scipy.special.xlogy(probs, probs), axis=axis)


def mc_predict(apply_fn: Callable, key, x, num_samples: int) -> MCPrediction:
    """Monte Carlo dropout prediction: average the softmax over dropout samples.

    Args:
      apply_fn: ``apply_fn(key, x) -> logits`` with the classes on the last
        axis, running the model with dropout on under ``key`` (e.g.
        ``lambda k, x: model.apply(v, x, train=True, rngs={"dropout": k})``).
      key: a PRNG key; sample ``s`` uses ``jax.random.split(key, num_samples)[s]``.
      x: the inputs, passed unchanged to every sample.
      num_samples: number of dropout samples ``S >= 1`` (static).

    Returns:
      An :class:`MCPrediction`; entropies are in nats.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = lambda k, x: dropout(k, x, 0.5)
      >>> out = mc_predict(f, jax.random.PRNGKey(0), jnp.zeros((4, 3)), 8)
      >>> out.mean_probs.shape, out.entropy.shape, out.sample_probs.shape
      ((4, 3), (4,), (8, 4, 3))
      >>> round(float(out.entropy[0]), 4)  # uniform over 3 classes: log 3
      1.0986
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
    keys = jax.random.split(key, int(num_samples))
    logits = jax.vmap(lambda k: apply_fn(k, x))(keys)
    sample_probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    mean_probs = jnp.mean(sample_probs, axis=0)
    entropy = predictive_entropy(mean_probs)
    expected_entropy = jnp.mean(predictive_entropy(sample_probs), axis=0)
    mutual_information = jnp.maximum(entropy - expected_entropy, 0.0)
    return MCPrediction(mean_probs, entropy, mutual_information, sample_probs)


# --------------------------------------------------------------------------- #
# Flax linen wrappers
# --------------------------------------------------------------------------- #


class Dropout(nn.Module):
    """Flax module for :func:`dropout`.

    Use ``Dropout(rate)(x, deterministic=not train)`` and pass
    ``rngs={"dropout": key}`` to ``apply`` when training. ``deterministic`` is
    given either as a field or as a call argument (exactly one, as in
    ``flax.linen.Dropout``). A key is drawn with
    ``self.make_rng(rng_collection)`` only when a mask is needed (not
    deterministic and ``0 < rate < 1``), so evaluation needs no rngs.

    Attributes:
      rate: drop probability in ``[0, 1]``.
      broadcast_dims: axes along which the mask is shared.
      deterministic: default for the call argument.
      rng_collection: the rng stream to draw from (default ``"dropout"``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> m = Dropout(0.5)
      >>> x = jnp.ones((2, 3))
      >>> bool(jnp.all(m.apply({}, x, deterministic=True) == x))
      True
      >>> y = m.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
      >>> y.shape
      (2, 3)
    """

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x, deterministic: bool | None = None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        rate = _check_unit_interval(self.rate, "dropout rate")
        if deterministic or rate == 0.0 or rate == 1.0:
            return dropout(
                None, x, rate, deterministic=deterministic, broadcast_dims=self.broadcast_dims
            )
        key = self.make_rng(self.rng_collection)
        return dropout(key, x, rate, broadcast_dims=self.broadcast_dims)


class DropConnectDense(nn.Module):
    """A Dense layer whose kernel goes through :func:`dropconnect` in training.

    Parameters are named ``kernel`` ``(in, features)`` and ``bias``, like
    ``flax.linen.Dense``, so the default prunable rule of :mod:`lth_jax.masks`
    applies. One weight mask is drawn per call (shared by the batch) from the
    ``rng_collection`` stream; with ``deterministic=True`` the plain kernel is
    used (inverted scaling makes that the expected layer).

    Attributes:
      features: number of output units.
      rate: DropConnect drop probability in ``[0, 1]``.
      use_bias: whether to add a bias (never dropped).
      kernel_init: kernel initializer.
      bias_init: bias initializer.
      deterministic: default for the call argument.
      rng_collection: the rng stream to draw from (default ``"dropout"``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> m = DropConnectDense(4, rate=0.5)
      >>> v = m.init(jax.random.PRNGKey(0), jnp.ones((2, 3)), deterministic=True)
      >>> jax.tree.map(jnp.shape, v["params"])
      {'bias': (4,), 'kernel': (3, 4)}
      >>> y = m.apply(v, jnp.ones((2, 3)), deterministic=False,
      ...             rngs={"dropout": jax.random.PRNGKey(1)})
      >>> y.shape
      (2, 4)
    """

    features: int
    rate: float
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x, deterministic: bool | None = None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        rate = _check_unit_interval(self.rate, "dropconnect rate")
        x = jnp.asarray(x)
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        if not (deterministic or rate == 0.0 or rate == 1.0):
            kernel = dropconnect(self.make_rng(self.rng_collection), kernel, rate)
        else:
            kernel = dropconnect(None, kernel, rate, deterministic=deterministic)
        y = jnp.dot(x, kernel)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,))
            y = y + bias
        return y
