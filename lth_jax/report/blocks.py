"""The generated result blocks: what a marker pair holds, by the folder it names.

:func:`render` gives, for a folder under ``experiments/results/``, the
markdown of its block (README.md and the results READMEs) and its Findings
bullets (the preset docstrings), by what the folder holds:

* a lottery or instability workdir (``metrics.jsonl``): a line of its
  settings, the dense and the best ticket accuracies, a compact table of the
  paired differences of final test accuracy (every other round or so; all of
  them are in ``report.md``), the error barrier per round for instability
  runs, and the findings sentences of :mod:`lth_jax.report.findings`;
* a transfer workdir: the target sizes, the paired effects by target size
  and their findings;
* a regularizer comparison (``results.json`` of ``experiments/regularizers.py``):
  :mod:`lth_jax.report.regularizers`;
* a folder of several lottery workdirs (a study, e.g.
  ``mnist1d_rewinding/{init,step500,lr}``): one block compared across the
  workdirs, paired by trial (:mod:`lth_jax.report.across`), workdirs in the
  order of :func:`study_order`; its table and findings hold each workdir's
  arms against each other and against the dense network, and each arm
  against the same arm of every earlier workdir (final test accuracy; every
  comparison is in the folder's ``report.md``);
* any other folder of workdirs (e.g. ``mnist1d_instability/{k0,k500}``): one
  part per workdir, in name order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from lth_jax.checks import get
from lth_jax.report import files, lottery, regularizers, transfer
from lth_jax.report.across import (
    cross_bullets,
    cross_pairs,
    refused_lines,
    round0_agreement,
    round0_sentence,
    run_id,
    run_label,
)
from lth_jax.report.claims import claim_lines
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

__all__ = ["MAX_ROUNDS", "render", "lottery_block", "transfer_block", "study_block", "study_order"]

#: The heading of a block's comparison with published findings (:mod:`lth_jax.report.claims`).
PAPERS_HEAD = (
    "Against the papers (the verdict is computed from the paired findings above by the rule "
    "of `lth_jax/report/claims.py`; each paper's own metric):"
)

#: At most this many rounds in a block's table (every k-th round, the last one kept).
MAX_ROUNDS = 10


def render(full: str, path: str) -> tuple[str, list[str]]:
    """``(markdown, docstring lines)`` of the block of the folder ``full`` (named ``path``).

    The docstring lines are the Findings bullets (``- ...``), preceded by a
    ``<path>:`` line for each workdir of a folder of parts.
    """
    if not os.path.isdir(full):
        raise ValueError(f"generated block names no folder: {path}")
    if files.workdir_kind(full) == "transfer":
        return transfer_block(full)
    if os.path.isfile(os.path.join(full, regularizers.RESULTS_FILE)):
        return regularizers.block(full)
    if os.path.isfile(os.path.join(full, files.METRICS_FILE)):
        return lottery_block(full)
    subs = sorted(
        d for d in os.listdir(full) if os.path.isfile(os.path.join(full, d, files.METRICS_FILE))
    )
    if not subs:
        raise ValueError(f"no {files.METRICS_FILE} in {path} or its subfolders")
    kinds = {files.workdir_kind(os.path.join(full, d)) for d in subs}
    if len(subs) > 1 and kinds <= {"lottery", None}:
        subs.sort(key=lambda d: study_order(os.path.join(full, d)))
        return study_block(full, subs)
    md, doc = [], []
    for d in subs:
        text, bullets = render(os.path.join(full, d), f"{path}/{d}")
        md.append(f"**`{path}/{d}`**\n\n" + text)
        doc += [f"{path}/{d}:", *bullets]
    return "\n\n".join(md), doc


# ----------------------------------------------------------------------------- lottery


def _settings(workdir: str) -> str:
    """One line of a lottery or instability run's settings, from its ``config.json``."""
    parts = _settings_parts(workdir)
    return "Settings (`config.json`): " + ", ".join(parts) + "." if parts else ""


