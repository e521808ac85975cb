"""The lottery-ticket and instability report: a summary table, a config line, a figure.

An experiment workdir holds ``config.json`` (optional here) and
``metrics.jsonl``: one JSON object per line, one per ``(round, arm, trial)``,
with at least ``round`` (0 = dense), ``arm``, ``trial``, ``density``,
``final_test_accuracy``, ``best_val_step`` and ``test_accuracy_at_best_val``;
optionally ``barrier``, ``status`` and more (other keys are ignored).

Conventions, exactly:

* **Reading.** :func:`lth_jax.workdir.read_jsonl`: blank lines are skipped. A
  final line that does not parse (a process died while writing it) is
  ignored; a line that does not parse anywhere else is an error
  (:class:`ValueError` naming the file and line). If the same ``(round, arm,
  trial)`` appears more than once (a resumed run), the later record wins.
* **Failed records** (:func:`lth_jax.report.stats.is_failed`). A record is
  *failed* when its ``status`` is present and not ``"ok"``, or when its
  ``final_test_accuracy`` is missing or not a finite number. Failed records
  are counted in ``n_failed`` and never enter means, stds, mins or maxes; the
  table says so in its ``trials`` column and the figure marks them with ``x``.
* **Statistics** (:func:`lth_jax.report.stats.trial_stats`). Over the ok
  trials of a ``(round, arm)``: mean, **sample** standard deviation
  (``ddof=1``) when ``n > 1`` and ``0.0`` when ``n == 1``, min and max; ``nan``
  when ``n == 0``. A metric missing (or ``null``) in an ok record is left out
  of that metric's statistics only.
* **Paired comparisons** (:mod:`lth_jax.report.paired`). Per round, the
  ticket against every other arm and every arm against the same trial's dense
  run: mean of the per-trial differences, its 95% CI (Student t) and the wins,
  over the trials ok in both arms.
* **Findings** (:mod:`lth_jax.report.findings`). Generated from the paired
  comparisons by a stated rule (the 95% CI of the mean paired difference on
  one side of 0 and at least ``ceil(0.8 n)`` wins), and for instability
  workdirs from the barriers against the 2-point threshold; a short section
  of ``report.md`` and ``findings`` in ``summary.json``.
* **Max test accuracy over the curve**: the maximum of each run's
  ``test_accuracy_curve``, a column (when the records have curves) chosen on
  the test set, there only to compare with the MNIST-1D lottery notebook.
* **Figure** (:mod:`lth_jax.report.lottery_figure`). Lines are the mean over
  ok trials, the band is chosen (``band``: the 95% CI of the mean by default,
  :data:`lth_jax.report.stats.BANDS`); every arm's line starts at the pooled
  round-0 (dense) point.
* **summary.json** (:func:`summary_data`): the table's rows and the paired
  rows of each workdir, for programs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lth_jax.checks import get
from lth_jax.report import files
from lth_jax.report.across import across_report
from lth_jax.report.findings import findings_lines, lottery_findings
from lth_jax.report.lottery_figure import plot_report
from lth_jax.report.paired import PAIRED_NOTE, arms_note, format_paired, lottery_pairs
from lth_jax.report.stats import (
    BANDS,
    CI_LEVEL,
    CURVE_MAX,
    STAT_KEYS,
    STATS,
    curve_max,
    finite,
    group_by_arm,
    has_barrier,
    has_curve,
    is_failed,
    latest,
    metric_stats,
    trial_stats,
)
from lth_jax.report.tables import format_density, markdown_table, pct

__all__ = [
    "TABLE_COLUMNS",
    "CURVE_MAX",
    "curve_max",
    "has_curve",
    "load_records",
    "summarize",
    "format_table",
    "config_summary",
    "early_stop_metric",
    "summary_data",
    "write_report",
]

# Table columns, in order. The curve-maximum column appears only when some row has
# one, the barrier column only when some row has one.
TABLE_COLUMNS = (
    "round",
    "% weights",
    "arm",
    "trials",
    "final test acc (mean ± std)",
    "test acc at early stop (mean ± std)",
    "early-stop step (mean)",
    "max test acc over curve, test-selected (mean ± std)",
    "error barrier (%)",
)


# ----------------------------------------------------------------------------- reading


def _metrics_path(workdir: str | os.PathLike) -> str:
    workdir = os.fspath(workdir)
    if os.path.isfile(workdir):
        return workdir
    if not os.path.isdir(workdir):
        raise ValueError(f"no such experiment directory: {workdir}")
    path = os.path.join(workdir, files.METRICS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"no {files.METRICS_FILE} in experiment directory: {workdir}")
    return path


def load_records(workdir: str | os.PathLike) -> list[dict]:
    """Read ``<workdir>/metrics.jsonl`` into a list of dicts, in file order.

    ``workdir`` may also be the path of the ``.jsonl`` file itself. A final line
    that does not parse is ignored (a truncated write); a malformed line
    anywhere else, a line that is not a JSON object, or a record without
    ``round`` or ``arm`` raises :class:`ValueError`, and so does a ``round``
    or ``trial`` that is not an integer (``trial`` may be ``null``) or an
    ``arm`` that is not a string. Raises :class:`ValueError` too when the
    directory or the file is missing, or holds no record.
    """
    path = _metrics_path(workdir)
    types = {"round": "an integer", "arm": "a string", "trial": "an integer"}
    records = files.read_records(path, required=("round", "arm"), types=types)
    if not records:
        raise ValueError(f"no metrics records in {path}")
    return records


# ----------------------------------------------------------------------------- summaries


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
    ``None`` (``barrier_n`` 0) when none does; ``barrier_values`` lists those
    barriers (by trial, for the figure's points). The same statistics of
    :data:`CURVE_MAX` (the maximum of each run's ``test_accuracy_curve``,
    chosen on the test set: only there to compare with the MNIST-1D lottery
    notebook, which reports it) are ``nan`` with ``<key>_n`` 0 when no record
    has a curve.

    A later record for the same ``(round, arm, trial)`` replaces an earlier one.
    """
    kept = latest(records)

    rows = []
    for (rnd, arm), recs in group_by_arm(kept, "round"):
        ok = [r for r in recs if not is_failed(r)]
        failed = [r for r in recs if is_failed(r)]
        densities = [d for d in (finite(r.get("density")) for r in recs) if d is not None]
        row: dict[str, Any] = {
            "round": rnd,
            "arm": arm,
            "density": float(np.mean(densities)) if densities else float("nan"),
            "n": len(ok),
            "n_failed": len(failed),
            "trials": sorted(r["trial"] for r in ok if r.get("trial") is not None),
            "failed_trials": sorted(r["trial"] for r in failed if r.get("trial") is not None),
        }
        row.update(metric_stats(ok, STAT_KEYS))
        row.update(metric_stats(({CURVE_MAX: curve_max(r)} for r in ok), (CURVE_MAX,)))
        by_trial = sorted(ok, key=lambda r: (r.get("trial") is None, r.get("trial") or 0))
        barriers = [v for v in (finite(r.get("barrier")) for r in by_trial) if v is not None]
        if barriers:
            row.update({f"barrier_{s}": v for s, v in trial_stats(barriers).items()})
        else:
            row.update({f"barrier_{s}": None for s in STATS})
        row["barrier_n"] = len(barriers)
        row["barrier_values"] = barriers
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- table


