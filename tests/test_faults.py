"""Faults: SIGKILL at random moments, corrupt checkpoints, config drift, signals, NaN.

The end-to-end tests run the real ``lth-jax run`` console script on a tiny
experiment (MNIST-1D, 60 steps, 2 rounds, 2 trials, 2 arms, a mid-round
checkpoint every 20 steps) and compare ``metrics.jsonl`` byte for byte with an
uninterrupted run of the same command. The subprocesses share a JAX
compilation cache, so only the reference run compiles.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import checkpoint as ckpt_lib
from lth_jax import checks, lottery, report, workdir
from lth_jax import config as config_lib

ARGS = [
    "--config.progress=False",
    "--config.num_trials=2",
    "--config.arms=ticket,reinit",
    "--config.model.kwargs.features=(16,)",
    "--config.train.steps=60",
    "--config.train.eval_every=10",
    "--config.train.batch_size=50",
    "--config.train.eval_batch_size=500",
    "--config.imp.rounds=2",
    "--config.imp.prune_rate=0.5",
    "--config.checkpoint.every_steps=20",
]

_SCRIPT = os.path.join(os.path.dirname(sys.executable), "lth-jax")
LTH_JAX = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "lth_jax.cli"]


class Lth:
    """Starts ``lth-jax run --workdir WD ARGS EXTRA`` with a shared compilation cache."""

    def __init__(self, cache_dir: str):
        self.env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "JAX_COMPILATION_CACHE_DIR": cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            "TFDS_DISABLE_GCS": "1",
        }

    def start(self, workdir, *extra) -> subprocess.Popen:
        return subprocess.Popen(
            [*LTH_JAX, "run", "--workdir", str(workdir), *ARGS, *extra],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, workdir, *extra, timeout=240):
        p = self.start(workdir, *extra)
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err


@pytest.fixture(scope="module")
def lth(tmp_path_factory):
    return Lth(str(tmp_path_factory.mktemp("jax_cache")))


@pytest.fixture(scope="module")
def reference(lth, tmp_path_factory):
    """An uninterrupted run: ``(workdir, metrics.jsonl bytes)``."""
    wd = tmp_path_factory.mktemp("reference") / "wd"
    rc, _, err = lth.run(wd)
    assert rc == 0, err
    metrics = (wd / "metrics.jsonl").read_bytes()
    recs = [json.loads(line) for line in metrics.decode().splitlines()]
    assert len(recs) == 2 + 2 * 4 and all(r["status"] == "ok" for r in recs)
    return wd, metrics


def _names(d) -> set[str]:
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def _finished(wd) -> set[str]:
    """Finished round and mid-round checkpoints (names that orbax reads)."""
    ck = os.path.join(wd, "checkpoints")
    part = os.path.join(ck, "partial")
    return {n for n in _names(ck) if n.isdigit()} | {"p" + n for n in _names(part) if n.isdigit()}


def _tmp_dirs(wd, where=("", "partial")) -> list[str]:
    ck = os.path.join(wd, "checkpoints")
    return [
        n for sub in where for n in _names(os.path.join(ck, sub)) if ".orbax-checkpoint-tmp" in n
    ]


def _wait(cond, proc, timeout, interval):
    """Polls ``cond()`` until true, the process ends or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if cond():
            return True
        time.sleep(interval)
    return False


def test_sigkill_at_random_moments_resumes_to_identical_metrics(lth, reference, tmp_path):
    """Kills during a mid-round write, a round write and at random moments; then resumes."""
    _, ref = reference
    wd = tmp_path / "wd"
    rng = random.Random(20240611)
    kills, errs = [], []
    for i in range(3):
        before = _finished(wd)
        p = lth.start(wd)
        try:
            if i == 0:  # while a mid-round checkpoint is being written
                _wait(lambda: _tmp_dirs(wd, ("partial",)), p, timeout=90, interval=0.002)
            elif i == 1:  # while a round checkpoint is being written
                _wait(lambda: _tmp_dirs(wd, ("",)), p, timeout=90, interval=0.002)
            else:  # at a random moment once this process has made progress
                _wait(lambda b=before: _finished(wd) - b, p, timeout=90, interval=0.01)
                time.sleep(rng.uniform(0.0, 0.8))
            if p.poll() is not None:
                break  # it finished first
            p.kill()
            kills.append((i, sorted(_finished(wd))))
        finally:
            if p.poll() is None:
                p.kill()
            _, err = p.communicate()
            errs.append(err)
    assert len(kills) >= 3, kills
    rc, _, err = lth.run(wd)
    errs.append(err)
    assert rc == 0, err
    # A killed write is never taken for a finished checkpoint, nor reported as corrupt.
    assert not any("cannot be read" in e for e in errs), errs
    assert any("resuming round" in e for e in errs), errs  # mid-round checkpoints were used
    assert (wd / "metrics.jsonl").read_bytes() == ref
    assert not _tmp_dirs(wd) and not _names(wd / "checkpoints" / "partial")


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_round(lth, reference, tmp_path):
    ref_wd, ref = reference
    wd = tmp_path / "wd"
    shutil.copytree(ref_wd, wd)
    timing = (wd / "timing.jsonl").read_text()
    for d in (wd / "checkpoints" / "2" / "state").rglob("d"):  # truncate every array file
        for f in d.iterdir():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    rc, _, err = lth.run(wd)
    assert rc == 0, err
    assert "warning: checkpoint of round 2 cannot be read" in err
    assert "falling back to the previous round" in err
    assert (wd / "checkpoints" / "2.corrupt-0").is_dir()  # kept, never deleted
    assert (wd / "metrics.jsonl").read_bytes() == ref
    redone = (wd / "timing.jsonl").read_text()[len(timing) :].splitlines()
    assert [json.loads(line)["round"] for line in redone] == [2]  # only the lost round


