"""Live metrics (:mod:`lth_jax.events`): TensorBoard files, W&B, a line per chunk, resume.

Tiny lottery runs (2 trials, 100 steps in 2 chunks, rounds 0 and 1) and tiny
transfer runs (fine-tuning arms, 40 steps in 2 chunks) whose event files are
read back with TensorBoard's own reader and compared with ``metrics.jsonl``;
switching the writer off or resuming an interrupted run changes no byte of
``metrics.jsonl``.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from tiny import tiny_config

from lth_jax import config as config_lib
from lth_jax import events, lottery, transfer
from lth_jax import workdir as wd
from lth_jax.checks import set_value

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


def test_no_plain_lines_with_log_lines_off(tmp_path, capsys):
    workdir = str(tmp_path / "quiet")
    config = _config(**{"log.tensorboard": False, "log.lines": False, "imp.rounds": 0})
    lottery.run(config, workdir, progress=False)
    assert "lth-jax: round " not in capsys.readouterr().err
    assert len(_metrics(workdir).splitlines()) == 2


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


# ----------------------------------------------------------------------------- transfer


def _transfer_config(**overrides):
    """Tiny transfer: 1 trial, source 40 steps (rounds 0 and 1), fine-tuning 40 steps in 2
    chunks; arms in two fine-tuning calls (scratch with ticket_source, pretrained+dropout)."""
    c = transfer.transfer_config()
    for key, value in {
        "num_trials": 1,
        "progress": False,
        "num_devices": 1,
        "dataset.classes": (0, 1, 2, 3, 4),
        "model.kwargs.features": (16, 8),
        "train.steps": 40,
        "train.eval_every": 20,
        "train.batch_size": 50,
        "imp.rounds": 1,
        "target.classes": (5, 6, 7),
        "target.train_sizes": (0.05,),
        "finetune.steps": 40,
        "finetune.eval_every": 20,
        "finetune.batch_size": 50,
        "finetune.optimizer.learning_rate": 2e-3,  # not the source's 1e-3
        "transfer.arms": ("scratch", "pretrained+dropout", "ticket_source"),
        **overrides,
    }.items():
        set_value(c, key, value)
    return c


def _finetune_folder(workdir, rec) -> str:
    size = f"size_{rec['size_index']:02d}"
    return os.path.join(
        workdir, events.FOLDER, "finetune", size, rec["arm"], f"trial_{rec['trial']}"
    )


def _check_finetune(workdir, records):
    """Every fine-tuning arm's curves in TensorBoard are its curves in metrics.jsonl."""
    assert len(records) == 3
    for rec in records:
        got = _scalars(_finetune_folder(workdir, rec))
        assert set(got) == set(events.NAMES), rec["arm"]
        for tag, points in got.items():
            assert [s for s, _ in points] == rec["eval_steps"] == [20, 40], (tag, rec["arm"])
        for tag, field in CURVES.items():
            want = np.asarray(rec[field], np.float32)
            assert np.array_equal([v for _, v in got[tag]], want), (tag, rec["arm"])
        assert got["test_loss"][-1][1] == np.float32(rec["final_test_loss"])
        assert [v for _, v in got["density"]] == [np.float32(rec["density"])] * 2
        assert all(v == np.float32(2e-3) for _, v in got["learning_rate"]), rec["arm"]


def _event_folders(root) -> list[str]:
    return sorted(d for d, _, fs in os.walk(root) if any(f.startswith("events.out.") for f in fs))


@pytest.fixture(scope="module")
def transfer_on(tmp_path_factory):
    """A transfer run with the defaults (TensorBoard on, progress off): ``(workdir, records,
    stderr)``."""
    workdir = str(tmp_path_factory.mktemp("events") / "transfer")
    capture = pytest.MonkeyPatch()
    err = _Tee()
    capture.setattr(sys, "stderr", err)
    try:
        records = transfer.run(_transfer_config(), workdir)
    finally:
        capture.undo()
    return workdir, records, err.text


