"""Findings: what the paired comparisons and the error barriers say, by one fixed rule.

Pure functions over the rows the reports already compute (no JAX, no runner).

**Paired rule.** For each pair ``(a, b)`` (the ticket against every other arm,
every arm against the same trial's dense network; a transfer report's
effects) and each metric, each point (a round, or a target size) gets a
verdict:

* ``a_above_b``: the 95% CI of the mean paired difference ``a - b`` lies above
  0 (``ci_low > 0``) **and** ``a`` wins in at least ``ceil(0.8 n)`` of the
  ``n`` paired trials;
* ``b_above_a``: symmetrically (``ci_high < 0`` and ``b`` wins, that is ``a``
  loses, in at least ``ceil(0.8 n)`` of them);
* ``no_clear_difference`` otherwise, and always with fewer than 2 pairs.

Ties count as neither a win nor a loss. There is no correction for the number
of comparisons. Consecutive points (in density order, or target-size order)
with the same verdict form one range (:func:`ranges`); a point missing (a round
not compared) ends a range.

**Barrier rule** (instability workdirs; the 2-point threshold of Frankle et
al. 2020, who call a network stable when its test-error barrier is under 2
percentage points). For each round (round 0: the dense network) and arm, over
the ok trials with a barrier: ``above_threshold`` when at least ``ceil(0.8
n)`` of the ``n`` trials exceed 2 points; ``below_threshold`` when at least
``ceil(0.8 n)`` of them are at most 2 points; ``no_clear_verdict`` otherwise
(and below 2 trials). The mean barrier and its 95% CI are reported with it.

**Transfer** (:func:`effect_findings`): the paired rule over the target sizes
of each effect of :mod:`lth_jax.report.transfer`, in size order.

:func:`paired_findings` and :func:`barrier_findings` give the machine-readable
ranges (``summary.json``'s ``findings``), :func:`findings_lines` the markdown
bullets of a report's Findings section.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lth_jax.report.stats import finite, is_failed, latest, mean_ci
from lth_jax.report.tables import arm_label, format_density

__all__ = [
    "A_ABOVE",
    "B_ABOVE",
    "NO_CLEAR",
    "ABOVE_T",
    "BELOW_T",
    "UNCLEAR_T",
    "WIN_FRACTION",
    "BARRIER_THRESHOLD",
    "PAIRED_RULE",
    "paired_rule",
    "BARRIER_RULE",
    "METRIC_NAMES",
    "min_wins",
    "verdict",
    "ranges",
    "paired_findings",
    "barrier_rounds",
    "barrier_findings",
    "lottery_findings",
    "paired_bullets",
    "lottery_labels",
    "barrier_bullets",
    "findings_lines",
    "where_density",
    "where_examples",
    "effect_findings",
    "effect_bullets",
    "effect_summary",
]

#: The share of paired trials the better arm must win (``ceil(0.8 n)``).
WIN_FRACTION = 0.8
#: The instability threshold of Frankle et al. 2020: a test-error barrier of 2 points.
BARRIER_THRESHOLD = 0.02

A_ABOVE, B_ABOVE, NO_CLEAR = "a_above_b", "b_above_a", "no_clear_difference"
ABOVE_T, BELOW_T, UNCLEAR_T = "above_threshold", "below_threshold", "no_clear_verdict"


def paired_rule(unit: str = "round") -> str:
    """The paired rule in one sentence, for a report's Findings section."""
    return (
        f"A {unit} counts as *A above B* when the 95% CI of the mean paired difference A - B "
        "lies above 0 and A wins in at least ceil(0.8 n) of the n paired trials (B above A "
        f"symmetrically), otherwise *no clear difference*; consecutive {unit}s with the same "
        "verdict are grouped, differences are in percentage points (points), and there is no "
        "correction for the number of comparisons."
    )


PAIRED_RULE = paired_rule()
BARRIER_RULE = (
    "Error barrier: a round is *above the 2-point threshold* (the one of Frankle et al. "
    "2020, who call a network stable under it) when at least ceil(0.8 n) of its n trials "
    "exceed 2 points, *below* it when at least ceil(0.8 n) are at most 2 points, otherwise "
    "*no clear verdict*."
)

