"""Statistics over trials: which records failed, mean/std/min/max of the ok ones, intervals.

* A record is *failed* when its ``status`` is present and not ``"ok"`` (e.g.
  ``"nan"``: stopped by a non-finite loss), or when its ``final_test_accuracy``
  is missing or not a finite number.
* Over the ok trials of a group: mean, **sample** standard deviation
  (``ddof=1``) when ``n > 1`` and ``0.0`` when ``n == 1``, min and max; ``nan``
  when ``n == 0``. A metric missing (or not finite) in an ok record is left out
  of that metric's statistics only.
* Confidence interval of a mean over ``n`` trials (:func:`mean_ci`): ``mean ±
  t(0.975, n - 1) * std / sqrt(n)`` (Student t, sample std), ``n >= 2``; the t
  quantile is computed here (:func:`t_quantile`), without SciPy.
* A figure's band around the mean (:data:`BANDS`, :func:`band`): the 95% CI of
  the mean, ± one std, ± one standard error, or min to max.
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
    "CURVE_MAX",
    "curve_max",
    "has_curve",
    "latest",
    "t_quantile",
    "mean_ci",
    "CI_LEVEL",
    "BANDS",
    "band",
]

STATS = ("mean", "std", "min", "max")
#: The metrics of each lottery (round, arm) row, with min/max/mean/std.
STAT_KEYS = ("final_test_accuracy", "test_accuracy_at_best_val", "best_val_step")


def has_barrier(rows: Sequence[Mapping]) -> bool:
    """Whether some summary row has a (mean) error barrier."""
    return any(r.get("barrier_mean") is not None for r in rows)


#: The maximum of a run's ``test_accuracy_curve``: selected on the test set, it is only
#: there to compare with the MNIST-1D lottery notebook, which reports it.
CURVE_MAX = "max_test_accuracy_over_curve"


def curve_max(rec: Mapping) -> float | None:
    """The highest finite value of the record's ``test_accuracy_curve``, else ``None``."""
    curve = rec.get("test_accuracy_curve")
    if not isinstance(curve, list | tuple):
        return None
    vals = [v for v in (finite(x) for x in curve) if v is not None]
    return max(vals) if vals else None


def has_curve(rows: Sequence[Mapping]) -> bool:
    """Whether some summary row has the maximum of a test-accuracy curve (:data:`CURVE_MAX`)."""
    return any(r.get(f"{CURVE_MAX}_n") for r in rows)


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
    """``<key>_mean``, ``<key>_std``, ``<key>_min``, ``<key>_max``, ``<key>_n`` of each key.

    Over ``ok``; records where the key is missing or not finite are left out
    of that key (``<key>_n`` counts the values used).
    """
    ok = list(ok)
    out = {}
    for key in keys:
        vals = [v for v in (finite(r.get(key)) for r in ok) if v is not None]
        out.update({f"{key}_{stat}": v for stat, v in trial_stats(vals).items()})
        out[f"{key}_n"] = len(vals)
    return out


def group_by_arm(records: Iterable[Mapping], key: str) -> list[tuple[tuple[int, str], list]]:
    """``[((int(rec[key]), arm), records), ...]``, by ``key`` then by the arm's first appearance."""
    arm_order: dict[str, int] = {}
    groups: dict[tuple, list[Mapping]] = {}
    for rec in records:
        arm_order.setdefault(rec["arm"], len(arm_order))
        groups.setdefault((int(rec[key]), rec["arm"]), []).append(rec)
    return sorted(groups.items(), key=lambda kv: (kv[0][0], arm_order[kv[0][1]]))


def latest(records: Iterable[Mapping]) -> list[Mapping]:
    """``records`` without the earlier duplicates of a ``(round, arm, trial)``, in order.

    A later record for the same key replaces an earlier one (a resumed run);
    records without a ``trial`` are all kept.
    """
    records = list(records)
    last: dict[tuple, int] = {}
    for i, rec in enumerate(records):
        if rec.get("trial") is not None:
            last[(rec.get("round"), rec["arm"], rec["trial"])] = i
    return [
        rec
        for i, rec in enumerate(records)
        if rec.get("trial") is None or last[(rec.get("round"), rec["arm"], rec["trial"])] == i
    ]


# ----------------------------------------------------------------------------- Student t

#: The level of every confidence interval of the reports.
CI_LEVEL = 0.95


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def _beta_inc(a: float, b: float, x: float, y: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``; ``y = 1 - x``, given exactly."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, y) / b


def _t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _beta_inc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` degrees of freedom.

    The CDF is the regularized incomplete beta function (continued fraction),
    inverted by bisection (relative error about 1e-12); ``t_quantile(0.975, 4)`` is 2.7764.

    Raises:
      ValueError: ``p`` not in ``(0, 1)`` or ``df`` not positive.
    """
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float], level: float = CI_LEVEL) -> dict[str, float | int]:
    """``n``, ``mean``, sample ``std``, and the ``level`` CI of the mean, ``ci_low``/``ci_high``.

    The interval is ``mean ± t((1 + level) / 2, n - 1) * std / sqrt(n)``; it is
    ``nan`` for fewer than 2 values (the mean too for none).
    """
    n = len(values)
    st = trial_stats(list(values))
    half = math.nan
    if n >= 2:
        half = t_quantile(0.5 + level / 2.0, n - 1) * st["std"] / math.sqrt(n)
    return {
        "n": n,
        "mean": st["mean"],
        "std": st["std"] if n >= 2 else math.nan,
        "ci_low": st["mean"] - half,
        "ci_high": st["mean"] + half,
    }


# ----------------------------------------------------------------------------- bands

#: The bands a figure may draw around the mean over trials, by name.
BANDS = {
    "ci": "95% CI of the mean over trials",
    "std": "mean ± 1 std over trials",
    "sem": "mean ± 1 standard error over trials",
    "minmax": "min - max over trials",
}


def band(mean, std, n, lo, hi, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The lower and upper edges of the band ``kind`` (a key of :data:`BANDS`).

    Arguments are same-length sequences (one entry per point): the mean, the
    sample std, the number of trials, the min and the max. ``ci``, ``std`` and
    ``sem`` are ``nan`` (no band) where ``n < 2`` or the std is not finite;
    ``minmax`` is the min and the max.

    Raises:
      ValueError: an unknown ``kind``.
    """
    if kind not in BANDS:
        raise ValueError(f"unknown band {kind!r}; bands are {', '.join(BANDS)}")
    f = lambda v: np.asarray([np.nan if x is None else x for x in v], dtype=np.float64)
    mean, std, n, lo, hi = f(mean), f(std), f(n), f(lo), f(hi)
    if kind == "minmax":
        return lo, hi
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "std":
            half = std.copy()
        else:
            half = std / np.sqrt(n)
            if kind == "ci":
                t = [t_quantile(0.5 + CI_LEVEL / 2, k - 1) if k >= 2 else np.nan for k in n]
                half = half * np.asarray(t, dtype=np.float64)
    half = np.where(n >= 2, half, np.nan)
    return mean - half, mean + half
