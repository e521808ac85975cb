"""The transfer report: target accuracy against the target training-set size, per arm.

A transfer workdir's ``metrics.jsonl`` holds one record per ``(size, arm,
trial)`` with ``size_index``, ``train_size``, ``n_train``, ``arm``, ``trial``,
``phase`` (``"ticket"`` for the ticket arms, ``"finetune"`` for the others),
``density``, ``status``, ``final_test_accuracy``, ``test_accuracy_at_best_val``
and ``source_test_accuracy``. Failed records (:func:`lth_jax.report.stats.is_failed`)
are counted and left out of every statistic.

The report (:func:`write_report`): a summary table (one row per size and
arm), paired effects between arms (:func:`effects`), and a figure of test
accuracy against the number of target training examples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from lth_jax.checks import get
from lth_jax.report import files
from lth_jax.report.stats import group_by_arm, is_failed, metric_stats, trial_stats
from lth_jax.report.tables import markdown_table, pct

__all__ = [
    "load_records",
    "summarize",
    "format_table",
    "effects",
    "format_effects",
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

    Rows ``{size_index, train_size, n_train, effect, a, b, n, mean, std, wins}``
    (``wins``: trials where ``a`` beat ``b``), for the pairs of ``_EFFECTS``
    present in ``records``; failed records are left out.
    """
    by = {(int(r["size_index"]), r["arm"], int(r["trial"])): r for r in records if not is_failed(r)}
    sizes = sorted({int(r["size_index"]) for r in records})
    info = {int(r["size_index"]): r for r in records}
    out = []
    for i in sizes:
        for label, a, b in _EFFECTS:
            trials = sorted(t for (j, arm, t) in by if j == i and arm == a and (i, b, t) in by)
            if not trials:
                continue
            d = [
                by[(i, a, t)]["final_test_accuracy"] - by[(i, b, t)]["final_test_accuracy"]
                for t in trials
            ]
            st = trial_stats(d)
            out.append(
                {
                    "size_index": i,
                    "train_size": info[i].get("train_size"),
                    "n_train": info[i].get("n_train"),
                    "effect": label,
                    "a": a,
                    "b": b,
                    "n": len(d),
                    "mean": st["mean"],
                    "std": st["std"],
                    "wins": int(sum(x > 0 for x in d)),
                }
            )
    return out


def format_effects(rows: Sequence[Mapping]) -> str:
    """The rows of :func:`effects` as a markdown table (differences in percentage points)."""
    header = [*_SIZE_COLUMNS, "effect (a - b)", "trials", "Δ final test acc (pp)", "a wins"]
    body = [
        [
            *_size_cells(r),
            f"{r['effect']}: {r['a']} - {r['b']}",
            str(r["n"]),
            f"{100 * r['mean']:+.2f}" + (f" ± {100 * r['std']:.2f}" if r["n"] > 1 else ""),
            f"{r['wins']}/{r['n']}",
        ]
        for r in rows
    ]
    return markdown_table(header, body, [False, True, False, True, True, True])


def _is_ticket(row: Mapping) -> bool:
    return row.get("phase") == "ticket"


def _plot(rows, path, title):
    """Test accuracy against target training examples (log): one line per arm.

    Panels: the fine-tune arms (final test accuracy), then the ticket arms
    (``phase: ticket``) with ``scratch`` as a dense reference when there are
    ticket arms, else the fine-tune arms at early stop. Line = mean, band =
    min-max over trials.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
            lo = [100 * r[f"{key}_min"] for r in rs]
            hi = [100 * r[f"{key}_max"] for r in rs]
            base = arm.split("+")[0]
            ls = "--" if base == "scratch" else ("-" if base == "pretrained" else ":")
            marker = "o" if "dropout" in arm else ("s" if arm in ticket_arms else "^")
            if "l2sp" in arm:
                marker = "D"
            dens = rs[0]["density"]
            name = arm if dens >= 0.9995 else f"{arm} ({100 * dens:.3g}% weights)"
            ax.plot(x, y, ls, marker=marker, label=name, color=colors[arm])
            ax.fill_between(x, lo, hi, color=colors[arm], alpha=0.1)
        ax.set_xscale("log")
        ax.set_xlabel("target training examples (log)")
        ax.set_title(f"{what}: target test accuracy, {label}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
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


_NOTES = (
    "Accuracies in % on the whole target test split, mean ± sample std (ddof=1) over trials; "
    "`min - max` over trials. Each trial draws its own target training subset (data seed "
    "`seed + trial`), so the spread includes which examples were drawn; the arms of one "
    "trial share the subset, the target init (the new head), the data order and the dropout "
    "keys. `test acc at early stop`: at the evaluation with the lowest validation loss "
    "(the validation split is carved from the target training split and is not part of "
    "`n_train`). Effects are paired differences a - b over trials, in percentage points; "
    "`a wins` counts trials where a was better. Figure: line = mean, band = min-max."
)


def write_report(workdir: str, out_dir: str | os.PathLike | None = None) -> str:
    """Writes ``report.md`` and ``report.png`` of a transfer workdir; returns the tables.

    Raises:
      ValueError: no ``metrics.jsonl`` or no transfer record in it, or an
        unreadable ``config.json``.
    """
    workdir = os.fspath(workdir)
    records = load_records(workdir)
    rows = summarize(records)
    eff = effects(records)
    cfg, err = files.read_config(workdir)
    if err:
        raise ValueError(f"{workdir}: {err}")
    out = files.out_dir_for(workdir, out_dir)
    title = f"Transfer report: {files.labels([workdir])[0]}"
    _plot(rows, os.path.join(out, files.REPORT_PNG), title)
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
    md += ["## Target test accuracy", "", table, ""]
    if eff:
        md += ["## Effects (paired by trial)", "", format_effects(eff), ""]
    files.write_markdown(out, md, title, _NOTES)
    return text


def _set_kwargs(kwargs) -> str:
    """The model arguments a config sets (``None`` means the model's default)."""
    kept = {k: v for k, v in (kwargs or {}).items() if v is not None}
    return str(kept) if kept else ""
