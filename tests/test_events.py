"""Live metrics (:mod:`lth_jax.events`): TensorBoard files, W&B, a line per chunk, resume.

Tiny lottery runs (2 trials, 100 steps in 2 chunks, rounds 0 and 1) whose
event files are read back with TensorBoard's own reader and compared with
``metrics.jsonl``; switching the writer off or resuming an interrupted run
changes no byte of ``metrics.jsonl``.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import types

import numpy as np
import pytest
from tiny import tiny_config

from lth_jax import config as config_lib
from lth_jax import events, lottery
from lth_jax import workdir as wd

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard (the test extra) reads the event files",
)

CURVES = {
    "train_loss": "train_loss_curve",
    "val_loss": "val_loss_curve",
    "val_accuracy": "val_accuracy_curve",
    "test_accuracy": "test_accuracy_curve",
}


def _config(**overrides):
    return tiny_config(**{"imp.rounds": 1, **overrides})


def _scalars(path: str) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of one TensorBoard run folder, as TensorBoard reads it."""
    acc = event_accumulator.EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def _run_folder(workdir, rec) -> str:
    return os.path.join(
        workdir, events.FOLDER, f"round_{rec['round']:02d}", rec["arm"], f"trial_{rec['trial']}"
    )


def _check_against_records(workdir, records):
    """Every run's curves in TensorBoard are its curves in metrics.jsonl, one point per eval."""
    for rec in records:
        got = _scalars(_run_folder(workdir, rec))
        assert set(got) == set(events.NAMES), rec
        for tag, points in got.items():
            assert [s for s, _ in points] == rec["eval_steps"], (tag, rec["arm"])
            assert len(points) >= 2
        for tag, field in CURVES.items():
            want = np.asarray(rec[field], np.float32)
            assert np.array_equal([v for _, v in got[tag]], want), (tag, rec["arm"])
        assert got["test_loss"][-1][1] == np.float32(rec["final_test_loss"])
        assert got["density"][-1][1] == np.float32(rec["density"])
        assert all(v == np.float32(1e-3) for _, v in got["learning_rate"])  # constant schedule


class _Tee:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s
        return len(s)

    def flush(self):
        pass


@pytest.fixture(scope="module")
def on(tmp_path_factory):
    """A run with the defaults (TensorBoard on, progress off): ``(workdir, records, stderr)``."""
    workdir = str(tmp_path_factory.mktemp("events") / "on")
    capture = pytest.MonkeyPatch()
    err = _Tee()
    capture.setattr(sys, "stderr", err)
    try:
        records = lottery.run(_config(), workdir)
    finally:
        capture.undo()
    return workdir, records, err.text


def _metrics(workdir) -> bytes:
    with open(os.path.join(workdir, wd.METRICS), "rb") as f:
        return f.read()


def test_every_chunk_is_in_tensorboard_as_in_metrics(on):
    workdir, records, _ = on
    assert len(records) == 2 + 3 * 2
    _check_against_records(workdir, records)
    root = os.path.join(workdir, events.FOLDER)
    folders = sorted(
        d for d, _, files in os.walk(root) if any(f.startswith("events.out.") for f in files)
    )
    assert folders == sorted(_run_folder(workdir, r) for r in records)


def test_one_plain_line_per_chunk_with_progress_off(on):
    _, _, err = on
    lines = [line for line in err.splitlines() if line.startswith("lth-jax: round ")]
    assert [line.split(":")[1] for line in lines] == [
        " round 0, step 50/100, 1 arm x 2 trials",
        " round 0, step 100/100, 1 arm x 2 trials",
        " round 1, step 50/100, 3 arms x 2 trials",
        " round 1, step 100/100, 3 arms x 2 trials",
    ]
    assert all(" train loss " in line and line.endswith(" s") for line in lines)


