"""How ``lth-jax sweep`` runs its points: which are finished, and the two launchers.

* :func:`point_status`: ``finished`` (the same config in the workdir, every
  round in ``metrics.jsonl``), ``running`` (the workdir's lock is held) or
  ``todo``.
* :func:`launch_local`: ``lth-jax run`` processes on this machine, N at a
  time, each in its own session; SIGINT/SIGTERM is forwarded to each once.
* :func:`launch_slurm`: one job array through ``submitit``; each job runs
  :func:`run_point` (``lth-jax run`` in a child process that ignores
  SIGUSR2, SLURM's early warning, and saves a checkpoint on SIGTERM).

Every point's output is appended to its log, ``DIR/logs/<point>.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from lth_jax import config_base
from lth_jax import workdir as wd
from lth_jax.checks import ConfigError
from lth_jax.report.files import unfinished
from lth_jax.report.pool import config_differences

__all__ = [
    "CLUSTER",
    "LOGS",
    "SUBMITIT",
    "Point",
    "point_status",
    "run_command",
    "run_point",
    "launch_local",
    "launch_slurm",
]

#: The submitit cluster of ``--launcher slurm`` (the tests set ``"local"``: submitit's
#: LocalExecutor, real processes on this machine).
CLUSTER = "slurm"
#: The folders of a sweep's ``DIR``: the points' logs and submitit's files.
LOGS, SUBMITIT = "logs", "slurm"


@dataclass
class Point:
    """One point of the grid: its values (key -> text), name, folders and run arguments."""

    values: dict
    name: str
    workdir: str
    log: str
    argv: list = field(default_factory=list)
    config: object = None


def _lock_holder(workdir: str) -> str | None:
    """Who holds the workdir's lock (a running ``lth-jax run``), or ``None``."""
    try:
        fd = os.open(os.path.join(workdir, wd.LOCK), os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _complete(config, records: list[dict]) -> bool:
    if config.get("kind", "lottery") not in ("lottery", "instability"):
        return False
    return unfinished(wd.config_to_json(config), records) is None


def point_status(p: Point) -> str:
    """``finished``, ``running`` (its workdir is locked) or ``todo`` (see the module docstring)."""
    if _lock_holder(p.workdir) is not None:
        return "running"
    try:
        saved = wd.read_json(os.path.join(p.workdir, wd.CONFIG))
        records = wd.read_jsonl(os.path.join(p.workdir, wd.METRICS), missing_ok=True)
    except (ValueError, OSError):
        return "todo"
    if saved is None:
        return "todo"
    old, new = config_base.upgrade_json(saved), wd.config_to_json(p.config)
    defaults = wd.config_to_json(config_base.base_config())
    if config_differences(old, new, ignore=(), defaults=defaults):
        return "todo"
    return "finished" if _complete(p.config, records) else "todo"


def run_command(argv: list[str]) -> list[str]:
    """The ``lth-jax run`` command of a point (this Python, ``-m lth_jax.cli``)."""
    return [sys.executable, "-m", "lth_jax.cli", "run", *argv]


def _ignore_usr2() -> None:  # SLURM's early warning is for submitit's process, not the run
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _start(argv: list[str], log: str, new_session: bool) -> subprocess.Popen:
    os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
    cmd = run_command(argv)
    with open(log, "a", encoding="utf-8") as f:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        f.write(f"=== {stamp} lth-jax sweep: {shlex.join(cmd)}\n")
        f.flush()
        return subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=new_session,
            preexec_fn=_ignore_usr2,
        )


def run_point(argv: list[str], log: str) -> int:
    """Runs one point, ``lth-jax run ARGV``, its output appended to ``log``; its exit status.

    The function of a SLURM job (pickled by submitit).
    """
    return _start(argv, log, new_session=False).wait()


def _last_line(log: str) -> str:
    with contextlib.suppress(OSError), open(log, encoding="utf-8", errors="replace") as f:
        lines = [x.strip() for x in f.read().splitlines()[-50:] if x.strip() and x[:4] != "=== "]
        errors = [line for line in lines if line.startswith("lth-jax:")]
        return (errors or lines or [""])[-1][:300]
    return ""


