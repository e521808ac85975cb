"""Paired comparisons across workdirs: one study run as several workdirs, compared trial by trial.

A study may live in several workdirs that share the seed, the data and the
model (e.g. ``experiments/results/mnist1d_rewinding/{init,step500,lr}``, one
rewinding method each). Trial ``t`` of every such workdir starts from the same
initialization with the same data order, and round 0 is the same dense
network, so two runs of different workdirs are compared **paired by trial**
too, as the arms of one workdir are (:mod:`lth_jax.report.paired`).

Rules, exactly (:func:`cross_pairs`):

* **Which runs.** Every ``(workdir, arm)`` against every ``(workdir, arm)`` of
  an *earlier* workdir (in the order given), at every round past 0 that both
  have: ``a`` is the later workdir's run, ``b`` the earlier one's. Round 0 is
  the shared dense network: not compared, but checked (:func:`round0_agreement`).
  Runs are named ``"<workdir>: <arm>"``.
* **Same densities.** Two runs pair at a round only when every trial they
  share has the same ``density`` (relative tolerance ``1e-9``) and, where
  both records hold one, the same ``layer_density`` per layer. Otherwise the
  round is *refused* (``refused`` rows, and a note in the report): their
  masks differ in size, so a difference would not compare methods.
* **Same setup.** When both workdirs have a ``config.json``, their ``seed``,
  ``dataset.name``, ``model.name`` and ``model.kwargs`` must agree, or no run
  of the two workdirs is compared (refused, round ``None``): trials with the
  same number would not share an initialization.
* **Pairs, mean, CI, wins** as within a workdir (:func:`lth_jax.report.paired.compare`).

:func:`across_report` gives the report's section (markdown lines) and
``summary.json``'s ``across_workdirs``; the Findings use the paired rule of
:mod:`lth_jax.report.findings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lth_jax.checks import get
from lth_jax.report.findings import (
    METRIC_NAMES,
    PAIRED_RULE,
    paired_bullets,
    paired_findings,
    where_density,
)
from lth_jax.report.paired import PAIRED_METRICS, by_trial, compare, format_paired
from lth_jax.report.stats import finite, latest
from lth_jax.report.tables import arm_label, format_density

__all__ = [
    "SETUP_KEYS",
    "run_id",
    "run_label",
    "density_mismatch",
    "setup_mismatch",
    "cross_pairs",
    "round0_agreement",
    "round0_sentence",
    "refused_lines",
    "cross_labels",
    "cross_bullets",
    "across_report",
    "ACROSS_NOTE",
]

#: The config keys two workdirs must share for their trials to pair.
SETUP_KEYS = ("seed", "dataset.name", "model.name", "model.kwargs")

#: Relative tolerance of the density check.
_RTOL = 1e-9


def run_id(workdir: str, arm: str) -> str:
    """``"<workdir>: <arm>"``, the name of one workdir's arm in the rows."""
    return f"{workdir}: {arm}"


def run_label(workdir: str, arm: str) -> str:
    """``"<workdir>: <readable arm>"``, for sentences (``init: one-shot pruning``)."""
    return f"{workdir}: {arm_label(arm)}"


def _close(x, y) -> bool:
    x, y = finite(x), finite(y)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=_RTOL, abs_tol=1e-12)


def density_mismatch(a: Mapping[Any, Mapping], b: Mapping[Any, Mapping]) -> str | None:
    """Why the shared trials of two runs (``{trial: record}``) do not pair, or ``None``.

    ``None`` when every shared trial has the same ``density`` and, where both
    records hold one, the same ``layer_density`` (same layers, same values).
    """
    for t in sorted(set(a) & set(b)):
        da, db = a[t].get("density"), b[t].get("density")
        if not _close(da, db):
            return f"trial {t}: density {_pct(da)} vs {_pct(db)}"
        la, lb = a[t].get("layer_density"), b[t].get("layer_density")
        if isinstance(la, Mapping) and isinstance(lb, Mapping):
            for layer in sorted(set(la) | set(lb)):
                if not _close(la.get(layer), lb.get(layer)):
                    x, y = _pct(la.get(layer)), _pct(lb.get(layer))
                    return f"trial {t}: {layer} density {x} vs {y}"
    return None


def _pct(x) -> str:
    return "none" if finite(x) is None else f"{format_density(x)}%"


def setup_mismatch(cfg_a: Mapping | None, cfg_b: Mapping | None) -> str | None:
    """The first of :data:`SETUP_KEYS` where two configs differ (``None``: agree, or one absent)."""
    if cfg_a is None or cfg_b is None:
        return None
    for key in SETUP_KEYS:
        x, y = get(cfg_a, key, None), get(cfg_b, key, None)
        if x != y:
            return f"{key} differs ({x!r} vs {y!r})"
    return None


