"""Paired comparisons between arms: per-trial differences, their mean, a CI and win counts.

The arms of one trial share the data order and the dropout keys (and, past
round 0, the dense run they derive from), so two arms are compared **paired**:
trial by trial, ``a - b``, over the trials present in both.

Rules, exactly:

* **Pairs.** A trial enters a comparison when it has a record in both arms
  and neither record failed (:func:`lth_jax.report.stats.is_failed`): a trial
  that failed in one arm is dropped from both sides. A trial whose record
  lacks the metric (or holds a non-finite value) in either arm is dropped from
  that metric only. Records without a ``trial`` are never paired.
* **Mean and CI** (:func:`lth_jax.report.stats.mean_ci`). The mean of the
  differences and, for ``n >= 2`` pairs, its 95% confidence interval ``mean ±
  t(0.975, n - 1) * std / sqrt(n)`` (sample std of the differences); with one
  pair, only ``n`` and the mean; with none, nothing.
* **Wins.** ``wins``: pairs with ``a > b``; ``ties``: ``a == b`` (accuracies
  on a finite test set tie often), counted neither as a win nor as a loss;
  ``losses``: ``a < b``. ``wins + ties + losses == n``.

:func:`compare` does one comparison; :func:`lottery_pairs` lists those of a
lottery or instability workdir, :func:`format_paired` writes them as a table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lth_jax.report.stats import finite, is_failed, latest, mean_ci
from lth_jax.report.tables import format_density, markdown_table

__all__ = [
    "PAIRED_METRICS",
    "by_trial",
    "paired_values",
    "win_counts",
    "compare",
    "lottery_pairs",
    "format_paired",
    "PAIRED_NOTE",
    "MORE_ARMS",
    "arms_note",
]

#: The metrics compared, with their column titles.
PAIRED_METRICS = {
    "final_test_accuracy": "final test acc",
    "test_accuracy_at_best_val": "test acc at early stop",
}


def by_trial(records: Iterable[Mapping]) -> dict[Any, Mapping]:
    """``{trial: record}`` of the records that have a trial (the later of duplicates wins)."""
    return {r["trial"]: r for r in records if r.get("trial") is not None}


def paired_values(
    a: Mapping[Any, Mapping], b: Mapping[Any, Mapping], metric: str
) -> tuple[list, list[float], list[float]]:
    """``(trials, values of a, values of b)`` over the trials that pair for ``metric``.

    ``a`` and ``b`` map a trial to its record (:func:`by_trial`). A trial pairs
    when both arms have it, neither record failed and both hold a finite
    ``metric``; trials are sorted.
    """
    trials, va, vb = [], [], []
    for t in sorted(set(a) & set(b)):
        ra, rb = a[t], b[t]
        if is_failed(ra) or is_failed(rb):
            continue
        x, y = finite(ra.get(metric)), finite(rb.get(metric))
        if x is None or y is None:
            continue
        trials.append(t)
        va.append(x)
        vb.append(y)
    return trials, va, vb


def win_counts(diffs: Sequence[float]) -> dict[str, int]:
    """``wins`` (``d > 0``), ``ties`` (``d == 0``) and ``losses`` (``d < 0``) of ``a - b``."""
    return {
        "wins": sum(d > 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
    }


def compare(a: Mapping[Any, Mapping], b: Mapping[Any, Mapping], metric: str) -> dict[str, Any]:
    """One paired comparison of ``metric``, ``a - b``, over the trials that pair.

    Returns ``{trials, n, mean, std, ci_low, ci_high, wins, ties, losses}``:
    the paired trials, their number, the mean and sample std of the
    differences, the 95% CI of the mean (``nan`` for fewer than 2 pairs; the
    mean and std ``nan`` for none) and the win counts (:func:`win_counts`).
    """
    trials, va, vb = paired_values(a, b, metric)
    diffs = [x - y for x, y in zip(va, vb)]
    return {"trials": trials, **mean_ci(diffs), **win_counts(diffs)}


def _dense_reference(kept: Sequence[Mapping]) -> str | None:
    """The round-0 arm every later arm is compared with: ``dense``, else the only one."""
    arms = list(dict.fromkeys(r["arm"] for r in kept if r["round"] == 0))
    if "dense" in arms:
        return "dense"
    return arms[0] if len(arms) == 1 else None


#: Arms named ``<method><suffix>`` are also compared with ``<method>`` of the same round.
SANITY_SUFFIXES = ("_shuffled", "_reinit")

#: Other arms compared head to head when both ran (Tanaka et al. 2020: SynFlow vs SNIP, GraSP).
PEER_PAIRS = (("synflow", "snip"), ("synflow", "grasp"))


def lottery_pairs(records: Iterable[Mapping], ticket: str = "ticket") -> list[dict[str, Any]]:
    """The paired comparisons of a lottery or instability workdir, round by round.

    For each round past 0, in order: ``ticket`` against every other arm of the
    round (in their order of appearance), every sanity-check arm
    ``<method>_shuffled`` / ``<method>_reinit`` against ``<method>`` (when both
    ran), the :data:`PEER_PAIRS` that ran, then every arm of the round against
    the round-0 (dense) record of the same trial: the round-0 arm ``dense``, or
    the only round-0 arm (no such comparisons when there are several and none
    is ``dense``). A later record for the same
    ``(round, arm, trial)`` replaces an earlier one.

    Each row: ``round``, ``density`` (mean over ``a``'s records), ``a``,
    ``a_round``, ``b``, ``b_round`` and, for each metric of
    :data:`PAIRED_METRICS`, the dict of :func:`compare` under the metric's name.
    """
    kept = [r for r in latest(records) if r.get("round") is not None]
    groups: dict[tuple[int, str], list[Mapping]] = {}
    for r in kept:
        groups.setdefault((int(r["round"]), r["arm"]), []).append(r)
    dense = _dense_reference(kept)
    rows = []
    for rnd in sorted({k[0] for k in groups if k[0] > 0}):
        arms = [arm for (r, arm) in groups if r == rnd]
        pairs = [((rnd, ticket), (rnd, b)) for b in arms if ticket in arms and b != ticket]
        pairs += [  # the sanity checks against their method (Frankle et al. 2021)
            ((rnd, a), (rnd, a.rsplit("_", 1)[0]))
            for a in arms
            if a.endswith(SANITY_SUFFIXES) and a.rsplit("_", 1)[0] in arms
        ]
        pairs += [((rnd, a), (rnd, b)) for a, b in PEER_PAIRS if a in arms and b in arms]
        if dense is not None:
            pairs += [((rnd, a), (0, dense)) for a in arms]
        for (ra, a), (rb, b) in pairs:
            dens = [d for d in (finite(r.get("density")) for r in groups[(ra, a)]) if d is not None]
            row: dict[str, Any] = {
                "round": rnd,
                "density": sum(dens) / len(dens) if dens else math.nan,
                "a": a,
                "a_round": ra,
                "b": b,
                "b_round": rb,
            }
            ta, tb = by_trial(groups[(ra, a)]), by_trial(groups[(rb, b)])
            for metric in PAIRED_METRICS:
                row[metric] = compare(ta, tb, metric)
            rows.append(row)
    return rows


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _cells(c: Mapping) -> list[str]:
    """Δ, CI and wins cells of one metric's comparison (percentage points)."""
    n = c["n"]
    if n == 0:
        return ["-", "-", "-"]
    ci = "-" if n < 2 else f"[{_pp(c['ci_low'])}, {_pp(c['ci_high'])}]"
    wins = f"{c['wins']}/{n}"
    if c["ties"]:
        wins += f" ({c['ties']} tied)"
    return [_pp(c["mean"]), ci, wins]


def format_paired(rows: Sequence[Mapping]) -> str:
    """Rows of :func:`lottery_pairs` as one markdown table (differences in percentage points).

    Columns: ``round | % weights | a | b | pairs``, then for each metric ``Δ
    (pp)``, ``95% CI (pp)`` and ``a wins`` (``k/n``, with ``(t tied)`` when some
    pairs tie). ``b`` reads ``<arm> (round 0)`` for the dense reference;
    ``pairs`` counts the trials ok in both arms.
    """
    header = ["round", "% weights", "a", "b", "pairs"]
    for title in PAIRED_METRICS.values():
        header += [f"Δ {title} (pp)", "95% CI (pp)", "a wins"]
    body = []
    for r in rows:
        first = r[next(iter(PAIRED_METRICS))]
        b = r["b"] if r["b_round"] == r["a_round"] else f"{r['b']} (round {r['b_round']})"
        cells = [str(r["round"]), format_density(r["density"]), str(r["a"]), b, str(first["n"])]
        for metric in PAIRED_METRICS:
            cells += _cells(r[metric])
        body.append(cells)
    right = [True, True, False, False, True] + [True, True, True] * len(PAIRED_METRICS)
    return markdown_table(header, body, right)


PAIRED_NOTE = (
    "Paired by trial: the arms of a trial share the data order and the dropout keys, so "
    "each row takes a - b trial by trial, over the trials present and ok in both arms "
    "(`pairs`; a trial that failed in either arm is dropped from both sides, one missing a "
    "metric from that metric only). Each round compares `ticket` with every other arm of "
    "the round, then every arm with the same trial's dense network (`dense (round 0)`). Δ: "
    "mean of the differences in percentage points; 95% CI: mean ± t(0.975, n-1) · s / √n, "
    "s the sample std of the differences (Student t over trials; left out below 2 pairs); "
    "no correction for the number of comparisons. `a wins`: trials where a > b, out of the "
    "pairs; ties (equal accuracies) count as neither a win nor a loss and are shown as "
    "`(t tied)`. Arms: `ticket` = the ticket (this round's mask, rewound weights), "
    "`reinit` = random re-init (the same mask, a fresh initialization), `random_mask` = "
    "random pruning (a random mask with the same per-layer counts, rewound weights), "
    "`one_shot` = one-shot pruning (the trained dense network pruned at once to the same "
    "per-layer counts, rewound weights), `dense` = the dense network."
)

#: The arms :data:`PAIRED_NOTE` does not name, as a report explains them (``lth_jax/arms.py``).
MORE_ARMS = {
    "gmp": "gradual magnitude pruning (every weight alive at the start, pruned while it "
    "trains to the same per-layer counts, rewound weights)",
    "snip": "SNIP (the rewound weights pruned at once to the same per-layer counts, highest "
    "|g w| kept)",
    "grasp": "GraSP (the same, highest w Hg kept)",
    "synflow": "SynFlow (the same, iteratively, by the data-free synaptic-flow score)",
}


def arms_note(arms) -> str:
    """A sentence on the arms among ``arms`` that :data:`PAIRED_NOTE` does not name; ``""``: none.

    Example:
      >>> arms_note(["ticket", "reinit"])
      ''
      >>> print(arms_note(["ticket", "grasp_reinit", "grasp_reinit"]))
       More arms: `grasp_reinit` = the grasp mask with a fresh initialization.
    """
    parts = []
    for a in dict.fromkeys(arms):  # first-seen order, once each
        base, _, variant = a.rpartition("_")
        if a in MORE_ARMS:
            parts.append(f"`{a}` = {MORE_ARMS[a]}")
        elif base in MORE_ARMS and variant == "shuffled":
            parts.append(f"`{a}` = the {base} mask shuffled at random within each layer")
        elif base in MORE_ARMS and variant == "reinit":
            parts.append(f"`{a}` = the {base} mask with a fresh initialization")
    return f" More arms: {', '.join(parts)}." if parts else ""