def _done(
    i: int, n: int, p: Point, code, seconds: float | None = None, signum: int | None = None
) -> tuple[str, bool]:
    took = "" if seconds is None else f" in {seconds:.0f} s"
    if code == 0:
        return f"[{i}/{n}] {p.name}: done{took}", True
    why = _last_line(p.log) if isinstance(code, int) else str(code)
    how = f"exit {code}"
    if isinstance(code, int) and code < 0:
        how = f"killed by {signal.Signals(-code).name}"
    # lth-jax run stopped by SIGINT/SIGTERM after a checkpoint (130/143), or killed by the
    # signal the sweep passed on before its run could catch it (-signum): resumable either way.
    stopped = code in (130, 143) or (signum is not None and code == -signum)
    if stopped:
        name = signal.Signals(code - 128 if code > 0 else -code).name
        return f"[{i}/{n}] {p.name}: stopped by {name}{took}, resumable (log {p.log})", False
    return f"[{i}/{n}] {p.name}: failed ({how}){took}: {why} (log {p.log})", False


class _Signals:
    """Records SIGINT/SIGTERM (``signum``) and forwards each one to the running points."""

    def __init__(self):
        self.signum, self.procs, self._old = None, [], {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is None:
            name = signal.Signals(signum).name
            print(f"lth-jax: {name} received: stopping the running points", file=sys.stderr)
        self.signum = signum
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.send_signal(signum)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def launch_local(points: list[Point], parallel: int) -> list[str]:
    """Runs ``points``, ``parallel`` at a time; the names of those that failed."""
    pending, running, failed, n = list(enumerate(points, 1)), {}, [], len(points)
    done = 0
    with _Signals() as sig:
        while pending or running:
            while pending and len(running) < parallel and sig.signum is None:
                i, p = pending.pop(0)
                proc = _start(p.argv, p.log, new_session=True)
                running[proc] = (i, p, time.monotonic())
                sig.procs = list(running)
                if sig.signum is not None:  # it came between the start and the line above
                    with contextlib.suppress(OSError):
                        proc.send_signal(sig.signum)
                print(f"[{i}/{n}] {p.name}: started, log {p.log}", flush=True)
            time.sleep(0.1)
            for proc in [q for q in running if q.poll() is not None]:
                i, p, t0 = running.pop(proc)
                sig.procs = list(running)
                line, ok = _done(i, n, p, proc.returncode, time.monotonic() - t0, sig.signum)
                print(line, flush=True)
                failed += [] if ok else [p.name]
                done += ok
            if sig.signum is not None and not running:
                raise wd.Interrupted(sig.signum, f"with {done} of {n} points done")
    return failed


def launch_slurm(points: list[Point], args, root: str) -> list[str] | None:
    """Submits ``points`` as one job array; with ``--wait``, the names of those that failed."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher slurm needs submitit: pip install 'lth_jax[submitit]'"
        ) from None
    try:
        ex = submitit.AutoExecutor(folder=os.path.join(root, SUBMITIT, "%j"), cluster=CLUSTER)
    except RuntimeError as e:  # no srun: not on a SLURM cluster
        raise wd.RunFailed(f"--launcher slurm: {e}") from None
    params = {"timeout_min": args.minutes, "name": "lth-jax-sweep"}
    for opt in ("partition", "gpus_per_task", "array_parallelism"):
        if getattr(args, opt) is not None:
            params[f"slurm_{opt}"] = getattr(args, opt)
    ex.update_parameters(**params)
    for p in points:
        os.makedirs(os.path.dirname(p.log), exist_ok=True)
    jobs = ex.map_array(run_point, [p.argv for p in points], [p.log for p in points])
    ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
    print(
        f"submitted {len(jobs)} points as job array {', '.join(ids)}; logs in "
        f"{os.path.join(root, LOGS)}",
        flush=True,
    )
    if not args.wait:
        return None
    failed, n = [], len(points)
    for i, (p, job) in enumerate(zip(points, jobs), 1):
        try:
            code = job.result()
        except Exception as e:  # noqa: BLE001 - the job's own failure, reported per point
            code = f"job {job.job_id}: " + " ".join(str(e).split())[:200]
        line, ok = _done(i, n, p, code)
        print(line, flush=True)
        failed += [] if ok else [p.name]
    return failed
