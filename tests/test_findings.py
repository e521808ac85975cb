"""Tests for lth_jax.report.findings: the rule, its ranges, its sentences and where they appear."""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import numpy as np
import pytest

from lth_jax.report import across, lottery, paired, regularizers, transfer
from lth_jax.report import findings as fd
from lth_jax.report.stats import t_quantile

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments", "results")


def _c(n, mean, lo, hi, wins, losses=None, ties=0):
    losses = n - wins - ties if losses is None else losses
    return {"n": n, "mean": mean, "ci_low": lo, "ci_high": hi, "wins": wins, "ties": ties} | {
        "losses": losses
    }


# ----------------------------------------------------------------------------- the rule


def test_min_wins_is_ceil_of_four_fifths():
    for n in range(0, 41):
        assert fd.min_wins(n) == math.ceil(Fraction(4, 5) * n)
    assert [fd.min_wins(n) for n in (2, 3, 5, 10)] == [2, 3, 4, 8]


def test_verdict_needs_both_the_ci_and_the_wins():
    assert fd.verdict(_c(5, 0.03, 0.001, 0.05, 4)) == fd.A_ABOVE
    assert fd.verdict(_c(5, 0.03, 0.001, 0.05, 5)) == fd.A_ABOVE
    assert fd.verdict(_c(5, 0.03, 0.001, 0.05, 3)) == fd.NO_CLEAR  # CI above 0, 3/5 wins
    assert fd.verdict(_c(5, 0.03, 0.0, 0.05, 5)) == fd.NO_CLEAR  # CI touching 0
    assert fd.verdict(_c(5, 0.03, -0.001, 0.05, 5)) == fd.NO_CLEAR  # 5/5 wins, CI across 0
    # Ties count as neither: 3 wins and 2 ties is not 4 wins.
    assert fd.verdict(_c(5, 0.01, 0.001, 0.02, 3, ties=2)) == fd.NO_CLEAR
    # b above a, symmetrically: a loses in at least ceil(0.8 n).
    assert fd.verdict(_c(5, -0.03, -0.05, -0.001, 1)) == fd.B_ABOVE
    assert fd.verdict(_c(5, -0.03, -0.05, -0.001, 0, losses=3, ties=2)) == fd.NO_CLEAR
    # Three pairs need 3 wins; one pair or none never gives a verdict.
    assert fd.verdict(_c(3, 0.03, 0.01, 0.05, 2)) == fd.NO_CLEAR
    assert fd.verdict(_c(3, 0.03, 0.01, 0.05, 3)) == fd.A_ABOVE
    assert fd.verdict(_c(1, 0.03, math.nan, math.nan, 1)) == fd.NO_CLEAR
    assert fd.verdict({"n": 0, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}) == (
        fd.NO_CLEAR
    )


def test_ranges_group_consecutive_points_of_one_verdict():
    up, flat, down = (
        _c(5, 0.04, 0.01, 0.07, 5),
        _c(5, 0.0, -0.02, 0.02, 3),
        _c(5, -0.05, -0.08, -0.02, 0),
    )
    cs = [flat, flat, up, _c(5, 0.02, 0.005, 0.04, 4), flat, down, down]
    pts = [{"round": k + 1, "density": 0.8 ** (k + 1), "c": c} for k, c in enumerate(cs)]
    rs = fd.ranges(pts)
    assert [(r["verdict"], r["first_round"], r["last_round"]) for r in rs] == [
        (fd.NO_CLEAR, 1, 2),
        (fd.A_ABOVE, 3, 4),
        (fd.NO_CLEAR, 5, 5),
        (fd.B_ABOVE, 6, 7),
    ]
    r = rs[1]
    assert (r["mean_diff_min"], r["mean_diff_max"], r["wins_min"], r["n_min"]) == (0.02, 0.04, 4, 5)
    assert r["density_first"] == 0.8**3 and r["density_last"] == 0.8**4
    assert rs[3]["wins_min"] == 5  # b won every trial
    assert rs[0]["wins_min"] is None


