"""More bad input: every case ends in one plain line on stderr, never a traceback.

Seeds outside JAX's 32-bit key range, config files that call ``sys.exit()``,
``instability.*`` keys on a run that does not read them, ``lth-jax report``
without a folder or with records of the wrong shape, bad multi-process
environment variables, an unreachable coordinator, and a TFDS dataset without
TensorFlow. Command-line behaviour is checked on the real command, in a
subprocess bounded by a timeout; nothing may be written to the workdir.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from cli_runs import SMALL_RUN as FAST

from lth_jax import config as config_lib
from lth_jax import rng
from lth_jax.checks import ConfigError

#: Runs the command in this interpreter, like the ``lth-jax`` script does.
CLI = [sys.executable, "-m", "lth_jax.cli"]

#: The command with ``import tensorflow`` failing, as where TensorFlow is not installed.
CLI_WITHOUT_TF = [
    sys.executable,
    "-c",
    "import sys; sys.modules['tensorflow'] = None; "
    "from lth_jax.cli import main; sys.exit(main(sys.argv[1:]))",
]

_DIST_VARS = (
    "LTH_JAX_COORDINATOR",
    "LTH_JAX_NUM_PROCESSES",
    "LTH_JAX_PROCESS_ID",
    "LTH_JAX_COORDINATOR_TIMEOUT",
    "LTH_JAX_DISTRIBUTED",
)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.update(extra)
    return env


def _lth(args, timeout=120, cmd=CLI, **env):
    p = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=_env(**env), timeout=timeout
    )
    return p.returncode, p.stdout, p.stderr


def _one_error_line(rc, err, words, code=2) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lth-jax: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert rc == code, err
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- 1. seeds


@pytest.mark.parametrize("seed", [2**32, 2**32 + 7, 2**64, -1])
def test_seed_outside_the_key_range_is_refused(seed, tmp_path):
    wd = tmp_path / "wd"
    rc, out, err = _lth(["run", "--workdir", str(wd), *FAST, f"--config.seed={seed}"])
    _one_error_line(rc, err, ["seed", "4294967295", str(seed)])
    assert out == ""
    assert not wd.exists()


def test_seed_range_ends_at_2_to_the_32():
    c = config_lib.default_config()
    c.num_trials = 1
    c.seed = 2**32 - 1
    config_lib.validate(c)
    c.seed = 2**32
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 4294967295\]"):
        config_lib.validate(c)


def test_seed_plus_trial_stays_in_the_key_range():
    # A transfer trial t seeds its data (and its target IMP run) with seed + t.
    from lth_jax.transfer import config as transfer_config

    c = transfer_config.transfer_config()
    c.num_trials = 3
    c.seed = 2**32 - 3
    transfer_config.validate(c)  # seeds 2^32 - 3 .. 2^32 - 1
    c.seed = 2**32 - 2
    with pytest.raises(ConfigError, match=r"seed \+ num_trials - 1"):
        transfer_config.validate(c)


def test_rng_derive_refuses_seeds_that_would_alias():
    assert rng.derive(2**32 - 1).shape == (2,)
    for seed in (2**32, -1, 2**64):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\^32\)"):
            rng.derive(seed)


# ----------------------------------------------------------------------------- 2. sys.exit


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nsys.exit()\n",
        "import sys\nsys.exit(3)\n",
        "import sys\n\ndef get_config():\n    sys.exit(3)\n",
        "import sys\n\ndef get_config():\n    sys.exit(0)\n",
        "import sys\n\ndef get_config():\n    raise SystemExit('stop')\n",
    ],
    ids=["import-exit", "import-exit-3", "get-config-exit-3", "get-config-exit-0", "message"],
)
def test_config_file_calling_sys_exit_is_a_bad_config(source, tmp_path):
    path = tmp_path / "exits.py"
    path.write_text(source)
    wd = tmp_path / "wd"
    rc, out, err = _lth(["run", "--config", str(path), "--workdir", str(wd), *FAST])
    _one_error_line(rc, err, [str(path), "sys.exit"])
    assert out == ""
    assert not wd.exists()


# ----------------------------------------------------------------------------- 3. instability


def test_instability_keys_on_a_lottery_run_are_refused(tmp_path):
    wd = tmp_path / "wd"
    rc, out, err = _lth(["run", "--workdir", str(wd), *FAST, "--config.instability.num_points=5"])
    _one_error_line(rc, err, ["instability.num_points", "kind", "instability"])
    assert out == ""
    assert not wd.exists()


def test_instability_keys_are_checked_by_kind():
    c = config_lib.default_config()
    c.instability.num_points = 5
    with pytest.raises(ConfigError, match=r"instability\.num_points.*--config\.kind=instability"):
        config_lib.validate(c)
    c.kind = "instability"
    config_lib.validate(c)
    c = config_lib.default_config()
    c.instability.num_points = 11  # the default: left alone
    config_lib.validate(c)


def test_instability_typo_gets_did_you_mean(tmp_path):
    wd = tmp_path / "wd"
    for kind in ("lottery", "instability"):
        rc, _, err = _lth(
            [
                "run",
                "--workdir",
                str(wd),
                f"--config.kind={kind}",
                "--config.instability.nmu_points=5",
            ]
        )
        _one_error_line(
            rc, err, ["instability.nmu_points", "did you mean --config.instability.num_points"]
        )
    path = tmp_path / "typo.py"
    path.write_text(
        "from lth_jax import config\n\n"
        "def get_config():\n"
        "    c = config.default_config()\n"
        "    c.kind = 'instability'\n"
        "    c.instability.nmu_points = 5\n"
        "    return c\n"
    )
    rc, _, err = _lth(["run", "--config", str(path), "--workdir", str(wd)])
    _one_error_line(rc, err, ["instability.nmu_points", "did you mean instability.num_points"])
    assert not wd.exists()


# ----------------------------------------------------------------------------- 4. report


def test_report_without_a_folder_is_one_line():
    rc, out, err = _lth(["report"], timeout=60)
    _one_error_line(rc, err, ["report needs", "DIR"])
    assert out == ""
    rc, _, err = _lth(["report", "--out"], timeout=60)
    _one_error_line(rc, err, ["--out"])


@pytest.mark.parametrize(
    "key,value",
    [("trial", [1]), ("trial", {"a": 1}), ("round", [0]), ("arm", ["ticket"]), ("round", True)],
)
def test_report_refuses_records_of_the_wrong_shape(key, value, tmp_path):
    d = tmp_path / "wd"
    d.mkdir()
    good = {"round": 0, "arm": "ticket", "trial": 0, "density": 1.0, "final_test_accuracy": 0.5}
    bad = {**good, "trial": 1, key: value}
    (d / "metrics.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    before = sorted(os.listdir(d))
    rc, out, err = _lth(["report", str(d)], timeout=60)
    _one_error_line(rc, err, [str(d / "metrics.jsonl") + ":2", repr(key)])
    assert sorted(os.listdir(d)) == before


def test_transfer_report_refuses_records_of_the_wrong_shape(tmp_path):
    d = tmp_path / "wd"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"kind": "transfer"}))
    rec = {"size_index": 0, "arm": "scratch", "trial": [0], "final_test_accuracy": 0.5}
    (d / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    rc, _, err = _lth(["report", str(d)], timeout=60)
    _one_error_line(rc, err, [str(d / "metrics.jsonl") + ":1", "'trial'"])


# ----------------------------------------------------------------------------- 5. environment


@pytest.mark.parametrize(
    "env,words",
    [
        ({"LTH_JAX_NUM_PROCESSES": "abc", "LTH_JAX_PROCESS_ID": "0"}, ["LTH_JAX_NUM_PROCESSES"]),
        ({"LTH_JAX_NUM_PROCESSES": "0", "LTH_JAX_PROCESS_ID": "0"}, ["LTH_JAX_NUM_PROCESSES"]),
        ({"LTH_JAX_PROCESS_ID": "0"}, ["LTH_JAX_NUM_PROCESSES", "is not set"]),
        ({"LTH_JAX_NUM_PROCESSES": "2", "LTH_JAX_PROCESS_ID": "x"}, ["LTH_JAX_PROCESS_ID"]),
        ({"LTH_JAX_NUM_PROCESSES": "2"}, ["LTH_JAX_PROCESS_ID", "is not set"]),
        (
            {"LTH_JAX_NUM_PROCESSES": "2", "LTH_JAX_PROCESS_ID": "2"},
            ["LTH_JAX_PROCESS_ID", "[0, 2)", "'2'"],
        ),
        (
            {"LTH_JAX_NUM_PROCESSES": "2", "LTH_JAX_PROCESS_ID": "-1"},
            ["LTH_JAX_PROCESS_ID", "[0, 2)"],
        ),
        (
            {"LTH_JAX_COORDINATOR": "localhost", "LTH_JAX_NUM_PROCESSES": "2"},
            ["LTH_JAX_COORDINATOR", "HOST:PORT"],
        ),
        (
            {
                "LTH_JAX_NUM_PROCESSES": "2",
                "LTH_JAX_PROCESS_ID": "1",
                "LTH_JAX_COORDINATOR_TIMEOUT": "soon",
            },
            ["LTH_JAX_COORDINATOR_TIMEOUT", "seconds"],
        ),
    ],
    ids=[
        "count-abc",
        "count-0",
        "count-unset",
        "id-x",
        "id-unset",
        "id-past-count",
        "id-negative",
        "no-port",
        "timeout-abc",
    ],
)
def test_bad_distributed_environment_is_one_line(env, words, tmp_path):
    env = {"LTH_JAX_COORDINATOR": f"127.0.0.1:{_free_port()}", **env}
    wd = tmp_path / "wd"
    rc, out, err = _lth(["run", "--workdir", str(wd), *FAST], timeout=60, **env)
    _one_error_line(rc, err, words)
    assert out == ""
    assert not wd.exists()


# ----------------------------------------------------------------------------- 6. coordinator


def _wait_for_coordinator(tmp_path, process_id: str):
    addr = f"127.0.0.1:{_free_port()}"
    wd = tmp_path / "wd"
    env = _env(
        LTH_JAX_COORDINATOR=addr,
        LTH_JAX_NUM_PROCESSES="2",
        LTH_JAX_PROCESS_ID=process_id,
        LTH_JAX_COORDINATOR_TIMEOUT="3",
        JAX_COORDINATOR_BIND_ADDRESS=addr,  # process 0 listens on loopback only
    )
    p = subprocess.Popen(
        [*CLI, "run", "--workdir", str(wd), *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    killer = threading.Timer(90, p.kill)  # bounds the test: before the fix this hung
    killer.start()
    try:
        first = p.stderr.readline()
        running_then = p.poll() is None
        t0 = time.monotonic()
        rest = p.stderr.read()
        p.wait()
        waited = time.monotonic() - t0
    finally:
        killer.cancel()
        p.kill()
    out = p.stdout.read()
    p.stdout.close()
    p.stderr.close()
    assert not wd.exists()
    return addr, p.returncode, first, running_then, waited, out, rest


@pytest.mark.parametrize("process_id", ["1", "0"])
def test_unreachable_coordinator_says_so_and_gives_up(process_id, tmp_path):
    addr, rc, first, running_then, waited, out, rest = _wait_for_coordinator(tmp_path, process_id)
    # At once: one line saying what it waits for, while it waits.
    assert running_then, first + rest
    assert first.startswith("lth-jax: "), first + rest
    for w in (addr, f"process {process_id} of 2", "LTH_JAX_COORDINATOR_TIMEOUT"):
        assert w in first, (w, first)
    # After the timeout: one line, exit status 1, no traceback.
    assert waited < 60, rest
    _one_error_line(rc, rest, [addr, "3"], code=1)
    assert out == ""


def test_coordinator_failure_is_one_line_from_main(monkeypatch, capsys, tmp_path):
    from lth_jax import cli, parallel

    def fail():
        raise parallel.DistributedStartError("no coordinator at 127.0.0.1:1 after 3 s")

    monkeypatch.setattr(parallel, "initialize_distributed", fail)
    wd = tmp_path / "wd"
    rc = cli.main(["run", "--workdir", str(wd), "--config.progress=False"])
    _one_error_line(rc, capsys.readouterr().err, ["127.0.0.1:1"], code=1)
    assert not wd.exists()


# ----------------------------------------------------------------------------- 7. TensorFlow


def test_tfds_dataset_without_tensorflow_is_one_line(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    wd = tmp_path / "wd"
    args = [
        "run",
        "--workdir",
        str(wd),
        *FAST,
        "--config.dataset.name=mnist",
        f"--config.dataset.data_dir={empty}",
    ]
    rc, out, err = _lth(args, cmd=CLI_WITHOUT_TF, LTH_JAX_OFFLINE="1")
    _one_error_line(rc, err, ["'mnist'", "TensorFlow", "pip install 'lth_jax[tf]'"])
    assert out == ""
    assert not wd.exists()
    assert os.listdir(empty) == []


def test_missing_tensorflow_is_a_dataset_unavailable_error(monkeypatch):
    from lth_jax import data
    from lth_jax.data import tfds_source

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(data.DatasetUnavailableError, match="TensorFlow") as info:
        tfds_source.load_tfds("mnist", "train", data_dir="/nonexistent", download=False)
    assert isinstance(info.value, ImportError)  # still an ImportError, as before
