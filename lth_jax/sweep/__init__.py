"""``lth-jax sweep``: one ``lth-jax run`` workdir per point of a grid, here or on SLURM.

usage: lth-jax sweep --workdir DIR --sweep KEY=V1,V2[,...] [--sweep KEY2=...]
                     [--launcher local|slurm] [--parallel N]
                     [--partition P] [--time T] [--gpus-per-task G] [--array-parallelism A]
                     [--wait] [--config FILE[:ARG]] [--config.KEY=VALUE ...]

Each point of the grid (every combination of the ``--sweep`` values) is one
``lth-jax run`` workdir under ``DIR``, named after its values, keys in
alphabetical order: ``DIR/seed=1``, ``DIR/imp.prune_rate=0.2,seed=1``. Its
command is ``lth-jax run --workdir DIR/<point>`` with the run options given
here (``--config FILE[:ARG]``, ``--config.KEY=VALUE``) and
``--config.KEY=VALUE`` for each swept key; values are typed by the config as
on ``lth-jax run`` (a tuple value in brackets: ``--sweep
'model.kwargs.features=(32,),(64,64)'``; commas inside brackets or quotes do
not split). Its output goes to ``DIR/logs/<point>.log`` (appended to; plain
lines per chunk: points run with ``progress=false`` unless the command sets
``progress``).

* Checked first. Every point's config is built and validated before
  anything runs: a bad value, or a point whose workdir holds a run of another
  config, is one line naming the point, exit status 2.
* Resumable. A point is finished when its workdir holds the same config
  (keys that do not change results aside) and ``metrics.jsonl`` holds every
  round (``0..imp.rounds``; with kind ``instability`` every barrier too):
  finished points are skipped. The others are run again; ``lth-jax run``
  resumes a workdir by itself. A
  point whose workdir is locked by a running ``lth-jax run`` is left alone.
  Transfer points are always launched (their runs skip finished work).
* ``--launcher local`` (default): the points run on this machine, ``--parallel
  N`` at a time (default 1). SIGINT or SIGTERM stops them (each saves a
  checkpoint, exit 130/143); run the same command again to resume.
* ``--launcher slurm``: the points to run become one SLURM job array, through
  ``submitit`` (``pip install 'lth_jax[submitit]'``), with ``--time`` (the
  limit of each job: minutes, ``H:MM:SS`` or ``D-HH:MM:SS``; required),
  ``--partition``, ``--gpus-per-task`` and ``--array-parallelism`` (jobs at
  once); submitit's files go to ``DIR/slurm/``. The command returns once the
  array is submitted, or with ``--wait`` when its jobs end. A job that reaches
  its time limit is stopped by SLURM's SIGTERM after a checkpoint: run the same
  sweep command again to resubmit the unfinished points, which resume.

Exit status: 0 every point finished (or, on SLURM without ``--wait``, the
array submitted); 1 a point failed or is still running elsewhere (the
summary names them and their logs); 2 bad input; 130/143 stopped by a signal.
When the points differ only in ``seed`` (within each combination of the other
swept values), the sweep ends by printing the ``lth-jax report --pool``
command that pools them (:mod:`lth_jax.report.pool`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shlex
import sys

from lth_jax import kinds
from lth_jax import workdir as wd
from lth_jax.checks import ConfigError
from lth_jax.report.pool import POOL_KINDS, POOLED_DIR
from lth_jax.sweep.launch import LOGS, Point, launch_local, launch_slurm, point_status

__all__ = ["split_values", "point_name", "parse_time", "pool_commands", "main"]

_RUN_OPTION = re.compile(r"-{1,2}(no)?config\.")
_QUIET = ["--config.progress=false"]
_SLURM_ONLY = ("partition", "time", "gpus_per_task", "array_parallelism", "wait")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def split_values(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes, each part stripped.

    Example:
      >>> split_values("0.2, 0.5"), split_values("(32,),(64, 64)")
      (['0.2', '0.5'], ['(32,)', '(64, 64)'])
    """
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    return parts + [cur.strip()]


def _parse_sweep(spec: str) -> tuple[str, list[str]]:
    key, eq, values = spec.partition("=")
    key = key.strip().removeprefix("config.")
    if not eq or not key or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
        raise ConfigError(f"--sweep {spec}: write KEY=V1,V2,... (a config key and its values)")
    vals = split_values(values)
    if any(not v for v in vals):
        raise ConfigError(f"--sweep {spec}: an empty value")
    for v in vals:
        if "/" in v or "\0" in v or v in (".", ".."):
            raise ConfigError(f"--sweep {spec}: value {v!r} cannot name a folder")
    dup = sorted({v for v in vals if vals.count(v) > 1})
    if dup:
        raise ConfigError(f"--sweep {spec}: value {dup[0]} is given twice")
    return key, vals


def point_name(values: dict) -> str:
    """``key=value`` for each swept key, in alphabetical order, joined by commas.

    Example:
      >>> point_name({"seed": "1", "imp.prune_rate": "0.2"})
      'imp.prune_rate=0.2,seed=1'
    """
    return ",".join(f"{k}={values[k]}" for k in sorted(values))


