"""Nothing lost, nothing mixed: the workdir lock, safe overwrite, foreign files, repairs.

Real ``lth-jax run`` processes where the behaviour is the command's (each bounded
in time), with a small fast config.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cli_runs import LTH_JAX, cli_env
from cli_runs import SMALL_RUN as ARGS

from lth_jax import workdir as wd


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return cli_env(str(tmp_path_factory.mktemp("jax_cache")))


def _start(env, workdir, *extra, args=ARGS):
    return subprocess.Popen(
        [*LTH_JAX, "run", "--workdir", str(workdir), *args, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(env, workdir, *extra, timeout=240, args=ARGS):
    p = _start(env, workdir, *extra, args=args)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _snapshot(d) -> dict:
    """Every file under ``d`` (but the lock) with its bytes."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            if f != wd.LOCK:
                out[os.path.relpath(p, d)] = open(p, "rb").read()
    return out


@pytest.fixture(scope="module")
def finished(env, tmp_path_factory):
    """A finished run: ``(workdir, snapshot of its files)``."""
    d = tmp_path_factory.mktemp("finished") / "wd"
    rc, _, err = _run(env, d)
    assert rc == 0, err
    return d, _snapshot(d)


def _copy(finished, tmp_path):
    d = tmp_path / "wd"
    shutil.copytree(finished[0], d)
    return d