def test_config_drift_is_refused_naming_the_keys(lth, reference, tmp_path):
    ref_wd, ref = reference
    wd = tmp_path / "wd"
    shutil.copytree(ref_wd, wd)
    rc, _, err = lth.run(wd, "--config.optimizer.learning_rate=0.01", "--config.seed=3")
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("lth-jax: error: workdir ")
    assert "optimizer.learning_rate (0.001 -> 0.01)" in lines[0] and "seed (0 -> 3)" in lines[0]
    assert "--overwrite" in lines[0]
    assert (wd / "metrics.jsonl").read_bytes() == ref
    # --overwrite with a bad value: refused before anything is discarded.
    rc, _, err = lth.run(wd, "--config.imp.prune_rate=1.5", "--overwrite")
    assert rc == 2 and "imp.prune_rate" in err, err
    assert (wd / "metrics.jsonl").read_bytes() == ref
    assert sorted(_finished(wd)) == ["0", "1", "2"]


def test_signals_save_a_checkpoint_exit_cleanly_and_resume(lth, reference, tmp_path):
    """SIGTERM (exit 143), then SIGINT (exit 130) on the resumed run, then a full resume."""
    _, ref = reference
    wd = tmp_path / "wd"
    errs = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = _finished(wd)
        p = lth.start(wd)
        try:
            new_partial = lambda b=before: any(n.startswith("p") for n in _finished(wd) - b)
            assert _wait(new_partial, p, 90, 0.005), p.communicate()[1]
            p.send_signal(sig)
            _, err = p.communicate(timeout=90)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        assert p.returncode == 128 + sig, err
        assert "Traceback" not in err
        assert f"stopped by {sig.name}" in err and "run the same command again to resume" in err
        errs.append(err)
    rc, _, err = lth.run(wd)
    assert rc == 0, err
    assert "resuming round" in errs[1] + err
    assert (wd / "metrics.jsonl").read_bytes() == ref


# ----------------------------------------------------------------------------- in-process


def _tiny(**overrides):
    c = config_lib.default_config()
    c.progress = False
    c.num_devices = 1
    c.num_trials = 2
    c.arms = ("ticket", "reinit")
    c.model.kwargs.features = (16,)
    c.train.steps = 20
    c.train.eval_every = 10
    c.train.batch_size = 50
    c.imp.rounds = 1
    from lth_jax.checks import set_value

    for key, value in overrides.items():
        set_value(c, key, value)
    return c


@pytest.fixture(scope="module")
def small():
    """An experiment (3 trials on 2 devices, ticket arm, LR rewinding to step 10) and round 0."""
    c = _tiny(num_trials=3, num_devices=2, arms=("ticket",))
    c.train.steps, c.imp.rewind_step, c.imp.rewind = 40, 10, "lr"
    exp = lottery.Experiment(c)
    s0, r0 = exp.dense_round()
    return exp, s0, r0