def test_switched_off_writes_nothing_and_changes_no_result(on, tmp_path, capsys):
    workdir = str(tmp_path / "off")
    lottery.run(_config(**{"log.tensorboard": False, "imp.rounds": 0}), workdir, progress=True)
    assert not os.path.exists(os.path.join(workdir, events.FOLDER))
    assert "lth-jax: round " not in capsys.readouterr().err  # progress bars instead
    dense = _metrics(workdir).splitlines()
    assert len(dense) == 2 and dense == _metrics(on[0]).splitlines()[:2]  # round 0, bit for bit


class _Crash(Exception):
    pass


def test_resume_appends_and_hides_what_the_interrupted_run_wrote_after_it(
    on, tmp_path, monkeypatch
):
    """Killed after round 1's last chunk (step 100), before its checkpoint: the resumed run
    restarts from the mid-round checkpoint at step 50 and writes step 100 again."""
    workdir = str(tmp_path / "resumed")
    config = _config(**{"checkpoint.every_steps": 50})
    original = wd.ChunkSaver.__call__

    def crash(self, step, get_state):
        original(self, step, get_state)
        if self.round == 1 and step == 100:
            raise _Crash

    monkeypatch.setattr(wd.ChunkSaver, "__call__", crash)
    with pytest.raises(_Crash):
        lottery.run(config, workdir)
    monkeypatch.undo()
    records = lottery.run(config, workdir)
    assert _metrics(workdir) == _metrics(on[0])
    _check_against_records(workdir, records)  # one point per step: the old ones are purged
    for rec in records:
        files = [f for f in os.listdir(_run_folder(workdir, rec)) if f.startswith("events.")]
        assert len(files) == (1 if rec["round"] == 0 else 2), (rec["round"], files)


def test_overwrite_removes_the_event_files(tmp_path):
    assert events.FOLDER in lottery.OWNED and events.FOLDER in wd.FOLDERS
    workdir = tmp_path / "wd"
    (workdir / events.FOLDER / "round_00").mkdir(parents=True)
    (workdir / "notes.txt").write_text("mine")
    wd.prepare(str(workdir), True, lottery.OWNED)
    assert sorted(os.listdir(workdir)) == ["notes.txt"]


def test_wandb_asked_but_not_installed_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    config_lib.validate(_config())  # off by default: fine
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.validate(_config(**{"log.wandb": True}))
    assert "\n" not in str(info.value) and "pip install wandb" in str(info.value)


def test_wandb_gets_the_same_values_and_keeps_its_run_id(tmp_path, monkeypatch):
    calls = []

    class Run:
        def define_metric(self, name, **kw):
            calls.append(("define_metric", name, kw))

        def log(self, data):
            calls.append(("log", data))

        def finish(self):
            calls.append(("finish",))

    def init(**kw):
        calls.append(("init", kw))
        return Run()

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = init
    monkeypatch.setitem(sys.modules, "wandb", fake)
    c = _config(**{"imp.rounds": 0, "log.wandb": True, "log.tensorboard": False})
    workdir = str(tmp_path / "wb")
    (rec0, _) = lottery.run(c, workdir)
    inits = [x[1] for x in calls if x[0] == "init"]
    assert len(inits) == 1 and inits[0]["resume"] == "allow" and inits[0]["name"] == "wb"
    with open(os.path.join(workdir, events.FOLDER, events.WANDB_ID)) as f:
        assert f.read().strip() == inits[0]["id"]
    assert inits[0]["config"] == json.load(open(os.path.join(workdir, wd.CONFIG)))
    logs = [x[1] for x in calls if x[0] == "log"]
    assert [d["step"] for d in logs] == [50, 100]
    key = "round_00/dense/trial_0/val_accuracy"
    assert [np.float32(d[key]) for d in logs] == list(np.float32(rec0["val_accuracy_curve"]))
    assert calls[-1] == ("finish",)
    assert os.listdir(os.path.join(workdir, events.FOLDER)) == [events.WANDB_ID]
    calls.clear()
    lottery.run(c, workdir)  # finished: nothing trains, the same W&B run is resumed
    assert [x[1]["id"] for x in calls if x[0] == "init"] == [inits[0]["id"]]
    assert not [x for x in calls if x[0] == "log"]
