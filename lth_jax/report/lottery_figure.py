"""The lottery-ticket report figure: accuracy, early-stop step and barrier against % weights.

Lines are the mean over ok trials; the shaded band is chosen (``band``, one
of :data:`lth_jax.report.stats.BANDS`: by default the 95% CI of the mean, else
± one std, ± one standard error, or min to max over ok trials) and the legend
says which. Arms are named readably (:func:`lth_jax.report.tables.arm_label`).
The round-0 (dense) records of a workdir, pooled (their arm is
``dense``), are drawn as one marker at 100% with a dashed horizontal line at
their mean, and **every arm's line starts at that dense point**, since every
arm of round 1 was derived from that dense run; an arm that only occurs in
round 0 gets no line of its own. The x axis is % of prunable weights
remaining, log scale, decreasing left to right (100 on the left), ticked at
the densities that occur. Failed trials are marked with ``x``. The barrier
panel (instability workdirs) also shows each trial's barrier as a small point
and the 2-point threshold of Frankle et al. 2020 as a dotted line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lth_jax.report.findings import BARRIER_THRESHOLD
from lth_jax.report.stats import BANDS, STAT_KEYS, STATS, band, has_barrier
from lth_jax.report.tables import arm_label, format_density

__all__ = ["arm_lines", "band_edges", "plot_report"]

#: The early-stop panel's title, by ``train.early_stop_metric``.
_STOP_TITLES = {"val_loss": "min. validation loss", "val_accuracy": "max. validation accuracy"}

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


def _ticks(densities_pct: Iterable[float], max_ticks: int = 12) -> list[float]:
    """Tick positions (in %) among the densities, thinned so labels do not collide."""
    vals = sorted({round(p, 9) for p in densities_pct if p > 0 and math.isfinite(p)}, reverse=True)
    if len(vals) <= 2:
        return vals
    span = math.log10(vals[0]) - math.log10(vals[-1])
    gap = max(span / max_ticks, 0.03)
    kept = [vals[0]]
    for p in vals[1:]:
        if math.log10(kept[-1]) - math.log10(p) >= gap * 0.999:
            kept.append(p)
    if kept[-1] != vals[-1]:
        if len(kept) > 1 and math.log10(kept[-1]) - math.log10(vals[-1]) < gap:
            kept.pop()
        kept.append(vals[-1])
    return kept


def _pool(rows: Sequence[Mapping]) -> Mapping:
    """The round-0 rows of one workdir as one row (usually there is just one).

    Means are weighted by their counts; the std is that of all the pooled
    values (from the groups' means and stds), so that a band can be drawn.
    """
    if len(rows) == 1:
        return rows[0]
    n = sum(r["n"] for r in rows)
    out: dict[str, Any] = {
        "round": 0,
        "arm": "dense",
        "density": float(np.mean([r["density"] for r in rows])),
        "n": n,
        "n_failed": sum(r["n_failed"] for r in rows),
        "barrier_values": [v for r in rows for v in r.get("barrier_values") or ()],
    }
    for key in (*STAT_KEYS, "barrier"):
        count = f"{key}_n"
        got = [r for r in rows if r.get(count, r["n"]) and r[f"{key}_mean"] is not None]
        got = [r for r in got if math.isfinite(r[f"{key}_mean"])]
        if not got:
            out.update({f"{key}_{st}": None if key == "barrier" else math.nan for st in STATS})
            out[count] = 0
            continue
        ns = [r.get(count, r["n"]) for r in got]
        w = sum(ns)
        mean = sum(r[f"{key}_mean"] * k for r, k in zip(got, ns)) / w
        ss = sum(
            (k - 1) * (r[f"{key}_std"] if k > 1 else 0.0) ** 2 + k * (r[f"{key}_mean"] - mean) ** 2
            for r, k in zip(got, ns)
        )
        out[f"{key}_mean"] = mean
        out[f"{key}_std"] = math.sqrt(ss / (w - 1)) if w > 1 else 0.0
        out[f"{key}_min"] = min(r[f"{key}_min"] for r in got)
        out[f"{key}_max"] = max(r[f"{key}_max"] for r in got)
        out[count] = w
    return out


def _trial_points(ax, rows: Sequence[Mapping], color, marker) -> None:
    """Each trial's barrier (in %) as a small point at its row's density."""
    x = [100 * r["density"] for r in rows for _ in r.get("barrier_values") or ()]
    y = [100 * v for r in rows for v in r.get("barrier_values") or ()]
    if x:
        ax.plot(x, y, ls="none", marker=marker, ms=3, color=color, alpha=0.6, zorder=3)


def band_edges(rows: Sequence[Mapping], key: str, kind: str = "ci") -> tuple:
    """``(lo, hi)`` arrays: the band ``kind`` of metric ``key`` at each row (unscaled).

    Uses the rows' ``<key>_mean``, ``_std``, ``_min``, ``_max`` and ``_n`` (the
    number of trials with the metric; ``n`` when absent), see
    :func:`lth_jax.report.stats.band`.
    """
    col = lambda stat: [r.get(f"{key}_{stat}") for r in rows]
    n = [r.get(f"{key}_n", r.get("n")) for r in rows]
    return band(col("mean"), col("std"), n, col("min"), col("max"), kind)


def arm_lines(rows: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """The rows each arm's line goes through, by decreasing density.

    Every arm with a row past round 0 gets a line; unless it has a round-0 row
    of its own, the line starts at the pooled round-0 (dense) row, since all
    arms of round 1 derive from the dense run. An arm that occurs only in round
    0 (``dense``) gets no line: it is the reference point.
    """
    dense = [r for r in rows if r["round"] == 0 and r["n"] > 0]
    start = _pool(dense) if dense else None
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        own = [r for r in rows if r["arm"] == arm and math.isfinite(r["density"])]
        if not own or all(r["round"] == 0 for r in own):
            continue
        line = sorted(own, key=lambda r: -r["density"])
        if start is not None and not any(r["round"] == 0 for r in own):
            line = [start, *line]
        out[arm] = line
    return out


def plot_report(
    series: Sequence[tuple[str, Sequence[Mapping]]],
    path: str,
    title: str | None = None,
    dpi: int = 120,
    band: str = "ci",
    early_stop: str | None = "val_loss",
) -> str:
    """Draw the report figure for ``series = [(label, rows), ...]`` into ``path``.

    One series is one workdir (``rows`` from :func:`lth_jax.report.lottery.summarize`). With one
    series, lines are labelled and coloured by arm; with several, ``<label>: <arm>``, one
    colour per line and the marker/line style by series. Panels: final test accuracy, test
    accuracy at early stop, early-stop step and, when some row has one, the
    test-error barrier, all against % weights remaining. Each series' round-0
    rows are its dense reference (marker and dashed line) and the first point
    of each of its arms' lines. ``band`` picks the shaded band
    (:func:`band_edges`). ``early_stop`` names what the early-stop step
    selects on (``train.early_stop_metric``; ``None`` when the series
    differ), for the panel's title. Uses the Agg canvas directly (no pyplot,
    no global backend change). Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, NullFormatter

    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; bands are {', '.join(BANDS)}")
    multi = len(series) > 1
    stop = "best validation point"
    with_barrier = any(has_barrier(rows) for _, rows in series)
    panels = [
        ("final_test_accuracy", "Final test accuracy", "test accuracy (%)", 100.0),
        ("test_accuracy_at_best_val", "Test accuracy at early stop", "test accuracy (%)", 100.0),
        (
            "best_val_step",
            f"Early-stop step ({_STOP_TITLES.get(early_stop, stop)})",
            "iteration",
            1.0,
        ),
    ]
    if with_barrier:
        panels.append(
            ("barrier", "Linear-interpolation error barrier", "test-error barrier (%)", 100.0)
        )

    fig = Figure(figsize=(15, 5.6) if len(panels) == 3 else (13, 10), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3) if len(panels) == 3 else fig.subplots(2, 2).ravel()

    # One colour a line: by arm, or by (series, arm) when several series.
    arm_colors: dict[Any, Any] = {}
    palette = [f"C{i}" for i in range(10)]
    for label, rows in series:
        for r in rows:
            if r["round"] != 0 or any(q["arm"] == r["arm"] and q["round"] for q in rows):
                key = (label, r["arm"]) if multi else r["arm"]
                arm_colors.setdefault(key, palette[len(arm_colors) % len(palette)])
    grays = ("black", "dimgray", "darkgray", "silver")

    all_pct = [100 * r["density"] for _, rows in series for r in rows]
    ticks = _ticks(all_pct)
    minor = sorted({p for p in all_pct if p > 0 and math.isfinite(p)} - set(ticks))
    handles: dict[str, Any] = {}
    any_failed = False

    def values(rows_, key, stat):
        if key == "barrier":
            v = [np.nan if r[f"barrier_{stat}"] is None else r[f"barrier_{stat}"] for r in rows_]
        else:
            v = [r[f"{key}_{stat}"] for r in rows_]
        return np.array(v, dtype=float)

    for s_idx, (label, rows) in enumerate(series):
        marker = _MARKERS[s_idx % len(_MARKERS)] if multi else "o"
        ls = _LINESTYLES[s_idx % len(_LINESTYLES)] if multi else "-"
        gray = grays[s_idx % len(grays)] if multi else "black"
        dense = [r for r in rows if r["round"] == 0 and r["n"] > 0]
        ref_label = f"{label}: dense (round 0)" if multi else "dense (round 0)"
        # The dense point starts every arm's line (at its density, normally 100%).
        start = _pool(dense) if dense else None
        for ax, (key, _, _, scale) in zip(axes, panels):
            # Dense (round 0) reference: mean over all ok round-0 records.
            ref = float(values([start], key, "mean")[0]) if start is not None else math.nan
            if not math.isfinite(ref):
                continue
            ax.axhline(scale * ref, color=gray, ls="--", lw=1.2, alpha=0.8, zorder=1)
            ax.plot(
                [100 * start["density"]],
                [scale * ref],
                ls="none",
                marker=marker,
                ms=7,
                color=gray,
                zorder=4,
            )
            handles.setdefault(
                ref_label, Line2D([], [], color=gray, ls="--", lw=1.2, marker=marker, ms=6)
            )
            if key == "barrier":
                _trial_points(ax, [start], gray, marker)

        for arm, arm_rows in arm_lines(rows).items():
            own = [r for r in arm_rows if r["arm"] == arm]
            x = np.array([100 * r["density"] for r in arm_rows])
            color = arm_colors[(label, arm) if multi else arm]
            line_label = f"{label}: {arm_label(arm)}" if multi else arm_label(arm)
            n_failed = sum(r["n_failed"] for r in own)
            if n_failed:
                line_label += f" ({n_failed} failed)"
            for ax, (key, _, _, scale) in zip(axes, panels):
                y = values(arm_rows, key, "mean") * scale
                lo, hi = (scale * e for e in band_edges(arm_rows, key, band))
                # Failed trials: an x at the bottom of the panel, at their density.
                fx = [100 * r["density"] for r in own if r["n_failed"]]
                if fx:
                    any_failed = True
                    ax.plot(
                        fx,
                        [0.03] * len(fx),
                        ls="none",
                        marker="x",
                        ms=8,
                        mew=2,
                        color=color,
                        transform=ax.get_xaxis_transform(),
                        zorder=4,
                        clip_on=False,
                    )
                    handles.setdefault(
                        line_label, Line2D([], [], marker=marker, ls=ls, color=color, lw=1.6)
                    )
                if np.all(np.isnan(values(own, key, "mean"))):
                    continue  # e.g. no barrier measured for this arm
                ok = ~np.isnan(y)
                (h,) = ax.plot(
                    x[ok],
                    y[ok],
                    marker=marker,
                    ls=ls,
                    color=color,
                    lw=1.6,
                    ms=5,
                    label=line_label,
                    zorder=3,
                )
                handles.setdefault(line_label, h)
                ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.18, lw=0, zorder=2)
                if key == "barrier":  # round 0's trials are drawn with the dense point
                    _trial_points(ax, [r for r in own if r["round"]], color, marker)

    for ax, (_, name, ylabel, _) in zip(axes, panels):
        ax.set_xscale("log")
        if ticks:
            hi, lo = max(ticks), min(ticks)
            ax.set_xlim(hi * 1.12, lo / 1.12)  # left > right: decreasing, 100 on the left
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            # Every density gets a tick mark; the labelled ones are thinned out.
            ax.xaxis.set_minor_locator(FixedLocator(minor))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(ticks, [format_density(t / 100) for t in ticks])
            if len(ticks) > 8:
                for t in ax.get_xticklabels():
                    t.set_rotation(45)
                    t.set_ha("right")
                    t.set_rotation_mode("anchor")
        ax.set_xlabel("% of weights remaining (log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(True, which="major", alpha=0.3)

    if with_barrier:
        ax = axes[len(panels) - 1]
        ax.axhline(100 * BARRIER_THRESHOLD, color="crimson", ls=":", lw=1.4, zorder=1)
        handles["2-point threshold (Frankle et al. 2020)"] = Line2D(
            [], [], color="crimson", ls=":", lw=1.4
        )
        handles["barrier of one trial"] = Line2D(
            [], [], ls="none", marker="o", ms=3, color="gray", alpha=0.6
        )
    legend_handles = list(handles.values())
    legend_labels = list(handles)
    if any_failed:
        legend_handles.append(Line2D([], [], ls="none", marker="x", mew=2, ms=8, color="gray"))
        legend_labels.append("failed trials (non-finite loss)")
    legend_handles.append(Patch(color="gray", alpha=0.25))
    legend_labels.append(f"band: {BANDS[band]}")
    # As many columns as fit the figure width (about 11 characters an inch at this size).
    budget = fig.get_figwidth() * 11
    widths = sorted((len(lab) + 7 for lab in legend_labels), reverse=True)
    ncol = min(len(widths), max(1, int(budget // widths[0])))
    fig.legend(legend_handles, legend_labels, loc="outside lower center", ncol=ncol, frameon=False)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.savefig(path, dpi=dpi)
    return path
