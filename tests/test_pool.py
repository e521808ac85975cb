"""Pooled reports (``lth-jax report --pool``): workdirs that differ only in seed, as one report.

Hand-written workdirs (``config.json`` and ``metrics.jsonl``): no training here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lth_jax import cli
from lth_jax.report import pool

CONFIG = {
    "kind": "lottery",
    "seed": 0,
    "num_trials": 2,
    "progress": False,
    "num_devices": 0,
    "dataset": {"name": "mnist1d", "data_dir": None},
    "model": {"name": "mlp", "kwargs": {"features": [32]}},
    "train": {"steps": 200},
    "imp": {"rounds": 1, "prune_rate": 0.2},
}


def _workdir(path, seed, acc, **changes):
    """A finished workdir: ``acc[trial] = (dense, ticket, reinit)`` final test accuracies."""
    os.makedirs(path)
    cfg = json.loads(json.dumps(CONFIG))
    cfg.update(seed=seed, num_trials=len(acc))
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    recs = []
    for t, (dense, ticket, reinit) in enumerate(acc):
        recs.append({"round": 0, "arm": "dense", "trial": t, "density": 1.0, "a": dense})
        recs.append({"round": 1, "arm": "ticket", "trial": t, "density": 0.8, "a": ticket})
        recs.append({"round": 1, "arm": "reinit", "trial": t, "density": 0.8, "a": reinit})
    for r in recs:
        r.update(final_test_accuracy=r["a"], test_accuracy_at_best_val=r.pop("a"))
        r["best_val_step"] = 200
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def _pair(tmp_path, **changes):
    a = _workdir(tmp_path / "seed=0", 0, [(0.5, 0.6, 0.5), (0.5, 0.7, 0.5)], **changes)
    b = _workdir(tmp_path / "seed=1", 1, [(0.5, 0.9, 0.5), (0.5, 0.6, 0.6)], **changes)
    return a, b


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_pooled_report_sums_trials_and_pairs_within_seed_and_trial(tmp_path, capsys):
    a, b = _pair(tmp_path)
    out = tmp_path / "out"
    assert cli.main(["report", "--pool", a, b, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    ticket = next(line for line in table.splitlines() if "| ticket" in line)
    assert [c.strip() for c in ticket.strip("|").split("|")][3] == "4"  # 2 + 2 trials
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["round"], r["arm"]): r for r in summary["workdirs"][0]["summary"]}
    assert rows[(1, "ticket")]["trials"] == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert summary["pooled"]["trial_key"] == ["seed", "trial"]
    assert [w["seed"] for w in summary["pooled"]["workdirs"]] == [0, 1]
    # ticket - reinit within (seed, trial): 0.1, 0.2, 0.4, 0.0 (mean 0.175, 3 wins, 1 tie);
    # keyed by trial alone, the two seeds' trials 0 and 1 would collide.
    row = next(
        r
        for r in summary["workdirs"][0]["paired"]
        if (r["a"], r["b"]) == ("ticket", "reinit") and r["round"] == 1
    )
    c = row["final_test_accuracy"]
    assert c["n"] == 4 and c["mean"] == pytest.approx(0.175)
    assert (c["wins"], c["ties"], c["losses"]) == (3, 1, 0)
    md = (out / "report.md").read_text()
    assert "keyed by (seed, trial)" in md and "4 trials from 2 workdirs" in md
    assert (out / "report.png").stat().st_size > 0
    # The workdirs' own reports are untouched.
    assert not os.path.exists(os.path.join(a, "report.md"))


def test_a_workdir_short_of_rounds_is_named_in_the_report(tmp_path, capsys):
    a, b = _pair(tmp_path)
    lines = open(os.path.join(b, "metrics.jsonl")).read().splitlines()
    with open(os.path.join(b, "metrics.jsonl"), "w") as f:  # as if stopped after round 0
        f.write("".join(line + "\n" for line in lines if json.loads(line)["round"] == 0))
    out = tmp_path / "out"
    assert cli.main(["report", "--pool", a, b, "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert f"Not every workdir holds every round ({a} rounds 0-1, {b} round 0)" in md
    ticket = next(line for line in capsys.readouterr().out.splitlines() if "| ticket" in line)
    assert [c.strip() for c in ticket.strip("|").split("|")][3] == "2"  # seed 0's trials only
    _pair(tmp_path / "full")
    full = [str(tmp_path / "full" / f"seed={s}") for s in (0, 1)]
    assert cli.main(["report", "--pool", *full, "--out", str(tmp_path / "o2")]) == 0
    assert "Not every workdir" not in (tmp_path / "o2" / "report.md").read_text()


def test_pool_default_folder_is_pooled_beside_the_workdirs(tmp_path, capsys):
    a, b = _pair(tmp_path)
    assert cli.main(["report", a, b, "--pool"]) == 0
    assert (tmp_path / "pooled" / "report.md").exists()
    assert pool.default_out([a, b]) == str(tmp_path / "pooled")


def test_harmless_keys_may_differ(tmp_path, capsys):
    a = _workdir(tmp_path / "a", 0, [(0.5, 0.6, 0.5)])
    b = _workdir(tmp_path / "b", 7, [(0.5, 0.6, 0.5)], num_devices=2, progress=True)
    assert cli.main(["report", "--pool", a, b, "--out", str(tmp_path / "o")]) == 0


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"imp.prune_rate": 0.5}, ["imp.prune_rate", "0.2", "0.5", "differ only in seed"]),
        ({"imp.rounds": 2, "train.steps": 300}, ["imp.rounds, train.steps"]),
        ({"num_trials": 9}, ["num_trials"]),
        ({"kind": "transfer"}, ["kind 'transfer'"]),
    ],
)
def test_other_differences_are_refused_naming_the_keys(tmp_path, capsys, changes, words):
    a = _workdir(tmp_path / "a", 0, [(0.5, 0.6, 0.5)])
    b = _workdir(tmp_path / "b", 1, [(0.5, 0.6, 0.5)], **changes)
    assert cli.main(["report", "--pool", a, b, "--out", str(tmp_path / "o")]) == 2
    line = _error(capsys)
    assert all(w in line for w in words), line
    assert not (tmp_path / "o").exists()


def test_same_seed_twice_is_refused(tmp_path, capsys):
    a = _workdir(tmp_path / "a", 3, [(0.5, 0.6, 0.5)])
    b = _workdir(tmp_path / "b", 3, [(0.5, 0.6, 0.5)])
    assert cli.main(["report", "--pool", a, b]) == 2
    line = _error(capsys)
    assert "both have seed 3" in line and "same trials" in line


def test_bad_pools_are_refused_in_one_line(tmp_path, capsys):
    a, b = _pair(tmp_path)
    assert cli.main(["report", "--pool", a]) == 2
    assert "at least two workdirs" in _error(capsys)
    assert cli.main(["report", "--pool", a, b, "--out", a]) == 2
    assert "one of the pooled workdirs" in _error(capsys)
    os.remove(os.path.join(b, "config.json"))
    assert cli.main(["report", "--pool", a, b]) == 2
    assert "no config.json" in _error(capsys)


def test_a_workdir_made_before_a_key_existed_pools_with_a_new_one(tmp_path, capsys):
    pai = {"scope": "layerwise", "batch_size": 256, "synflow_iterations": 100}
    gmp = {"start": 0.0, "end": 0.75, "every": 100}
    old = _workdir(tmp_path / "seed=0", 0, [(0.5, 0.6, 0.5)], pai=pai)  # before gmp, T
    new = {"pai": {**pai, "grasp_temperature": 200.0}, "gmp": gmp}
    b = _workdir(tmp_path / "seed=1", 1, [(0.5, 0.9, 0.5)], **new)  # the keys at defaults
    assert cli.main(["report", "--pool", old, b, "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    # With a GraSP arm, the old workdir ran at temperature 1: not the new default's run.
    arms = ["ticket", "reinit", "grasp"]
    old = _workdir(tmp_path / "g0", 0, [(0.5, 0.6, 0.5)], pai=pai, arms=arms)
    b = _workdir(tmp_path / "g1", 1, [(0.5, 0.9, 0.5)], **new, arms=arms)
    assert cli.main(["report", "--pool", old, b, "--out", str(tmp_path / "out2")]) == 2
    assert "pai.grasp_temperature (1.0 in" in _error(capsys)


def test_harmless_keys_are_the_configs():
    from lth_jax import config

    assert pool.HARMLESS_KEYS == config.HARMLESS_KEYS


def test_report_pool_imports_no_jax(tmp_path):
    a, b = _pair(tmp_path)
    code = (
        "import sys; from lth_jax import cli; "
        f"assert cli.main(['report', '--pool', {a!r}, {b!r}]) == 0; "
        "assert 'jax' not in sys.modules, 'jax imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
