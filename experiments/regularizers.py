"""Runs every setting of the preset ``regularizers_mnist1d`` and writes a comparison table.

Usage::

    python experiments/regularizers.py --out experiments/results/regularizers \
        [--workroot /tmp/regularizers] [--trials 5] [--settings none,l1] [--overwrite] \
        [--config.KEY=VALUE ...]

Each setting is one dense run per trial through :func:`lth_jax.lottery.run`
(``imp.rounds = 0``) in ``<workroot>/<setting>`` (resumable like any run; a
workdir holding a run of other settings is refused, and ``--overwrite``
discards it). ``--config.KEY=VALUE`` overrides a key of every setting, as
``lth-jax run`` parses it. The
final weights are read back from the round-0 checkpoint to count, over all
kernels (dense weights; biases excluded), the fraction that is **exactly**
``0.0`` and the fraction below ``1e-3`` in magnitude. Writes
``<out>/table.md`` and ``<out>/results.json`` (per-trial numbers and each
setting's config).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import numpy as np

from lth_jax.checks import ConfigError
from lth_jax.report.regularizers import format_table  # the table of table.md and the README
from lth_jax.workdir import DriftError

HERE = os.path.dirname(os.path.abspath(__file__))
PRESET = "preset:regularizers_mnist1d"  # lth_jax/configs/regularizers_mnist1d.py
SMALL = 1e-3


def _preset():
    return importlib.import_module("lth_jax.configs.regularizers_mnist1d")


def _describe(c) -> str:
    o, m = c.optimizer, c.model.kwargs
    parts = []
    if o.l2:
        parts.append(f"coupled L2 {o.l2:g}")
    if o.weight_decay:
        parts.append(f"decoupled weight decay {o.weight_decay:g}")
    if o.l1:
        parts.append(f"proximal L1 {o.l1:g}")
    if m.get("dropout", 0.0):
        parts.append(f"dropout {m.dropout:g}")
    if o.max_norm:
        parts.append(f"max-norm {o.max_norm:g}")
    return ", ".join(parts) or "none"


def _kernel_stats(params) -> tuple[np.ndarray, np.ndarray]:
    """Per trial: fraction of kernel weights exactly 0, and with ``|w| < SMALL``."""
    from lth_jax import masks

    kernels = [np.asarray(v) for p, v in masks.named_leaves(params) if p.endswith("kernel")]
    flat = np.concatenate([k.reshape(k.shape[0], -1) for k in kernels], axis=1)
    return np.mean(flat == 0.0, axis=1), np.mean(np.abs(flat) < SMALL, axis=1)


def run_setting(
    setting: str, workdir: str, trials: int, overrides: list[str], overwrite: bool = False
) -> dict:
    from lth_jax import checkpoint, cli, lottery

    # Parsed as `lth-jax run` parses them (overrides typed by the config).
    args = [f"--config={PRESET}:{setting}", f"--workdir={workdir}"]
    c, _, _ = cli.parse_run_args([*args, *(f"--config.{o}" for o in overrides)])
    c.num_trials = trials
    c.progress = False
    t0 = time.perf_counter()
    records = lottery.run(c, workdir, overwrite=overwrite)
    ck = checkpoint.RoundCheckpointer(os.path.join(workdir, "checkpoints"))
    state, _ = ck.restore(0)
    ck.close()
    zero, small = _kernel_stats(state["ticket"]["params"])
    recs = sorted((r for r in records if r["round"] == 0), key=lambda r: r["trial"])
    return {
        "setting": setting,
        "regularizer": _describe(c),
        "final_test_accuracy": [r["final_test_accuracy"] for r in recs],
        "test_accuracy_at_best_val": [r["test_accuracy_at_best_val"] for r in recs],
        "exact_zero_fraction": zero.tolist(),
        "below_1e-3_fraction": small.tolist(),
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "config": json.loads(c.to_json(sort_keys=True)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="--config.KEY=VALUE (any number): overrides a config key of every setting, "
        "as lth-jax run parses it (e.g. --config.train.steps=2000).",
    )
    p.add_argument("--out", required=True, help="where table.md and results.json go")
    p.add_argument("--workroot", default=os.path.join("runs", "regularizers"))
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--settings", default=None, help="comma-separated subset of the settings")
    p.add_argument(
        "--overwrite", action="store_true", help="discard runs of other settings in the workdirs"
    )
    args, rest = p.parse_known_args(argv)
    overrides = [a[len("--config.") :] for a in rest if a.startswith("--config.")]
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    from lth_jax.cli import UsageError  # a --config.KEY=VALUE that does not parse

    settings = _preset().SETTINGS if args.settings is None else args.settings.split(",")
    results = []
    for s in settings:
        print(f"== {s}", file=sys.stderr, flush=True)
        try:
            results.append(
                run_setting(
                    s, os.path.join(args.workroot, s), args.trials, overrides, args.overwrite
                )
            )
        except (ConfigError, UsageError) as e:  # bad input, or another run there: one line
            if isinstance(e, DriftError):  # this script's options, not lth-jax run's
                e = f"{e.problem}; use another --workroot, or --overwrite to discard it"
            print(f"regularizers.py: error: {e}", file=sys.stderr)
            if getattr(e, "detail", ""):  # how to fix it (a missing dataset's files)
                print(e.detail, file=sys.stderr)
            return 2
        print(format_table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    os.makedirs(args.out, exist_ok=True)
    table = format_table(results)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
