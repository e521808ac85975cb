"""Tests for lth_jax.report: reading metrics.jsonl, summaries, tables and the report files."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from lth_jax import report
from lth_jax.report import files, tables

ARMS = ("ticket", "reinit", "random_mask")
ROUNDS = 5
TRIALS = 3
RATE = 0.2


def _density(rnd: int) -> float:
    return (1 - RATE) ** rnd


def _records(seed: int = 0, barrier: bool = True) -> list[dict]:
    """Records for ROUNDS rounds x ARMS x TRIALS; round 0 only has the ticket arm."""
    rng = np.random.default_rng(seed)
    recs = []
    for rnd in range(ROUNDS):
        for arm in ARMS:
            if rnd == 0 and arm != "ticket":
                continue
            base = {"ticket": 0.97, "reinit": 0.95, "random_mask": 0.94}[arm] - 0.004 * rnd
            for trial in range(TRIALS):
                rec = {
                    "round": rnd,
                    "arm": arm,
                    "trial": trial,
                    "density": _density(rnd),
                    "final_test_accuracy": float(base + rng.uniform(-0.01, 0.01)),
                    "best_val_step": int(rng.integers(1000, 5000)),
                    "test_accuracy_at_best_val": float(base + 0.002 + rng.uniform(-0.01, 0.01)),
                    "final_test_loss": float(rng.uniform(0.05, 0.2)),
                    "eval_steps": [0, 1000, 2000],
                    "val_loss_curve": [2.3, 0.3, 0.2],
                    "test_accuracy_curve": [0.1, base + 0.01, base],
                    "status": "ok",
                    "wall_time_s": 1.5,
                }
                if barrier:
                    rec["barrier"] = float(rng.uniform(0, 0.05)) if arm == "ticket" else None
                recs.append(rec)
    return recs


def _write(workdir, records, tail: str | None = None, config: dict | None = None) -> str:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        if tail is not None:
            f.write(tail)
    if config is not None:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config, f)
    return str(workdir)


def _config(**overrides) -> dict:
    """A config.json as ``lth-jax run`` writes it, with dotted-key overrides."""
    from lth_jax import config as config_lib
    from lth_jax.workdir import config_to_json

    c = config_lib.default_config()
    from lth_jax.checks import set_value

    for key, value in overrides.items():
        set_value(c, key, value)
    return config_to_json(c)


def _failed(rnd=2, arm="reinit", trial=1) -> dict:
    return {
        "round": rnd,
        "arm": arm,
        "trial": trial,
        "density": _density(rnd),
        "final_test_accuracy": float("nan"),
        "best_val_step": 0,
        "test_accuracy_at_best_val": float("nan"),
        "status": "nan",
    }


@pytest.fixture
def workdir(tmp_path):
    recs = _records()
    # Replace (round 2, reinit, trial 1) by a failed record.
    recs = [r for r in recs if (r["round"], r["arm"], r["trial"]) != (2, "reinit", 1)]
    recs.append(_failed())
    config = _config(
        **{
            "model.name": "lenet300_100",
            "dataset.name": "mnist",
            "train.steps": 5000,
            "imp.rounds": ROUNDS - 1,
            "imp.prune_rate": RATE,
            "num_trials": TRIALS,
        }
    )
    tail = '{"round": 4, "arm": "ticket", "trial": 3, "dens'  # a truncated last line
    return _write(tmp_path / "exp", recs, tail=tail, config=config)


def test_load_ignores_truncated_last_line(workdir):
    recs = report.load_records(workdir)
    assert len(recs) == TRIALS + (ROUNDS - 1) * len(ARMS) * TRIALS
    assert all(r["trial"] < TRIALS for r in recs)


def test_load_raises_on_malformed_middle_line(tmp_path):
    recs = _records()
    d = tmp_path / "bad"
    os.makedirs(d)
    lines = [json.dumps(r) for r in recs]
    lines.insert(3, '{"round": 0, "arm": ')
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:4: malformed"):
        report.load_records(d)


def test_load_blank_lines_and_trailing_blank_after_truncation(tmp_path):
    recs = _records()[:4]
    d = _write(tmp_path / "x", recs, tail='\n{"round": 1, "arm"\n\n')
    assert len(report.load_records(d)) == 4


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="no such experiment directory: .*nope"):
        report.load_records(tmp_path / "nope")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no metrics.jsonl.*empty"):
        report.load_records(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no metrics records"):
        report.load_records(tmp_path / "empty")


def test_summarize_matches_numpy(workdir):
    recs = report.load_records(workdir)
    rows = report.summarize(recs)
    # Sorted by round then first appearance of the arm.
    assert [(r["round"], r["arm"]) for r in rows] == [(0, "ticket")] + [
        (rnd, arm) for rnd in range(1, ROUNDS) for arm in ARMS
    ]
    for row in rows:
        group = [r for r in recs if r["round"] == row["round"] and r["arm"] == row["arm"]]
        ok = [r for r in group if r["status"] == "ok"]
        assert row["n"] == len(ok)
        assert row["n_failed"] == len(group) - len(ok)
        assert row["density"] == pytest.approx(_density(row["round"]))
        for key in ("final_test_accuracy", "test_accuracy_at_best_val", "best_val_step"):
            a = np.array([r[key] for r in ok], dtype=np.float64)
            assert row[f"{key}_mean"] == np.mean(a)
            assert row[f"{key}_std"] == np.std(a, ddof=1)
            assert row[f"{key}_min"] == np.min(a)
            assert row[f"{key}_max"] == np.max(a)
        b = [r["barrier"] for r in ok if r.get("barrier") is not None]
        if b:
            assert row["barrier_mean"] == np.mean(b)
            assert row["barrier_n"] == len(b)
        else:
            assert row["barrier_mean"] is None and row["barrier_n"] == 0


def test_failed_record_excluded(workdir):
    rows = report.summarize(report.load_records(workdir))
    row = next(r for r in rows if (r["round"], r["arm"]) == (2, "reinit"))
    assert row["n"] == 2 and row["n_failed"] == 1
    assert row["trials"] == [0, 2] and row["failed_trials"] == [1]
    assert math.isfinite(row["final_test_accuracy_mean"])
    table = report.format_table(rows)
    line = next(
        ln for ln in table.splitlines() if "| reinit" in ln and ln.split("|")[1].strip() == "2"
    )
    assert "2 (1 failed)" in line


def test_all_failed_and_single_trial(tmp_path):
    recs = [_failed(rnd=1, arm="ticket", trial=t) for t in range(2)]
    ok = _records()[0]
    recs.append(ok)
    rows = report.summarize(recs)
    assert rows[0]["round"] == 0 and rows[0]["n"] == 1 and rows[0]["final_test_accuracy_std"] == 0.0
    assert rows[1]["n"] == 0 and rows[1]["n_failed"] == 2
    assert math.isnan(rows[1]["final_test_accuracy_mean"])
    table = report.format_table(rows)
    assert "failed" in table.splitlines()[-1]
    # A non-finite accuracy with no status is failed too; "ok" status is the default.
    rows = report.summarize(
        [{**ok, "status": None}, {**ok, "trial": 1, "final_test_accuracy": None}]
    )
    assert rows[0]["n"] == 1 and rows[0]["n_failed"] == 1


def test_later_duplicate_wins():
    recs = _records()[:2]
    dup = {**recs[0], "final_test_accuracy": 0.5}
    rows = report.summarize([*recs, dup])
    assert rows[0]["n"] == 2
    assert rows[0]["final_test_accuracy_mean"] == np.mean([0.5, recs[1]["final_test_accuracy"]])


def test_format_density():
    pct = [report.format_density(_density(k)) for k in (0, 1, 3, 6, 9, 15, 22)]
    assert pct == ["100", "80", "51.2", "26.2", "13.4", "3.5", "0.74"]


def test_format_table(workdir):
    rows = report.summarize(report.load_records(workdir))
    table = report.format_table(rows)
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == list(report.TABLE_COLUMNS)
    assert set(lines[1]) <= set("|-:")
    assert len(lines) == 2 + len(rows)
    assert len({len(ln) for ln in lines}) == 1  # columns line up in a terminal
    for arm in ARMS:
        assert f" {arm} " in table
    for k in range(ROUNDS):
        assert f" {report.format_density(_density(k))} |" in table
    ticket0 = rows[0]
    expected = (
        f"{100 * ticket0['final_test_accuracy_mean']:.2f} ± "
        f"{100 * ticket0['final_test_accuracy_std']:.2f}"
    )
    assert expected in lines[2]
    no_barrier = report.format_table(report.summarize(_records(barrier=False)))
    assert "barrier" not in no_barrier


def test_write_report_single(workdir):
    text = report.write_report([workdir])
    md = open(os.path.join(workdir, "report.md")).read()
    assert text in md
    assert (
        "Config: model: lenet300_100 · dataset: mnist · steps: 5000 · rounds: 4 · "
        "prune rate: 0.2 (head: 0.1) · trials: 3\n" in md
    )
    assert "report.png" in md
    for pct in ("100", "80", "64", "51.2", "41"):
        assert f" {pct} |" in text
    _check_png(os.path.join(workdir, "report.png"))


def test_write_report_out_dir_and_title(workdir, tmp_path):
    out = tmp_path / "out"
    report.write_report(workdir, out_dir=out, title="My run")
    assert (out / "report.png").exists() and (out / "report.md").exists()
    assert open(out / "report.md").read().startswith("# My run")
    assert not os.path.exists(os.path.join(workdir, "report.md"))


def test_write_report_multi(workdir, tmp_path):
    other = _write(tmp_path / "other", _records(seed=1, barrier=False))
    text = report.write_report([workdir, other])
    assert "exp:" in text and "other:" in text
    pngs = [
        p for d in (workdir, other) for p in os.listdir(d) if p.endswith(".png")
    ]  # one plot, in the first workdir
    assert pngs == ["report.png"]
    _check_png(os.path.join(workdir, "report.png"))
    md = open(os.path.join(workdir, "report.md")).read()
    assert "## exp" in md and "## other" in md
    assert md.count("| round | % weights | arm ") == 2
    assert md.count("### Paired comparisons\n") == 2
    assert md.count("## Across workdirs (paired by trial)") == 1
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert [w["label"] for w in summary["workdirs"]] == ["exp", "other"]
    assert summary["across_workdirs"]["paired"][0]["a"] == "other: ticket"
    # One workdir: no comparison across workdirs.
    report.write_report(other)
    assert "across_workdirs" not in json.load(open(os.path.join(other, "summary.json")))
    assert "Across workdirs" not in open(os.path.join(other, "report.md")).read()


def test_main_report(workdir, capsys):
    assert report.main_report([workdir]) == 0
    out = capsys.readouterr().out
    assert "ticket" in out and "report.png" in out


def test_main_report_errors(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="missing") as e:
        report.main_report([missing])
    assert "\n" not in str(e.value)
    os.makedirs(tmp_path / "nometrics")
    with pytest.raises(ValueError, match="nometrics"):
        report.main_report([str(tmp_path / "nometrics")])
    with pytest.raises(ValueError):
        report.main_report([])


def test_labels_unique():
    assert files.labels(["/a/run", "/b/run"]) == ["a/run", "b/run"]
    assert files.labels(["/a/x", "/a/y"]) == ["x", "y"]
    assert files.labels(["/a/x", "/a/x"]) == ["/a/x", "/a/x#2"]


def test_config_summary():
    # The real config keys: model.name, dataset.name, train.steps, imp.rounds,
    # imp.prune_rate (+ per-layer rates), num_trials.
    cfg = _config()
    cfg["imp"]["layer_rates"] = {}
    line = report.config_summary(cfg)
    assert line == (
        "model: mlp · dataset: mnist1d · steps: 3000 · rounds: 13 · prune rate: 0.2 · trials: 4"
    )
    # Per-layer rates, as an object or as a list of [regex, rate] pairs.
    for rates in ({"head": 0.1, "Conv_": 0.15}, [["head", 0.1], ["Conv_", 0.15]]):
        cfg["imp"]["layer_rates"] = rates
        assert "· prune rate: 0.2 (head: 0.1, Conv_: 0.15) ·" in report.config_summary(cfg)
    # Non-default scope, rewinding and kind are shown; nothing else is guessed.
    line = report.config_summary(
        _config(
            **{
                "kind": "instability",
                "model.name": "resnet20",
                "imp.scope": "global",
                "imp.rewind": "lr",
                "imp.rewind_step": 2000,
            }
        )
    )
    assert line.startswith("kind: instability · model: resnet20 · ")
    assert "prune rate: 0.2 (head: 0.1), global · rewind: lr to step 2000 · trials: 4" in line
    assert report.config_summary({"model": "cnn", "num_steps": 100}) == ""
    assert report.config_summary({}) == ""


def test_every_arm_line_starts_at_the_dense_point():
    # Records as lottery.run writes them: round 0 is arm "dense".
    recs = [{**r, "arm": "dense"} if r["round"] == 0 else r for r in _records(barrier=False)]
    rows = report.summarize(recs)
    lines = report.arm_lines(rows)
    assert list(lines) == ["ticket", "reinit", "random_mask"]  # no line for "dense" itself
    dense = next(r for r in rows if r["round"] == 0)
    for arm, line in lines.items():
        assert line[0] is dense and line[0]["density"] == 1.0
        assert [r["round"] for r in line] == list(range(ROUNDS))
        assert all(r["arm"] == arm for r in line[1:])
    # An arm with a round-0 record of its own keeps it; the others start there too.
    lines = report.arm_lines(report.summarize(_records(barrier=False)))
    assert lines["ticket"][0]["arm"] == "ticket"
    assert lines["reinit"][0] is lines["ticket"][0]


def test_dense_records_pooled_when_several():
    recs = [r for r in _records(barrier=False) if r["round"] == 0]
    recs += [{**r, "arm": "dense2", "final_test_accuracy": 0.5} for r in recs]
    recs += [r for r in _records(barrier=False) if r["round"] == 1]
    rows = report.summarize(recs)
    start = report.arm_lines(rows)["reinit"][0]
    vals = [r["final_test_accuracy"] for r in recs if r["round"] == 0]
    assert start["n"] == len(vals)
    assert start["final_test_accuracy_mean"] == pytest.approx(np.mean(vals))
    assert start["final_test_accuracy_min"] == min(vals)
    # The pooled std is that of all the pooled values, so a band can be drawn there.
    assert start["final_test_accuracy_std"] == pytest.approx(np.std(vals, ddof=1))


def _check_png(path):
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600


def test_write_report_rejects_file_and_all_failed_plots(tmp_path, workdir):
    with pytest.raises(ValueError, match="no such experiment directory: .*metrics.jsonl"):
        report.write_report([os.path.join(workdir, "metrics.jsonl")])
    d = _write(tmp_path / "allfail", [_failed(rnd=r, arm="ticket", trial=0) for r in range(3)])
    text = report.write_report(d)
    assert text.count("0 (1 failed)") == 3
    _check_png(os.path.join(d, "report.png"))


# ----------------------------------------------------------------------------- shared pieces


def test_markdown_table_padded_and_plain():
    table = tables.markdown_table(
        ["arm", "acc"], [["ticket", "97.10 ± 0.20"], ["dense", "96"]], [False, True]
    )
    assert table.splitlines() == [
        "| arm    |          acc |",
        "|:-------|-------------:|",
        "| ticket | 97.10 ± 0.20 |",
        "| dense  |           96 |",
    ]
    plain = tables.markdown_table(["a", "b", "c"], [["x", "1", "2"]], [False, True, True], False)
    assert plain == "| a | b | c |\n|:--|--:|--:|\n| x | 1 | 2 |"
    assert tables.markdown_table(["a"], [], [True]) == "|   a |\n|----:|"


def test_pct():
    assert tables.pct(0.5, 0.01, 3) == "50.00 ± 1.00"
    assert tables.pct(0.5, 0.0, 1) == "50.00"
    assert tables.pct(float("nan"), float("nan"), 0) == "failed"
    assert tables.pct(float("nan"), float("nan"), 2) == "-"
    assert tables.pct(float("nan"), float("nan"), 2, nonfinite="failed") == "failed"


def test_load_names_the_line_of_a_bad_record(tmp_path):
    d = tmp_path / "x"
    os.makedirs(d)
    ok = json.dumps(_records()[0])
    (d / "metrics.jsonl").write_text(f'{ok}\n\n{{"arm": "a"}}\n{ok}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:3: record has no 'round'"):
        report.load_records(d)
    (d / "metrics.jsonl").write_text(f"{ok}\n[1, 2]\n{ok}\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: expected a JSON object, got list"):
        report.load_records(d)


def test_report_imports_no_jax_and_no_runner():
    import subprocess
    import sys

    code = (
        "import sys, lth_jax.report; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax') "
        "or m in ('lth_jax.transfer', 'lth_jax.lottery', 'lth_jax.instability', "
        "'lth_jax.train', 'lth_jax.models', 'lth_jax.data')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- transfer


def _transfer_records() -> list[dict]:
    """Two sizes x (scratch, pretrained, ticket_source) x 3 trials; one failed record."""
    rng = np.random.default_rng(0)
    recs = []
    for i, (size, n_train) in enumerate([(0.1, 150), (1.0, 1500)]):
        for arm, phase, density in [
            ("scratch", "finetune", 1.0),
            ("pretrained", "finetune", 1.0),
            ("ticket_source", "ticket", 0.125),
        ]:
            for trial in range(3):
                acc = {"scratch": 0.6, "pretrained": 0.7, "ticket_source": 0.65}[arm] + 0.1 * i
                recs.append(
                    {
                        "arm": arm,
                        "phase": phase,
                        "size_index": i,
                        "train_size": size,
                        "n_train": n_train,
                        "trial": trial,
                        "density": density,
                        "status": "ok",
                        "final_test_accuracy": acc + float(rng.uniform(-0.01, 0.01)),
                        "test_accuracy_at_best_val": acc,
                        "source_test_accuracy": 0.9 + 0.01 * trial,
                    }
                )
    recs[0].update(status="nan", final_test_accuracy=float("nan"))  # size 0, scratch, trial 0
    return recs


def test_transfer_report(tmp_path):
    recs = _transfer_records()
    config = {
        "kind": "transfer",
        "model": {"name": "mlp"},
        "transfer": {"arms": ["scratch", "pretrained", "ticket_source"], "ticket_head": "dense"},
        "imp": {"rounds": 3, "prune_rate": 0.5, "scope": "layerwise"},
        "num_trials": 3,
    }
    wd = _write(tmp_path / "tr", recs, config=config)
    assert report.workdir_kind(wd) == "transfer"
    rows = report.transfer.summarize(report.transfer.load_records(wd))
    assert [(r["size_index"], r["arm"]) for r in rows][:3] == [
        (0, "scratch"),
        (0, "pretrained"),
        (0, "ticket_source"),
    ]
    assert rows[0]["n"] == 2 and rows[0]["n_failed"] == 1
    eff = report.transfer.effects(recs)
    first = next(e for e in eff if e["effect"] == "pretraining (no dropout)")
    assert first["size_index"] == 0 and first["n"] == 2 and first["wins"] == 2  # failed left out
    text = report.write_report([wd])  # dispatched on the kind in config.json
    md = open(os.path.join(wd, "report.md")).read()
    assert md.startswith("# Transfer report: tr\n")
    assert text.split("\n\n")[0] in md
    assert "| 10%               |     150 | scratch       |       100 | 2 (1 failed) |" in text
    assert "pretraining (no dropout): pretrained - scratch" in text
    # The ticket arms are the records with phase "ticket": the config line names the tickets.
    assert "tickets: 3 IMP rounds at 0.5 (layerwise), new head dense" in md
    assert "Source (pretrained network) test accuracy on the source task: 91.00 ± 1.00%" in md
    _check_png(os.path.join(wd, "report.png"))


def test_transfer_load_errors(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no metrics.jsonl in experiment directory"):
        report.transfer.load_records(str(tmp_path / "empty"))
    d = _write(tmp_path / "lottery", _records()[:2])
    with pytest.raises(ValueError, match="no transfer records in"):
        report.transfer.load_records(d)


def test_train_size_label():
    assert report.transfer.train_size_label(0.1) == "10%"
    assert report.transfer.train_size_label(1.0) == "100%"
    assert report.transfer.train_size_label(500) == "500"


# ----------------------------------------------------------------------------- paired comparisons

from lth_jax.report import paired, stats  # noqa: E402


def test_t_quantile_known_values():
    # Two-sided 95% critical values of Student's t, as printed in statistics tables.
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 30: 2.042}
    for df, want in table.items():
        assert stats.t_quantile(0.975, df) == pytest.approx(want, abs=5e-4)
    assert stats.t_quantile(0.995, 10) == pytest.approx(3.169, abs=5e-4)
    assert stats.t_quantile(0.95, 4) == pytest.approx(2.132, abs=5e-4)
    # Closed forms for 1 and 2 degrees of freedom, and the normal limit.
    for p in (0.6, 0.9, 0.975, 0.999):
        assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        two = (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))
        assert stats.t_quantile(p, 2) == pytest.approx(two, rel=1e-9)
    assert stats.t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert stats.t_quantile(0.025, 4) == -stats.t_quantile(0.975, 4)
    assert stats.t_quantile(0.5, 3) == 0.0
    for p, df in ((0.0, 3), (1.0, 3), (0.9, 0)):
        with pytest.raises(ValueError):
            stats.t_quantile(p, df)


def _arm(values, failed=(), missing=()):
    """``{trial: record}`` with ``final_test_accuracy`` = values[trial]."""
    out = {}
    for t, v in enumerate(values):
        rec = {"trial": t, "status": "ok", "final_test_accuracy": v, "test_accuracy_at_best_val": v}
        if t in failed:
            rec.update(status="nan", final_test_accuracy=float("nan"))
        if t in missing:
            rec["test_accuracy_at_best_val"] = None
        out[t] = rec
    return out


def test_paired_ci_by_hand():
    a = _arm([0.62, 0.60, 0.65, 0.70])
    b = _arm([0.60, 0.61, 0.62, 0.70])
    c = paired.compare(a, b, "final_test_accuracy")
    # Differences 0.02, -0.01, 0.03, 0.00: mean 0.01, squared deviations sum to 0.001,
    # s = sqrt(0.001 / 3), t(0.975, 3) = 3.182446, half width = t * s / sqrt(4).
    half = 3.182446305 * math.sqrt(0.001 / 3) / 2
    assert c["n"] == 4 and c["trials"] == [0, 1, 2, 3]
    assert c["mean"] == pytest.approx(0.01)
    assert c["std"] == pytest.approx(math.sqrt(0.001 / 3))
    assert c["ci_low"] == pytest.approx(0.01 - half, abs=1e-9)
    assert c["ci_high"] == pytest.approx(0.01 + half, abs=1e-9)
    assert half == pytest.approx(0.029051, abs=1e-6)
    # Wins: a > b strictly; the equal trial is a tie, neither a win nor a loss.
    assert (c["wins"], c["ties"], c["losses"]) == (2, 1, 1)
    row = {
        "round": 1,
        "density": 0.8,
        "a": "ticket",
        "a_round": 1,
        "b": "dense",
        "b_round": 0,
        "final_test_accuracy": c,
        "test_accuracy_at_best_val": c,
    }
    line = paired.format_paired([row]).splitlines()[2]
    assert "| ticket | dense (round 0) |     4 |" in line
    assert "+1.00 | [-1.91, +3.91] | 2/4 (1 tied)" in line


def test_paired_drops_a_failed_trial_from_both_sides():
    a = _arm([0.7, 0.8, 0.6], failed=(1,), missing=(2,))
    b = _arm([0.5, 0.5, 0.5])
    c = paired.compare(a, b, "final_test_accuracy")
    assert c["trials"] == [0, 2] and c["n"] == 2
    assert c["mean"] == pytest.approx(0.15)  # (0.2 + 0.1) / 2: trial 1 left out of b too
    # A metric missing in an ok record drops that trial from that metric only.
    c = paired.compare(a, b, "test_accuracy_at_best_val")
    assert c["trials"] == [0] and c["n"] == 1 and c["mean"] == pytest.approx(0.2)
    assert math.isnan(c["ci_low"]) and math.isnan(c["ci_high"])  # no CI for one pair
    row = {"round": 1, "density": 0.8, "a": "ticket", "a_round": 1, "b": "reinit", "b_round": 1}
    row |= {"final_test_accuracy": c, "test_accuracy_at_best_val": paired.compare(a, {}, "x")}
    line = paired.format_paired([row]).splitlines()[2]
    cells = [x.strip() for x in line.strip("|").split("|")]
    assert cells[3:] == ["reinit", "1", "+20.00", "-", "1/1", "-", "-", "-"]


def test_lottery_pairs(workdir):
    recs = report.load_records(workdir)
    rows = paired.lottery_pairs(recs)
    # Round 0 has only the ticket arm here: it is the dense reference.
    want = [("ticket", "reinit"), ("ticket", "random_mask")] + [(a, "ticket") for a in ARMS]
    for rnd in range(1, ROUNDS):
        got = [(r["a"], r["b"]) for r in rows if r["round"] == rnd]
        assert got == want
    assert all(r["b_round"] in (0, r["round"]) for r in rows)
    by = {(r["round"], r["a"], r["b"]): r for r in rows}
    # Round 2, reinit trial 1 failed: left out of both sides of every comparison with reinit.
    for key in ((2, "ticket", "reinit"), (2, "reinit", "ticket")):
        assert by[key]["final_test_accuracy"]["trials"] == [0, 2]
    assert by[(2, "ticket", "random_mask")]["final_test_accuracy"]["n"] == TRIALS
    # The mean difference is the difference of the per-trial values.
    val = {(r["round"], r["arm"], r["trial"]): r["final_test_accuracy"] for r in recs}
    c = by[(3, "ticket", "ticket")]["final_test_accuracy"]
    d = [val[(3, "ticket", t)] - val[(0, "ticket", t)] for t in range(TRIALS)]
    assert c["mean"] == pytest.approx(np.mean(d))
    assert c["wins"] + c["ties"] + c["losses"] == c["n"]
    # With a "dense" round-0 arm, that is the reference.
    recs = [{**r, "arm": "dense"} if r["round"] == 0 else r for r in recs]
    assert {r["b"] for r in paired.lottery_pairs(recs) if r["b_round"] == 0} == {"dense"}


def test_report_has_paired_table_and_summary_json(workdir):
    report.write_report(workdir)
    md = open(os.path.join(workdir, "report.md")).read()
    head, _, rest = md.partition("## Paired comparisons\n\n")
    assert rest, "no paired comparisons section"
    table = rest.split("\n\n")[0]
    assert table.splitlines()[0].startswith("| round | % weights | a ")
    assert len(table.splitlines()) == 2 + (ROUNDS - 1) * 5
    assert "Paired by trial" in rest.split("\n\n")[1]
    assert "band = 95% CI of the mean over trials" in md
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["kind"] == "lottery" and summary["ci_level"] == 0.95
    (wd,) = summary["workdirs"]
    assert wd["label"] == "exp"
    rows = report.summarize(report.load_records(workdir))
    assert [(r["round"], r["arm"]) for r in wd["summary"]] == [(r["round"], r["arm"]) for r in rows]
    assert wd["summary"][1]["final_test_accuracy_mean"] == pytest.approx(
        rows[1]["final_test_accuracy_mean"], rel=1e-11
    )
    assert wd["summary"][0]["barrier_mean"] is not None
    reinit = next(r for r in wd["summary"] if r["arm"] == "reinit")
    assert reinit["barrier_mean"] is None and reinit["barrier_n"] == 0  # null, not NaN
    assert len(wd["paired"]) == (ROUNDS - 1) * 5
    # A comparison without pairs: no mean, no CI, written as null.
    recs = [_failed(rnd=1, arm="reinit", trial=t) for t in range(TRIALS)]
    recs += [r for r in _records(barrier=False) if r["round"] <= 1 and r["arm"] != "reinit"]
    d = _write(workdir + "_2", recs)
    report.write_report(d)
    text = open(os.path.join(d, "summary.json")).read()
    assert "NaN" not in text
    rows = json.loads(text)["workdirs"][0]["paired"]
    c = next(r for r in rows if r["b"] == "reinit")["final_test_accuracy"]
    assert c["n"] == 0 and c["mean"] is None and c["ci_low"] is None


def test_plain_json():
    from lth_jax.report.files import plain

    assert plain({"a": float("nan"), "b": [np.int64(3), np.float64(0.1) + 0.2, None, True]}) == {
        "a": None,
        "b": [3, 0.3, None, True],
    }
    assert plain(float("inf")) is None


def test_band_choice_changes_the_band():
    rows = [
        {"final_test_accuracy_mean": 0.5, "final_test_accuracy_std": 0.1, "n": 4}
        | {"final_test_accuracy_min": 0.3, "final_test_accuracy_max": 0.65},
        {"final_test_accuracy_mean": 0.6, "final_test_accuracy_std": 0.0, "n": 1}
        | {"final_test_accuracy_min": 0.6, "final_test_accuracy_max": 0.6},
    ]
    key = "final_test_accuracy"
    edges = {kind: report.band_edges(rows, key, kind) for kind in report.BANDS}
    half = stats.t_quantile(0.975, 3) * 0.1 / 2
    np.testing.assert_allclose(edges["ci"][0][0], 0.5 - half)
    np.testing.assert_allclose(edges["ci"][1][0], 0.5 + half)
    np.testing.assert_allclose([edges["std"][0][0], edges["std"][1][0]], [0.4, 0.6])
    np.testing.assert_allclose([edges["sem"][0][0], edges["sem"][1][0]], [0.45, 0.55])
    np.testing.assert_allclose(edges["minmax"][0], [0.3, 0.6])
    np.testing.assert_allclose(edges["minmax"][1], [0.65, 0.6])
    # One trial: no interval but min-max.
    for kind in ("ci", "std", "sem"):
        assert np.isnan(edges[kind][0][1]) and np.isnan(edges[kind][1][1])
    # <key>_n (trials with the metric) is used when the row has it.
    rows[0]["final_test_accuracy_n"] = 2
    lo, _ = report.band_edges(rows, key, "sem")
    np.testing.assert_allclose(lo[0], 0.5 - 0.1 / math.sqrt(2))
    with pytest.raises(ValueError, match="unknown band 'iqr'"):
        report.band_edges(rows, key, "iqr")


def test_figure_band_and_legend(workdir, tmp_path, monkeypatch):
    from lth_jax.report import lottery_figure

    drawn = {}

    def spy(rows, key, kind="ci"):
        drawn.setdefault(kind, 0)
        drawn[kind] += 1
        return real(rows, key, kind)

    real = lottery_figure.band_edges
    monkeypatch.setattr(lottery_figure, "band_edges", spy)
    for kind in ("std", "minmax"):
        out = tmp_path / kind
        report.write_report(workdir, out_dir=out, band=kind)
        assert f"band = {report.BANDS[kind]}" in open(out / "report.md").read()
    assert set(drawn) == {"std", "minmax"}
    with pytest.raises(ValueError, match="unknown band"):
        report.write_report(workdir, out_dir=tmp_path / "x", band="bad")


def test_cli_band(workdir, tmp_path, capsys):
    from lth_jax import cli

    assert cli.main(["report", workdir, "--out", str(tmp_path / "o"), "--band", "sem"]) == 0
    assert "summary.json" in capsys.readouterr().out
    assert "band = mean ± 1 standard error" in open(tmp_path / "o" / "report.md").read()
    assert cli.main(["report", workdir, "--band", "wide"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lth-jax: error: ")
    assert "'wide'" in err and "ci" in err and "minmax" in err
    assert cli.main(["report", workdir, "--band"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_arm_labels():
    assert tables.arm_label("reinit") == "random re-init"
    assert tables.arm_label("random_mask") == "random pruning"
    assert tables.arm_label("ticket") == "ticket" and tables.arm_label("dense") == "dense"
    assert tables.arm_label("scratch") == "scratch"


def test_transfer_effects_ci_and_summary(tmp_path):
    recs = _transfer_records()
    eff = report.transfer.effects(recs)
    e = next(x for x in eff if x["effect"] == "pretraining (no dropout)" and x["size_index"] == 1)
    val = {(r["size_index"], r["arm"], r["trial"]): r["final_test_accuracy"] for r in recs}
    d = [val[(1, "pretrained", t)] - val[(1, "scratch", t)] for t in range(3)]
    half = stats.t_quantile(0.975, 2) * np.std(d, ddof=1) / math.sqrt(3)
    assert e["n"] == 3 and e["mean"] == pytest.approx(np.mean(d))
    assert (e["ci_low"], e["ci_high"]) == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    wd = _write(tmp_path / "tr", recs, config={"kind": "transfer"})
    report.write_report(wd, band="minmax")
    md = open(os.path.join(wd, "report.md")).read()
    assert "95% CI (pp) |" in md and "band = min - max over trials" in md
    summary = json.load(open(os.path.join(wd, "summary.json")))
    assert summary["kind"] == "transfer"
    assert len(summary["summary"]) == 6 and len(summary["effects"]) == len(eff)
    assert summary["effects"][0]["trials"] == [1, 2]  # size 0, scratch trial 0 failed


def test_max_test_accuracy_over_the_curve(workdir):
    recs = report.load_records(workdir)
    rows = report.summarize(recs)
    key = report.lottery.CURVE_MAX
    for row in rows:
        ok = [
            r
            for r in recs
            if (r["round"], r["arm"]) == (row["round"], row["arm"]) and r["status"] == "ok"
        ]
        maxes = [max(r["test_accuracy_curve"]) for r in ok]
        assert row[f"{key}_mean"] == pytest.approx(np.mean(maxes))
        assert row[f"{key}_n"] == len(maxes)
    table = report.format_table(rows)
    assert "max test acc over curve, test-selected (mean ± std)" in table
    r0 = rows[0]
    assert f"{100 * r0[f'{key}_mean']:.2f} ± {100 * r0[f'{key}_std']:.2f}" in table.splitlines()[2]
    report.write_report(workdir)
    md = open(os.path.join(workdir, "report.md")).read()
    assert "chosen on the test set itself" in md and "MNIST-1D lottery notebook" in md
    # Non-finite points are skipped; no curve at all: no column, no note.
    assert report.lottery.curve_max({"test_accuracy_curve": [0.5, None, float("nan"), 0.7]}) == 0.7
    assert report.lottery.curve_max({"test_accuracy_curve": []}) is None
    bare = [{k: v for k, v in r.items() if k != "test_accuracy_curve"} for r in _records()]
    assert "max test acc over curve" not in report.format_table(report.summarize(bare))


def test_barrier_panel_draws_each_trial_and_the_threshold(workdir, tmp_path, monkeypatch):
    from lth_jax.report import lottery_figure

    drawn = []
    real = lottery_figure._trial_points
    monkeypatch.setattr(
        lottery_figure,
        "_trial_points",
        lambda ax, rows, c, m: (
            drawn.append([v for r in rows for v in r["barrier_values"]]) or real(ax, rows, c, m)
        ),
    )
    rows = report.summarize(report.load_records(workdir))
    ticket = [r for r in rows if r["arm"] == "ticket"]
    assert all(len(r["barrier_values"]) == r["barrier_n"] for r in rows)
    report.plot_report([("exp", rows)], str(tmp_path / "f.png"))
    assert sorted(v for vs in drawn for v in vs) == sorted(
        v for r in ticket for v in r["barrier_values"]
    )
    assert lottery_figure.BARRIER_THRESHOLD == 0.02


# ----------------------------------------------------------------------------- across workdirs


def _later(recs, shift=lambda t: 0.05 + 0.002 * t, arms=("ticket",)) -> list[dict]:
    """Another workdir of the same study: round 0 as in ``recs``, ``arms`` shifted per trial."""
    out = []
    for r in recs:
        if r["round"] == 0:
            out.append(dict(r))
        elif r["arm"] in arms and not math.isnan(r["final_test_accuracy"]):
            acc = r["final_test_accuracy"] + shift(r["trial"])
            out.append({**r, "final_test_accuracy": acc})
    return out


def test_across_workdirs_pairs_runs_by_trial(tmp_path):
    first = _records(seed=0, barrier=False)
    first = [r for r in first if (r["round"], r["arm"], r["trial"]) != (2, "reinit", 1)]
    first.append(_failed())
    a = _write(tmp_path / "a", first)
    b = _write(tmp_path / "b", _later(first))
    out = tmp_path / "out"
    report.write_report([a, b], out_dir=out)
    across = json.load(open(out / "summary.json"))["across_workdirs"]
    rows = across["paired"]
    # Every arm of the later workdir against every arm of the earlier one, each round past 0.
    want = [("b: ticket", f"a: {arm}") for arm in ARMS]
    for rnd in range(1, ROUNDS):
        assert [(r["a"], r["b"]) for r in rows if r["round"] == rnd] == want
    assert all(r["a_round"] == r["b_round"] == r["round"] for r in rows)
    by = {(r["round"], r["b"]): r for r in rows}
    c = by[(3, "a: ticket")]["final_test_accuracy"]
    assert c["trials"] == [0, 1, 2] and c["wins"] == 3
    assert c["mean"] == pytest.approx(np.mean([0.05 + 0.002 * t for t in range(TRIALS)]))
    # A trial that failed in the earlier workdir is dropped from both sides.
    assert by[(2, "a: reinit")]["final_test_accuracy"]["trials"] == [0, 2]
    assert across["round_0"] == [{"a": "b", "b": "a", "trials": [0, 1, 2], "same": 3}]
    assert across["refused"] == []
    md = open(out / "report.md").read()
    section = md.split("## Across workdirs (paired by trial)\n\n")[1]
    assert "b vs a 3/3" in section
    bullet = "- **b: ticket vs a: ticket, final test accuracy**: b: ticket above a: ticket in 3/3"
    assert bullet in section
    assert "b: ticket vs a: random pruning" in section  # readable arm names in sentences
    assert "### Paired comparisons across workdirs" in section and "Not compared" not in section


def test_across_workdirs_refuse_rounds_whose_densities_differ(tmp_path):
    first = _records(seed=0, barrier=False)
    later = _later(first)
    for r in later:
        if (r["round"], r["trial"]) == (3, 1):
            r["density"] = 0.5
        r["layer_density"] = {"Dense_0/kernel": r["density"], "head/kernel": 1.0}
        if r["round"] == 4:
            r["layer_density"]["head/kernel"] = 0.9
    a = _write(tmp_path / "a", first)
    b = _write(tmp_path / "b", later)
    report.write_report([a, b], out_dir=tmp_path / "out")
    across = json.load(open(tmp_path / "out" / "summary.json"))["across_workdirs"]
    assert {r["round"] for r in across["paired"]} == {1, 2, 4}  # layer densities only in b
    refused = [r for r in across["refused"] if r["b"] == "a: ticket"]
    assert [(r["round"], r["reason"]) for r in refused] == [(3, "trial 1: density 50% vs 51.2%")]
    md = open(tmp_path / "out" / "report.md").read()
    assert "Not compared (their per-round densities or setups differ):" in md
    assert "- `b: ticket` vs `a: ticket`, round 3: trial 1: density 50% vs 51.2%." in md
    # A range of the findings does not run over the round not compared.
    found = [
        (f["first_round"], f["last_round"])
        for f in across["findings"]["paired"]
        if f["b"] == "a: ticket" and f["metric"] == "final_test_accuracy"
    ]
    assert found == [(1, 2), (4, 4)]
    # Per-layer densities are compared where both records hold them.
    for r in first:
        r["layer_density"] = {"Dense_0/kernel": r["density"], "head/kernel": 1.0}
    _write(tmp_path / "a", first)
    report.write_report([a, b], out_dir=tmp_path / "out")
    across = json.load(open(tmp_path / "out" / "summary.json"))["across_workdirs"]
    assert {r["round"] for r in across["paired"]} == {1, 2}
    reasons = {r["round"]: r["reason"] for r in across["refused"] if r["b"] == "a: ticket"}
    assert reasons[4] == "trial 0: head/kernel density 90% vs 100%"


def test_across_workdirs_refuse_workdirs_of_another_setup(tmp_path):
    first = _records(seed=0, barrier=False)
    a = _write(tmp_path / "a", first, config=_config(seed=0))
    b = _write(tmp_path / "b", _later(first), config=_config(seed=1))
    report.write_report([a, b], out_dir=tmp_path / "out")
    across = json.load(open(tmp_path / "out" / "summary.json"))["across_workdirs"]
    assert across["paired"] == []
    reasons = {(r["round"], r["reason"]) for r in across["refused"]}
    assert reasons == {(None, "seed differs (1 vs 0)")}
    md = open(tmp_path / "out" / "report.md").read()
    assert "- `b: ticket` vs `a: ticket`, every round: seed differs (1 vs 0)." in md
    assert "- No paired comparison across workdirs." in md


def test_figure_gives_each_line_of_several_workdirs_its_colour(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    seen = {}
    real = Figure.legend

    def spy(self, handles, labels, **kw):
        seen.update({lab: h for h, lab in zip(handles, labels)})
        return real(self, handles, labels, **kw)

    monkeypatch.setattr(Figure, "legend", spy)
    first = _records(seed=0, barrier=False)
    dirs = [_write(tmp_path / "a", first), _write(tmp_path / "b", _later(first))]
    dirs.append(_write(tmp_path / "c", _later(first, shift=lambda t: 0.01)))
    report.write_report(dirs, out_dir=tmp_path / "out")
    _check_png(str(tmp_path / "out" / "report.png"))
    lines = ["a: ticket", "a: random re-init", "a: random pruning", "b: ticket", "c: ticket"]
    colours = [seen[name].get_color() for name in lines]
    assert len(set(colours)) == len(lines)


def test_a_report_of_an_unfinished_run_says_so(tmp_path, capsys):
    """A stopped run's report (rounds 0-16 of a config asking for 0-20) says it is unfinished
    and how to finish it, on the command line and in report.md; a finished one does not."""
    import shutil

    src = os.path.join(os.path.dirname(__file__), "..", "experiments", "results", "mnist1d_lottery")
    d = tmp_path / "run"
    shutil.copytree(src, d)
    assert report.main_report([str(d)], out_dir=str(tmp_path / "done")) == 0
    assert "unfinished run" not in capsys.readouterr().out
    cfg = json.loads((d / "config.json").read_text())
    cfg["imp"]["rounds"] = 20
    (d / "config.json").write_text(json.dumps(cfg))
    assert report.main_report([str(d)], out_dir=str(tmp_path / "out")) == 0
    line = "unfinished run (rounds 0-16 of 0-20 done); unless it is still running, run its"
    assert line in capsys.readouterr().out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**Unfinished run**: rounds 0-16 of 0-20 done; unless it is still running" in md
    assert files.unfinished({"kind": "transfer"}, []) is None
    other = tmp_path / "run_seed1"  # pooled with another seed: each unfinished one is named
    shutil.copytree(d, other)
    cfg["seed"] = cfg["seed"] + 1
    (other / "config.json").write_text(json.dumps(cfg))
    assert report.main_report([str(d), str(other)], pooled=True, out_dir=str(tmp_path / "p")) == 0
    out = capsys.readouterr().out
    assert f"lth-jax: {d} is an unfinished run" in out
    assert f"lth-jax: {other} is an unfinished run" in out