def test_a_missing_point_ends_a_range():
    """A round not compared (e.g. refused across workdirs) splits a range of one verdict."""
    up = _c(5, 0.04, 0.01, 0.07, 5)
    pts = [{"round": k, "density": 0.8**k, "c": up} for k in (1, 2, 4, 5)]
    assert [(r["first_round"], r["last_round"]) for r in fd.ranges(pts)] == [(1, 2), (4, 5)]
    (b,) = fd.paired_bullets(
        [{"a": "x", "b": "y", "metric": "final_test_accuracy", **r} for r in fd.ranges(pts)],
        fd.lottery_labels,
        fd.where_density,
    )
    assert "from 80% to 64% and from 41% to 32.8% of the weights" in b


# ----------------------------------------------------------------------------- sentences


def _lottery_records(trials=5):
    """Rounds 0-6; the ticket beats reinit by 5 points from round 4 on, nothing before."""
    rng = np.random.default_rng(1)
    recs = []
    for t in range(trials):
        recs.append({"round": 0, "arm": "dense", "trial": t, "density": 1.0} | _acc(0.6, rng))
        for rnd in range(1, 7):
            d = 0.8**rnd
            gap = 0.05 if rnd >= 4 else 0.0
            for arm, base in (("ticket", 0.7 + gap), ("reinit", 0.7)):
                recs.append({"round": rnd, "arm": arm, "trial": t, "density": d} | _acc(base, rng))
    return recs


def _acc(base, rng):
    a = float(base + rng.uniform(-0.005, 0.005))
    return {"final_test_accuracy": a, "test_accuracy_at_best_val": a, "best_val_step": 100}


def test_bullets_state_the_ranges_and_the_differences():
    recs = _lottery_records()
    found = fd.paired_findings(paired.lottery_pairs(recs))
    bullets = fd.paired_bullets(found, fd.lottery_labels, fd.where_density)
    first = bullets[0]
    assert first.startswith("- **ticket vs random re-init, final test accuracy**: ")
    assert "ticket above random re-init in 5/5 trials from 41% to 26.2% of the weights" in first
    assert first.endswith("points); no clear difference elsewhere.")
    tr = next(r for r in found if r["verdict"] == fd.A_ABOVE and r["b"] == "reinit")
    lo, hi = f"{100 * tr['mean_diff_min']:+.1f}", f"{100 * tr['mean_diff_max']:+.1f}"
    assert f"(mean paired difference {lo} to {hi} points)" in first
    # One bullet per pair and metric: 3 pairs (ticket-reinit, ticket-dense, reinit-dense) x 2.
    assert len(bullets) == 6
    assert sum(b.count("**") == 2 for b in bullets) == 6
    reinit_dense = next(b for b in bullets if b.startswith("- **random re-init vs dense, final"))
    assert "random re-init above dense in 5/5 trials from 80% to 26.2% of the weights" in (
        reinit_dense
    )


def test_bullets_for_b_above_a_and_no_difference_anywhere():
    found = [
        {"a": "ticket", "b": "reinit", "metric": "final_test_accuracy"} | r
        for r in fd.ranges(
            [
                {"round": 1, "density": 0.8, "c": _c(5, -0.031, -0.05, -0.01, 1)},
                {"round": 2, "density": 0.64, "c": _c(5, -0.012, -0.02, -0.004, 0)},
            ]
        )
    ]
    (b,) = fd.paired_bullets(found, fd.lottery_labels, fd.where_density)
    assert b == (
        "- **ticket vs random re-init, final test accuracy**: random re-init above ticket in "
        "4/5 or more trials from 80% to 64% of the weights (mean paired difference +1.2 to "
        "+3.1 points)."
    )
    flat = [
        {"a": "ticket", "b": "dense", "metric": "test_accuracy_at_best_val"} | r
        for r in fd.ranges([{"round": 1, "density": 0.8, "c": _c(3, 0.0, -0.1, 0.1, 2)}])
    ]
    (b,) = fd.paired_bullets(flat, fd.lottery_labels, fd.where_density)
    assert b.endswith("test accuracy at early stop**: no clear difference at any round (1 rounds).")


def test_where_density_joins_spans():
    assert fd.where_density([(0.044, 0.044)]) == "at 4.4% of the weights"
    assert fd.where_density([(0.262, 0.107), (0.028, 0.018)]) == (
        "from 26.2% to 10.7% and from 2.8% to 1.8% of the weights"
    )
    where = fd.where_examples([(15, 151), (1507, 1507)])
    assert where == "with 15 to 151 and 1,507 target examples"