#: Readable names of the compared metrics, for sentences.
METRIC_NAMES = {
    "final_test_accuracy": "final test accuracy",
    "test_accuracy_at_best_val": "test accuracy at early stop",
}


def min_wins(n: int) -> int:
    """``ceil(0.8 n)``, in integers: the wins a clear verdict needs out of ``n`` pairs."""
    return -(-4 * int(n) // 5)


def verdict(c: Mapping) -> str:
    """The verdict of one comparison (:func:`lth_jax.report.paired.compare`'s dict)."""
    n = c.get("n") or 0
    lo, hi = finite(c.get("ci_low")), finite(c.get("ci_high"))
    if n < 2 or lo is None or hi is None:
        return NO_CLEAR
    if lo > 0 and c["wins"] >= min_wins(n):
        return A_ABOVE
    if hi < 0 and c["losses"] >= min_wins(n):
        return B_ABOVE
    return NO_CLEAR


def _winner_wins(c: Mapping, v: str) -> int | None:
    return c["wins"] if v == A_ABOVE else c["losses"] if v == B_ABOVE else None


def _group(points: Iterable[Mapping], at: str, pos: str, value: str, side: str) -> list[dict]:
    """Consecutive ``points`` of one ``verdict`` as one range (a gap in ``at`` ends a range).

    A point: ``verdict``, ``at``, ``pos``, ``value`` (a number or ``None``),
    ``side`` (the trials on the verdict's side, ``None`` without one) and ``n``.
    A range: ``verdict``, ``first_<at>``, ``last_<at>``, ``<pos>_first``,
    ``<pos>_last``, ``<value>_min``, ``<value>_max``, ``<side>_min``,
    ``n_min`` and ``_ratios`` (each point's ``(side, n)``, for sentences).
    """
    out: list[dict] = []
    for p in points:
        v, x, k, n = p["verdict"], p["value"], p["side"], p["n"]
        gap = bool(out) and isinstance(p[at], int) and p[at] != out[-1][f"last_{at}"] + 1
        if not out or out[-1]["verdict"] != v or gap:
            out.append({"verdict": v, f"first_{at}": p[at], f"last_{at}": p[at]})
            out[-1].update({f"{pos}_first": p[pos], f"{pos}_last": p[pos]})
            out[-1].update({f"{value}_min": x, f"{value}_max": x, f"{side}_min": k, "n_min": n})
            out[-1]["_ratios"] = []
        r = out[-1]
        r[f"last_{at}"], r[f"{pos}_last"] = p[at], p[pos]
        if x is not None:
            lo, hi = r[f"{value}_min"], r[f"{value}_max"]
            r[f"{value}_min"] = x if lo is None else min(lo, x)
            r[f"{value}_max"] = x if hi is None else max(hi, x)
        r[f"{side}_min"] = None if k is None else min(r[f"{side}_min"], k)
        r["n_min"] = min(r["n_min"], n)
        r["_ratios"].append((k, n))
    return out


def ranges(points: Sequence[Mapping], at: str = "round", pos: str = "density") -> list[dict]:
    """Group ``points`` (in order) into ranges of one verdict of the paired rule.

    Each point: ``{at: ..., pos: ..., "c": compare-dict}``. Each range:
    ``verdict``, ``first_<at>``, ``last_<at>``, ``<pos>_first``,
    ``<pos>_last``, ``mean_diff_min``/``mean_diff_max`` (of ``a - b``, as
    fractions), ``wins_min`` (the fewest trials the better arm won; ``None``
    without a clear verdict) and ``n_min`` (the fewest pairs).
    """
    pts = []
    for p in points:
        c, v = p["c"], verdict(p["c"])
        k = c["wins"] if v == A_ABOVE else c["losses"] if v == B_ABOVE else None
        pts.append({**p, "verdict": v, "value": finite(c.get("mean")), "side": k})
        pts[-1]["n"] = c.get("n") or 0
    return _group(pts, at, pos, "mean_diff", "wins")


def _public(rows: Iterable[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


# ----------------------------------------------------------------------------- lottery


def _pair_groups(pairs: Sequence[Mapping]) -> dict[tuple, list[Mapping]]:
    """The paired rows by ``(a, b, whether b is of a's round)``, rows in round order."""
    groups: dict[tuple, list[Mapping]] = {}
    for r in sorted(pairs, key=lambda r: r["round"]):
        groups.setdefault((r["a"], r["b"], r["b_round"] == r["a_round"]), []).append(r)
    return groups


def paired_findings(pairs: Sequence[Mapping]) -> list[dict]:
    """The ranges of every pair and metric of :func:`lth_jax.report.paired.lottery_pairs` rows.

    Rows ``{a, b, b_is_round_0, metric, verdict, first_round, last_round,
    density_first, density_last, mean_diff_min, mean_diff_max, wins_min,
    n_min}`` (``b_is_round_0``: ``b`` is the dense reference), by metric, then pair,
    then density.
    """
    out = []
    for metric in METRIC_NAMES:
        for (a, b, same), rows in _pair_groups(pairs).items():
            pts = [{"round": r["round"], "density": r["density"], "c": r[metric]} for r in rows]
            head = {"a": a, "b": b, "b_is_round_0": not same, "metric": metric}
            out += [{**head, **r} for r in ranges(pts)]
    return out


def barrier_rounds(records: Iterable[Mapping]) -> list[dict]:
    """Per round and arm, the barrier over the ok trials that report one.

    Rows ``{arm, round, density, n, mean, ci_low, ci_high, above, verdict}``
    (``above``: trials whose barrier exceeds :data:`BARRIER_THRESHOLD`), by
    arm (first appearance past round 0; round 0 first), then round. Empty
    when no record has a barrier.
    """
    kept = [r for r in latest(records) if not is_failed(r) and r.get("round") is not None]
    groups: dict[tuple[int, str], list[tuple[float, float | None]]] = {}
    for r in kept:
        b = finite(r.get("barrier"))
        if b is not None:
            groups.setdefault((int(r["round"]), r["arm"]), []).append((b, finite(r.get("density"))))
    out = []
    for rnd, arm in sorted(groups, key=lambda k: k[0]):
        vals = [b for b, _ in groups[(rnd, arm)]]
        dens = [d for _, d in groups[(rnd, arm)] if d is not None]
        st = mean_ci(vals)
        above = sum(v > BARRIER_THRESHOLD for v in vals)
        row = {
            "arm": arm,
            "round": rnd,
            "density": sum(dens) / len(dens) if dens else math.nan,
            "n": st["n"],
            "mean": st["mean"],
            "ci_low": st["ci_low"],
            "ci_high": st["ci_high"],
            "above": above,
        }
        row["verdict"] = _barrier_verdict(row)
        out.append(row)
    return out


def _barrier_verdict(row: Mapping) -> str:
    n = row["n"]
    if n < 2:
        return UNCLEAR_T
    if row["above"] >= min_wins(n):
        return ABOVE_T
    if n - row["above"] >= min_wins(n):
        return BELOW_T
    return UNCLEAR_T


def _barrier_lines(rows: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """Each arm's rounds past 0, preceded by the round-0 rows (the dense network)."""
    zero = [r for r in rows if r["round"] == 0]
    lines: dict[str, list[Mapping]] = {}
    for r in rows:
        if r["round"] > 0:
            lines.setdefault(r["arm"], list(zero)).append(r)
    if not lines and zero:
        lines = {r["arm"]: [r] for r in zero}
    return lines


def barrier_findings(rows: Sequence[Mapping]) -> list[dict]:
    """Ranges of one barrier verdict along each arm's line (:func:`barrier_rounds` rows).

    Rows ``{arm, verdict, first_round, last_round, density_first,
    density_last, mean_min, mean_max, count_min, n_min}``: ``count_min`` is
    the fewest trials on the verdict's side (exceeding the threshold, or at
    most it; ``None`` without a clear verdict).
    """
    out = []
    for arm, line in _barrier_lines(rows).items():
        pts = [
            {**r, "value": r["mean"], "side": {ABOVE_T: r["above"], BELOW_T: r["n"] - r["above"]}}
            for r in line
        ]
        for p in pts:
            p["side"] = p["side"].get(p["verdict"])
        out += [{"arm": arm, **r} for r in _group(pts, "round", "density", "mean", "count")]
    return out


def lottery_findings(records: Iterable[Mapping], pairs: Sequence[Mapping]) -> dict[str, Any]:
    """``summary.json``'s ``findings`` of a lottery or instability workdir.

    ``{"rule", "paired": paired_findings(pairs)}``, plus ``barrier_rule``,
    ``barrier_threshold``, ``barrier_rounds`` and ``barrier`` (the ranges)
    when some record has a barrier.
    """
    out: dict[str, Any] = {"rule": PAIRED_RULE, "paired": _public(paired_findings(pairs))}
    rounds = barrier_rounds(records)
    if rounds:
        out["barrier_rule"] = BARRIER_RULE
        out["barrier_threshold"] = BARRIER_THRESHOLD
        out["barrier_rounds"] = rounds
        out["barrier"] = _public(barrier_findings(rounds))
    return out


# ----------------------------------------------------------------------------- sentences


def _join(parts: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def where_density(spans: Sequence[tuple[float, float]]) -> str:
    """``"at 4.4% and from 2.8% to 1.8% of the weights"``: density spans ``(first, last)``."""
    parts = []
    for first, last in spans:
        a, b = format_density(first), format_density(last)
        parts.append(f"at {a}%" if a == b else f"from {a}% to {b}%")
    return _join(parts) + " of the weights"


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def _span(lo: float, hi: float, fmt: Callable[[float], str]) -> str:
    a, b = fmt(lo), fmt(hi)
    return a if a == b else f"{a} to {b}"


def _count(ratios: Sequence[tuple[int | None, int]]) -> str:
    """``"5/5"`` when every point has the same count, else the lowest share ``"4/5 or more"``."""
    k, n = min(ratios, key=lambda kn: (kn[0] or 0) / max(kn[1], 1))
    return f"{k}/{n}" if len(set(ratios)) == 1 else f"{k}/{n} or more"


def _by_verdict(rs: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """The ranges of each verdict, verdicts in order of first appearance."""
    out: dict[str, list[Mapping]] = {}
    for r in rs:
        out.setdefault(r["verdict"], []).append(r)
    return out


def _clear_part(rs: Sequence[Mapping], a: str, b: str, where: Callable, pos: str) -> str:
    """One verdict's clause over all its ranges ``rs`` of one pair and metric."""
    sign = 1 if rs[0]["verdict"] == A_ABOVE else -1
    win, lose = (a, b) if sign > 0 else (b, a)
    diffs = [sign * r[k] for r in rs for k in ("mean_diff_min", "mean_diff_max")]
    ratios = [kn for r in rs for kn in r["_ratios"]]
    spans = [(r[f"{pos}_first"], r[f"{pos}_last"]) for r in rs]
    return (
        f"{win} above {lose} in {_count(ratios)} trials {where(spans)} "
        f"(mean paired difference {_span(min(diffs), max(diffs), _points)} points)"
    )


def paired_bullets(
    found: Sequence[Mapping],
    labels: Callable[[Mapping], tuple[str, str, str]],
    where: Callable[[Sequence[tuple]], str],
    pos: str = "density",
    unit: str = "round",
) -> list[str]:
    """One markdown bullet per pair and metric of ``found`` (ranges, with ``_ratios``).

    ``labels(range) -> (title, a, b)`` names the bullet and the two arms;
    ``where([(first, last), ...])`` says where ranges lie. One clause per
    verdict, over all the ranges of that verdict.
    """
    groups: dict[tuple, list[Mapping]] = {}
    for r in found:
        groups.setdefault((r["metric"], r["a"], r["b"], r.get("b_is_round_0")), []).append(r)
    out = []
    for rs in groups.values():
        title, a, b = labels(rs[0])
        verdicts = _by_verdict(rs)
        parts = [_clear_part(v, a, b, where, pos) for k, v in verdicts.items() if k != NO_CLEAR]
        if not parts:
            n = sum(len(r["_ratios"]) for r in rs)
            parts.append(f"no clear difference at any {unit} ({n} {unit}s)")
        elif NO_CLEAR in verdicts:
            parts.append("no clear difference elsewhere")
        out.append(f"- **{title}**: " + "; ".join(parts) + ".")
    return out


def lottery_labels(r: Mapping) -> tuple[str, str, str]:
    """``(bullet title, a, b)`` of a lottery range: readable arm names and the metric."""
    a, b = arm_label(r["a"]), arm_label(r["b"])
    return f"{a} vs {b}, {METRIC_NAMES[r['metric']]}", a, b


def barrier_bullets(found: Sequence[Mapping]) -> list[str]:
    """One markdown bullet per arm line of :func:`barrier_findings` ranges."""
    groups: dict[str, list[Mapping]] = {}
    for r in found:
        groups.setdefault(r["arm"], []).append(r)
    out = []
    for arm, rs in groups.items():
        parts = []
        for v, vs in _by_verdict(rs).items():
            where = where_density([(r["density_first"], r["density_last"]) for r in vs])
            means = [r[k] for r in vs for k in ("mean_min", "mean_max")]
            mean = _span(min(means), max(means), lambda x: f"{100 * x:.1f}")
            if v == UNCLEAR_T:
                parts.append(f"no clear verdict {where} (mean barrier {mean} points)")
                continue
            side, verb = ("above", "exceed") if v == ABOVE_T else ("below", "are at most")
            ratios = [kn for r in vs for kn in r["_ratios"]]
            parts.append(
                f"{side} the 2-point threshold {where}: {_count(ratios)} trials {verb} "
                f"2 points (mean barrier {mean} points)"
            )
        first = rs[0]["first_round"] == 0
        title = f"error barrier, {arm_label(arm)}" + (" (100%: dense)" if first else "")
        out.append(f"- **{title}**: " + "; ".join(parts) + ".")
    return out


def findings_lines(records: Iterable[Mapping], pairs: Sequence[Mapping]) -> list[str]:
    """The body of a lottery or instability report's Findings section (markdown lines)."""
    records = list(records)
    lines = [PAIRED_RULE]
    rounds = barrier_rounds(records)
    if rounds:
        lines += ["", BARRIER_RULE, ""]
        lines += barrier_bullets(barrier_findings(rounds))
    lines.append("")
    bullets = paired_bullets(paired_findings(pairs), lottery_labels, where_density)
    lines += bullets or ["- No paired comparison (a single arm, or no dense round)."]
    return lines


# ----------------------------------------------------------------------------- transfer


def effect_findings(effects: Sequence[Mapping]) -> list[dict]:
    """Ranges of the paired rule over the target sizes of each transfer effect.

    ``effects``: rows of :func:`lth_jax.report.transfer.effects` (final test
    accuracy). Rows ``{effect, a, b, metric, verdict, first_size_index,
    last_size_index, n_train_first, n_train_last, mean_diff_min,
    mean_diff_max, wins_min, n_min}``, effects in order of appearance.
    """
    groups: dict[tuple, list[Mapping]] = {}
    for e in sorted(effects, key=lambda e: e["size_index"]):
        groups.setdefault((e["effect"], e["a"], e["b"]), []).append(e)
    out = []
    for (effect, a, b), rows in groups.items():
        pts = [{"size_index": e["size_index"], "n_train": e["n_train"], "c": e} for e in rows]
        head = {"effect": effect, "a": a, "b": b, "metric": "final_test_accuracy"}
        out += [{**head, **r} for r in ranges(pts, at="size_index", pos="n_train")]
    return out


def where_examples(spans: Sequence[tuple]) -> str:
    """``"with 15 to 151 and 1,507 target examples"``: spans of ``n_train``."""
    f = lambda n: f"{n:,}" if isinstance(n, int) else str(n)
    parts = [f(a) if a == b else f"{f(a)} to {f(b)}" for a, b in spans]
    return "with " + _join(parts) + " target examples"


def effect_bullets(found: Sequence[Mapping]) -> list[str]:
    """One markdown bullet per effect of :func:`effect_findings` ranges."""

    def labels(r):
        a, b = arm_label(r["a"]), arm_label(r["b"])
        return f"{r['effect']}: {a} vs {b}", a, b

    tagged = [{**r, "metric": (r["effect"], r["metric"])} for r in found]
    return paired_bullets(tagged, labels, where_examples, pos="n_train", unit="target size")


def effect_summary(effects: Sequence[Mapping]) -> dict[str, Any]:
    """``summary.json``'s ``findings`` of a transfer workdir: the rule and the ranges."""
    return {"rule": paired_rule("target size"), "paired": _public(effect_findings(effects))}