def _settings_parts(workdir: str) -> list[str]:
    """The settings of a lottery or instability run (``config.json``), as phrases."""
    cfg, _ = files.read_config(workdir)
    if not cfg:
        return []
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
    return parts


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
    """``+3.0 [+1.2, +4.8] 5/5`` (points; ``(t tied)`` added when some trials tie), bold when
    the rule gives a clear verdict."""
    n = c.get("n") or 0
    if n == 0:
        return "-"
    text = f"{100 * c['mean']:+.1f}"
    if n >= 2:
        text += f" [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"
    text += f" {c['wins']}/{n}" + (f" ({c['ties']} tied)" if c.get("ties") else "")
    return f"**{text}**" if verdict(c) in (A_ABOVE, B_ABOVE) else text


def _pair_name(r: Mapping) -> str:
    return f"{arm_label(r['a'])} − {arm_label(r['b'])}"


def _lottery_table(
    pairs: Sequence[Mapping], barrier: Sequence[Mapping], name=None
) -> tuple[str, str]:
    """The compact table of a lottery or instability workdir, and the line above it.

    ``name(row)`` names a pair's column (default: ``a − b``, readable arm names).
    """
    name = name or _pair_name
    names = list(dict.fromkeys(name(r) for r in pairs))
    cells = {(r["round"], name(r)): r["final_test_accuracy"] for r in pairs}
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
        "out of the paired trials (ties counted apart), bold where the findings rule gives a "
        f"clear verdict ({every})"
        + ("; error barrier: mean over trials and the trials above 2 points" if bar else "")
        + ":"
    )
    return line, table


def lottery_block(workdir: str) -> tuple[str, list[str]]:
    """The block of one lottery or instability workdir, and its Findings bullets."""
    records = lottery.load_records(workdir)
    rows, pairs = lottery.summarize(records), lottery_pairs(records)
    barrier = barrier_rounds(records)
    line, table = _lottery_table(pairs, barrier)
    parts = [p for p in (_settings(workdir), _levels(rows)) if p]
    parts += [line, table]
    bullets = barrier_bullets(barrier_findings(barrier)) if barrier else []
    bullets += paired_bullets(paired_findings(pairs), lottery_labels, where_density)
    parts.append("Findings:\n\n" + "\n".join(bullets))
    papers = claim_lines(os.path.basename(os.path.normpath(workdir)), pairs)
    if papers:
        parts.append(PAPERS_HEAD + "\n\n" + "\n".join(papers))
    return "\n\n".join(parts), bullets + papers


# ----------------------------------------------------------------------------- transfer


def transfer_block(workdir: str) -> tuple[str, list[str]]:
    """The block of a transfer workdir, and its Findings bullets."""
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
        "wins out of the paired trials (ties counted apart), bold where the findings rule gives "
        "a clear verdict:"
    )
    bullets = effect_bullets(effect_findings(eff))
    text = "\n\n".join(
        ["Setup: " + "; ".join(facts) + ".", line, table, "Findings:\n\n" + "\n".join(bullets)]
    )
    return text, bullets


# ----------------------------------------------------------------------------- study


def study_order(workdir: str) -> tuple:
    """A study's workdirs in order of how late the pruned network restarts.

    Weight rewinding by its step (to initialization first), then
    learning-rate rewinding by its step; ties by name (the caller's sort is
    stable). Each arm is compared with the same arm of every earlier workdir.
    """
    cfg, _ = files.read_config(workdir)
    g = lambda key: get(cfg or {}, key, None)
    return (g("imp.rewind") == "lr", g("imp.rewind_step") or 0)


def _as_run(row: Mapping, label: str) -> dict:
    """A paired row of one workdir, its arms named as runs of the study."""
    a, b = row["a"], row["b"]
    return {**row, "a": run_id(label, a), "b": run_id(label, b)} | {
        "a_workdir": label,
        "a_arm": a,
        "b_workdir": label,
        "b_arm": b,
    }


