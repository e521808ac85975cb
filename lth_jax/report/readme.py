"""The README's result blocks, generated from the committed metrics.

A block sits between two markers that name a folder relative to the README::

    <!-- generated from experiments/results/mnist1d_lottery: begin -->
    ...
    <!-- generated from experiments/results/mnist1d_lottery: end -->

:func:`render_blocks` finds every marker pair by itself and rewrites what is
between them from that folder's ``metrics.jsonl`` (and ``config.json``
when present), so a new results folder needs only a new
marker pair. What a block holds (:func:`render_block`):

* a lottery or instability workdir: a line of its settings, the dense and the
  best ticket accuracies, a compact table of the paired differences of final
  test accuracy (every other round or so; all of them are in ``report.md``),
  the error barrier per round for instability runs, and the findings
  sentences of :mod:`lth_jax.report.findings`;
* a transfer workdir: the target sizes, the paired effects by target size
  and their findings;
* a folder without ``metrics.jsonl``: one such block per subfolder that has
  one, in name order (e.g. ``mnist1d_instability/k0`` and ``k500``).

Rewrite a README in place with ``python -m lth_jax.report.readme README.md``;
``--check`` only says whether it is up to date (exit status 1 when not).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence

from lth_jax.checks import get
from lth_jax.report import files, lottery, transfer
from lth_jax.report.findings import (
    A_ABOVE,
    B_ABOVE,
    barrier_bullets,
    barrier_findings,
    barrier_rounds,
    effect_bullets,
    effect_findings,
    lottery_labels,
    paired_bullets,
    paired_findings,
    verdict,
    where_density,
)
from lth_jax.report.paired import lottery_pairs
from lth_jax.report.stats import trial_stats
from lth_jax.report.tables import arm_label, format_density, markdown_table

__all__ = ["BEGIN", "end_marker", "render_block", "render_blocks", "main"]

#: A begin marker; its ``path`` is relative to the README's folder.
BEGIN = re.compile(r"<!-- generated from (?P<path>[^\s:>]+): begin -->")

#: At most this many rounds in a block's table (every k-th round, the last one kept).
MAX_ROUNDS = 10


def end_marker(path: str) -> str:
    """The end marker of the block of ``path``."""
    return f"<!-- generated from {path}: end -->"


def render_blocks(readme_text: str, root: str | os.PathLike) -> str:
    """``readme_text`` with every generated block rewritten from the folders under ``root``.

    Raises:
      ValueError: a begin marker without its end marker (or another begin
        marker before it), or a folder a marker names that holds no results.
    """
    out, pos = [], 0
    for m in BEGIN.finditer(readme_text):
        if m.start() < pos:
            raise ValueError(f"generated block of {m['path']} starts inside another block")
        end = end_marker(m["path"])
        stop = readme_text.find(end, m.end())
        nested = BEGIN.search(readme_text, m.end())
        if stop < 0 or (nested is not None and nested.start() < stop):
            raise ValueError(f"no '{end}' after the begin marker of {m['path']}")
        block = render_block(m["path"], root)
        out += [readme_text[pos : m.end()], "\n", block.rstrip("\n"), "\n", end]
        pos = stop + len(end)
    out.append(readme_text[pos:])
    return "".join(out)


def render_block(path: str, root: str | os.PathLike) -> str:
    """The markdown of the block of ``path`` (a folder relative to ``root``)."""
    full = os.path.join(os.fspath(root), path)
    if not os.path.isdir(full):
        raise ValueError(f"generated block names no folder: {path}")
    if files.workdir_kind(full) == "transfer":
        return _transfer_block(full)
    if os.path.isfile(os.path.join(full, files.METRICS_FILE)):
        return _lottery_block(full)
    subs = sorted(
        d for d in os.listdir(full) if os.path.isfile(os.path.join(full, d, files.METRICS_FILE))
    )
    if not subs:
        raise ValueError(f"no {files.METRICS_FILE} in {path} or its subfolders")
    parts = [f"**`{path}/{d}`**\n\n" + render_block(f"{path}/{d}", root) for d in subs]
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- lottery


def _settings(workdir: str) -> str:
    """One line of a lottery or instability run's settings, from its ``config.json``."""
    cfg, _ = files.read_config(workdir)
    if not cfg:
        return ""
    g = lambda key: get(cfg, key, None)
    feats = (g("model.kwargs") or {}).get("features")
    parts = [f"{g('kind')} run" if g("kind") not in (None, "lottery") else "lottery run"]
    parts.append(f"{g('model.name')}" + (f" {feats}" if feats else "") + f" on {g('dataset.name')}")
    opt = f"{g('optimizer.name')} learning rate {g('optimizer.learning_rate'):g}"
    parts += [opt, f"batch {g('train.batch_size')}", f"{g('train.steps')} steps"]
    rates = g("imp.layer_rates") or {}
    rates = list(rates.items()) if isinstance(rates, Mapping) else [tuple(p) for p in rates]
    layers = "".join(f"{name} {rate:g}, " for name, rate in rates)
    parts.append(f"pruning {g('imp.prune_rate'):g} per round ({layers}{g('imp.scope')})")
    parts.append(f"{g('imp.rounds')} rounds")
    rewind = g("imp.rewind") or "weights"
    parts.append(f"rewinding ({rewind}) to step {g('imp.rewind_step') or 0}")
    stop = g("train.early_stop_metric") or "val_loss"
    parts.append("early stopping on " + stop.replace("val_", "validation "))
    parts.append(f"{g('num_trials')} trials")
    return "Settings (`config.json`): " + ", ".join(parts) + "."


