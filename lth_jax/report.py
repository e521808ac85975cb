"""Reports for lottery-ticket experiments: a summary table and a figure.

An experiment workdir holds ``config.json`` (optional here) and
``metrics.jsonl``: one JSON object per line, one per ``(round, arm, trial)``,
with at least ``round`` (0 = dense), ``arm``, ``trial``, ``density``,
``final_test_accuracy``, ``best_val_step`` and ``test_accuracy_at_best_val``;
optionally ``barrier``, ``status`` and more (other keys are ignored).

Conventions, exactly:

* **Reading.** Blank lines are skipped. A final line that does not parse (a
  process died while writing it) is ignored; a line that does not parse
  anywhere else is an error (:class:`ValueError` naming the file and line).
  If the same ``(round, arm, trial)`` appears more than once (a resumed run),
  the later record wins.
* **Failed records.** A record is *failed* when its ``status`` is present and
  not ``"ok"`` (e.g. ``"nan"``: stopped by a non-finite loss), or when its
  ``final_test_accuracy`` is missing or not a finite number. Failed records are
  counted in ``n_failed`` and never enter means, stds, mins or maxes; the table
  says so in its ``trials`` column and the figure marks them with ``x``.
* **Statistics.** Over the ok trials of a ``(round, arm)``: mean, **sample**
  standard deviation (``ddof=1``) when ``n > 1`` and ``0.0`` when ``n == 1``,
  min and max; ``nan`` when ``n == 0``. A metric missing (or ``null``) in an ok
  record is left out of that metric's statistics only.
* **Figure.** Lines are the mean over ok trials, the shaded band spans min to
  max over ok trials. The round-0 (dense) records of a workdir, pooled (their
  arm is ``dense``), are drawn as one marker at 100% with a dashed horizontal
  line at their mean, and **every arm's line starts at that dense point**, since
  every arm of round 1 was derived from that dense run; an arm that only occurs
  in round 0 gets no line of its own. The x axis is % of prunable weights
  remaining, log scale, decreasing left to right (100 on the left), ticked at
  the densities that occur.

Entry points: :func:`load_records`, :func:`summarize`, :func:`format_table`,
:func:`write_report` and :func:`main_report` (used by ``lth-jax report DIR
...``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "METRICS_FILE",
    "CONFIG_FILE",
    "TABLE_COLUMNS",
    "load_records",
    "summarize",
    "format_table",
    "format_density",
    "config_summary",
    "plot_report",
    "arm_lines",
    "write_report",
    "main_report",
]

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"

# The statistics computed for each (round, arm) row, with min/max/mean/std.
_STAT_KEYS = ("final_test_accuracy", "test_accuracy_at_best_val", "best_val_step")
_STATS = ("mean", "std", "min", "max")

# Table columns, in order. The barrier column appears only when some row has one.
TABLE_COLUMNS = (
    "round",
    "% weights",
    "arm",
    "trials",
    "final test acc (mean ± std)",
    "test acc at early stop (mean ± std)",
    "early-stop step (mean)",
    "error barrier (%)",
)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _metrics_path(workdir: str | os.PathLike) -> str:
    workdir = os.fspath(workdir)
    if os.path.isfile(workdir):
        return workdir
    if not os.path.isdir(workdir):
        raise ValueError(f"no such experiment directory: {workdir}")
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"no {METRICS_FILE} in experiment directory: {workdir}")
    return path


def load_records(workdir: str | os.PathLike) -> list[dict]:
    """Read ``<workdir>/metrics.jsonl`` into a list of dicts, in file order.

    ``workdir`` may also be the path of the ``.jsonl`` file itself. A final line
    that does not parse is ignored (a truncated write); a malformed line
    anywhere else, a line that is not a JSON object, or a record without
    ``round`` or ``arm`` raises :class:`ValueError`. Raises :class:`ValueError`
    too when the directory or the file is missing, or holds no record.
    """
    path = _metrics_path(workdir)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    records = []
    for k, (lineno, line) in enumerate(numbered):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if k == len(numbered) - 1:
                break  # a partially written last line: the writer died
            raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        for key in ("round", "arm"):
            if key not in rec:
                raise ValueError(f"{path}:{lineno}: record has no {key!r}")
        records.append(rec)
    if not records:
        raise ValueError(f"no metrics records in {path}")
    return records


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------


def _finite(x) -> float | None:
    """``float(x)`` when ``x`` is a finite real number, else ``None``."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _is_failed(rec: Mapping) -> bool:
    status = rec.get("status")
    if status is not None and status != "ok":
        return True
    return _finite(rec.get("final_test_accuracy")) is None


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