def _model_config(tmp_path, name: str) -> str:
    """A config file: the default experiment with model ``name`` and no model arguments."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        "from lth_jax.config import default_config\n\n\n"
        "def get_config():\n"
        "    c = default_config()\n"
        f"    c.model.name = {name!r}\n"
        "    c.model.kwargs.features = None\n"
        "    return c\n"
    )
    return f"--config={path}"


NO_FEATURES = [a for a in ARGS if "features" not in a]


@pytest.mark.parametrize(
    "model,extra,match",
    [
        (None, ["--config.dataset.augment=True"], "with dataset.augment"),
        ("conv2", [], "model conv2"),
        ("resnet20", [], "model resnet20"),
    ],
)
def test_overwrite_deletes_nothing_before_the_new_run_is_known_to_work(
    env, finished, tmp_path, model, extra, match
):
    d = _copy(finished, tmp_path)
    args = ARGS if model is None else [_model_config(tmp_path, model), *NO_FEATURES]
    rc, _, err = _run(env, d, "--overwrite", *extra, args=args)
    assert rc == 2 and match in _one_line(err)
    assert _snapshot(d) == finished[1]  # the finished run is intact


def test_results_without_config_json_are_refused(env, finished, tmp_path):
    d = _copy(finished, tmp_path)
    os.remove(d / "config.json")
    rc, _, err = _run(env, d, "--config.optimizer.learning_rate=0.01")
    line = _one_line(err)
    assert rc == 2 and "no config.json" in line and "--overwrite" in line
    assert not (d / "config.json").exists()
    assert (d / "metrics.jsonl").read_bytes() == finished[1]["metrics.jsonl"]


def test_a_second_run_on_a_busy_workdir_is_refused_at_once(env, finished, tmp_path):
    d = tmp_path / "wd"
    first = _start(env, d)
    try:
        lock = d / wd.LOCK
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().startswith("lth-jax pid")):
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.05)
        # The first run is paused while the second starts: it holds the lock however fast
        # it would otherwise finish (a small run can end before a second process is up).
        os.kill(first.pid, signal.SIGSTOP)
        t = time.monotonic()
        rc, _, err = _run(env, d, "--config.optimizer.learning_rate=0.01", timeout=60)
        line = _one_line(err)
        assert rc == 2 and f"pid {first.pid}" in line and "in use" in line
        assert time.monotonic() - t < 30
    finally:
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    # The first run's results are those of a run alone.
    assert (d / "metrics.jsonl").read_bytes() == finished[1]["metrics.jsonl"]


def test_a_killed_run_leaves_no_stale_lock(env, finished, tmp_path):
    d = tmp_path / "wd"
    p = _start(env, d)
    deadline = time.monotonic() + 120
    while not (d / wd.LOCK).exists() or not (d / wd.LOCK).read_text():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    p.kill()
    p.communicate(timeout=60)
    rc, _, err = _run(env, d)
    assert rc == 0, err
    assert (d / "metrics.jsonl").read_bytes() == finished[1]["metrics.jsonl"]


def test_files_lth_jax_did_not_write_are_kept_and_foreign_folders_refused(env, finished, tmp_path):
    d = _copy(finished, tmp_path)
    (d / "notes.tmp-12345").write_text("mine")
    (d / "metrics.jsonl.tmp-999999").write_text("cut short")  # a killed writer's
    rc, _, err = _run(env, d)
    assert rc == 0, err
    assert (d / "notes.tmp-12345").read_text() == "mine"
    assert not (d / "metrics.jsonl.tmp-999999").exists()
    rc, _, err = _run(env, d, "--overwrite")
    assert rc == 0, err
    assert (d / "notes.tmp-12345").read_text() == "mine"

    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("x")
    for extra in ([], ["--overwrite"]):
        rc, _, err = _run(env, other, *extra)
        assert rc == 2 and "holds no lth-jax run" in _one_line(err)
        assert os.listdir(other) == ["chapter1.tex"]


@pytest.mark.parametrize("case", ["checkpoints_file", "metrics_folder", "checkpoints_link"])
def test_entries_of_the_wrong_kind_are_refused_before_anything_is_deleted(
    env, finished, tmp_path, case
):
    d = _copy(finished, tmp_path)
    if case == "checkpoints_file":
        shutil.rmtree(d / "checkpoints")
        (d / "checkpoints").write_text("x")
    elif case == "metrics_folder":
        os.remove(d / "metrics.jsonl")
        (d / "metrics.jsonl").mkdir()
    else:
        target = tmp_path / "elsewhere"
        shutil.move(str(d / "checkpoints"), target)
        os.symlink(target, d / "checkpoints")
    before = _snapshot(d)
    rc, _, err = _run(env, d, "--overwrite")
    assert rc == 2, err
    _one_line(err)
    assert _snapshot(d) == before
    if case == "checkpoints_link":
        assert os.path.isdir(tmp_path / "elsewhere")


def test_a_half_line_appended_to_finished_metrics_is_repaired(env, finished, tmp_path):
    d = _copy(finished, tmp_path)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"round": 3, "arm": "tick')
    rc, _, err = _run(env, d)
    assert rc == 0, err
    assert (d / "metrics.jsonl").read_bytes() == finished[1]["metrics.jsonl"]


def test_every_dense_run_diverged_stops_with_one_line(env, tmp_path):
    d = tmp_path / "wd"
    args = [*ARGS, "--config.optimizer.name=sgd", "--config.optimizer.learning_rate=1e30"]
    rc, _, err = _run(env, d, args=args)
    assert rc == 1
    line = [x for x in err.splitlines() if x.startswith("lth-jax: error:")]
    assert len(line) == 1 and "diverged in every trial" in line[0] and "Traceback" not in err
    recs = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in recs] == [0] and recs[0]["status"] == "nan"
    # Running it again says the same; nothing is pruned.
    rc, _, err = _run(env, d, args=args)
    assert rc == 1 and "diverged in every trial" in err


def test_a_full_disk_is_one_line_naming_the_file(env, tmp_path):
    d = tmp_path / "wd"
    code = (
        "import errno, os, sys\n"
        "from lth_jax.workdir import files\n"
        "def full(fd):\n"
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "files.os.fsync = full\n"
        "from lth_jax import cli\n"
        f"sys.exit(cli.main(['run', '--workdir', {str(d)!r}, *{ARGS!r}]))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
    )
    assert p.returncode == 1
    line = _one_line(p.stderr)
    assert "no space left" in line and "config.json" in line and "resume" in line


def test_later_rounds_stay_in_metrics_while_an_earlier_one_is_redone(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    before = [{"round": r, "arm": "ticket", "trial": 0, "v": r} for r in range(3)]
    wd.write_jsonl_atomic(path, before)
    # Rounds 1 and 2 unreadable: the run goes on from round 0 and redoes round 1.
    assert wd.sync_metrics(path, before[:1]) == before
    assert wd.read_jsonl(path) == before
    wd.write_metrics(path, before[:2], before)
    assert wd.read_jsonl(path) == before  # round 2's line is kept until redone
    changed = [before[0], {**before[1], "v": 9}]
    wd.write_metrics(path, changed, before)
    assert wd.read_jsonl(path) == changed  # a round that came out differently drops later ones


def test_a_trial_whose_dense_run_diverged_is_not_pruned(tmp_path):
    """The other trials go on with their own keys; the diverged one's later records say why."""
    import numpy as np

    from lth_jax import config as config_lib
    from lth_jax import diverged as diverged_lib
    from lth_jax import lottery

    c = config_lib.default_config()
    c.num_trials, c.progress, c.num_devices = 3, False, 1
    c.model.kwargs.features = (8,)
    c.train.steps, c.train.eval_every, c.imp.rounds = 20, 10, 1
    exp = lottery.Experiment(c)
    state, recs = exp.dense_round()
    recs[1] = {**recs[1], "status": "nan", "fail_step": 7}  # trial 1 diverged
    kept = diverged_lib.drop_diverged(exp, state, recs)
    assert list(exp.trials) == [0, 2]
    np.testing.assert_array_equal(
        kept["ticket"]["params"]["head"]["kernel"],
        np.asarray(state["ticket"]["params"]["head"]["kernel"])[[0, 2]],
    )
    _, round1 = exp.prune_round(kept, 1)
    out = diverged_lib.with_skipped(exp, 1, round1, recs)
    assert [(r["arm"], r["trial"]) for r in out] == [(a, t) for a in c.arms for t in (0, 1, 2)]
    skipped = [r for r in out if r["trial"] == 1]
    assert all(r["status"] == "skipped" and "step 7" in r["reason"] for r in skipped)
    # Trials 0 and 2 are what they are in a run where no trial diverged.
    full = lottery.Experiment(c)
    s0, r0 = full.dense_round()
    _, r1 = full.prune_round(s0, 1)
    assert [r for r in r1 if r["trial"] != 1] == [r for r in out if r["trial"] != 1]
    # Every trial diverged: nothing to prune.
    with pytest.raises(wd.RunFailed, match="every trial"):
        diverged_lib.diverged([{**r, "status": "nan", "fail_step": 3} for r in recs])


def test_a_rerun_says_what_it_found(env, finished, tmp_path):
    """Rerunning a finished run says every round is done; one with more rounds, where it
    resumes (a mid-round resume says so itself, tested in test_faults)."""
    d = _copy(finished, tmp_path)
    rc, _, err = _run(env, d)
    assert rc == 0, err
    assert "lth-jax: all rounds (0-2) are done already; writing the report" in err
    assert (d / "metrics.jsonl").read_bytes() == finished[1]["metrics.jsonl"]
    rc, _, err = _run(env, d, "--config.imp.rounds=3")
    assert rc == 0, err
    assert "lth-jax: resuming after round 2 (rounds 0-2 are done)" in err