def format_table(rows: Sequence[Mapping]) -> str:
    """Rows of :func:`summarize` as a markdown table, padded to line up in a terminal.

    Columns: ``round | % weights | arm | trials | final test acc (mean ± std) |
    test acc at early stop (mean ± std) | early-stop step (mean)``, plus ``max
    test acc over curve, test-selected (mean ± std)`` when any row has a
    curve, and ``error barrier (%)`` (the mean test-error barrier, in
    percentage points) when any row has a barrier. Accuracies are percentages with 2 decimals;
    ``± std`` is left out for a single trial. ``trials`` is the number of ok
    trials, with ``(k failed)`` appended when some failed; a row with no ok
    trial reads ``failed``.
    """
    with_barrier, with_curve = has_barrier(rows), has_curve(rows)
    header = list(TABLE_COLUMNS[:-2])
    header += [TABLE_COLUMNS[-2]] * with_curve + [TABLE_COLUMNS[-1]] * with_barrier
    right = [True, True, False] + [True] * (len(header) - 3)
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
            pct(r["final_test_accuracy_mean"], r["final_test_accuracy_std"], n),
            pct(r["test_accuracy_at_best_val_mean"], r["test_accuracy_at_best_val_std"], n),
            ("failed" if n == 0 else "-") if not math.isfinite(step) else f"{step:.0f}",
        ]
        if with_curve:
            k = r.get(f"{CURVE_MAX}_n", 0)
            cells.append(pct(r[f"{CURVE_MAX}_mean"], r[f"{CURVE_MAX}_std"], k) if k else "-")
        if with_barrier:
            b = r.get("barrier_mean")
            cells.append("-" if b is None else f"{100 * b:.2f}")
        body.append(cells)
    return markdown_table(header, body, right)


