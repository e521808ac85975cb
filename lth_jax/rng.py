"""Every random key in lth_jax comes from here.

A key is a pure function of ``(seed, trial, round, purpose)``::

    key = fold_in(fold_in(fold_in(PRNGKey(seed), trial), round), crc32(purpose))

so any piece of any run (the init of trial 3, the data order of round 2, the
dropout of step 517) can be re-created exactly without replaying the rest.
Purposes are short strings such as ``"init"``, ``"data"``, ``"dropout"``,
``"reinit"``, ``"random_mask"``; their integer code is the CRC-32 of the
UTF-8 bytes, which is stable across Python processes (unlike ``hash``).

Integer seeds are in ``[0, 2^32)`` (:data:`SEED_LIMIT`): a key holds 32 bits
of seed, and JAX would silently keep only the low ones of a larger seed (seed
``2^32`` would give seed 0's run), so :func:`derive` refuses any other.
"""

from __future__ import annotations

import zlib

import jax
import numpy as np

__all__ = ["SEED_LIMIT", "derive", "purpose_code"]

#: Integer seeds are ``0 <= seed < SEED_LIMIT``.
SEED_LIMIT = 2**32


def purpose_code(purpose: str) -> int:
    """The stable 31-bit integer code of a purpose string.

    Example:
      >>> purpose_code("init") == purpose_code("init")
      True
    """
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"purpose must be a non-empty string, got {purpose!r}")
    return zlib.crc32(purpose.encode("utf-8")) & 0x7FFFFFFF


def derive(seed: int | jax.Array, trial=0, round=0, purpose: str = "init") -> jax.Array:
    """Derives the key for ``(seed, trial, round, purpose)``.

    ``trial`` and ``round`` may be Python ints or traced integer arrays (so the
    function can be vmapped over trials); ``seed`` may be an int or an existing
    key (then it is used as the root).

    Args:
      seed: integer seed, or a PRNG key to use as the root.
      trial: trial index (non-negative).
      round: IMP round index (non-negative).
      purpose: what the key is for; distinct purposes give independent keys.

    Returns:
      A ``jax.random.PRNGKey``-style uint32 key.

    Raises:
      ValueError: an integer ``seed`` outside ``[0, 2^32)``.

    Example:
      >>> k = derive(0, trial=1, round=2, purpose="data")
      >>> bool((k == derive(0, 1, 2, "data")).all())
      True
    """
    if isinstance(seed, int | np.integer) and not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, 2^32), got {int(seed)}")
    root = jax.random.PRNGKey(seed) if _is_int(seed) else seed
    key = jax.random.fold_in(root, trial)
    key = jax.random.fold_in(key, round)
    return jax.random.fold_in(key, purpose_code(purpose))


def _is_int(x) -> bool:
    return isinstance(x, int) or (hasattr(x, "shape") and x.shape == () and "int" in str(x.dtype))
