"""The ``lth-jax run`` command end to end on the LeNet-300-100 preset, and the PyTorch peer.

:func:`end_to_end` does, in this order:

1. **Data** (timed apart, not in any figure): MNIST-sized random images
   prepared as TFDS ``mnist`` in a temporary data directory by
   ``mnist_data.py`` in its own process (TFDS's MNIST builder and writer; see
   that module), since MNIST cannot be downloaded here.
2. **Ours**: ``lth-jax run --config preset:lenet300_100_mnist`` (or the
   preset's file, while the name does not resolve: :func:`config_spec`) with
   ``--config.num_trials``, ``--config.train.steps``, ``--config.imp.rounds``
   and ``--config.dataset.data_dir`` set, in a subprocess: its whole wall time,
   start-up and imports included, is the figure. Its peak resident memory is
   the child's own ``ru_maxrss`` (``os.wait4``). The time split per round is
   read from ``<workdir>/timing.jsonl`` (keys missing there are reported as
   absent); the trial-steps and evaluations done, from ``metrics.jsonl``.
3. **The PyTorch peer** (``torch_peer.py``, open_lth's masked Adam, one
   training after another) on the same data, trainings, steps and evaluation
   schedule, in a subprocess: its whole wall time is its figure. Skipped, and
   said so, when torch is not installed (``pip install 'lth_jax[bench]'``).

The roofline bound: with ``F_train = 6 x MACs x batch`` FLOPs per training
step and ``F_eval = 2 x MACs`` per evaluated example (forward only), the work
of the run is ``trial_steps x F_train + eval_examples x F_eval``; at the
measured matmul roofline it would take ``work / roofline`` seconds, so the best
possible rate is ``trial_steps / (work / roofline)``, and the end-to-end rate is
reported as a fraction of it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from bench.common import LENET_MACS

PRESET = "lenet300_100_mnist"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SPLIT_KEYS = ("startup_s", "compile_s", "train_s", "eval_s", "checkpoint_s", "host_s", "events_s")


def config_spec(name=PRESET):
    """The ``--config`` value of a preset: ``preset:NAME`` if it resolves, else its file.

    ``preset:NAME`` needs :mod:`lth_jax.configs` to list ``NAME``; before the
    presets moved there they were files under ``experiments/configs/``.

    Args:
      name: the preset's name.

    Returns:
      ``"preset:NAME"`` or a path.

    Raises:
      FileNotFoundError: neither resolves.
    """
    try:
        from lth_jax import configs

        if name in configs.names():
            return configs.PREFIX + name
    except ImportError:
        pass
    for folder in (("experiments", "configs"), ("lth_jax", "configs")):
        path = os.path.join(ROOT, *folder, name + ".py")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"preset {name!r}: neither preset:{name} nor a file resolves")


def _lth_jax_command():
    exe = os.path.join(os.path.dirname(sys.executable), "lth-jax")
    return [exe] if os.path.isfile(exe) else [sys.executable, "-m", "lth_jax.cli"]


def run_process(argv, log_path, env=None):
    """Runs ``argv`` to the end, output to ``log_path``; ``(seconds, exit status, peak MiB)``.

    Through ``launch.py``, so that the peak resident memory is the command's
    own, not the high-water mark it would inherit from this large process.
    """
    result = log_path + ".result.json"
    launcher = [sys.executable, os.path.join(HERE, "launch.py"), result, log_path, "--"]
    subprocess.run(launcher + list(argv), env=env, cwd=ROOT, check=True)
    with open(result) as f:
        r = json.load(f)
    return r["wall_s"], r["exit_status"], r["peak_rss_mib"]


def _tail(path, n=3000):
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def prepare_data(data_dir, n_train, n_test):
    """``mnist_data.py`` in a subprocess; its JSON line with the wall time of the process."""
    log = os.path.join(data_dir, "prepare.log")
    os.makedirs(data_dir, exist_ok=True)
    argv = [sys.executable, os.path.join(HERE, "mnist_data.py"), data_dir]
    argv += ["--train", str(n_train), "--test", str(n_test)]
    wall, rc, _ = run_process(argv, log)
    if rc != 0:
        raise RuntimeError(f"preparing the data failed (exit {rc}):\n{_tail(log)}")
    with open(log) as f:
        lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
    info = json.loads(lines[-1])
    info["process_s"] = wall
    return info


def time_split(rows, process_s):
    """Seconds and shares of the process's wall time by part, from ``timing.jsonl`` rows.

    Args:
      rows: the ``timing.jsonl`` objects, one per round.
      process_s: the wall time of the whole command.

    Returns:
      ``{"rounds_s", "outside_rounds_s", "rest_s", "parts": {key: seconds or
      None},
      "shares": {key: share of process_s or None}, "per_round": rows}``; a key
      no row has is ``None``; ``rest_s``: the seconds in none of the parts
      (``None`` when no row has any part).
    """
    rounds_s = sum(float(r.get("wall_time_s", 0.0)) for r in rows)
    parts = {}
    for k in SPLIT_KEYS:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
        parts[k] = float(sum(vals)) if vals else None
    shares = {k: (v / process_s if v is not None else None) for k, v in parts.items()}
    known = [v for v in parts.values() if v is not None]
    return {
        "rounds_s": rounds_s,
        "outside_rounds_s": process_s - rounds_s,
        "rest_s": process_s - sum(known) if known else None,
        "parts": parts,
        "shares": shares,
        "per_round": rows,
    }


def roofline_bound(trial_steps, eval_examples, roof_gflops, batch=60):
    """The best trial-steps/s at the roofline for this much training and evaluation."""
    work = trial_steps * 6 * LENET_MACS * batch + eval_examples * 2 * LENET_MACS
    return {
        "train_flops": trial_steps * 6 * LENET_MACS * batch,
        "eval_flops": eval_examples * 2 * LENET_MACS,
        "seconds_at_roofline": work / (roof_gflops * 1e9),
        "trial_steps_per_s": trial_steps / (work / (roof_gflops * 1e9)),
    }


def _ours(s, spec, data_dir, work, cache_dir, name="run"):
    """One ``lth-jax run`` in its own process; ``cache_dir``: its compilation cache, or None."""
    workdir = os.path.join(work, name)
    argv = [*_lth_jax_command(), "run", "--config", spec, "--workdir", workdir]
    argv += [
        f"--config.num_trials={s.e2e_trials}",
        f"--config.train.steps={s.e2e_steps}",
        f"--config.train.eval_every={s.e2e_eval_every}",
        f"--config.imp.rounds={s.e2e_rounds}",
        f"--config.dataset.data_dir={data_dir}",
        f"--config.dataset.val_size={s.e2e_val}",
        "--config.progress=False",
    ]
    env = dict(os.environ, LTH_JAX_OFFLINE="1", LTH_JAX_COMPILATION_CACHE=cache_dir or "off")
    log = os.path.join(work, f"{name}.log")
    wall, rc, rss = run_process(argv, log, env)
    if rc != 0:
        raise RuntimeError(f"lth-jax run failed (exit {rc}):\n{_tail(log)}")
    from lth_jax import workdir as wd

    records = wd.read_jsonl(os.path.join(workdir, wd.METRICS))
    timing = wd.read_jsonl(os.path.join(workdir, wd.TIMING))
    with open(os.path.join(workdir, wd.CONFIG)) as f:
        config = json.load(f)
    n_val = int(config["dataset"]["val_size"])
    evals = sum(len(r["eval_steps"]) for r in records)
    trial_steps = int(sum(r["train_steps"] for r in records))
    return {
        "command": " ".join(os.path.basename(a) if a == argv[0] else a for a in argv),
        "config": spec,
        "arms": list(config["arms"]),
        "trainings": len(records),
        "trial_steps": trial_steps,
        "eval_points": evals,
        "eval_examples": evals * (n_val + s.e2e_test),
        "process_s": wall,
        "peak_rss_mib": rss,
        "split": time_split(timing, wall),
        "compilation_cache": "off" if cache_dir is None else "on",
        "trial_steps_per_s": trial_steps / wall,
    }


def _peer(s, data_dir, work, ours):
    if importlib.util.find_spec("torch") is None:
        return {"skipped": "torch is not installed (pip install 'lth_jax[bench]', CPU build)"}
    out = os.path.join(work, "peer.json")
    argv = [sys.executable, os.path.join(HERE, "torch_peer.py")]
    argv += [os.path.join(data_dir, "mnist_arrays.npz"), "--out", out]
    argv += ["--trials", str(s.e2e_trials), "--steps", str(s.e2e_steps)]
    argv += ["--rounds", str(s.e2e_rounds), "--arms", ",".join(ours["arms"])]
    argv += ["--eval-every", str(s.e2e_eval_every), "--val", str(s.e2e_val)]
    if s.peer_threads:
        argv += ["--threads", str(s.peer_threads)]
    log = os.path.join(work, "peer.log")
    wall, rc, rss = run_process(argv, log)
    if rc != 0:
        raise RuntimeError(f"the PyTorch peer failed (exit {rc}):\n{_tail(log)}")
    with open(out) as f:
        res = json.load(f)
    res.pop("final_curve", None)
    res.update(process_s=wall, peak_rss_mib=rss)
    return res


def end_to_end(s, roof_gflops, cache=True):
    """Ours and the peer on the same work; see the module docstring.

    Args:
      s: the benchmark's settings (``e2e_*``, ``peer_threads``).
      roof_gflops: the measured matmul roofline.
      cache: run the command with lth-jax's persistent compilation cache, as
        by default: first with it empty (``ours``: every program compiled and
        stored, a first run), then the same command again (``ours_again``:
        every program read back, as in any later run of the same shapes);
        ``False``: once, with the cache off.

    Returns:
      ``{"data", "ours", "ours_again" (with cache), "peer", "ratio_to_peer",
      "ratio_to_peer_again", "roofline_bound"}``.
    """
    with tempfile.TemporaryDirectory(prefix="lth_jax_bench_") as work:
        data_dir = os.path.join(work, "data")
        data = prepare_data(data_dir, s.e2e_train, s.e2e_test)
        data["what"] = (
            "random uint8 images of MNIST's shape and sizes, random labels, prepared as TFDS "
            "mnist (experiments/bench/mnist_data.py) and read once through TFDS before the "
            "timed run, which reads the arrays kept from that read (lth_jax_arrays/, no "
            "TensorFlow), as every run after a dataset's first does"
        )
        # A first run (an empty compilation cache, as lth-jax's default keeps one), then
        # the same command again (a later run: every program read from that cache).
        cache_dir = os.path.join(work, "xla") if cache else None
        ours = _ours(s, config_spec(), data_dir, work, cache_dir)
        warm = _ours(s, config_spec(), data_dir, work, cache_dir, "again") if cache else None
        peer = _peer(s, data_dir, work, ours)
    bound = roofline_bound(ours["trial_steps"], ours["eval_examples"], roof_gflops)
    bound["fraction"] = ours["trial_steps_per_s"] / bound["trial_steps_per_s"]
    res = {"data": data, "ours": ours, "peer": peer, "roofline_bound": bound}
    if warm is not None:
        res["ours_again"] = warm
    if "skipped" not in peer:
        peer["trial_steps_per_s"] = peer["trial_steps"] / peer["process_s"]
        same = (peer["trainings"], peer["trial_steps"], peer["eval_examples"]) == (
            ours["trainings"],
            ours["trial_steps"],
            ours["eval_examples"],
        )
        res["same_work"] = same
        res["ratio_to_peer"] = ours["trial_steps_per_s"] / peer["trial_steps_per_s"]
        if warm is not None:
            res["ratio_to_peer_again"] = warm["trial_steps_per_s"] / peer["trial_steps_per_s"]
    return res
