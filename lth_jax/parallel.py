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
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "configure_host_devices",
    "enable_compilation_cache",
    "initialize_distributed",
    "make_mesh",
    "num_shards",
    "sharding",
    "shard",
    "concat_runs",
    "take_runs",
    "pad_runs",
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
    ``jax.config.update("jax_compilation_cache_dir", ...)``) is kept. Programs
    that compile in less than a second are not stored (JAX's default
    threshold); the chunk programs of the engine are.
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
    return path


def initialize_distributed() -> bool:
    """Starts JAX's multi-process runtime when the environment asks for it.

    Returns ``True`` when ``jax.distributed.initialize`` was called.
    """

    if os.environ.get("LTH_JAX_DISTRIBUTED", "") == "auto":
        jax.distributed.initialize()
        return True
    addr = os.environ.get("LTH_JAX_COORDINATOR")
    if not addr:
        return False
    if os.environ.get("LTH_JAX_CPU_COLLECTIVES", "gloo"):
        jax.config.update(
            "jax_cpu_collectives_implementation", os.environ.get("LTH_JAX_CPU_COLLECTIVES", "gloo")
        )
    jax.distributed.initialize(
        coordinator_address=addr,
        num_processes=int(os.environ["LTH_JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["LTH_JAX_PROCESS_ID"]),
    )
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


def concat_runs(trees):
    """The trees concatenated along their leading (run) axis, leaf by leaf."""

    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


def take_runs(tree, start: int, stop: int):
    """Runs ``start`` to ``stop - 1`` of every leaf."""

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
    return (
        jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]), tree),
        n,
    )


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