def test_finetune_arms_are_in_tensorboard_as_in_metrics(transfer_on):
    workdir, records, _ = transfer_on
    _check_finetune(workdir, records)
    assert records[2]["arm"] == "ticket_source" and records[2]["density"] < 1.0  # sparse
    assert _event_folders(os.path.join(workdir, events.FOLDER)) == sorted(
        _finetune_folder(workdir, r) for r in records
    )
    source = os.path.join(workdir, "source")  # the source lottery run: its own folders
    assert _event_folders(os.path.join(source, events.FOLDER)) == [
        os.path.join(source, events.FOLDER, "round_00", "dense", "trial_0"),
        os.path.join(source, events.FOLDER, "round_01", "ticket", "trial_0"),
    ]


def test_finetune_prints_one_plain_line_per_chunk(transfer_on):
    _, _, err = transfer_on
    lines = [line for line in err.splitlines() if line.startswith("lth-jax: finetune ")]
    assert [line.split(":")[1] for line in lines] == [
        " finetune size 5% trial 0, step 20/40, 2 arms x 1 trial",
        " finetune size 5% trial 0, step 40/40, 2 arms x 1 trial",
        " finetune size 5% trial 0, step 20/40, 1 arm x 1 trial",
        " finetune size 5% trial 0, step 40/40, 1 arm x 1 trial",
    ]
    assert all(" train loss " in line and line.endswith(" s") for line in lines)


def test_transfer_switched_off_writes_nothing_and_changes_no_result(transfer_on, tmp_path):
    workdir = str(tmp_path / "off")
    c = _transfer_config(**{"log.tensorboard": False})
    err = _Tee()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sys, "stderr", err)
        transfer.run(c, workdir, progress=True)
    assert "lth-jax: finetune " not in err.text
    for sub in ("", "source"):
        assert not os.path.exists(os.path.join(workdir, sub, events.FOLDER))
        got = _metrics(os.path.join(workdir, sub))
        assert got == _metrics(os.path.join(transfer_on[0], sub)), sub  # bit for bit


def test_transfer_resume_hides_what_the_interrupted_run_wrote(transfer_on, tmp_path, monkeypatch):
    """Killed after the first fine-tuning call (scratch and ticket_source written, nothing in
    metrics.jsonl): the resumed run redoes the size, and TensorBoard shows each point once."""
    from lth_jax.transfer import runner

    workdir = str(tmp_path / "resumed")
    c = _transfer_config()

    def crash(*args, **kw):
        raise _Crash

    monkeypatch.setattr(runner._SizeRunner, "_record", crash)
    with pytest.raises(_Crash):
        transfer.run(c, workdir)
    monkeypatch.undo()
    first = _finetune_folder(workdir, transfer_on[1][0])
    assert len(_scalars(first)["val_loss"]) == 2 and not os.path.exists(
        os.path.join(workdir, wd.METRICS)
    )
    records = transfer.run(c, workdir)
    assert _metrics(workdir) == _metrics(transfer_on[0])
    _check_finetune(workdir, records)  # one point per step: the old ones are purged
    for rec in records:
        files = [f for f in os.listdir(_finetune_folder(workdir, rec)) if f.startswith("events.")]
        assert len(files) == (1 if rec["arm"] == "pretrained+dropout" else 2), (rec["arm"], files)


def test_transfer_overwrite_removes_the_event_files(tmp_path):
    from lth_jax.transfer import runner

    assert events.FOLDER in runner.OWNED
    workdir = tmp_path / "wd"
    (workdir / events.FOLDER / "finetune").mkdir(parents=True)
    (workdir / "notes.txt").write_text("mine")
    wd.check_contents(str(workdir), runner.OWNED)  # an lth-jax workdir: accepted
    wd.prepare(str(workdir), True, runner.OWNED)
    assert sorted(os.listdir(workdir)) == ["notes.txt"]


def test_the_writer_does_not_import_pytorch(tmp_path):
    """tensorboardX would import PyTorch when installed (a second per process); it is hidden."""
    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "torch.py").write_text("raise SystemExit('torch was imported')\n")
    code = (
        "import sys, tempfile\n"
        "from lth_jax import events\n"
        "w = events._summary_writer()(tempfile.mkdtemp())\n"
        "w.add_scalar('a', 1.0, 1); w.close()\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), *sys.path])}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "False"