# ----------------------------------------------------------------------------- barrier


def _barrier_records(values_by_round):
    recs = []
    for rnd, values in enumerate(values_by_round):
        for t, b in enumerate(values):
            arm = "dense" if rnd == 0 else "ticket"
            recs.append({"round": rnd, "arm": arm, "trial": t, "density": 0.8**rnd, "barrier": b})
            recs[-1] |= {"final_test_accuracy": 0.6, "test_accuracy_at_best_val": 0.6}
    return recs


def test_barrier_rule_counts_trials_over_two_points():
    recs = _barrier_records(
        [
            [0.30, 0.35, 0.40],  # above
            [0.021, 0.05, 0.10],  # above: every trial exceeds 0.02
            [0.02, 0.01, 0.005],  # below: 0.02 is not above the threshold
            [0.03, 0.01, 0.005],  # 1/3 above, 2/3 at most: no clear verdict
        ]
    )
    rows = fd.barrier_rounds(recs)
    assert [(r["round"], r["above"], r["verdict"]) for r in rows] == [
        (0, 3, fd.ABOVE_T),
        (1, 3, fd.ABOVE_T),
        (2, 0, fd.BELOW_T),
        (3, 1, fd.UNCLEAR_T),
    ]
    assert rows[0]["mean"] == pytest.approx(0.35)
    half = t_quantile(0.975, 2) * np.std([0.30, 0.35, 0.40], ddof=1) / math.sqrt(3)
    assert rows[0]["ci_low"] == pytest.approx(0.35 - half)
    found = fd.barrier_findings(rows)
    assert [(r["verdict"], r["first_round"], r["last_round"]) for r in found] == [
        (fd.ABOVE_T, 0, 1),
        (fd.BELOW_T, 2, 2),
        (fd.UNCLEAR_T, 3, 3),
    ]
    (b,) = fd.barrier_bullets(found)
    assert b.startswith("- **error barrier, ticket (100%: dense)**: above the 2-point threshold")
    assert "from 100% to 80% of the weights: 3/3 trials exceed 2 points" in b
    assert "(mean barrier 5.7 to 35.0 points)" in b
    assert "below the 2-point threshold at 64% of the weights: 3/3 trials are at most 2" in b
    assert "no clear verdict at 51.2% of the weights" in b
    # No barrier at all: nothing.
    assert fd.barrier_rounds(_lottery_records()) == []
    assert "barrier" not in fd.lottery_findings(_lottery_records(), [])


# ----------------------------------------------------------------------------- in the reports


def _write(d, recs):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    return str(d)


def test_report_has_findings_section_and_summary_findings(tmp_path):
    d = _write(tmp_path / "lot", _lottery_records())
    lottery.write_report([d])
    md = open(os.path.join(d, "report.md")).read()
    section = md.split("## Findings\n\n")[1].split("\n\n| round")[0]
    assert section.startswith(fd.PAIRED_RULE)
    assert "ceil(0.8 n)" in section and "95% CI of the mean paired difference" in section
    assert md.index("## Findings") < md.index("| round |") < md.index("## Paired comparisons")
    summary = json.load(open(os.path.join(d, "summary.json")))
    (wd,) = summary["workdirs"]
    f = wd["findings"]
    assert f["rule"] == fd.PAIRED_RULE
    row = next(r for r in f["paired"] if r["verdict"] == fd.A_ABOVE and r["b"] == "reinit")
    assert set(row) == {
        "a",
        "b",
        "b_is_round_0",
        "metric",
        "verdict",
        "first_round",
        "last_round",
        "density_first",
        "density_last",
        "mean_diff_min",
        "mean_diff_max",
        "wins_min",
        "n_min",
    }
    assert (row["first_round"], row["last_round"], row["wins_min"]) == (4, 6, 5)
    assert row["b_is_round_0"] is False
    assert all(r["b_is_round_0"] for r in f["paired"] if r["b"] == "dense")