def test_non_finite_loss_stops_only_that_run(small, capsys, monkeypatch):
    """A NaN start point for trial 1 in round 1: that run alone is marked failed."""
    exp, s0, r0 = small
    original = exp.round_inputs

    def poisoned(prev, round_):
        arms, params, bs, mask, k, fixed = original(prev, round_)
        j = arms.index("ticket") * len(exp.trials) + 1
        params = jax.tree.map(lambda a: a.at[j].set(jnp.nan), params)
        return arms, params, bs, mask, k, fixed

    monkeypatch.setattr(exp, "round_inputs", poisoned)
    _, r1 = exp.prune_round(s0, 1)
    err = capsys.readouterr().err
    records = r0 + r1
    failed = [r for r in records if r["status"] != "ok"]
    assert [(r["arm"], r["trial"], r["round"], r["status"]) for r in failed] == [
        ("ticket", 1, 1, "nan")
    ]
    assert failed[0]["fail_step"] == 10  # the first step of the round (rewound to step 10)
    assert "arm ticket, trial 1, round 1: non-finite training loss at step 10" in err
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 5 and all(np.isfinite(r["final_test_accuracy"]) for r in ok)
    assert all(np.all(np.isfinite(r["train_loss_curve"])) for r in ok)
    rows = {(r["round"], r["arm"]): r for r in report.summarize(records)}
    assert rows[(1, "ticket")]["n_failed"] == 1 and rows[(1, "ticket")]["n"] == 2
    assert rows[(1, "ticket")]["failed_trials"] == [1]
    assert rows[(0, "dense")]["n_failed"] == 0 and rows[(0, "dense")]["n"] == 3
    assert "1 failed" in report.format_table(report.summarize(records))


def test_checkpoint_digests_catch_silent_changes_and_tmp_dirs_are_ignored(tmp_path, capsys):
    d = str(tmp_path / "ck")
    ck = ckpt_lib.RoundCheckpointer(d)
    state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "empty": {}}
    ck.save(0, state, {"round": 0, "records": [{"a": 1.0}]})
    ck.save(1, state, {"round": 1, "records": [{"a": 1.0}, {"a": 2.0}]})
    ck.save(2, state, {"round": 2, "records": [{"a": 1.0}, {"a": 2.0}, {"a": 0.25}]})
    for step in (10, 20):
        ck.save_partial(2, step, state, {"num_runs": 3})
    ck.close()
    # A changed digit in the records of round 2: valid JSON, caught by its digest.
    meta = tmp_path / "ck" / "2" / "meta" / "metadata"
    assert '"a": 0.25' in meta.read_text()
    meta.write_text(meta.read_text().replace('"a": 0.25', '"a": 0.35'))
    # A digest that no longer matches (as if the arrays had changed on disk).
    digest = tmp_path / "ck" / "1" / "digest" / "metadata"
    digest.write_text(digest.read_text().replace('"state": "', '"state": "0'))
    partial = tmp_path / "ck" / "partial" / str(2 * ckpt_lib.PARTIAL_STRIDE + 20)
    (partial / "meta" / "metadata").write_text("{not json")
    os.makedirs(tmp_path / "ck" / "3.orbax-checkpoint-tmp-123")  # a write cut short
    ck = ckpt_lib.RoundCheckpointer(d)
    assert ck.rounds() == [0, 1, 2]
    r, restored, meta = ck.restore_latest()
    assert r == 0 and meta["records"] == [{"a": 1.0}]
    assert np.array_equal(restored["w"], state["w"]) and restored["empty"] == {}
    step, _, pmeta = ck.restore_partial(2)
    assert step == 10 and pmeta["round"] == 2
    ck.close()
    err = capsys.readouterr().err
    assert "checkpoint of round 2 cannot be read (CorruptCheckpointError: the metadata" in err
    assert "checkpoint of round 1 cannot be read (CorruptCheckpointError: the arrays" in err
    assert "mid-round checkpoint of round 2 at step 20 cannot be read" in err
    assert not (tmp_path / "ck" / "3.orbax-checkpoint-tmp-123").exists()
    assert (tmp_path / "ck" / "1.corrupt-0").is_dir()


