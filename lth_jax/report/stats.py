"""Statistics over trials: which records failed, and mean/std/min/max of the ok ones.

* A record is *failed* when its ``status`` is present and not ``"ok"`` (e.g.
  ``"nan"``: stopped by a non-finite loss), or when its ``final_test_accuracy``
  is missing or not a finite number.
* Over the ok trials of a group: mean, **sample** standard deviation
  (``ddof=1``) when ``n > 1`` and ``0.0`` when ``n == 1``, min and max; ``nan``
  when ``n == 0``. A metric missing (or not finite) in an ok record is left out
  of that metric's statistics only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "STATS",
    "STAT_KEYS",
    "finite",
    "is_failed",
    "trial_stats",
    "metric_stats",
    "group_by_arm",
    "has_barrier",
]

STATS = ("mean", "std", "min", "max")
#: The metrics of each lottery (round, arm) row, with min/max/mean/std.
STAT_KEYS = ("final_test_accuracy", "test_accuracy_at_best_val", "best_val_step")


def has_barrier(rows: Sequence[Mapping]) -> bool:
    """Whether some summary row has a (mean) error barrier."""
    return any(r.get("barrier_mean") is not None for r in rows)


def finite(x) -> float | None:
    """``float(x)`` when ``x`` is a finite real number, else ``None``."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def is_failed(rec: Mapping) -> bool:
    """Whether the record failed (see the module docstring)."""
    status = rec.get("status")
    if status is not None and status != "ok":
        return True
    return finite(rec.get("final_test_accuracy")) is None


def trial_stats(values: Sequence[float]) -> dict[str, float]:
    """``mean``, sample ``std`` (ddof=1; 0 for one value), ``min``, ``max`` (NaN when empty)."""
    if not values:
        nan = float("nan")
        return {"mean": nan, "std": nan, "min": nan, "max": nan}
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(np.mean(a)),
        "std": float(np.std(a, ddof=1)) if a.size > 1 else 0.0,
        "min": float(np.min(a)),
        "max": float(np.max(a)),
    }


def metric_stats(ok: Iterable[Mapping], keys: Iterable[str]) -> dict[str, float]:
    """``<key>_mean``, ``<key>_std``, ``<key>_min``, ``<key>_max`` of each key over ``ok``.

    Records where the key is missing or not finite are left out of that key.
    """
    ok = list(ok)
    out = {}
    for key in keys:
        vals = [v for v in (finite(r.get(key)) for r in ok) if v is not None]
        out.update({f"{key}_{stat}": v for stat, v in trial_stats(vals).items()})
    return out


def group_by_arm(records: Iterable[Mapping], key: str) -> list[tuple[tuple[int, str], list]]:
    """``[((int(rec[key]), arm), records), ...]``, by ``key`` then by the arm's first appearance."""
    arm_order: dict[str, int] = {}
    groups: dict[tuple, list[Mapping]] = {}
    for rec in records:
        arm_order.setdefault(rec["arm"], len(arm_order))
        groups.setdefault((int(rec[key]), rec["arm"]), []).append(rec)
    return sorted(groups.items(), key=lambda kv: (kv[0][0], arm_order[kv[0][1]]))