def _acc(row: Mapping, key: str) -> str:
    return f"{100 * row[f'{key}_mean']:.1f} ± {100 * row[f'{key}_std']:.1f}%"


def _levels(rows: Sequence[Mapping]) -> str:
    """The dense accuracy and the ticket's best, final and maximum over the curve."""
    dense = [r for r in rows if r["round"] == 0 and r["n"]]
    tickets = [r for r in rows if r["arm"] == "ticket" and r["round"] > 0 and r["n"]]
    curve = lottery.has_curve(rows)
    cm = lottery.CURVE_MAX
    out = []
    if len(dense) == 1:
        d = dense[0]
        s = f"dense network: final test accuracy {_acc(d, 'final_test_accuracy')}"
        out.append(s + (f", max over the curve {_acc(d, cm)}" if curve else ""))
    if tickets:
        keys = [("final_test_accuracy", "final test accuracy")]
        keys += [(cm, "max over the curve")] * curve
        for key, name in keys:
            best = max(tickets, key=lambda r: r[f"{key}_mean"])
            where = format_density(best["density"])
            out.append(f"ticket's best mean {name}: {_acc(best, key)} at {where}% of the weights")
    text = "Levels (mean ± std over trials): " + "; ".join(out) + "."
    if curve:
        text += (
            " *Max over the curve*: the best test accuracy among a run's evaluations, selected "
            "on the test set; only to compare with the MNIST-1D lottery notebook."
        )
    return text


def _rounds_shown(rounds: Sequence[int]) -> list[int]:
    """At most :data:`MAX_ROUNDS` rounds: every k-th counted back from the last, and the first."""
    rounds = sorted(set(rounds))
    if not rounds:
        return []
    step = max(1, math.ceil(len(rounds) / (MAX_ROUNDS - 1)))
    last = rounds[-1]
    return sorted({r for r in rounds if (last - r) % step == 0} | {rounds[0]})


def _cell(c: Mapping) -> str:
    """``+3.0 [+1.2, +4.8] 5/5`` (points), bold when the rule gives a clear verdict."""
    n = c.get("n") or 0
    if n == 0:
        return "-"
    text = f"{100 * c['mean']:+.1f}"
    if n >= 2:
        text += f" [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"
    text += f" {c['wins']}/{n}"
    return f"**{text}**" if verdict(c) in (A_ABOVE, B_ABOVE) else text


def _pair_name(r: Mapping) -> str:
    return f"{arm_label(r['a'])} − {arm_label(r['b'])}"


def _lottery_table(pairs: Sequence[Mapping], barrier: Sequence[Mapping]) -> tuple[str, str]:
    """The compact table of a lottery or instability workdir, and the line above it."""
    names = list(dict.fromkeys(_pair_name(r) for r in pairs))
    cells = {(r["round"], _pair_name(r)): r["final_test_accuracy"] for r in pairs}
    dens = {r["round"]: r["density"] for r in [*barrier, *pairs]}
    bar = {(r["round"]): r for r in barrier if r["round"] == 0 or r["arm"] == "ticket"}
    shown = _rounds_shown([r["round"] for r in pairs] or list(bar))
    if bar and 0 in bar:
        shown = [0, *shown]
    header = ["% weights"] + (["error barrier (points), trials > 2"] if bar else []) + names
    body = []
    for rnd in shown:
        row = [format_density(dens[rnd])]
        if bar:
            b = bar.get(rnd)
            row.append("-" if b is None else f"{100 * b['mean']:.1f}, {b['above']}/{b['n']}")
        row += [_cell(cells[(rnd, n)]) if (rnd, n) in cells else "-" for n in names]
        body.append(row)
    table = markdown_table(header, body, [True] * len(header), padded=False)
    every = "every round" if len(shown) >= len(dens) else "some rounds; all in `report.md`"
    line = (
        "Final test accuracy, paired difference a − b in points: mean [95% CI] and a's wins "
        f"out of the paired trials, bold where the findings rule gives a clear verdict ({every})"
        + ("; error barrier: mean over trials and the trials above 2 points" if bar else "")
        + ":"
    )
    return line, table


