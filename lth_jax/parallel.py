"""Devices: the mesh the runs are spread over, and multi-host start-up.

Runs (trials x arms) are independent, so the engine splits the run axis over a
one-dimensional mesh named ``runs``; data are replicated on every device. When
the number of runs is not a multiple of the number of devices, the batch is
padded with copies of its first run, whose results are dropped.

On a CPU, JAX sees one device unless ``XLA_FLAGS`` asks for more with
``--xla_force_host_platform_device_count=N``. :func:`configure_host_devices`
sets that flag (to the number of cores, at most 8) when the user has not, and
must run before JAX starts its backend; the ``lth-jax`` command calls it first.
One device per core is the fastest layout measured on a 2-core CPU for a batch
of runs: each device trains its share of the runs one after another, single
threaded, instead of splitting every small matmul over the cores (see
``experiments/benchmark.py``).

Compiled programs are kept across processes in JAX's persistent compilation
cache: :func:`enable_compilation_cache` (called by
:func:`configure_host_devices`, so by the ``lth-jax`` command) turns it on in
``$LTH_JAX_COMPILATION_CACHE`` (default ``~/.cache/lth_jax/xla``; ``0`` or
``off`` disables it) unless JAX already has a cache directory. A chunk program
that takes seconds to compile then loads in a fraction of a second on the next
run, resumption or round of another process with the same shapes.

Across machines the engine uses JAX's own multi-host runtime:
:func:`initialize_distributed` calls ``jax.distributed.initialize`` with the
coordinator address, process count and process id from the environment
(``LTH_JAX_COORDINATOR``, ``LTH_JAX_NUM_PROCESSES``, ``LTH_JAX_PROCESS_ID``) or
lets JAX detect a cluster (SLURM, TPU pods) when ``LTH_JAX_DISTRIBUTED=auto``.
It says on stderr what it waits for, and gives up after
``LTH_JAX_COORDINATOR_TIMEOUT`` seconds (default 300).
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from lth_jax.checks import ConfigError

__all__ = [
    "configure_host_devices",
    "enable_compilation_cache",
    "initialize_distributed",
    "DistributedEnvError",
    "DistributedStartError",
    "COORDINATOR_TIMEOUT_S",
    "make_mesh",
    "num_shards",
    "sharding",
    "shard",
    "shard_even",
    "concat_runs",
    "take_runs",
    "pad_runs",
    "split_runs",
    "join_runs",
    "to_host",
    "is_main",
    "barrier",
]

_FLAG = "--xla_force_host_platform_device_count"


def _num_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset / cpusets
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_host_devices(count: int | None = None, compilation_cache: bool = True) -> int | None:
    """Asks XLA for ``count`` CPU devices unless ``XLA_FLAGS`` already sets it.

    ``count`` defaults to the number of cores this process may use, at most 8.
    Also turns on the persistent compilation cache (see
    :func:`enable_compilation_cache`) unless ``compilation_cache=False``.

    Returns the count set, or ``None`` when the user's flag was kept. Has an
    effect only before JAX initializes its backends.
    """
    if compilation_cache:
        enable_compilation_cache()
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG in flags:
        return None
    if count is None:
        count = max(1, min(_num_cores(), 8))
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={count}".strip()
    return count


def enable_compilation_cache(directory: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache; returns its directory.

    The directory is ``directory``, else ``$LTH_JAX_COMPILATION_CACHE``, else
    ``~/.cache/lth_jax/xla``. ``LTH_JAX_COMPILATION_CACHE=0`` (or ``off``,
    ``false``, ``none``) leaves the cache off and returns ``None``. A cache
    directory JAX already has (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config.update("jax_compilation_cache_dir", ...)``) is kept. Every
    program is stored, however fast it compiles (unless
    ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise): a run
    compiles dozens of small ones (slices, masks, pruning), together seconds
    per process that a later process reads back in a fraction.
    """

    current = jax.config.jax_compilation_cache_dir
    if current and directory is None:
        return current
    env = os.environ.get("LTH_JAX_COMPILATION_CACHE")
    if (
        directory is None
        and env is not None
        and env.strip().lower() in ("0", "off", "false", "none", "")
    ):
        return None
    path = directory or env or os.path.join(os.path.expanduser("~"), ".cache", "lth_jax", "xla")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


#: Seconds to wait for the other processes when ``LTH_JAX_COORDINATOR_TIMEOUT`` is unset.
COORDINATOR_TIMEOUT_S = 300.0
#: JAX's own deadline is this much later than ours: JAX aborts the process at
#: its deadline (a C++ check failure and a stack dump), so ours must come first.
_JAX_DEADLINE_MARGIN_S = 30


class DistributedEnvError(ConfigError):
    """An ``LTH_JAX_*`` multi-process variable is missing or bad (bad input: exit status 2)."""


class DistributedStartError(RuntimeError):
    """The multi-process runtime did not start: nobody answered in time (exit status 1)."""