def _column(r: Mapping) -> str:
    if r["a_workdir"] == r["b_workdir"]:
        return f"{r['a_workdir']}: {arm_label(r['a_arm'])} − {arm_label(r['b_arm'])}"
    return f"{run_label(r['a_workdir'], r['a_arm'])} − {run_label(r['b_workdir'], r['b_arm'])}"


def _study_settings(full: str, names: Sequence[str]) -> str:
    """The settings every workdir shares, then each workdir's own (its rewinding, its arms)."""
    parts = {n: _settings_parts(os.path.join(full, n)) for n in names}
    common = [p for p in parts[names[0]] if all(p in parts[n] for n in names)]
    own = []
    for n in names:
        cfg, _ = files.read_config(os.path.join(full, n))
        arms = [arm_label(a) for a in get(cfg or {}, "arms", None) or ()]
        mine = [p for p in parts[n] if p not in common]
        mine += [("arm " if len(arms) == 1 else "arms ") + ", ".join(arms)] if arms else []
        own.append(f"`{n}`: " + ", ".join(mine))
    return f"Settings (`config.json` of each workdir): {', '.join(common)}; {'; '.join(own)}."


def _study_levels(loaded: Sequence[tuple[str, list, list]]) -> str:
    out = []
    first, _, rows = loaded[0]
    dense = [r for r in rows if r["round"] == 0 and r["n"]]
    if len(dense) == 1:
        d = dense[0]
        out.append(f"dense network (round 0 of `{first}`): {_acc(d, 'final_test_accuracy')}")
    best = []
    for name, _, rows in loaded:
        for arm in dict.fromkeys(r["arm"] for r in rows if r["round"] > 0):
            own = [r for r in rows if r["arm"] == arm and r["round"] > 0 and r["n"]]
            if own:
                b = max(own, key=lambda r: r["final_test_accuracy_mean"])
                where = format_density(b["density"])
                acc = _acc(b, "final_test_accuracy")
                best.append(f"{run_label(name, arm)} {acc} at {where}% of the weights")
    if best:
        out.append("best mean final test accuracy: " + ", ".join(best))
    return "Final test accuracy (mean ± std over trials): " + "; ".join(out) + "."


def study_block(full: str, names: Sequence[str]) -> tuple[str, list[str]]:
    """The block of a study: the workdirs ``names`` of ``full``, compared paired by trial."""
    runs, loaded = [], []
    for n in names:
        d = os.path.join(full, n)
        records = lottery.load_records(d)
        runs.append((n, records, files.read_config(d)[0]))
        loaded.append((n, records, lottery.summarize(records)))
    within = [(n, lottery_pairs(records)) for n, records, _ in runs]
    cross, refused = cross_pairs(runs)
    rows = [_as_run(r, n) for n, ps in within for r in ps if r["b_round"] == r["a_round"]]
    rows += [r for r in cross if r["a_arm"] == r["b_arm"]]
    rows += [_as_run(r, n) for n, ps in within for r in ps if r["b_round"] != r["a_round"]]
    line, table = _lottery_table(rows, [], name=_column)
    parts = [_study_settings(full, names), _study_levels(loaded)]
    parts.append(round0_sentence(round0_agreement(runs)))
    parts += [line, table]
    same_arm = [r for r in refused if r["a_arm"] == r["b_arm"]]
    if same_arm:
        lines = "\n".join(refused_lines(same_arm))
        parts.append("Not compared (their per-round densities or setups differ):\n\n" + lines)
    bullets = cross_bullets(rows, metrics=["final_test_accuracy"])
    head = "Findings (final test accuracy; test accuracy at early stop in `report.md`):"
    parts.append(head + "\n\n" + "\n".join(bullets))
    papers = claim_lines(os.path.basename(os.path.normpath(full)), rows)
    if papers:
        parts.append(PAPERS_HEAD + "\n\n" + "\n".join(papers))
    return "\n\n".join(parts), bullets + papers