def parse_time(text: str) -> int:
    """A SLURM time limit in whole minutes (rounded up): ``M``, ``M:S``, ``H:M:S``, ``D-H[:M[:S]]``.

    Example:
      >>> parse_time("90"), parse_time("1:30:00"), parse_time("2-00:00:30")
      (90, 90, 2881)
    """
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--time {text}: write minutes, H:MM:SS or D-HH:MM:SS")
    d, a, b, c = (int(x) if x else 0 for x in m.groups())
    if m.group(1):  # D-H[:M[:S]]
        seconds = ((d * 24 + a) * 60 + b) * 60 + c
    elif m.group(4):  # H:M:S
        seconds = (a * 60 + b) * 60 + c
    else:  # M[:S]
        seconds = a * 60 + b
    if seconds <= 0:
        raise ConfigError(f"--time {text}: must be more than 0")
    return math.ceil(seconds / 60)


def _split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(sweep options, run options)``: ``--config FILE`` and ``--config.KEY=V`` are run's."""
    ours, run = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if _RUN_OPTION.match(a):
            run.append(a)
        elif a.split("=", 1)[0] in ("--config", "-config"):
            if "=" not in a:
                if i + 1 >= len(argv):
                    raise ConfigError("--config needs a value (a config file)")
                i += 1
                a = f"--config={argv[i]}"
            run.append(a)
        else:
            ours.append(a)
        i += 1
    return ours, run


def _options(argv: list[str]):
    p = _Parser(prog="lth-jax sweep", add_help=False, exit_on_error=False)
    p.add_argument("--workdir")
    p.add_argument("--sweep", action="append", default=[])
    p.add_argument("--launcher", default="local", choices=("local", "slurm"))
    p.add_argument("--parallel", type=int, default=None)
    p.add_argument("--partition")
    p.add_argument("--time")
    p.add_argument("--gpus-per-task", type=int)
    p.add_argument("--array-parallelism", type=int)
    p.add_argument("--wait", action="store_true", default=None)
    try:
        args, extra = p.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(str(e)) from None
    if extra:
        hint = (
            "; a sweep's points are resumed, not overwritten: delete a point's folder to redo it"
            if extra[0] == "--overwrite"
            else "; run options are written --config FILE and --config.KEY=VALUE"
        )
        raise ConfigError(f"sweep: unexpected argument {extra[0]!r}{hint}")
    if not args.workdir:
        raise ConfigError("sweep needs --workdir DIR (the folder of the points' workdirs)")
    if not args.sweep:
        raise ConfigError("sweep needs --sweep KEY=V1,V2,... (one or more)")
    if args.launcher == "local":
        given = [o for o in _SLURM_ONLY if getattr(args, o) is not None]
        if given:
            opt = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{opt} is an option of --launcher slurm")
        args.parallel = 1 if args.parallel is None else args.parallel
        if args.parallel < 1:
            raise ConfigError(f"--parallel must be >= 1, got {args.parallel}")
    else:
        if args.parallel is not None:
            raise ConfigError("--parallel is for --launcher local; on SLURM: --array-parallelism")
        if args.time is None:
            raise ConfigError("--launcher slurm needs --time (each job's limit, e.g. 4:00:00)")
        args.minutes = parse_time(args.time)
        for opt in ("gpus_per_task", "array_parallelism"):
            if getattr(args, opt) is not None and getattr(args, opt) < 1:
                raise ConfigError(f"--{opt.replace('_', '-')} must be >= 1")
    return args


def _grid(args, run_argv: list[str]) -> list[Point]:
    sweeps: dict[str, list[str]] = {}
    for spec in args.sweep:
        key, vals = _parse_sweep(spec)
        if key in sweeps:
            raise ConfigError(f"--sweep {key} is given twice; give all its values in one")
        sweeps[key] = vals
    for a in run_argv:
        key = a.split("=", 1)[0].split(".", 1)[-1] if _RUN_OPTION.match(a) else None
        if key in sweeps:
            raise ConfigError(f"{a.split('=', 1)[0]} is also swept (--sweep {key}=...)")
    root = args.workdir
    points = []
    for combo in itertools.product(*sweeps.values()):
        values = dict(zip(sweeps, combo))
        name = point_name(values)
        workdir = os.path.join(root, name)
        # A point's log is a file: plain lines per chunk, not progress bars (unless asked).
        quiet = [] if any(a.startswith("--config.progress") for a in run_argv) else _QUIET
        argv = [*quiet, *run_argv, *(f"--config.{k}={v}" for k, v in values.items())]
        argv += ["--workdir", workdir]
        points.append(Point(values, name, workdir, os.path.join(root, LOGS, name + ".log"), argv))
    return points