def _groups(records: Sequence[Mapping]) -> dict[tuple[int, str], dict[Any, Mapping]]:
    """``{(round, arm): {trial: record}}`` of the latest records (arms in order of appearance)."""
    out: dict[tuple[int, str], list[Mapping]] = {}
    for r in latest(records):
        if r.get("round") is not None:
            out.setdefault((int(r["round"]), r["arm"]), []).append(r)
    return {k: by_trial(v) for k, v in out.items()}


def _refused(rnd, la: str, arm_a: str, lb: str, arm_b: str, why: str) -> dict:
    return {"round": rnd, "a": run_id(la, arm_a), "b": run_id(lb, arm_b), "reason": why} | {
        "a_workdir": la,
        "a_arm": arm_a,
        "b_workdir": lb,
        "b_arm": arm_b,
    }


def cross_pairs(
    workdirs: Sequence[tuple[str, Sequence[Mapping], Mapping | None]],
) -> tuple[list[dict], list[dict]]:
    """``(rows, refused)``: the paired comparisons across ``workdirs = [(label, records, config)]``.

    ``rows`` are shaped as :func:`lth_jax.report.paired.lottery_pairs`'s
    (``round``, ``density`` (mean over ``a``'s records), ``a``, ``a_round``,
    ``b``, ``b_round``, one :func:`~lth_jax.report.paired.compare` dict per
    metric), with ``a``/``b`` the run ids (:func:`run_id`) and
    ``a_workdir``, ``a_arm``, ``b_workdir``, ``b_arm``; by round, then pair.
    ``refused``: ``{round, a, b, reason, a_workdir, a_arm, b_workdir,
    b_arm}`` for each round (``None``: every round) not compared; see the
    module's rules.
    """
    groups = [_groups(recs) for _, recs, _ in workdirs]
    pairs = []
    refused: list[dict] = []
    for j, (la, _, ca) in enumerate(workdirs):
        for i, (lb, _, cb) in enumerate(workdirs[:j]):
            arms_a = list(dict.fromkeys(arm for (r, arm) in groups[j] if r > 0))
            arms_b = list(dict.fromkeys(arm for (r, arm) in groups[i] if r > 0))
            why = setup_mismatch(ca, cb)
            for arm_a in arms_a:
                for arm_b in arms_b:
                    if why:
                        refused.append(_refused(None, la, arm_a, lb, arm_b, why))
                    else:
                        pairs.append((j, la, arm_a, i, lb, arm_b))
    rows = []
    rounds = sorted({r for g in groups for (r, _) in g if r > 0})
    for rnd in rounds:
        for j, la, arm_a, i, lb, arm_b in pairs:
            ta, tb = groups[j].get((rnd, arm_a)), groups[i].get((rnd, arm_b))
            if not ta or not tb or not set(ta) & set(tb):
                continue
            a, b = run_id(la, arm_a), run_id(lb, arm_b)
            why = density_mismatch(ta, tb)
            if why:
                refused.append(_refused(rnd, la, arm_a, lb, arm_b, why))
                continue
            dens = [d for d in (finite(r.get("density")) for r in ta.values()) if d is not None]
            row: dict[str, Any] = {
                "round": rnd,
                "density": sum(dens) / len(dens) if dens else math.nan,
                "a": a,
                "a_round": rnd,
                "b": b,
                "b_round": rnd,
                "a_workdir": la,
                "a_arm": arm_a,
                "b_workdir": lb,
                "b_arm": arm_b,
            }
            for metric in PAIRED_METRICS:
                row[metric] = compare(ta, tb, metric)
            rows.append(row)
    return rows, refused


def round0_agreement(workdirs: Sequence[tuple[str, Sequence[Mapping], Any]]) -> list[dict]:
    """For each pair of workdirs (later one first): how many shared trials have the same round 0.

    Rows ``{a, b, trials, same}``: ``trials``, the trials with a round-0 record
    of one arm in both; ``same``, how many of them have the same
    ``final_test_accuracy`` (exactly). Round 0 is the dense network, the
    same in every workdir of a study by construction, so ``same`` below
    ``len(trials)`` says the trials do not start alike.
    """
    zero = []
    for _, recs, _ in workdirs:
        g: dict[Any, Any] = {}
        for (rnd, arm), trials in _groups(recs).items():
            if rnd == 0:
                for t, r in trials.items():
                    g[(arm, t)] = r.get("final_test_accuracy")
        zero.append(g)
    out = []
    for j, (la, _, _) in enumerate(workdirs):
        for i, (lb, _, _) in enumerate(workdirs[:j]):
            keys = sorted(set(zero[j]) & set(zero[i]), key=lambda k: (k[1], str(k[0])))
            same = sum(finite(zero[j][k]) is not None and zero[j][k] == zero[i][k] for k in keys)
            out.append({"a": la, "b": lb, "trials": [t for _, t in keys], "same": same})
    return out