def _env_int(name: str, lo: int, hi: int | None, what: str) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        raise DistributedEnvError(
            f"{name} is not set; it must be {what} when LTH_JAX_COORDINATOR is set"
        )
    try:
        v = int(raw.strip())
    except ValueError:
        v = None
    if v is None or v < lo or (hi is not None and v >= hi):
        raise DistributedEnvError(f"{name} must be {what}, got {raw!r}")
    return v


def _coordinator_timeout() -> float:
    raw = os.environ.get("LTH_JAX_COORDINATOR_TIMEOUT", "").strip()
    if not raw:
        return COORDINATOR_TIMEOUT_S
    try:
        t = float(raw)
    except ValueError:
        t = math.nan
    if not (math.isfinite(t) and t > 0):
        raise DistributedEnvError(
            f"LTH_JAX_COORDINATOR_TIMEOUT must be a number of seconds > 0, got {raw!r}"
        )
    return t


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.strip().rpartition(":")
    host = host.strip("[]")  # [::1]:1234
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedEnvError(
            f"LTH_JAX_COORDINATOR must be HOST:PORT (where process 0 listens), got {addr!r}"
        )
    return host, int(port)


def _wait_for_port(host: str, port: int, deadline: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection before ``deadline``."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            with socket.create_connection((host, port), timeout=min(1.0, left)):
                return True
        except OSError:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _initialize(deadline: float, failure: str, **kwargs) -> None:
    """``jax.distributed.initialize(**kwargs)``, given up at ``deadline`` with one line.

    JAX ends the process itself at its own deadline (with a stack dump), from
    native code that Python cannot catch; a watchdog thread ends it first, with
    ``lth-jax: error: <failure>`` and exit status 1.
    """
    done = threading.Event()

    def watchdog():
        if not done.wait(max(0.0, deadline - time.monotonic())):
            print(f"lth-jax: error: {failure}", file=sys.stderr, flush=True)
            os._exit(1)

    threading.Thread(target=watchdog, name="lth_jax-distributed-watchdog", daemon=True).start()
    left = math.ceil(max(1.0, deadline - time.monotonic()))
    try:
        jax.distributed.initialize(initialization_timeout=left + _JAX_DEADLINE_MARGIN_S, **kwargs)
    except Exception as e:  # noqa: BLE001 - JAX's errors here are about the start-up
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise DistributedStartError(
            f"jax.distributed.initialize failed: {lines[0] if lines else type(e).__name__}"
        ) from None
    finally:
        done.set()


def initialize_distributed() -> bool:
    """Starts JAX's multi-process runtime when the environment asks for it.

    ``LTH_JAX_DISTRIBUTED=auto``: JAX detects the cluster. Else, when
    ``LTH_JAX_COORDINATOR`` is set (``HOST:PORT``, where process 0 runs the
    coordinator): ``LTH_JAX_NUM_PROCESSES`` (an integer >= 1) and
    ``LTH_JAX_PROCESS_ID`` (in ``[0, LTH_JAX_NUM_PROCESSES)``) must be set;
    ``LTH_JAX_CPU_COLLECTIVES`` picks the CPU collectives (default ``gloo``).
    One line on stderr says at once what this process waits for; after
    ``LTH_JAX_COORDINATOR_TIMEOUT`` seconds (default :data:`COORDINATOR_TIMEOUT_S`)
    without every process, it gives up: a process other than 0 raises
    :class:`DistributedStartError` while nobody listens at the coordinator's
    address; once the start-up is in JAX's hands, a watchdog prints
    ``lth-jax: error: ...`` and ends the process with status 1 (JAX would
    abort it with a stack dump).

    Returns ``True`` when ``jax.distributed.initialize`` was called.

    Raises:
      DistributedEnvError: a variable is missing or bad (one line naming it).
      DistributedStartError: the runtime did not start in time.
    """
    auto = os.environ.get("LTH_JAX_DISTRIBUTED", "") == "auto"
    addr = os.environ.get("LTH_JAX_COORDINATOR")
    if not auto and not addr:
        return False
    timeout = _coordinator_timeout()
    hint = f"gives up after {timeout:g} s, LTH_JAX_COORDINATOR_TIMEOUT"
    if auto:
        print(f"lth-jax: joining the cluster JAX detects ({hint})", file=sys.stderr, flush=True)
        failure = f"the cluster JAX detected did not start within {timeout:g} s"
        _initialize(time.monotonic() + timeout, failure)
        return True
    host, port = _host_port(addr)
    n = _env_int("LTH_JAX_NUM_PROCESSES", 1, None, "an integer >= 1 (the number of processes)")
    pid = _env_int(
        "LTH_JAX_PROCESS_ID",
        0,
        n,
        f"an integer in [0, {n}) (this process's index; LTH_JAX_NUM_PROCESSES={n})",
    )
    collectives = os.environ.get("LTH_JAX_CPU_COLLECTIVES", "gloo")
    if collectives:
        try:
            jax.config.update("jax_cpu_collectives_implementation", collectives)
        except ValueError:
            raise DistributedEnvError(
                f"LTH_JAX_CPU_COLLECTIVES must be gloo, mpi or megascale, got {collectives!r}"
            ) from None
    deadline = time.monotonic() + timeout
    who = f"process {pid} of {n}"
    if pid == 0:
        doing = f"running the coordinator at {addr}, waiting for the other processes"
    else:
        doing = f"waiting for the coordinator at {addr}"
    print(f"lth-jax: {who}: {doing} ({hint})", file=sys.stderr, flush=True)
    if pid != 0 and not _wait_for_port(host, port, deadline):
        raise DistributedStartError(
            f"{who}: no coordinator answered at {addr} within {timeout:g} s; start process 0 "
            "there first, check the address, or raise LTH_JAX_COORDINATOR_TIMEOUT"
        )
    failure = (
        f"{who}: the processes did not all join the coordinator at {addr} within {timeout:g} s "
        "(check LTH_JAX_NUM_PROCESSES and that every process started; LTH_JAX_COORDINATOR_TIMEOUT)"
    )
    _initialize(deadline, failure, coordinator_address=addr, num_processes=n, process_id=pid)
    return True


def make_mesh(num_devices: int = 0):
    """A 1-D mesh named ``runs`` over ``num_devices`` devices (0: all of them).

    Uses every process's devices in a multi-host run.
    """

    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(
                f"num_devices={num_devices} but only {len(devices)} devices are visible"
            )
        devices = devices[:num_devices]
    return Mesh(np.array(devices), ("runs",), axis_types=(AxisType.Auto,))


def num_shards(mesh) -> int:
    """Devices the run axis is split over: 1 without a mesh."""
    return 1 if mesh is None else int(mesh.shape["runs"])


def sharding(mesh, replicate: bool = False):
    """The ``runs``-axis sharding of ``mesh`` (or the replicated one); ``None`` without a mesh."""
    if mesh is None:
        return None

    return NamedSharding(mesh, PartitionSpec() if replicate else PartitionSpec("runs"))


def shard(tree, mesh):
    """Places a run-batched tree on ``mesh`` (runs axis split over devices)."""

    s = sharding(mesh)
    return tree if s is None else jax.device_put(tree, s)


def shard_even(tree, mesh):
    """:func:`shard` when the run count splits evenly over ``mesh`` in one process, else ``tree``.

    A run-batched program given sharded inputs runs on every device (pruning's
    sorts of 8 LeNet-300-100 trials: 0.48 s on one CPU core, 0.29 s on two),
    with the same values.
    """

    n = jax.tree.leaves(tree)[0].shape[0]
    if mesh is None or jax.process_count() > 1 or n % num_shards(mesh):
        return tree
    return shard(tree, mesh)


def concat_runs(trees):
    """The trees concatenated along their leading (run) axis, leaf by leaf.

    In a single process the leaves are joined on the host and put back with
    ``jax.device_put``: the same values, and no program compiled per shape (a
    tenth of a second each, in a first run). Elsewhere, ``jnp.concatenate``.
    """

    if jax.process_count() == 1:
        return jax.device_put(join_runs(list(trees)))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


def take_runs(tree, start: int, stop: int):
    """Runs ``start`` to ``stop - 1`` of every leaf (cut on the host in a single process)."""

    if jax.process_count() == 1:
        return jax.device_put(jax.tree.map(lambda a: np.asarray(a)[start:stop], tree))
    return jax.tree.map(lambda a: a[start:stop], tree)


def pad_runs(tree, multiple: int):
    """Pads the leading (run) axis of every leaf to a multiple of ``multiple``.

    Returns ``(padded_tree, n)`` with ``n`` the original number of runs; the
    padding repeats run 0.
    """

    n = jax.tree.leaves(tree)[0].shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return tree, n
    xp = lambda a: np if isinstance(a, np.ndarray) else jnp  # numpy leaves stay on the host
    return (
        jax.tree.map(lambda a: xp(a).concatenate([a, xp(a).repeat(a[:1], pad, axis=0)]), tree),
        n,
    )


def split_runs(tree, k: int) -> list:
    """``tree`` cut on the host into ``k`` equal groups of consecutive runs (numpy leaves).

    ``k = 1`` returns ``[tree]`` unchanged. The run count must be a multiple of ``k``.
    """

    if k == 1:
        return [tree]
    n = jax.tree.leaves(tree)[0].shape[0]
    if n % k:
        raise ValueError(f"{n} runs do not split into {k} equal groups")
    m = n // k
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [np.asarray(a) for a in leaves]
    return [treedef.unflatten([a[i * m : (i + 1) * m] for a in leaves]) for i in range(k)]


def join_runs(groups: list):
    """The inverse of :func:`split_runs`: one tree, the groups' runs in order.

    One group is returned as it is (wherever it lives); several are gathered
    (:func:`to_host`) and joined on the host as numpy arrays.
    """

    if len(groups) == 1:
        return groups[0]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *to_host(list(groups)))


def to_host(tree):
    """Numpy copies of every leaf, gathered from all processes in a multi-host run."""

    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def is_main() -> bool:
    """Whether this is process 0 (the one that writes files and prints reports)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits for every process of a multi-host run (a no-op in a single process)."""

    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