def _check_points(points: list[Point], parse_run, usage_error) -> None:
    """Builds and validates every point's config; refuses two points with the same config, and
    a point whose workdir holds a run of another config (as ``lth-jax run`` would, up front)."""
    seen: dict[str, str] = {}
    for p in points:
        try:
            config = parse_run(p.argv)[0]
            kind = kinds.get(config.get("kind", "lottery"))
            kind.validate(config)
        except (usage_error, ConfigError) as e:
            raise ConfigError(f"point {p.name}: {e}") from None
        p.config = config
        if os.path.isfile(os.path.join(p.workdir, wd.CONFIG)):
            try:
                kind.check_drift(p.workdir, config)
            except wd.DriftError as e:  # sweep has no --overwrite: a point is redone anew
                raise ConfigError(
                    f"point {p.name}: {e.problem}; delete the point's folder to redo it, "
                    "or sweep into another --workdir"
                ) from None
            except ConfigError as e:
                raise ConfigError(f"point {p.name}: {e}") from None
        text = json.dumps(wd.config_to_json(config), sort_keys=True)
        if text in seen:
            raise ConfigError(f"points {seen[text]} and {p.name} give the same config")
        seen[text] = p.name


def pool_commands(points: list[Point], root: str) -> list[str]:
    """The ``lth-jax report --pool`` commands of the points that differ only in ``seed``.

    One per combination of the other swept values with two seeds or more,
    written to ``DIR/pooled`` (``DIR/pooled/<other values>`` when others are swept);
    none for points of a kind ``--pool`` does not take (``transfer``).
    """
    groups: dict[str, list[Point]] = {}
    for p in points:
        kind = p.config.get("kind", "lottery") if p.config is not None else "lottery"
        if "seed" in p.values and kind in POOL_KINDS:
            rest = {k: v for k, v in p.values.items() if k != "seed"}
            groups.setdefault(point_name(rest), []).append(p)
    out = []
    for rest, ps in groups.items():
        if len(ps) > 1:
            dest = os.path.join(root, POOLED_DIR, *([rest] if rest else []))
            cmd = ["lth-jax", "report", "--pool", *(p.workdir for p in ps), "--out", dest]
            out.append(shlex.join(cmd))
    return out


def main(argv: list[str], parse_run, usage_error: type[Exception] = ConfigError) -> int:
    """``lth-jax sweep ARGV``; returns the exit status (see the module docstring).

    ``parse_run(argv)`` gives a point's ``(config, workdir, overwrite)`` from
    its ``lth-jax run`` arguments (:func:`lth_jax.cli.parse_run_args`),
    raising ``usage_error`` or :class:`ConfigError` for bad input.

    Raises:
      ConfigError: bad input (one line).
      lth_jax.workdir.RunFailed: ``--launcher slurm`` where there is no SLURM.
      lth_jax.workdir.Interrupted: stopped by SIGINT or SIGTERM.
    """
    if any(a in ("-h", "--help") for a in argv):  # the docstring, as plain text
        print(re.sub(r":\w+:`~?([^`]*)`", r"\1", __doc__.strip()).replace("``", ""))
        return 0
    ours, run_argv = _split_args(list(argv))
    args = _options(ours)
    root = args.workdir
    if os.path.exists(root) and not os.path.isdir(root):
        raise ConfigError(f"sweep --workdir {root} exists and is not a directory")
    if any(os.path.exists(os.path.join(root, n)) for n in (wd.CONFIG, wd.METRICS)):
        raise ConfigError(
            f"sweep --workdir {root} is an lth-jax run's workdir; a sweep's --workdir is the "
            "folder that holds its points' workdirs"
        )
    points = _grid(args, run_argv)
    _check_points(points, parse_run, usage_error)
    status = {p.name: point_status(p) for p in points}
    todo = [p for p in points if status[p.name] == "todo"]
    busy = [p.name for p in points if status[p.name] == "running"]
    counts = {s: sum(v == s for v in status.values()) for s in ("finished", "running", "todo")}
    how = f"{args.parallel} at a time" if args.launcher == "local" else "as a SLURM job array"
    print(
        f"lth-jax sweep: {len(points)} points in {root}: {counts['finished']} finished (skipped), "
        f"{counts['running']} running elsewhere, {counts['todo']} to run ({args.launcher}, {how})",
        flush=True,
    )
    failed: list[str] | None = []
    if todo:
        if args.launcher == "local":
            failed = launch_local(todo, args.parallel)
        else:
            failed = launch_slurm(todo, args, root)
    pools = pool_commands(points, root)
    if failed is None:  # submitted, not waited for
        for cmd in pools:
            print(f"when the jobs are done, pool the seeds: {cmd}")
        return 0
    if failed or busy:
        parts = []
        if failed:
            parts.append(f"{len(failed)} of {len(points)} points failed ({', '.join(failed)})")
        if busy:
            parts.append(f"{len(busy)} running in another process ({', '.join(busy)})")
        print(
            f"lth-jax: error: {'; '.join(parts)}; run the same command again to resume "
            f"(finished points are skipped); logs in {os.path.join(root, LOGS)}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(f"all {len(points)} points finished in {root}")
    for cmd in pools:
        print(f"pool the seeds: {cmd}")
    return 0