def round0_sentence(rows: Sequence[Mapping]) -> str:
    """One sentence of :func:`round0_agreement`'s rows."""
    parts = [f"{r['a']} vs {r['b']} {r['same']}/{len(r['trials'])}" for r in rows]
    return (
        "Round 0 (the dense network of each trial), trials with the same final test accuracy "
        "in both workdirs: " + ", ".join(parts) + "."
    )


def refused_lines(refused: Sequence[Mapping]) -> list[str]:
    """Markdown bullets: the runs not compared, with their rounds and the first reason."""
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for r in refused:
        groups.setdefault((r["a"], r["b"]), []).append(r)
    out = []
    for (a, b), rs in groups.items():
        rounds = [r["round"] for r in rs]
        where = (
            "every round"
            if None in rounds
            else ("round " if len(rounds) == 1 else "rounds ") + ", ".join(map(str, rounds))
        )
        out.append(f"- `{a}` vs `{b}`, {where}: {rs[0]['reason']}.")
    return out


def cross_labels(rows: Sequence[Mapping]) -> Callable[[Mapping], tuple[str, str, str]]:
    """The ``labels`` function of :func:`lth_jax.report.findings.paired_bullets` for these rows."""
    names = {}
    for r in rows:
        for side in ("a", "b"):
            if f"{side}_workdir" in r:
                names[r[side]] = run_label(r[f"{side}_workdir"], r[f"{side}_arm"])

    def labels(r: Mapping) -> tuple[str, str, str]:
        a, b = names.get(r["a"], arm_label(r["a"])), names.get(r["b"], arm_label(r["b"]))
        return f"{a} vs {b}, {METRIC_NAMES[r['metric']]}", a, b

    return labels


def cross_bullets(rows: Sequence[Mapping], metrics: Sequence[str] | None = None) -> list[str]:
    """The Findings bullets of cross-workdir ``rows`` (all metrics, or those named)."""
    found = paired_findings(rows)
    if metrics is not None:
        found = [f for f in found if f["metric"] in metrics]
    return paired_bullets(found, cross_labels(rows), where_density)


ACROSS_NOTE = (
    "Across workdirs, paired by trial: trial t of every workdir has the same seed, so the "
    "same initialization and data order, and round 0 is the same dense network. Each row "
    "takes a - b trial by trial, a a run (`<workdir>: <arm>`) of a later workdir and b one "
    "of an earlier workdir, at the same round, over the trials present and ok in both; a "
    "round is compared only where every shared trial has the same density (and the same "
    "per-layer densities, where recorded) in both, and two workdirs only where their "
    "config.json agree on seed, dataset and model. Δ, 95% CI and `a wins` as in the "
    "paired comparisons within a workdir."
)


def across_report(
    workdirs: Sequence[tuple[str, Sequence[Mapping], Mapping | None]],
) -> tuple[list[str], dict[str, Any]]:
    """``(markdown lines, summary.json's across_workdirs)`` of several workdirs.

    The section: a heading, :data:`ACROSS_NOTE`, the round-0 check, the
    Findings (the paired rule over the cross-workdir rows), the runs not
    compared (when some are), and the paired table.
    """
    rows, refused = cross_pairs(workdirs)
    zero = round0_agreement(workdirs)
    lines = ["## Across workdirs (paired by trial)", "", ACROSS_NOTE, ""]
    if zero:
        lines += [round0_sentence(zero), ""]
    lines += ["### Findings across workdirs", "", PAIRED_RULE, ""]
    lines += cross_bullets(rows) or ["- No paired comparison across workdirs."]
    lines.append("")
    if refused:
        lines += ["Not compared (their per-round densities or setups differ):", ""]
        lines += [*refused_lines(refused), ""]
    if rows:
        lines += ["### Paired comparisons across workdirs", "", format_paired(rows), ""]
    summary = {
        "note": ACROSS_NOTE,
        "round_0": zero,
        "paired": rows,
        "refused": refused,
        "findings": {
            "rule": PAIRED_RULE,
            "paired": [
                {k: v for k, v in f.items() if not k.startswith("_")} for f in paired_findings(rows)
            ],
        },
    }
    return lines, summary