# ----------------------------------------------------------------------------- config line

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


def _short(v) -> str:
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _rate_pairs(rates) -> list[tuple]:
    """``imp.layer_rates`` as ``[(regex, rate), ...]``, from ``{regex: rate}`` or from pairs."""
    if isinstance(rates, Mapping):
        return list(rates.items())
    if isinstance(rates, list | tuple) and all(
        isinstance(p, list | tuple) and len(p) == 2 for p in rates
    ):
        return [tuple(p) for p in rates]
    return []


def config_summary(config: Mapping) -> str:
    """One line ``model: ... · dataset: ... · steps: ... · rounds: ... · trials: ...``.

    Reads the keys of :data:`_CONFIG_FIELDS` (``model.name``, ``dataset.name``,
    ``train.steps``, ``imp.rounds``, ``imp.prune_rate``, ``num_trials``) from a
    ``config.json`` as ``lth-jax run`` writes it; fields not present are left
    out. Per-layer rates (``imp.layer_rates``: a ``{regex: rate}`` object or a
    list of ``[regex, rate]`` pairs) follow the prune rate, the scope and the
    rewinding are added when they are not the defaults (``layerwise``;
    ``weights`` to step 0), the early-stop metric when it is not
    ``val_loss``, the kind when it is not ``lottery``, and
    ``optimizer.fused_adam_cpu`` when on. Returns ``""`` when nothing is found.
    """
    parts = []
    kind = get(config, "kind", None)
    if kind not in (None, "lottery"):
        parts.append(f"kind: {kind}")
    for label, key in _CONFIG_FIELDS:
        v = get(config, key, None)
        if v is None or isinstance(v, Mapping):
            continue
        text = _short(v)
        if key == "imp.prune_rate":
            rates = _rate_pairs(get(config, "imp.layer_rates", None))
            if rates:
                text += " (" + ", ".join(f"{p}: {_short(r)}" for p, r in rates) + ")"
            scope = get(config, "imp.scope", None)
            if scope not in (None, "layerwise"):
                text += f", {scope}"
        parts.append(f"{label}: {text}")
        if key == "imp.prune_rate":
            mode, k = get(config, "imp.rewind", None), get(config, "imp.rewind_step", None)
            if (mode not in (None, "weights")) or (k not in (None, 0)):
                parts.append(f"rewind: {mode or 'weights'} to step {k or 0}")
    stop = get(config, "train.early_stop_metric", None)
    if stop not in (None, "val_loss"):
        parts.append(f"early stop: {stop}")
    if get(config, "optimizer.fused_adam_cpu", None) is True:  # not bit-identical to optax
        parts.append("Adam: fused_adam_cpu")
    return " · ".join(parts)