def test_config_drift_check_unit(tmp_path):
    c = _tiny()
    saved = workdir.config_to_json(c)
    del saved["checkpoint"]["every_steps"]  # a key added after the workdir was made
    saved["progress"] = True  # harmless keys
    saved["checkpoint"]["max_to_keep"] = 3
    workdir.write_json_atomic(str(tmp_path / "config.json"), saved)
    config_lib.check_drift(str(tmp_path), c)  # accepted
    c.imp.prune_rate = 0.3
    with pytest.raises(workdir.DriftError, match=r"imp\.prune_rate \(0\.2 -> 0\.3\)") as e:
        config_lib.check_drift(str(tmp_path), c)
    # The problem and lth-jax run's advice apart, for commands with other options (sweep).
    assert e.value.advice == "use another --workdir, or --overwrite to discard it"
    assert str(e.value) == f"{e.value.problem}; {e.value.advice}"
    assert "imp.prune_rate" in e.value.problem and "--" not in e.value.problem
    assert e.value.differences == (("imp.prune_rate", 0.2, 0.3),)
    again = pickle.loads(pickle.dumps(e.value))  # e.g. passed between processes
    assert (again.problem, again.advice, str(again), again.differences) == (
        e.value.problem,
        e.value.advice,
        str(e.value),
        e.value.differences,
    )
    # A key the saved config lacks, set to a non-default value: MISSING, kept by a pickled copy.
    c.imp.prune_rate = 0.2
    del saved["gmp"]["every"]
    workdir.write_json_atomic(str(tmp_path / "config.json"), saved)
    c.gmp.every = 7
    with pytest.raises(workdir.DriftError) as e:
        config_lib.check_drift(str(tmp_path), c)
    assert e.value.differences == (("gmp.every", checks.MISSING, 7),)
    assert pickle.loads(pickle.dumps(e.value)).differences[0][1] is checks.MISSING
    (tmp_path / "config.json").write_text("{garbled")
    with pytest.raises(workdir.DriftError, match="config.json cannot be read") as e:
        config_lib.check_drift(str(tmp_path), _tiny())
    assert "--overwrite" in e.value.advice and "--" not in e.value.problem
    (tmp_path / "config.json").unlink()
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(workdir.DriftError, match="holds results .metrics.jsonl.") as e:
        config_lib.check_drift(str(tmp_path), _tiny())
    assert "--overwrite" in e.value.advice and "--" not in e.value.problem


def test_overwrite_discards_the_previous_run(tmp_path):
    wd = tmp_path / "wd"
    (wd / "checkpoints" / "0").mkdir(parents=True)
    for name in ("metrics.jsonl", "config.json", "timing.jsonl", "report.md", "notes.txt"):
        (wd / name).write_text("x")
    (wd / "metrics.jsonl.tmp-999999").write_text("cut short")
    workdir.prepare(str(wd), True, lottery.OWNED)
    assert sorted(os.listdir(wd)) == ["notes.txt"]  # only the run's own files go


def _same_tree(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
    )


def test_mid_round_resume_is_bit_identical(small, tmp_path):
    """Stop a round after a chunk, restore its checkpoint, finish: same state and records.

    Covers the rewind snapshot taken before the stop (round 0), learning-rate
    rewinding from step k (round 1) and runs padded to the device count (3 trials
    on 2 devices).
    """
    exp, s0, r0 = small
    ck = ckpt_lib.RoundCheckpointer(str(tmp_path / "ck"))

    class Stop(Exception):
        pass

    def stop_at(round_, at):
        def hook(step, get_state):
            if step == at:
                ck.save_partial(round_, step, *get_state())
                raise Stop

        return hook

    with pytest.raises(Stop):
        exp.dense_round(on_chunk=stop_at(0, 30))
    s0b, r0b = exp.dense_round(resume=ck.restore_partial(0))
    assert _same_tree(s0, s0b) and json.dumps(r0) == json.dumps(r0b)

    s1, r1 = exp.prune_round(s0, 1)
    with pytest.raises(Stop):
        exp.prune_round(s0, 1, on_chunk=stop_at(1, 20))
    resume = ck.restore_partial(1)
    assert resume[0] == 20
    s1b, r1b = exp.prune_round(s0, 1, resume=resume)
    assert _same_tree(s1, s1b) and json.dumps(r1) == json.dumps(r1b)
    ck.close()


def test_more_rounds_extend_a_finished_run_and_fewer_are_refused(tmp_path):
    wd = str(tmp_path / "wd")
    lottery.run(_tiny(), wd)  # 1 round
    extended = lottery.run(_tiny(**{"imp.rounds": 2}), wd)
    fresh = lottery.run(_tiny(**{"imp.rounds": 2}), str(tmp_path / "fresh"))
    assert sorted({r["round"] for r in extended}) == [0, 1, 2]
    assert json.dumps(extended, sort_keys=True) == json.dumps(fresh, sort_keys=True)
    assert json.load(open(os.path.join(wd, "config.json")))["imp"]["rounds"] == 2
    with pytest.raises(ValueError, match=r"imp\.rounds \(2 -> 1\)"):
        lottery.run(_tiny(), wd)


def test_a_nested_signal_guard_takes_over_a_signal_the_outer_one_received():
    with workdir.SignalGuard() as outer:
        with workdir.SignalGuard() as quiet:
            assert quiet.signum is None  # nothing received: nothing taken over
        os.kill(os.getpid(), signal.SIGINT)  # the first signal: only a flag
        assert outer.signum == signal.SIGINT
        with workdir.SignalGuard() as inner:  # e.g. the target IMP run inside a transfer run
            assert inner.signum == signal.SIGINT  # it stops at its first safe point
            with pytest.raises(workdir.Interrupted, match="at once"):
                os.kill(os.getpid(), signal.SIGINT)  # a second signal stops at once
                time.sleep(1)
