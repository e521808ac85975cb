"""Convolution gradients that XLA's CPU backend runs fast inside the compiled loop.

XLA's CPU backend runs a convolution through its fast (Eigen) kernels only when
the convolution's dimension numbers are canonical (``NHWC`` input, ``HWIO``
kernel, ``NHWC`` output, or the 1-D ``NWC``/``WIO``). It rewrites other
convolutions into canonical ones, but only at the top level of a program, not
inside loops. The gradient convolutions JAX derives for ``lax.conv`` are not
canonical (the kernel's gradient contracts over the batch), so in the engine's
``lax.scan`` over steps they fall to a naive loop: a Conv-6 training step at
batch 60 took 43 s there instead of 0.5 s.

:func:`conv_general_dilated` is ``lax.conv_general_dilated`` with the same
forward computation; within :func:`canonical_backward` (which
:func:`lth_jax.loop.train_step` opens around the training step's gradient)
and on a CPU, its gradients are computed by canonical convolutions of
explicitly padded and transposed operands:

* input gradient: the output gradient dilated by the strides and padded,
  convolved with the spatially flipped kernel, input and output channels
  swapped;
* kernel gradient: the padded input with its channels as the batch and its
  examples as the features, convolved with the output gradient as the kernel
  (dilated by the strides), then transposed to ``HWIO``.

Everything else goes to ``lax.conv_general_dilated`` as it is: other
backends, convolutions with grouped features, dilations or other layouts,
and every call outside :func:`canonical_backward` (so forward-mode
differentiation, such as :func:`lth_jax.saliency.hessian_vector_product`,
works as before). The context is read when a function is traced: a function
traced (and cached by ``jax.jit``) outside it keeps lax's gradients. The
models of :mod:`lth_jax.models` build their ``nn.Conv`` layers with it. The
gradients are the same mathematical quantities; their last bits can differ
from those of the naive loop (a different summation order).

Example:
  >>> import jax, jax.numpy as jnp
  >>> x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
  >>> f = lambda w: conv_general_dilated(x, w, (1, 1), "SAME",
  ...     dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()
  >>> with canonical_backward():
  ...     g = jax.grad(f)(w)
  >>> g.shape
  (3, 3, 3, 4)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv_general_dilated", "canonical_backward"]

_ON = contextvars.ContextVar("lth_jax_canonical_conv_backward", default=False)


@contextlib.contextmanager
def canonical_backward():
    """While open (at trace time), :func:`conv_general_dilated` on a CPU uses canonical
    gradient convolutions."""
    token = _ON.set(True)
    try:
        yield
    finally:
        _ON.reset(token)


def _specs(d: int):
    return ("NWC", "WIO", "NWC") if d == 1 else ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """``lax.conv_general_dilated``, with canonical gradient convolutions on a CPU.

    Same arguments and forward result as ``lax.conv_general_dilated`` (pass it
    as ``flax.linen.Conv(conv_general_dilated=...)``); see the module docstring
    for when the gradients are computed differently.
    """
    d = lhs.ndim - 2
    ones = (1,) * d
    if (
        _ON.get()
        and d in (1, 2)
        and jax.default_backend() == "cpu"
        and feature_group_count == 1
        and batch_group_count == 1
        and tuple(lhs_dilation or ones) == ones
        and tuple(rhs_dilation or ones) == ones
        and preferred_element_type is None
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _specs(d))
    ):
        strides = tuple(int(s) for s in window_strides)
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], strides, padding)
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
        return _conv(lhs, rhs, strides, pads, precision)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
        precision,
        preferred_element_type,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, precision):
    return lax.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=_specs(x.ndim - 2), precision=precision
    )


def _conv_fwd(x, w, strides, pads, precision):
    return _conv(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, res, dy):
    x, w = res
    d = x.ndim - 2
    specs, valid, space = _specs(d), [(0, 0)] * d, tuple(range(1, d + 1))
    n, k, m = x.shape[1:-1], w.shape[:-2], dy.shape[1:-1]
    zero = lambda a: jnp.zeros((), a.dtype)
    # Input gradient: dy dilated by the strides and padded, the kernel flipped, I <-> O.
    dy_pads = [
        (k[i] - 1 - pads[i][0], n[i] - 1 - (m[i] - 1) * strides[i] + pads[i][0], strides[i] - 1)
        for i in range(d)
    ]
    dy_p = lax.pad(dy, zero(dy), [(0, 0, 0), *dy_pads, (0, 0, 0)])
    w_t = jnp.swapaxes(jnp.flip(w, tuple(range(d))), -1, -2)
    dx = lax.conv_general_dilated(
        dy_p, w_t, (1,) * d, valid, dimension_numbers=specs, precision=precision
    )
    # Kernel gradient: the input's channels as the batch, its examples as the features.
    x_pads = [(pads[i][0], k[i] - n[i] - pads[i][0] + (m[i] - 1) * strides[i], 0) for i in range(d)]
    x_p = lax.pad(x, zero(x), [(0, 0, 0), *x_pads, (0, 0, 0)])
    lhs = jnp.transpose(x_p, (d + 1, *space, 0))  # [C, *spatial, N]
    rhs = jnp.transpose(dy, (*space, 0, d + 1))  # [*out spatial, N, O]
    dw = lax.conv_general_dilated(
        lhs,
        rhs,
        (1,) * d,
        valid,
        rhs_dilation=strides,
        dimension_numbers=specs,
        precision=precision,
    )  # [C, *kernel, O]
    return dx, jnp.transpose(dw, (*space, 0, d + 1))


_conv.defvjp(_conv_fwd, _conv_bwd)