#: What the early-stop step is, by ``train.early_stop_metric``.
EARLY_STOP = {
    "val_loss": "minimum validation loss",
    "val_accuracy": "maximum validation accuracy",
}


def early_stop_metric(workdir: str) -> str:
    """The workdir's ``train.early_stop_metric`` (``val_loss``, the default, when not given)."""
    cfg, _ = files.read_config(workdir)
    return get(cfg or {}, "train.early_stop_metric", None) or "val_loss"


def _records_summary(records: Sequence[Mapping], rows: Sequence[Mapping]) -> str:
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    rounds = sorted({r["round"] for r in rows})
    n_failed = sum(r["n_failed"] for r in rows)
    rng = f"{rounds[0]}" if len(rounds) == 1 else f"{rounds[0]}-{rounds[-1]}"
    s = f"{len(records)} records · rounds {rng} · arms: {', '.join(map(str, arms))}"
    return s + (f" · **{n_failed} failed** (non-finite loss)" if n_failed else "")


# ----------------------------------------------------------------------------- report


def _section(workdir: str, records, rows, pairs, heading: str | None) -> str:
    cfg, err = files.read_config(workdir)
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
    if why := files.unfinished(cfg, records):
        lines += [f"**Unfinished run**: {why}; {files.RESUME}.", ""]
    sub = "#" * (3 if heading else 2)
    lines += [f"{sub} Findings", "", *findings_lines(records, pairs), ""]
    lines += [format_table(rows), ""]
    if pairs:
        lines += [f"{sub} Paired comparisons", ""]
        lines += [format_paired(pairs), "", PAIRED_NOTE + arms_note(r["arm"] for r in records), ""]
    return "\n".join(lines)


_CURVE_NOTE = (
    " `max test acc over curve, test-selected`: the highest test accuracy among a run's "
    "evaluations (`test_accuracy_curve`), so chosen on the test set itself and optimistic; "
    "it is there only to compare with the MNIST-1D lottery notebook, which reports this "
    "number, and no finding uses it."
)


def _notes(
    band: str, curve: bool = False, stops: Sequence[str] = ("val_loss",), arms: Sequence[str] = ()
) -> str:
    stops = sorted(set(stops))
    stop = (
        EARLY_STOP.get(stops[0], stops[0])
        if len(stops) == 1
        else "minimum validation loss, or maximum validation accuracy where the config line "
        "says `early stop: val_accuracy`"
    )
    return (
        "Accuracies in %, mean ± sample std (ddof=1) over ok trials (± left out for one "
        "trial). `trials`: ok trials, with failed ones (non-finite loss) in parentheses; "
        "failed trials are excluded from every statistic. `early-stop step`: iteration of "
        f"{stop} (first on ties); `test acc at early stop`: test accuracy there. "
        "`error barrier`: mean test-error barrier along the linear "
        "interpolation between two trained copies (instability analysis), in percentage "
        f"points. Figure: line = mean, band = {BANDS[band]} (ok trials); every arm's line "
        "starts at the dense (round 0) point, and the dashed line is the dense mean. Arms: "
        "`ticket` = ticket, `reinit` = random re-init, `random_mask` = random pruning, "
        "`one_shot` = one-shot pruning, `dense` = dense (round 0)."
        + arms_note(arms)
        + (_CURVE_NOTE if curve else "")
    )


