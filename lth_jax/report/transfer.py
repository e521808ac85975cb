"""The transfer report: target accuracy against the target training-set size, per arm.

A transfer workdir's ``metrics.jsonl`` holds one record per ``(size, arm,
trial)`` with ``size_index``, ``train_size``, ``n_train``, ``arm``, ``trial``,
``phase`` (``"ticket"`` for the ticket arms, ``"finetune"`` for the others),
``density``, ``status``, ``final_test_accuracy``, ``test_accuracy_at_best_val``
and ``source_test_accuracy``. Failed records (:func:`lth_jax.report.stats.is_failed`)
are counted and left out of every statistic.

The report (:func:`write_report`): a summary table (one row per size and
arm), paired effects between arms (:func:`effects`: mean difference, its 95%
CI and the wins, by the rules of :mod:`lth_jax.report.paired`), a figure of
test accuracy against the number of target training examples (its band
chosen, :data:`lth_jax.report.stats.BANDS`), a Findings section
generated from the effects by the rule of :mod:`lth_jax.report.findings`
(over the target sizes), and ``summary.json`` with the rows of both tables
and the findings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from lth_jax.checks import get
from lth_jax.report import files
from lth_jax.report.findings import effect_bullets, effect_findings, effect_summary, paired_rule
from lth_jax.report.paired import by_trial, compare
from lth_jax.report.stats import (
    BANDS,
    CI_LEVEL,
    band,
    group_by_arm,
    is_failed,
    metric_stats,
    trial_stats,
)
from lth_jax.report.tables import arm_label, markdown_table, pct

__all__ = [
    "load_records",
    "summarize",
    "format_table",
    "effects",
    "format_effects",
    "summary_data",
    "train_size_label",
    "write_report",
]


def load_records(workdir: str) -> list[dict]:
    """The records of a transfer workdir's ``metrics.jsonl`` (ValueError when none).

    ``size_index`` and ``trial`` must be integers and ``arm`` a string where
    present (:class:`ValueError` naming the file and line).
    """
    path = os.path.join(os.fspath(workdir), files.METRICS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"no {files.METRICS_FILE} in experiment directory: {workdir}")
    types = {"size_index": "an integer", "arm": "a string", "trial": "an integer"}
    recs = [r for r in files.read_records(path, types=types) if "size_index" in r and "arm" in r]
    if not recs:
        raise ValueError(f"no transfer records in {path}")
    return recs


def train_size_label(size) -> str:
    """A target training-set size as given: a fraction as ``"10%"``, a count as itself."""
    if isinstance(size, float):
        return f"{100 * size:g}%"
    return str(size)


def summarize(records: Sequence[Mapping]) -> list[dict]:
    """One row per (size, arm): ``n``, ``n_failed``, mean/std/min/max of the accuracies."""
    rows = []
    for (i, arm), recs in group_by_arm(records, "size_index"):
        ok = [r for r in recs if not is_failed(r)]
        row = {
            "size_index": i,
            "train_size": recs[0].get("train_size"),
            "n_train": recs[0].get("n_train"),
            "arm": arm,
            "phase": recs[0].get("phase"),
            "density": float(np.mean([r.get("density", 1.0) for r in recs])),
            "n": len(ok),
            "n_failed": len(recs) - len(ok),
        }
        row.update(metric_stats(ok, ("final_test_accuracy", "test_accuracy_at_best_val")))
        rows.append(row)
    return rows


def _size_cells(row: Mapping) -> list[str]:
    """The first two cells of both tables: the target train size and ``n_train``."""
    return [train_size_label(row["train_size"]), str(row["n_train"])]


_SIZE_COLUMNS = ["target train size", "n_train"]
_ACC_COLUMNS = ["final test acc", "min - max", "test acc at early stop"]


def format_table(rows: Sequence[Mapping]) -> str:
    """The summary rows as a markdown table (accuracies in %, mean ± sample std)."""
    header = [*_SIZE_COLUMNS, "arm", "% weights", "trials", *_ACC_COLUMNS]
    body = []
    for r in rows:
        n = r["n"]
        acc = lambda key, r=r, n=n: pct(r[f"{key}_mean"], r[f"{key}_std"], n, "failed")
        lo, hi = r["final_test_accuracy_min"], r["final_test_accuracy_max"]
        body.append(
            [
                *_size_cells(r),
                r["arm"],
                f"{100 * r['density']:.3g}",
                f"{n}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else ""),
                acc("final_test_accuracy"),
                "-" if n == 0 else f"{100 * lo:.1f} - {100 * hi:.1f}",
                acc("test_accuracy_at_best_val"),
            ]
        )
    return markdown_table(header, body, [False, True, False, True, True, True, True, True])


# (label, arm a, arm b): paired differences a - b shown when both arms ran.
_EFFECTS = (
    ("pretraining (no dropout)", "pretrained", "scratch"),
    ("pretraining (with dropout)", "pretrained+dropout", "scratch+dropout"),
    ("dropout, pretrained", "pretrained+dropout", "pretrained"),
    ("dropout, scratch", "scratch+dropout", "scratch"),
    ("L2-SP, pretrained", "pretrained+l2sp", "pretrained"),
    ("L2-SP + dropout, pretrained", "pretrained+dropout+l2sp", "pretrained+dropout"),
    ("source ticket vs target ticket", "ticket_source", "ticket_target"),
    ("source ticket vs its reinit", "ticket_source", "ticket_source_reinit"),
    ("source ticket vs random mask", "ticket_source", "random_mask"),
)


def effects(records: Sequence[Mapping]) -> list[dict]:
    """Paired (same size and trial) differences of final test accuracy between arms.

    Rows ``{size_index, train_size, n_train, effect, a, b, trials, n, mean,
    std, ci_low, ci_high, wins, ties, losses}`` for the pairs of ``_EFFECTS``
    with at least one pair in ``records``: the paired trials, the mean and
    sample std of ``a - b``, its 95% CI (``nan`` below 2 pairs), the trials
    where ``a`` beat ``b``, tied with it or lost
    (:func:`lth_jax.report.paired.compare`). A trial that failed in either arm
    is left out of both; a later record for the same (size, arm, trial) wins.
    """
    groups: dict[tuple[int, str], list[Mapping]] = {}
    for r in records:
        groups.setdefault((int(r["size_index"]), r["arm"]), []).append(r)
    sizes = sorted({int(r["size_index"]) for r in records})
    info = {int(r["size_index"]): r for r in records}
    out = []
    for i in sizes:
        for label, a, b in _EFFECTS:
            if (i, a) not in groups or (i, b) not in groups:
                continue
            c = compare(by_trial(groups[(i, a)]), by_trial(groups[(i, b)]), "final_test_accuracy")
            if not c["n"]:
                continue
            out.append(
                {
                    "size_index": i,
                    "train_size": info[i].get("train_size"),
                    "n_train": info[i].get("n_train"),
                    "effect": label,
                    "a": a,
                    "b": b,
                    **c,
                }
            )
    return out


def format_effects(rows: Sequence[Mapping]) -> str:
    """The rows of :func:`effects` as a markdown table (differences in percentage points)."""
    header = [
        *_SIZE_COLUMNS,
        "effect (a - b)",
        "trials",
        "Δ final test acc (pp)",
        "95% CI (pp)",
        "a wins",
    ]
    body = []
    for r in rows:
        n = r["n"]
        ci = "-" if n < 2 else f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]"
        body.append(
            [
                *_size_cells(r),
                f"{r['effect']}: {r['a']} - {r['b']}",
                str(n),
                f"{100 * r['mean']:+.2f}" + (f" ± {100 * r['std']:.2f}" if n > 1 else ""),
                ci,
                f"{r['wins']}/{n}" + (f" ({r['ties']} tied)" if r["ties"] else ""),
            ]
        )
    return markdown_table(header, body, [False, True, False, True, True, True, True])


def _is_ticket(row: Mapping) -> bool:
    return row.get("phase") == "ticket"


def _plot(rows, path, title, band_kind="ci"):
    """Test accuracy against target training examples (log): one line per arm.

    Panels: the fine-tune arms (final test accuracy), then the ticket arms
    (``phase: ticket``) with ``scratch`` as a dense reference when there are
    ticket arms, else the fine-tune arms at early stop. Line = mean, band =
    ``band_kind`` (:func:`lth_jax.report.stats.band`), named in each legend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    arms = list(dict.fromkeys(r["arm"] for r in rows))
    ticket_arms = {r["arm"] for r in rows if _is_ticket(r)}
    ft = [a for a in arms if a not in ticket_arms]
    tickets = [a for a in arms if a in ticket_arms]
    final = ("final_test_accuracy", "final")
    panels = [(ft, final, "fine-tuning")]
    if tickets:
        ref = ["scratch"] if "scratch" in arms else []
        panels.append((ref + tickets, final, "ticket transfer"))
    else:
        panels.append((ft, ("test_accuracy_at_best_val", "at early stop"), "fine-tuning"))
    colors = {a: f"C{k % 10}" for k, a in enumerate(arms)}
    fig = Figure(figsize=(12, 4.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (names, (key, label), what) in zip(axes, panels):
        for arm in names:
            rs = sorted((r for r in rows if r["arm"] == arm and r["n"]), key=lambda r: r["n_train"])
            if not rs:
                continue
            x = [r["n_train"] for r in rs]
            y = [100 * r[f"{key}_mean"] for r in rs]
            col = lambda stat, rs=rs, key=key: [r[f"{key}_{stat}"] for r in rs]
            edges = band(col("mean"), col("std"), col("n"), col("min"), col("max"), band_kind)
            lo, hi = (100 * e for e in edges)
            base = arm.split("+")[0]
            ls = "--" if base == "scratch" else ("-" if base == "pretrained" else ":")
            marker = "o" if "dropout" in arm else ("s" if arm in ticket_arms else "^")
            if "l2sp" in arm:
                marker = "D"
            dens = rs[0]["density"]
            name = arm_label(arm)
            name = name if dens >= 0.9995 else f"{name} ({100 * dens:.3g}% weights)"
            ax.plot(x, y, ls, marker=marker, label=name, color=colors[arm])
            ax.fill_between(x, lo, hi, color=colors[arm], alpha=0.1)
        ax.set_xscale("log")
        ax.set_xlabel("target training examples (log)")
        ax.set_title(f"{what}: target test accuracy, {label}")
        ax.grid(True, which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Patch(color="gray", alpha=0.2))
        labels.append(f"band: {BANDS[band_kind]}")
        ax.legend(handles, labels, fontsize=8, loc="lower right")
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _config_line(cfg: Mapping | None, ticket_arms: set[str]) -> str:
    """The config line; the tickets' IMP settings when ``transfer.arms`` has a ticket arm."""
    if not cfg:
        return ""
    g = lambda key: get(cfg, key, None)
    src_classes = g("dataset.classes")
    tgt_classes = g("target.classes")
    ft = g("finetune") or {}
    fo = ft.get("optimizer") or {}
    parts = [
        f"model {g('model.name')} {_set_kwargs(g('model.kwargs'))}".strip(),
        f"source {g('dataset.name')}" + (f" classes {src_classes}" if src_classes else ""),
        f"target {g('target.name')}" + (f" classes {tgt_classes}" if tgt_classes else ""),
        f"pretrain {g('train.steps')} steps ({g('optimizer.name')} {g('optimizer.learning_rate')})",
        f"fine-tune {ft.get('steps')} steps, batch <= {ft.get('batch_size')} "
        f"({fo.get('name')} {fo.get('learning_rate')})",
        f"trainable {ft.get('trainable')}"
        + (
            f" (freeze {ft.get('freeze_layers')})" if ft.get("trainable") == "all_but_first" else ""
        ),
        f"+dropout = dropout {ft.get('dropout')}, input dropout {ft.get('input_dropout')}",
        f"L2-SP {ft.get('l2_sp')}",
        f"head reuse asked: {ft.get('reuse_head')}",
        f"trials {g('num_trials')}",
    ]
    if g("transfer.pretrained_workdir"):
        parts.insert(1, f"pretrained from {g('transfer.pretrained_workdir')}")
    if any(a in ticket_arms for a in g("transfer.arms") or ()):
        parts.append(
            f"tickets: {g('imp.rounds')} IMP rounds at {g('imp.prune_rate')} "
            f"({g('imp.scope')}), new head {g('transfer.ticket_head')}"
        )
    return "; ".join(parts)


def _notes(band_kind: str) -> str:
    return (
        "Accuracies in % on the whole target test split, mean ± sample std (ddof=1) over "
        "trials; `min - max` over trials. Each trial draws its own target training subset "
        "(data seed `seed + trial`), so the spread includes which examples were drawn; the "
        "arms of one trial share the subset, the target init (the new head), the data order "
        "and the dropout keys. `test acc at early stop`: at the evaluation with the lowest "
        "validation loss (the validation split is carved from the target training split and "
        "is not part of `n_train`). Effects are paired differences a - b over the trials ok "
        "in both arms (a trial failed in either arm is dropped from both), in percentage "
        "points, mean ± sample std of the differences; 95% CI: mean ± t(0.975, n-1) · s / "
        "√n (Student t over trials; left out below 2 pairs), no correction for the number of "
        "comparisons; `a wins` counts trials where a was better, ties (equal accuracies) "
        f"count as neither and are shown as `(t tied)`. Figure: line = mean, band = "
        f"{BANDS[band_kind]}; `random_mask` is drawn as random pruning."
    )


def summary_data(rows: Sequence[Mapping], eff: Sequence[Mapping]) -> dict:
    """The content of ``summary.json``: the summary rows, the effects' rows, the findings."""
    return {
        "kind": "transfer",
        "units": "accuracies and their differences as fractions (0-1), as in metrics.jsonl",
        "ci_level": CI_LEVEL,
        "summary": list(rows),
        "effects": list(eff),
        "findings": effect_summary(eff),
    }


def write_report(workdir: str, out_dir: str | os.PathLike | None = None, band: str = "ci") -> str:
    """Writes ``report.md``, ``report.png`` and ``summary.json`` of a transfer workdir.

    Returns the tables. ``band``: the figure's band around the mean (a key of
    :data:`lth_jax.report.stats.BANDS`).

    Raises:
      ValueError: no ``metrics.jsonl`` or no transfer record in it, an
        unreadable ``config.json``, or an unknown ``band``.
    """
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; bands are {', '.join(BANDS)}")
    workdir = os.fspath(workdir)
    records = load_records(workdir)
    rows = summarize(records)
    eff = effects(records)
    cfg, err = files.read_config(workdir)
    if err:
        raise ValueError(f"{workdir}: {err}")
    out = files.out_dir_for(workdir, out_dir)
    title = f"Transfer report: {files.labels([workdir])[0]}"
    _plot(rows, os.path.join(out, files.REPORT_PNG), title, band)
    src_acc = sorted(
        {
            (r["trial"], r["source_test_accuracy"])
            for r in records
            if r.get("source_test_accuracy") is not None
        }
    )
    table = format_table(rows)
    text = table + ("\n\n" + format_effects(eff) if eff else "")
    md = [f"# {title}", ""]
    line = _config_line(cfg, {r["arm"] for r in rows if _is_ticket(r)})
    if line:
        md += [f"Config: {line}", ""]
    if src_acc:
        st = trial_stats([a for _, a in src_acc])
        md += [
            f"Source (pretrained network) test accuracy on the source task: "
            f"{100 * st['mean']:.2f} ± {100 * st['std']:.2f}% over {len(src_acc)} trials.",
            "",
        ]
    if eff:
        md += ["## Findings", "", paired_rule("target size"), ""]
        md += [*effect_bullets(effect_findings(eff)), ""]
    md += ["## Target test accuracy", "", table, ""]
    if eff:
        md += ["## Effects (paired by trial)", "", format_effects(eff), ""]
    files.write_markdown(out, md, title, _notes(band))
    files.write_summary(out, summary_data(rows, eff))
    return text


def _set_kwargs(kwargs) -> str:
    """The model arguments a config sets (``None`` means the model's default)."""
    kept = {k: v for k, v in (kwargs or {}).items() if v is not None}
    return str(kept) if kept else ""