def summarize(records: Iterable[Mapping]) -> list[dict]:
    """One row per ``(round, arm)``, sorted by round then by the arm's first appearance.

    Each row has ``round``, ``arm``, ``density`` (mean over all its records,
    failed ones included: the mask does not depend on the outcome), ``n`` (ok
    trials), ``n_failed``, ``trials`` and ``failed_trials`` (sorted trial ids),
    and for each of ``final_test_accuracy``, ``test_accuracy_at_best_val`` and
    ``best_val_step`` the keys ``<metric>_mean``, ``<metric>_std`` (sample std,
    ``ddof=1``; ``0.0`` for one trial), ``<metric>_min`` and ``<metric>_max``
    over ok trials (``nan`` when there are none). ``barrier_mean``,
    ``barrier_std``, ``barrier_min``, ``barrier_max`` and ``barrier_n`` are
    computed over the ok trials that report a finite ``barrier``; they are
    ``None`` (``barrier_n`` 0) when none does.

    A later record for the same ``(round, arm, trial)`` replaces an earlier one.
    """
    records = list(records)
    # Later duplicates of (round, arm, trial) win; records without a trial are kept.
    latest: dict[tuple, int] = {}
    for i, rec in enumerate(records):
        if rec.get("trial") is not None:
            latest[(rec["round"], rec["arm"], rec["trial"])] = i
    kept = [
        rec
        for i, rec in enumerate(records)
        if rec.get("trial") is None or latest[(rec["round"], rec["arm"], rec["trial"])] == i
    ]

    arm_order: dict[str, int] = {}
    groups: dict[tuple, list[Mapping]] = {}
    for rec in kept:
        arm_order.setdefault(rec["arm"], len(arm_order))
        groups.setdefault((int(rec["round"]), rec["arm"]), []).append(rec)

    rows = []
    for (rnd, arm), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], arm_order[kv[0][1]])):
        ok = [r for r in recs if not _is_failed(r)]
        failed = [r for r in recs if _is_failed(r)]
        densities = [d for d in (_finite(r.get("density")) for r in recs) if d is not None]
        row: dict[str, Any] = {
            "round": rnd,
            "arm": arm,
            "density": float(np.mean(densities)) if densities else float("nan"),
            "n": len(ok),
            "n_failed": len(failed),
            "trials": sorted(r["trial"] for r in ok if r.get("trial") is not None),
            "failed_trials": sorted(r["trial"] for r in failed if r.get("trial") is not None),
        }
        for key in _STAT_KEYS:
            vals = [v for v in (_finite(r.get(key)) for r in ok) if v is not None]
            for stat, v in trial_stats(vals).items():
                row[f"{key}_{stat}"] = v
        barriers = [v for v in (_finite(r.get("barrier")) for r in ok) if v is not None]
        if barriers:
            row.update({f"barrier_{s}": v for s, v in trial_stats(barriers).items()})
        else:
            row.update({f"barrier_{s}": None for s in ("mean", "std", "min", "max")})
        row["barrier_n"] = len(barriers)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------


def format_density(density: float) -> str:
    """A density (fraction) as % weights: ``"100"``, ``"51.2"``, ``"3.5"``, ``"0.92"``.

    One decimal (a trailing ``.0`` dropped) at 1% and above, two significant
    digits below.
    """
    p = _finite(density)
    if p is None:
        return "?"
    p *= 100.0
    if p >= 1.0 - 5e-3 or p == 0.0:
        s = f"{p:.1f}"
        return s[:-2] if s.endswith(".0") else s
    return f"{p:.2g}"


def _pct(mean: float, std: float, n: int) -> str:
    if n == 0 or not math.isfinite(mean):
        return "failed" if n == 0 else "-"
    if n == 1:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _has_barrier(rows: Sequence[Mapping]) -> bool:
    return any(r.get("barrier_mean") is not None for r in rows)