def summary_data(sections: Sequence[tuple], across: Mapping | None = None) -> dict:
    """The content of ``summary.json``: ``sections = [(label, rows, pairs, findings), ...]``.

    ``{"kind": "lottery", "units": ..., "ci_level": 0.95, "workdirs": [{"label",
    "summary", "paired", "findings"}, ...]}``, one entry per workdir:
    ``summary`` holds the rows of :func:`summarize`, ``paired`` those of
    :func:`lth_jax.report.paired.lottery_pairs`, ``findings`` the dict of
    :func:`lth_jax.report.findings.lottery_findings` (left out when a section
    has none); ``across_workdirs`` holds ``across`` (the comparisons across
    workdirs, :func:`lth_jax.report.across.across_report`) when given.
    """
    out = {
        "kind": "lottery",
        "units": "accuracies and their differences as fractions (0-1), as in metrics.jsonl",
        "ci_level": CI_LEVEL,
        "workdirs": [
            {"label": s[0], "summary": list(s[1]), "paired": list(s[2])}
            | ({"findings": s[3]} if len(s) > 3 else {})
            for s in sections
        ],
    }
    return out | ({"across_workdirs": across} if across is not None else {})


def write_report(
    workdirs: Sequence[str],
    out_dir: str | os.PathLike | None = None,
    title: str | None = None,
    band: str = "ci",
) -> str:
    """Write ``report.md``, ``report.png`` and ``summary.json`` for lottery or instability workdirs.

    One workdir: ``report.md`` (title, a config line from ``config.json`` when
    present, a metrics line, the findings, the table, the paired comparisons,
    notes),
    ``report.png`` and ``summary.json`` (:func:`summary_data`) go into
    ``out_dir``, default the workdir; returns the table.

    Several workdirs: one comparison figure, lines labelled
    ``<dirname>: <arm>``, and a ``report.md`` with one section (config line,
    findings, table, paired comparisons) per workdir, then the comparisons
    across workdirs, paired by trial (:mod:`lth_jax.report.across`; also
    ``across_workdirs`` in ``summary.json``), written into ``out_dir``, default
    the **first** workdir; returns the tables, each under a ``<dirname>:``
    line, separated by blank lines.

    ``band`` is the figure's band around the mean (a key of
    :data:`lth_jax.report.stats.BANDS`).

    Raises:
      ValueError: a missing ``metrics.jsonl``, one without records, or an
        unknown ``band``.
    """
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; bands are {', '.join(BANDS)}")
    loaded = []
    for d in workdirs:
        records = load_records(d)
        loaded.append((d, records, summarize(records), lottery_pairs(records)))
    out = files.out_dir_for(workdirs[0], out_dir)
    labels = files.labels(workdirs)
    multi = len(workdirs) > 1
    if title is None:
        title = (
            f"Lottery ticket report: {labels[0]}"
            if not multi
            else f"Lottery ticket comparison: {', '.join(labels)}"
        )

    stops = [early_stop_metric(d) for d in workdirs]
    plot_report(
        [(lab, rows) for lab, (_, _, rows, _) in zip(labels, loaded)],
        os.path.join(out, files.REPORT_PNG),
        title=title,
        band=band,
        early_stop=stops[0] if len(set(stops)) == 1 else None,
    )

    md = [f"# {title}", ""]
    for lab, (d, records, rows, pairs) in zip(labels, loaded):
        md.append(_section(d, records, rows, pairs, heading=lab if multi else None))
    across = None
    if multi:
        runs = [
            (lab, recs, files.read_config(d)[0]) for lab, (d, recs, _, _) in zip(labels, loaded)
        ]
        lines, across = across_report(runs)
        md.append("\n".join(lines))
    curve = any(has_curve(rows) for _, _, rows, _ in loaded)
    arms = [r["arm"] for _, records, _, _ in loaded for r in records]
    files.write_markdown(out, md, title, _notes(band, curve, stops, arms))
    sections = [
        (lab, rows, pairs, lottery_findings(records, pairs))
        for lab, (_, records, rows, pairs) in zip(labels, loaded)
    ]
    files.write_summary(out, summary_data(sections, across))

    if not multi:
        return format_table(loaded[0][2])
    return "\n\n".join(
        f"{lab}:\n{format_table(rows)}" for lab, (_, _, rows, _) in zip(labels, loaded)
    )