def test_instability_report_has_barrier_findings(tmp_path):
    d = _write(tmp_path / "inst", _barrier_records([[0.3, 0.35, 0.4], [0.01, 0.015, 0.005]]))
    lottery.write_report([d])
    md = open(os.path.join(d, "report.md")).read()
    assert fd.BARRIER_RULE in md and "Frankle et al. 2020" in md
    assert "- **error barrier, ticket (100%: dense)**: above the 2-point threshold at 100%" in md
    f = json.load(open(os.path.join(d, "summary.json")))["workdirs"][0]["findings"]
    assert f["barrier_threshold"] == 0.02
    assert [r["verdict"] for r in f["barrier"]] == [fd.ABOVE_T, fd.BELOW_T]
    assert [r["above"] for r in f["barrier_rounds"]] == [3, 0]


def test_transfer_findings(tmp_path):
    rng = np.random.default_rng(0)
    recs = []
    for i, n_train in enumerate((15, 150, 1500)):
        for t in range(5):
            for arm, acc in (("scratch", 0.5), ("pretrained", 0.55 if i < 2 else 0.5)):
                a = acc + float(rng.uniform(-0.005, 0.005))
                recs.append(
                    {"arm": arm, "size_index": i, "train_size": n_train, "n_train": n_train}
                    | {"trial": t, "status": "ok", "final_test_accuracy": a}
                    | {"test_accuracy_at_best_val": a, "phase": "finetune", "density": 1.0}
                )
    found = fd.effect_findings(transfer.effects(recs))
    assert [(r["verdict"], r["n_train_first"], r["n_train_last"]) for r in found] == [
        (fd.A_ABOVE, 15, 150),
        (fd.NO_CLEAR, 1500, 1500),
    ]
    (b,) = fd.effect_bullets(found)
    assert b.startswith(
        "- **pretraining (no dropout): pretrained vs scratch**: pretrained above scratch in 5/5 "
        "trials with 15 to 150 target examples (mean paired difference +"
    )
    assert b.endswith("points); no clear difference elsewhere.")
    d = _write(tmp_path / "tr", recs)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"kind": "transfer"}, f)
    transfer.write_report(d)
    md = open(os.path.join(d, "report.md")).read()
    assert "## Findings" in md and fd.paired_rule("target size") in md and b in md
    summary = json.load(open(os.path.join(d, "summary.json")))
    assert summary["findings"]["paired"][0]["first_size_index"] == 0


# ----------------------------------------------------------------------------- committed data