def format_table(rows: Sequence[Mapping]) -> str:
    """Rows of :func:`summarize` as a markdown table, padded to line up in a terminal.

    Columns: ``round | % weights | arm | trials | final test acc (mean ± std) |
    test acc at early stop (mean ± std) | early-stop step (mean)``, plus
    ``error barrier (%)`` (the mean test-error barrier, in percentage points)
    when any row has a barrier. Accuracies are percentages with 2 decimals;
    ``± std`` is left out for a single trial. ``trials`` is the number of ok
    trials, with ``(k failed)`` appended when some failed; a row with no ok
    trial reads ``failed``.
    """
    with_barrier = _has_barrier(rows)
    header = list(TABLE_COLUMNS if with_barrier else TABLE_COLUMNS[:-1])
    right = [True, True, False, True, True, True, True, True][: len(header)]
    body = []
    for r in rows:
        n, nf = r["n"], r["n_failed"]
        trials = f"{n}" + (f" ({nf} failed)" if nf else "")
        step = r["best_val_step_mean"]
        cells = [
            str(r["round"]),
            format_density(r["density"]),
            str(r["arm"]),
            trials,
            _pct(r["final_test_accuracy_mean"], r["final_test_accuracy_std"], n),
            _pct(r["test_accuracy_at_best_val_mean"], r["test_accuracy_at_best_val_std"], n),
            ("failed" if n == 0 else "-") if not math.isfinite(step) else f"{step:.0f}",
        ]
        if with_barrier:
            b = r.get("barrier_mean")
            cells.append("-" if b is None else f"{100 * b:.2f}")
        body.append(cells)
    widths = [max(3, len(h), *(len(c[j]) for c in body)) for j, h in enumerate(header)]

    def line(cells):
        padded = [
            c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join(
        ("-" * (w + 1) + ":") if rj else (":" + "-" * (w + 1)) for w, rj in zip(widths, right)
    )
    return "\n".join([line(header), sep + "|", *(line(c) for c in body)])


# ---------------------------------------------------------------------------
# Config summary
# ---------------------------------------------------------------------------

# (label, dotted config key): the keys of ``lth_jax.config.base_config()`` shown
# in the report's config line, in order.
_CONFIG_FIELDS = (
    ("model", "model.name"),
    ("dataset", "dataset.name"),
    ("steps", "train.steps"),
    ("rounds", "imp.rounds"),
    ("prune rate", "imp.prune_rate"),
    ("trials", "num_trials"),
)


def _lookup(config: Mapping, key: str):
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _short(v) -> str:
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def config_summary(config: Mapping) -> str:
    """One line ``model: ... · dataset: ... · steps: ... · rounds: ... · trials: ...``.

    Reads the keys of :data:`_CONFIG_FIELDS` (``model.name``, ``dataset.name``,
    ``train.steps``, ``imp.rounds``, ``imp.prune_rate``, ``num_trials``) from a
    ``config.json`` as ``lth-jax run`` writes it; fields not present are left
    out. Per-layer rates (``imp.layer_rates``) follow the prune rate, the
    scope and the rewinding are added when they are not the defaults
    (``layerwise``; ``weights`` to step 0), and the kind when it is not
    ``lottery``. Returns ``""`` when nothing is found.
    """
    parts = []
    kind = _lookup(config, "kind")
    if kind not in (None, "lottery"):
        parts.append(f"kind: {kind}")
    for label, key in _CONFIG_FIELDS:
        v = _lookup(config, key)
        if v is None or isinstance(v, Mapping):
            continue
        text = _short(v)
        if key == "imp.prune_rate":
            rates = _lookup(config, "imp.layer_rates")
            if isinstance(rates, Mapping) and rates:
                text += " (" + ", ".join(f"{p}: {_short(r)}" for p, r in rates.items()) + ")"
            scope = _lookup(config, "imp.scope")
            if scope not in (None, "layerwise"):
                text += f", {scope}"
        parts.append(f"{label}: {text}")
        if key == "imp.prune_rate":
            mode, k = _lookup(config, "imp.rewind"), _lookup(config, "imp.rewind_step")
            if (mode not in (None, "weights")) or (k not in (None, 0)):
                parts.append(f"rewind: {mode or 'weights'} to step {k or 0}")
    return " · ".join(parts)


def _read_config(workdir: str) -> tuple[dict | None, str | None]:
    """``(config, error)``: the parsed config.json, or ``None`` and why not."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{CONFIG_FILE} unreadable: {e}"
    if not isinstance(cfg, dict):
        return None, f"{CONFIG_FILE} is not a JSON object"
    return cfg, None


def workdir_kind(workdir: str) -> str | None:
    """The ``kind`` in ``workdir/config.json`` (``lottery`` when unset), ``None`` without one."""
    cfg, _ = _read_config(os.fspath(workdir))
    return None if cfg is None else cfg.get("kind", "lottery")


def _records_summary(records: Sequence[Mapping], rows: Sequence[Mapping]) -> str:
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    rounds = sorted({r["round"] for r in rows})
    n_failed = sum(r["n_failed"] for r in rows)
    rng = f"{rounds[0]}" if len(rounds) == 1 else f"{rounds[0]}-{rounds[-1]}"
    s = f"{len(records)} records · rounds {rng} · arms: {', '.join(map(str, arms))}"
    return s + (f" · **{n_failed} failed** (non-finite loss)" if n_failed else "")


# ---------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------

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
    """The round-0 rows of one workdir as one row (usually there is just one)."""
    if len(rows) == 1:
        return rows[0]
    n = sum(r["n"] for r in rows)
    out: dict[str, Any] = {
        "round": 0,
        "arm": "dense",
        "density": float(np.mean([r["density"] for r in rows])),
        "n": n,
        "n_failed": sum(r["n_failed"] for r in rows),
    }
    for key, count in [(k, "n") for k in _STAT_KEYS] + [("barrier", "barrier_n")]:
        got = [r for r in rows if r[count] and r[f"{key}_mean"] is not None]
        got = [r for r in got if math.isfinite(r[f"{key}_mean"])]
        if not got:
            out.update({f"{key}_{st}": None if key == "barrier" else math.nan for st in _STATS})
            continue
        w = sum(r[count] for r in got)
        out[f"{key}_mean"] = sum(r[f"{key}_mean"] * r[count] for r in got) / w
        out[f"{key}_std"] = math.nan
        out[f"{key}_min"] = min(r[f"{key}_min"] for r in got)
        out[f"{key}_max"] = max(r[f"{key}_max"] for r in got)
    return out


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
) -> str:
    """Draw the report figure for ``series = [(label, rows), ...]`` into ``path``.

    One series is one workdir (``rows`` from :func:`summarize`). With one
    series, lines are labelled by arm; with several, ``<label>:<arm>``, colour
    by arm and marker/line style by series. Panels: final test accuracy, test
    accuracy at early stop, early-stop step and, when some row has one, the
    test-error barrier, all against % weights remaining. Each series' round-0
    rows are its dense reference (marker and dashed line) and the first point
    of each of its arms' lines. Uses the Agg canvas directly (no pyplot, no
    global backend change). Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, NullFormatter

    multi = len(series) > 1
    with_barrier = any(_has_barrier(rows) for _, rows in series)
    panels = [
        ("final_test_accuracy", "Final test accuracy", "test accuracy (%)", 100.0),
        ("test_accuracy_at_best_val", "Test accuracy at early stop", "test accuracy (%)", 100.0),
        ("best_val_step", "Early-stop step (min. validation loss)", "iteration", 1.0),
    ]
    if with_barrier:
        panels.append(
            ("barrier", "Linear-interpolation error barrier", "test-error barrier (%)", 100.0)
        )

    fig = Figure(figsize=(15, 5.6) if len(panels) == 3 else (13, 10), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3) if len(panels) == 3 else fig.subplots(2, 2).ravel()

    arm_colors: dict[str, Any] = {}
    palette = [f"C{i}" for i in range(10)]
    for _, rows in series:
        for r in rows:
            if r["round"] != 0 or any(q["arm"] == r["arm"] and q["round"] for q in rows):
                arm_colors.setdefault(r["arm"], palette[len(arm_colors) % len(palette)])
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

        for arm, arm_rows in arm_lines(rows).items():
            own = [r for r in arm_rows if r["arm"] == arm]
            x = np.array([100 * r["density"] for r in arm_rows])
            color = arm_colors[arm]
            line_label = f"{label}:{arm}" if multi else str(arm)
            n_failed = sum(r["n_failed"] for r in own)
            if n_failed:
                line_label += f" ({n_failed} failed)"
            for ax, (key, _, _, scale) in zip(axes, panels):
                y, lo, hi = (values(arm_rows, key, st) * scale for st in ("mean", "min", "max"))
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

    legend_handles = list(handles.values())
    legend_labels = list(handles)
    if any_failed:
        legend_handles.append(Line2D([], [], ls="none", marker="x", mew=2, ms=8, color="gray"))
        legend_labels.append("failed trials (non-finite loss)")
    legend_handles.append(Patch(color="gray", alpha=0.25))
    legend_labels.append("band: min-max over trials")
    # As many columns as fit the figure width (about 11 characters an inch at this size).
    budget = fig.get_figwidth() * 11
    widths = sorted((len(lab) + 7 for lab in legend_labels), reverse=True)
    ncol = min(len(widths), max(1, int(budget // widths[0])))
    fig.legend(legend_handles, legend_labels, loc="outside lower center", ncol=ncol, frameon=False)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.savefig(path, dpi=dpi)
    return path


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def _labels(workdirs: Sequence[str]) -> list[str]:
    """Short unique labels: the directory names, with parents added until unique."""
    parts = [os.path.normpath(os.path.abspath(d)).split(os.sep) for d in workdirs]
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return out


def _section(workdir: str, records, rows, heading: str | None) -> str:
    cfg, err = _read_config(workdir)
    lines = []
    if heading:
        lines += [f"## {heading}", ""]
    if cfg is not None:
        line = config_summary(cfg)
        if line:
            lines += [f"Config: {line}", ""]
    elif err:
        lines += [f"Config: ({err})", ""]
    lines += [f"Metrics: {_records_summary(records, rows)}", ""]
    lines += [format_table(rows), ""]
    return "\n".join(lines)


_NOTES = (
    "Accuracies in %, mean ± sample std (ddof=1) over ok trials (± left out for one trial). "
    "`trials`: ok trials, with failed ones (non-finite loss) in parentheses; failed trials "
    "are excluded from every statistic. `early-stop step`: iteration of minimum validation "
    "loss. `error barrier`: mean test-error barrier along the linear interpolation between "
    "two trained copies (instability analysis), in percentage points. Figure: line = mean, "
    "band = min-max over ok trials; every arm's line starts at the dense (round 0) point, "
    "and the dashed line is the dense mean."
)


def write_report(
    workdirs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    title: str | None = None,
) -> str:
    """Write ``report.md`` and ``report.png`` for one or several workdirs; return the table text.

    One workdir: ``report.md`` (title, a config line from ``config.json`` when
    present, a metrics line, the table, notes) and ``report.png`` go into
    ``out_dir``, default the workdir; returns the table.

    Several workdirs: one comparison figure, lines labelled
    ``<dirname>:<arm>``, and a ``report.md`` with one section (config line and
    table) per workdir, written into ``out_dir``, default the **first**
    workdir; returns the tables, each under a ``<dirname>:`` line, separated by
    blank lines.

    A transfer workdir (``kind: transfer`` in its ``config.json``) gets its own
    report, :func:`lth_jax.transfer.write_report` (target accuracy against the
    target training-set size); it cannot be compared with others on one plot.

    Raises :class:`ValueError` (one line, naming the path) for a missing
    directory, a missing ``metrics.jsonl``, or one without records.
    """
    if isinstance(workdirs, str | os.PathLike):
        workdirs = [workdirs]
    workdirs = [os.fspath(d) for d in workdirs]
    if not workdirs:
        raise ValueError("no experiment directory given")
    for d in workdirs:
        if not os.path.isdir(d):
            raise ValueError(f"no such experiment directory: {d}")
    kinds = [workdir_kind(d) == "transfer" for d in workdirs]
    if any(kinds):  # a transfer workdir has its own report
        from lth_jax import transfer

        if len(workdirs) > 1:
            raise ValueError(
                "a transfer workdir is reported on its own: lth-jax report "
                + workdirs[kinds.index(True)]
            )
        return transfer.write_report(workdirs[0], out_dir=out_dir)
    loaded = []
    for d in workdirs:
        records = load_records(d)
        loaded.append((d, records, summarize(records)))
    out = os.fspath(out_dir) if out_dir is not None else workdirs[0]
    os.makedirs(out, exist_ok=True)
    labels = _labels(workdirs)
    multi = len(workdirs) > 1
    if title is None:
        title = (
            f"Lottery ticket report: {labels[0]}"
            if not multi
            else f"Lottery ticket comparison: {', '.join(labels)}"
        )

    plot_report(
        [(lab, rows) for lab, (_, _, rows) in zip(labels, loaded)],
        os.path.join(out, REPORT_PNG),
        title=title,
    )

    md = [f"# {title}", ""]
    for lab, (d, records, rows) in zip(labels, loaded):
        md.append(_section(d, records, rows, heading=lab if multi else None))
    md += [f"![{title}]({REPORT_PNG})", "", _NOTES, ""]
    with open(os.path.join(out, REPORT_MD), "w", encoding="utf-8") as f:
        f.write("\n".join(md))

    if not multi:
        return format_table(loaded[0][2])
    return "\n\n".join(f"{lab}:\n{format_table(rows)}" for lab, (_, _, rows) in zip(labels, loaded))


def main_report(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    title: str | None = None,
) -> int:
    """CLI helper for ``lth-jax report DIR [DIR ...]``: write the report, print the table, return 0.

    Raises :class:`ValueError` with a one-line message naming the path when a
    directory is missing or holds no metrics.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no experiment directory given")
    text = write_report(paths, out_dir=out_dir, title=title)
    out = os.fspath(out_dir) if out_dir is not None else paths[0]
    print(text)
    print(f"\nwrote {os.path.join(out, REPORT_MD)} and {os.path.join(out, REPORT_PNG)}")
    return 0