def _lottery_block(workdir: str) -> str:
    records = lottery.load_records(workdir)
    rows, pairs = lottery.summarize(records), lottery_pairs(records)
    barrier = barrier_rounds(records)
    line, table = _lottery_table(pairs, barrier)
    parts = [p for p in (_settings(workdir), _levels(rows)) if p]
    parts += [line, table]
    bullets = barrier_bullets(barrier_findings(barrier)) if barrier else []
    bullets += paired_bullets(paired_findings(pairs), lottery_labels, where_density)
    parts.append("Findings:\n\n" + "\n".join(bullets))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- transfer


def _transfer_block(workdir: str) -> str:
    records = transfer.load_records(workdir)
    eff = transfer.effects(records)
    sizes = {e["size_index"]: e for e in eff}
    order = sorted(sizes)
    size_name = lambda e: f"{e['n_train']:,} ({transfer.train_size_label(e['train_size'])})"
    classes = {r.get("num_classes") for r in records} - {None}
    trials = sorted({r["trial"] for r in records if r.get("trial") is not None})
    src = {
        (r["trial"], r["source_test_accuracy"])
        for r in records
        if r.get("source_test_accuracy") is not None
    }
    facts = [
        "target training examples: " + ", ".join(size_name(sizes[i]) for i in order),
        f"{len(trials)} trials",
    ]
    if len(classes) == 1:
        facts.append(f"chance {100 / classes.pop():.0f}%")
    if src:
        st = trial_stats([a for _, a in sorted(src)])
        mean, std = 100 * st["mean"], 100 * st["std"]
        facts.append(f"source network's test accuracy on its own task {mean:.1f} ± {std:.1f}%")
    names = list(dict.fromkeys((e["effect"], e["a"], e["b"]) for e in eff))
    cells = {(e["effect"], e["a"], e["b"], e["size_index"]): e for e in eff}
    header = ["effect: a − b"] + [f"{sizes[i]['n_train']:,} examples" for i in order]
    body = [
        [f"{name}: {arm_label(a)} − {arm_label(b)}"]
        + [_cell(cells[(name, a, b, i)]) if (name, a, b, i) in cells else "-" for i in order]
        for name, a, b in names
    ]
    table = markdown_table(header, body, [False] + [True] * len(order), padded=False)
    line = (
        "Final target test accuracy, paired difference a − b in points: mean [95% CI] and a's "
        "wins out of the paired trials, bold where the findings rule gives a clear verdict:"
    )
    bullets = effect_bullets(effect_findings(eff))
    return "\n\n".join(
        ["Setup: " + "; ".join(facts) + ".", line, table, "Findings:\n\n" + "\n".join(bullets)]
    )


# ----------------------------------------------------------------------------- command


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lth_jax.report.readme [README.md] [--check]``: rewrite the blocks in place.

    Returns 0 when the file is (now) up to date, 1 with ``--check`` when it is
    not (nothing written).
    """
    p = argparse.ArgumentParser(prog="python -m lth_jax.report.readme")
    p.add_argument("readme", nargs="?", default="README.md")
    p.add_argument("--check", action="store_true", help="only check, exit 1 when out of date")
    args = p.parse_args(argv)
    with open(args.readme, encoding="utf-8") as f:
        text = f.read()
    root = os.path.dirname(os.path.abspath(args.readme))
    new = render_blocks(text, root)
    n = len(BEGIN.findall(text))
    if new == text:
        print(f"{args.readme}: {n} generated blocks up to date")
        return 0
    if args.check:
        print(f"{args.readme}: generated blocks out of date; run python -m lth_jax.report.readme")
        return 1
    with open(args.readme, "w", encoding="utf-8") as f:
        f.write(new)
    print(f"{args.readme}: {n} generated blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