def test_committed_lottery_findings_by_hand():
    """The rule recomputed from metrics.jsonl with numpy, round by round, for one pair."""
    path = os.path.join(RESULTS, "mnist1d_lottery")
    recs = lottery.load_records(path)
    val = {(r["round"], r["arm"], r["trial"]): r["final_test_accuracy"] for r in recs}
    rounds = sorted({r["round"] for r in recs if r["round"] > 0})
    want = []
    for rnd in rounds:
        d = np.array([val[(rnd, "ticket", t)] - val[(rnd, "random_mask", t)] for t in range(5)])
        half = t_quantile(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
        if d.mean() - half > 0 and (d > 0).sum() >= 4:
            want.append("a")
        elif d.mean() + half < 0 and (d < 0).sum() >= 4:
            want.append("b")
        else:
            want.append("-")
    found = [
        r
        for r in fd.paired_findings(paired.lottery_pairs(recs))
        if (r["a"], r["b"], r["metric"]) == ("ticket", "random_mask", "final_test_accuracy")
    ]
    got = []
    for r in found:
        v = {fd.A_ABOVE: "a", fd.B_ABOVE: "b", fd.NO_CLEAR: "-"}[r["verdict"]]
        got += [v] * (r["last_round"] - r["first_round"] + 1)
    assert got == want
    assert "a" in want  # the committed data has a clear verdict for this pair


def test_committed_regularizer_findings_by_hand():
    """The regularizers' paired comparisons recomputed from results.json with numpy."""
    results = regularizers.load_results(os.path.join(RESULTS, "regularizers"))
    acc = {r["setting"]: np.array(r["final_test_accuracy"]) for r in results}
    name = {r["setting"]: r["regularizer"].replace(", ", " + ") for r in results}
    eff = {(e["a"], e["b"]): e for e in regularizers.effects(results)}
    for a, b in (("dropout", "none"), ("l1", "none"), ("dropout_maxnorm", "dropout")):
        d = acc[a] - acc[b]
        half = t_quantile(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        e = eff[(name[a], name[b])]
        assert e["mean"] == pytest.approx(d.mean()) and e["wins"] == (d > 0).sum()
        clear = (d.mean() - half > 0 and (d > 0).sum() >= 4) or (
            d.mean() + half < 0 and (d < 0).sum() >= 4
        )
        assert (fd.verdict(e) != fd.NO_CLEAR) == clear
    # Every setting against none, max-norm added to dropout, the best mean against the rest.
    assert sum(e["kind"] == "vs none" for e in eff.values()) == len(results) - 1
    assert [k for k, e in eff.items() if e["kind"] == "added"] == [
        ("dropout 0.2 + max-norm 3", "dropout 0.2")
    ]
    best = max(acc, key=lambda s: acc[s].mean())
    assert all(e["a"] == name[best] for e in eff.values() if e["kind"] == "best")
    bullets = regularizers.findings_bullets(results)
    zero = [r["regularizer"] for r in results if min(r["exact_zero_fraction"]) > 0]
    assert bullets[0].startswith(f"- **weights exactly 0**: only {zero[0]} (in 5/5 trials;")


def test_cross_workdir_bullets_name_the_runs():
    recs = _lottery_records()
    later = [
        {**r, "final_test_accuracy": r["final_test_accuracy"] + 0.03} if r["round"] else r
        for r in recs
        if r["arm"] != "reinit"
    ]
    rows, refused = across.cross_pairs([("init", recs, None), ("lr", later, None)])
    assert refused == []
    assert list(dict.fromkeys((r["a"], r["b"]) for r in rows)) == [
        ("lr: ticket", "init: ticket"),
        ("lr: ticket", "init: reinit"),
    ]
    bullets = across.cross_bullets(rows, metrics=["final_test_accuracy"])
    assert bullets[0] == (
        "- **lr: ticket vs init: ticket, final test accuracy**: lr: ticket above init: ticket in "
        "5/5 trials from 80% to 26.2% of the weights (mean paired difference +3.0 points)."
    )
    assert bullets[1].startswith("- **lr: ticket vs init: random re-init, final test accuracy**")


def _claim_row(rnd, density, lo, hi, wins, losses, n=5):
    c = {"n": n, "mean": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "wins": wins}
    c["losses"] = losses
    return {"round": rnd, "density": density, "a": "ticket", "b": "reinit", "a_round": rnd,
            "b_round": rnd, "final_test_accuracy": c, "test_accuracy_at_best_val": c}  # fmt: skip


def test_claim_verdicts_follow_the_rule():
    from lth_jax.report import claims

    claim = claims.Claim("P", "ticket", "reinit", "T", "R", "a_above", at_most=0.5)
    above = [_claim_row(1, 0.4, 0.01, 0.05, 5, 0), _claim_row(2, 0.2, 0.02, 0.06, 5, 0)]
    below = _claim_row(2, 0.2, -0.06, -0.02, 0, 5)
    unclear = _claim_row(2, 0.2, -0.01, 0.03, 3, 2)
    dense = _claim_row(0, 0.8, -0.09, -0.05, 0, 5)  # out of scope (density 0.8 > 0.5)
    old = claims.CLAIMS.get("x")
    claims.CLAIMS["x"] = (claim,)
    try:
        (line,) = claims.claim_lines("x", [dense, *above])
        assert line.startswith("- **agrees**: P.") and "T above R from 40% to 20%" in line
        (line,) = claims.claim_lines("x", [dense, above[0], unclear])
        assert line.startswith("- **partly**") and "no clear difference at the other" in line
        (line,) = claims.claim_lines("x", [above[0], below])
        assert line.startswith("- **disagrees**") and "R above T at 20%" in line
        (line,) = claims.claim_lines("x", [unclear])
        assert line.startswith("- **not shown**")
        claims.CLAIMS["x"] = (claim._replace(expect="a_not_below"),)
        (line,) = claims.claim_lines("x", [unclear])
        assert line.startswith("- **agrees**")
        # b - a rows are turned round: the same verdict from the other side
        flipped = {**below, "a": "reinit", "b": "ticket"}
        flipped["final_test_accuracy"] = above[1]["final_test_accuracy"]
        (line,) = claims.claim_lines("x", [flipped])
        assert line.startswith("- **disagrees**")
    finally:
        claims.CLAIMS.pop("x")
        if old is not None:
            claims.CLAIMS["x"] = old
