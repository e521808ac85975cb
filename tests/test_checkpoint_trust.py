"""Checkpoints that are not trusted: a missing digest, and a quiet fallback from a corrupt one.

The end-to-end tests run the real ``lth-jax run`` command on a tiny experiment
(MNIST-1D, 200 steps, 2 rounds, 1 trial), change its checkpoints on disk, run
it again and compare ``metrics.jsonl`` byte for byte with the finished run.
The subprocesses share a JAX compilation cache, so only the first one compiles.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorstore as ts
from cli_runs import LTH_JAX, cli_env
from cli_runs import SMALL_RUN as ARGS

from lth_jax import checkpoint as ckpt_lib


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``run(workdir) -> (returncode, stderr)``: ``lth-jax run`` with a shared compilation cache."""
    env = cli_env(str(tmp_path_factory.mktemp("jax_cache")))

    def go(workdir):
        p = subprocess.run(
            [*LTH_JAX, "run", "--workdir", str(workdir), *ARGS],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return p.returncode, p.stderr

    return go


@pytest.fixture(scope="module")
def finished(run, tmp_path_factory):
    """A finished run: ``(workdir, metrics.jsonl bytes)``."""
    wd = tmp_path_factory.mktemp("finished") / "wd"
    rc, err = run(wd)
    assert rc == 0, err
    return wd, (wd / "metrics.jsonl").read_bytes()


def _copy(finished, tmp_path):
    wd = tmp_path / "wd"
    shutil.copytree(finished[0], wd)
    return wd


def _meta_file(checkpoint_dir) -> str:
    """The JSON file orbax wrote for the ``meta`` item of a checkpoint."""
    for root, _, files in os.walk(os.path.join(checkpoint_dir, "meta")):
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path) as f:
                    obj = json.load(f)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict) and "records" in obj:
                return path
    raise AssertionError(f"no metadata JSON under {checkpoint_dir}/meta")


def _set_aside_warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "cannot be read" in line]


# ----------------------------------------------------------------------------- end to end


def test_a_checkpoint_without_its_digest_is_not_trusted(run, finished, tmp_path):
    """A forged round checkpoint (digest removed, an accuracy edited) is set aside and redone."""
    wd = _copy(finished, tmp_path)
    ck2 = wd / "checkpoints" / "2"
    shutil.rmtree(ck2 / "digest")
    path = _meta_file(ck2)
    with open(path) as f:
        meta = json.load(f)
    forged = next(r for r in meta["records"] if r["round"] == 2)
    forged["final_test_accuracy"] = 0.99
    with open(path, "w") as f:
        json.dump(meta, f)
    (wd / "metrics.jsonl").unlink()
    rc, err = run(wd)
    assert rc == 0, err
    assert (wd / "metrics.jsonl").read_bytes() == finished[1]  # round 2 redone from round 1
    warnings = _set_aside_warnings(err)
    assert len(warnings) == 1, err
    assert warnings[0].startswith("warning: checkpoint of round 2 cannot be read (")
    assert "digest" in warnings[0] and f"moved to {ck2}.corrupt-0" in warnings[0]
    assert (wd / "checkpoints" / "2.corrupt-0").is_dir()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_array_data_gives_one_line_per_checkpoint(run, finished, tmp_path, damage):
    """Rounds 1 and 2 have damaged array data: one warning line each on stderr, then where the
    run resumes, nothing else."""
    wd = _copy(finished, tmp_path)
    for r in (1, 2):
        files = [p for p in (wd / "checkpoints" / str(r) / "state").rglob("*") if p.is_file()]
        if damage == "truncate":  # every array data file: reads fail while others are in flight
            for p in files:
                if p.parent.name == "d":
                    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        else:  # one byte of the largest file: orbax reads it, the digest refuses it
            largest = max(files, key=lambda p: p.stat().st_size)
            data = bytearray(largest.read_bytes())
            data[len(data) // 2] ^= 0xFF
            largest.write_bytes(bytes(data))
    rc, err = run(wd)
    assert rc == 0, err
    assert (wd / "metrics.jsonl").read_bytes() == finished[1]
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if not x.startswith("lth-jax: round ")]  # not progress
    assert len(lines) == 3, err
    assert lines[2] == "lth-jax: resuming after round 0 (round 0 is done)", err
    for line, r in zip(lines, (2, 1)):
        assert line.startswith(f"warning: checkpoint of round {r} cannot be read ("), err
        assert line.endswith("falling back to the previous round"), err
    assert (wd / "checkpoints" / "1.corrupt-0").is_dir()
    assert (wd / "checkpoints" / "2.corrupt-0").is_dir()


