"""Where a round's time goes (timing.jsonl, lth_jax.timing), and the speed changes it led to."""

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_config

from lth_jax import lottery, masks, timing
from lth_jax import workdir as wd
from lth_jax.data import mnist1d as m1d

KEYS = ("startup_s", "compile_s", "train_s", "eval_s", "checkpoint_s", "events_s", "host_s")


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    """timing.jsonl of a 2-round run with a mid-round checkpoint in every round."""
    path = str(tmp_path_factory.mktemp("timing") / "wd")
    c = tiny_config(**{"imp.rounds": 1, "checkpoint.every_steps": 50})
    lottery.run(c, path)
    return wd.read_jsonl(os.path.join(path, wd.TIMING))


def test_every_round_has_the_split(lines):
    assert [x["round"] for x in lines] == [0, 1]
    for x in lines:
        for k in ("wall_time_s", *KEYS):
            assert isinstance(x[k], float) and x[k] >= 0, (k, x)
        assert set(x["shares"]) == set(timing.PARTS)
        assert all(v >= 0 for v in x["shares"].values())
        assert abs(sum(x["shares"].values()) - 1) < 0.01, x
        parts = sum(x[f"{p}_s"] for p in timing.PARTS)
        assert abs(parts - x["wall_time_s"]) < 0.01 + 1e-3 * x["wall_time_s"], x
        assert x["train_s"] > 0 and x["eval_s"] > 0
        assert x["checkpoint_s"] > 0  # the round's checkpoint, and one mid-round
        assert x["events_s"] > 0  # TensorBoard is on by default


def test_startup_is_the_first_round_s_only(lines):
    assert lines[0]["startup_s"] > 0  # data, model, the trace check at least
    assert lines[1]["startup_s"] == 0


def test_the_first_round_of_a_run_compiles(lines):
    # A new Experiment's programs are traced (and compiled or read from the cache) again.
    assert lines[0]["compile_s"] > 0


def test_a_resumed_run_appends_its_own_split(tmp_path):
    path = str(tmp_path / "wd")
    lottery.run(tiny_config(**{"imp.rounds": 0}), path)
    lottery.run(tiny_config(**{"imp.rounds": 1}), path)
    got = wd.read_jsonl(os.path.join(path, wd.TIMING))
    assert [x["round"] for x in got] == [0, 1]
    assert got[1]["startup_s"] > 0  # the first round this run call trains


def test_sections_count_wall_time_less_compilation():
    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + jnp.float32(time.time_ns() % 7))  # new each call
    timer = timing.RoundTimer().start()
    with timing.section("checkpoint"):
        time.sleep(0.05)
    with timing.section("events"):
        jax.block_until_ready(f(np.arange(1000, dtype=np.float32)))
    row = timer.record(3)
    assert timing.active() is None  # record closes it
    assert row["round"] == 3 and row["startup_s"] == 0
    assert row["checkpoint_s"] >= 0.05
    assert row["compile_s"] > 0  # f was traced and compiled in the round
    assert row["events_s"] < row["compile_s"] + 0.05  # its compilation is not counted as events
    assert abs(sum(row["shares"].values()) - 1) < 0.01


def test_section_without_a_round_does_nothing():
    timing.close()
    with timing.section("train"):
        pass
    assert timing.active() is None


def test_fit_splits_runs_over_devices_without_compiling_slices():
    """Engine.fit hands the devices host arrays: no slicing program per leaf shape."""
    names, listening = [], [False]

    def on(event, duration, **kw):
        if listening[0] and event == "/jax/core/compile/backend_compile_duration":
            names.append(str(kw.get("fun_name", "")))

    jax.monitoring.register_event_duration_secs_listener(on)
    exp = lottery.Experiment(tiny_config(num_devices=2, num_trials=3))
    params, bs = exp.engine.init(exp.keys(0, "init"))
    mask = jax.vmap(masks.ones_like)(params)
    keys = exp.keys(0, "data"), exp.keys(0, "dropout")
    jax.block_until_ready((params, bs, mask, keys))
    listening[0] = True
    out = exp.engine.fit(params, bs, mask, *keys)
    listening[0] = False
    assert np.all(out.fail_step == -1)
    assert "jit(_chunk_impl)" in names  # the listener hears this fit's compilations
    assert not [n for n in names if "multi_slice" in n], names


def test_a_mnist1d_run_imports_no_tensorflow(tmp_path):
    code = f"""
import sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from tiny import tiny_config
from lth_jax import lottery
lottery.run(tiny_config(**{{"imp.rounds": 0, "train.steps": 50}}), {str(tmp_path / "wd")!r})
print([m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')) == []


def test_mnist1d_from_its_cache_does_not_import_the_package(tmp_path):
    """The cache's index.json names the file: scipy and matplotlib (seconds) stay unimported."""
    code = """
import sys
import numpy as np
from lth_jax.data import load
x, y = load("mnist1d", "test[:50]", data_dir=sys.argv[1])
print(sorted(m for m in ("mnist1d", "scipy", "matplotlib") if m in sys.modules))
np.save(sys.argv[2], x)
"""
    runs = []
    for i in range(2):
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "data"), str(tmp_path / f"x{i}.npy")],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        runs.append(out.stdout.strip().splitlines()[-1])
    assert "mnist1d" in runs[0]  # generated, and the file name recorded
    assert runs[1] == "[]"  # read back through index.json alone
    index = json.loads((tmp_path / "data" / "mnist1d" / "index.json").read_text())
    assert list(index.values()) == [os.path.basename(m1d.cache_path(tmp_path / "data"))]
    np.testing.assert_array_equal(np.load(tmp_path / "x0.npy"), np.load(tmp_path / "x1.npy"))
