"""``lth-jax sweep``: a grid of ``lth-jax run`` workdirs, here (local) or as a job array (submitit).

The runs are real ``lth-jax run`` processes of a tiny config (1 trial, 1 round
of 200 steps); the SLURM launcher goes through submitit's LocalExecutor (real
processes on this machine) in place of a SLURM cluster.
"""

from __future__ import annotations

import doctest
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from cli_runs import LTH_JAX, SMALL_RUN, cli_env

from lth_jax import cli, sweep
from lth_jax import workdir as wd
from lth_jax.report import pool
from lth_jax.sweep import launch

#: SMALL_RUN with one round: a point is a few seconds.
RUN = [a for a in SMALL_RUN if not a.startswith("--config.imp.rounds")] + ["--config.imp.rounds=1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return cli_env(str(tmp_path_factory.mktemp("jax_cache")))


def _rounds(workdir) -> set:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {json.loads(line)["round"] for line in f if line.strip()}


def test_grid_names_values_and_times():
    assert sweep.split_values("0.2,0.5") == ["0.2", "0.5"]
    assert sweep.split_values("(32,),(64, 64),'a,b'") == ["(32,)", "(64, 64)", "'a,b'"]
    assert sweep.point_name({"seed": "1", "imp.prune_rate": "0.2"}) == "imp.prune_rate=0.2,seed=1"
    assert [sweep.parse_time(t) for t in ("30", "1:30", "2:00:00", "1-0")] == [30, 2, 120, 1440]


def test_docstring_examples_and_plain_help(capsys):
    for module in (sweep, pool):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
    assert cli.main(["help", "sweep"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lth-jax sweep: ") and "usage: lth-jax sweep --workdir DIR" in out
    assert "``" not in out and ":mod:" not in out and "**" not in out


def test_points_log_plain_lines_unless_progress_is_asked(tmp_path):
    args = sweep._options(["--workdir", str(tmp_path), "--sweep", "seed=0,1"])
    for p in sweep._grid(args, ["--config.train.steps=200"]):
        assert p.argv[0] == "--config.progress=false"
        assert cli.parse_run_args(p.argv)[0].progress is False
    for p in sweep._grid(args, ["--config.progress=true"]):
        assert "--config.progress=false" not in p.argv
        assert cli.parse_run_args(p.argv)[0].progress is True


def test_pool_commands_group_the_seeds(tmp_path):
    points = [
        launch.Point(
            {"imp.prune_rate": r, "seed": s},
            sweep.point_name({"imp.prune_rate": r, "seed": s}),
            str(tmp_path / f"p{r}s{s}"),
            "log",
        )
        for r in ("0.2", "0.5")
        for s in ("0", "1")
    ]
    cmds = sweep.pool_commands(points, str(tmp_path))
    assert len(cmds) == 2
    first = shlex.split(cmds[0])
    assert first[:3] == ["lth-jax", "report", "--pool"]
    assert first[-1] == str(tmp_path / "pooled" / "imp.prune_rate=0.2")
    assert sweep.pool_commands(points[:1], str(tmp_path)) == []
    # --pool takes no transfer workdirs, so a sweep of transfer points prints no command.
    for p in points:
        p.config = {"kind": "transfer"}
    assert sweep.pool_commands(points, str(tmp_path)) == []


@pytest.mark.parametrize(
    "args, words",
    [
        (["--sweep", "imp.prune_rate=0.2,2"], ["point imp.prune_rate=2", "imp.prune_rate"]),
        (["--sweep", "seed=0,0"], ["value 0 is given twice"]),
        (["--sweep", "seed=0,1", "--config.seed=3"], ["--config.seed is also swept"]),
        (["--sweep", "seed=0,1", "--partition", "gpu"], ["--partition", "--launcher slurm"]),
        (["--sweep", "seed=0,1", "--launcher", "slurm"], ["needs --time"]),
        (["--sweep", "seed=0,1", "--overwrite"], ["--overwrite"]),
        (["--sweep", "seed=1,01"], ["same config"]),
    ],
)
def test_bad_input_exits_2_before_anything_runs(tmp_path, capsys, args, words):
    root = tmp_path / "sweep"
    assert cli.main(["sweep", "--workdir", str(root), *args, *RUN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not root.exists()


def test_a_point_whose_workdir_cannot_be_checked_is_refused_with_the_sweeps_advice(
    tmp_path, capsys
):
    root = tmp_path / "sweep"
    (root / "seed=1").mkdir(parents=True)
    (root / "seed=1" / wd.CONFIG).write_text("{garbled")
    assert cli.main(["sweep", "--workdir", str(root), "--sweep", "seed=0,1", *RUN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "point seed=1: workdir" in err[0] and "cannot be read" in err[0]
    assert err[0].endswith("delete the point's folder to redo it, or sweep into another --workdir")
    assert "--overwrite" not in err[0] and not (root / "seed=0").exists()


def test_point_status(tmp_path):
    workdir = str(tmp_path / "seed=0")
    argv = [*RUN, "--config.seed=0", "--workdir", workdir]
    p = launch.Point({"seed": "0"}, "seed=0", workdir, "log", argv, cli.parse_run_args(argv)[0])
    assert launch.point_status(p) == "todo"
    os.makedirs(workdir)
    wd.write_json_atomic(os.path.join(workdir, wd.CONFIG), wd.config_to_json(p.config))
    recs = [{"round": r, "arm": "ticket", "trial": 0} for r in (0, 1)]
    wd.write_jsonl_atomic(os.path.join(workdir, wd.METRICS), recs[:1])
    assert launch.point_status(p) == "todo"  # round 1 missing
    wd.write_jsonl_atomic(os.path.join(workdir, wd.METRICS), recs)
    assert launch.point_status(p) == "finished"
    old = wd.config_to_json(p.config)
    del old["pai"]["grasp_temperature"], old["gmp"]  # made before these keys: still finished
    wd.write_json_atomic(os.path.join(workdir, wd.CONFIG), old)
    assert launch.point_status(p) == "finished"
    with wd.lock(workdir):
        assert launch.point_status(p) == "running"
    p.config.train.steps = 300  # the workdir holds another config: run it (run refuses it)
    assert launch.point_status(p) == "todo"


def test_local_sweep_runs_each_point_skips_finished_ones_and_pools(tmp_path, env, capsys):
    root = tmp_path / "sweep"
    cmd = [*LTH_JAX, "sweep", "--workdir", str(root), "--sweep", "seed=0,1", "--parallel", "2"]
    done = subprocess.run([*cmd, *RUN], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for s in (0, 1):
        assert _rounds(root / f"seed={s}") == {0, 1}
        assert "wrote" in (root / "logs" / f"seed={s}.log").read_text()
    assert "0 finished (skipped), 0 running elsewhere, 2 to run" in done.stdout
    pool_cmd = done.stdout.strip().splitlines()[-1].split(": ", 1)[1]
    assert pool_cmd.startswith("lth-jax report --pool ")

    # Again: both points are finished and skipped; nothing is run.
    t0 = time.monotonic()
    again = subprocess.run([*cmd, *RUN], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "2 finished (skipped)" in again.stdout and "started" not in again.stdout
    assert time.monotonic() - t0 < 30

    # Another config for the same points: refused up front, in one line, nothing run.
    steps = [*cmd, *RUN, "--config.train.steps=300"]
    changed = subprocess.run(steps, env=env, capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2, changed.stdout + changed.stderr
    assert (
        "point seed=0: workdir" in changed.stderr and "train.steps (200 -> 300)" in changed.stderr
    )
    assert "delete the point's folder to redo it, or sweep into another --workdir" in (
        changed.stderr
    )
    assert "--overwrite" not in changed.stderr and "started" not in changed.stdout

    assert cli.main(shlex.split(pool_cmd)[1:]) == 0
    table = capsys.readouterr().out
    dense = next(line for line in table.splitlines() if "| dense" in line)
    assert [c.strip() for c in dense.strip("|").split("|")][3] == "2"  # 1 trial per seed
    assert (root / "pooled" / "report.md").exists()


def test_sigterm_stops_the_running_point_and_launches_no_other(tmp_path, env):
    root = tmp_path / "sweep"
    cmd = [*LTH_JAX, "sweep", "--workdir", str(root), "--sweep", "seed=0,1", *RUN]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (root / "seed=0" / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the point's run has checked everything and starts training
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, out + err
    # The run saves a checkpoint and exits 143 (or it had just finished).
    if "[1/2] seed=0: done" in out:
        assert "stopped by SIGTERM with 1 of 2 points done" in err
    else:
        assert "[1/2] seed=0: stopped by SIGTERM" in out and ", resumable" in out, out
        assert "stopped by SIGTERM with 0 of 2 points done" in err
    assert not (root / "logs" / "seed=1.log").exists()


#: ``lth-jax`` with submitit's LocalExecutor in place of SLURM (real processes on this machine).
LOCAL_SLURM = (
    "import sys; from lth_jax import cli; from lth_jax.sweep import launch; "
    "launch.CLUSTER = 'local'; sys.exit(cli.main(sys.argv[1:]))"
)


def test_slurm_launcher_through_submitit_local_executor(tmp_path, env):
    pytest.importorskip("submitit")
    root = tmp_path / "sweep"
    argv = ["sweep", "--workdir", str(root), "--sweep", "seed=0,1", "--launcher", "slurm"]
    argv += ["--time", "10", "--partition", "gpu", "--gpus-per-task", "1"]
    argv += ["--array-parallelism", "2", "--wait", *RUN]
    cmd = [sys.executable, "-c", LOCAL_SLURM, *argv]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "submitted 2 points as job array" in out
    assert "[1/2] seed=0: done" in out and "[2/2] seed=1: done" in out
    assert "pool the seeds: lth-jax report --pool" in out
    for s in (0, 1):
        assert _rounds(root / f"seed={s}") == {0, 1}
        assert "wrote" in (root / "logs" / f"seed={s}.log").read_text()
    assert any((root / "slurm").iterdir())  # submitit's files


def test_a_point_stopped_by_the_passed_on_signal_is_resumable_not_failed(tmp_path):
    p = launch.Point({"seed": "0"}, "seed=0", str(tmp_path / "seed=0"), str(tmp_path / "log"))
    for code, signum in ((143, None), (130, None), (-15, 15)):
        line, ok = launch._done(1, 2, p, code, 1.0, signum)
        assert "stopped by SIG" in line and "resumable" in line and not ok, line
    line, _ = launch._done(1, 2, p, -9, 1.0, 15)  # killed by something else: a failure
    assert "failed (killed by SIGKILL)" in line