# ----------------------------------------------------------------------------- in-process


def test_round_and_mid_round_checkpoints_without_a_digest_are_set_aside(tmp_path, capsys):
    d = str(tmp_path / "ck")
    ck = ckpt_lib.RoundCheckpointer(d)
    state = {"w": np.arange(6, dtype=np.float32)}
    ck.save(0, state, {"round": 0, "records": [{"a": 1.0}]})
    ck.save(1, state, {"round": 1, "records": [{"a": 1.0}, {"a": 2.0}]})
    for step in (10, 20):
        ck.save_partial(2, step, state, {"num_runs": 1})
    ck.close()
    shutil.rmtree(tmp_path / "ck" / "1" / "digest")
    newest = tmp_path / "ck" / "partial" / str(2 * ckpt_lib.PARTIAL_STRIDE + 20)
    shutil.rmtree(newest / "digest")
    ck = ckpt_lib.RoundCheckpointer(d)
    r, _, meta = ck.restore_latest()
    assert r == 0 and meta["records"] == [{"a": 1.0}]
    step, _, pmeta = ck.restore_partial(2)
    assert step == 10 and pmeta["step"] == 10
    ck.close()
    err = capsys.readouterr().err
    assert "warning: checkpoint of round 1 cannot be read (CorruptCheckpointError: " in err
    assert "warning: mid-round checkpoint of round 2 at step 20 cannot be read" in err
    assert (tmp_path / "ck" / "1.corrupt-0").is_dir()
    assert (tmp_path / "ck" / "partial" / f"{newest.name}.corrupt-0").is_dir()


class _RaisesInDel:
    def __del__(self):
        raise RuntimeError("Event loop is closed")  # the same error, not from a read


def _closed_loop():
    loop = asyncio.new_event_loop()
    loop.close()
    return loop


def _finish_read(loop):
    """What tensorstore does when a read for ``loop`` finishes."""
    promise, future = ts.Promise.new()
    future.add_done_callback(functools.partial(loop.call_soon_threadsafe, print))
    promise.set_result(None)
    return future


def test_a_restore_drops_only_the_reports_of_reads_for_closed_loops(monkeypatch):
    seen = []
    hook = lambda u: seen.append(u.exc_value)  # noqa: E731
    monkeypatch.setattr(sys, "unraisablehook", hook)
    other = _closed_loop()
    with ckpt_lib._quiet_orbax():
        _finish_read(other)  # dropped
        _RaisesInDel()  # passed on
    assert [str(e) for e in seen] == ["Event loop is closed"]
    assert sys.unraisablehook is hook  # put back on exit
    _finish_read(other)  # reported again once the restore is over
    assert len(seen) == 2


def test_a_failed_restore_retires_only_the_loops_it_closed(monkeypatch):
    """Reads that finish after a failed restore report nothing; other loops are untouched."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    other, own = _closed_loop(), []

    def failing_restore():
        loop = _closed_loop()  # as orbax's loop, closed when a read failed
        own.append(loop)
        raise ValueError("a read failed")

    with pytest.raises(ValueError, match="a read failed"), ckpt_lib._quiet_orbax():
        failing_restore()
    _finish_read(own[0])
    assert seen == []
    _finish_read(other)
    assert [str(e) for e in seen] == ["Event loop is closed"]
