"""Helpers of the benchmark: statistics, random data, compile counting, memory, the machine."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import sys

LENET_MACS = 784 * 300 + 300 * 100 + 100 * 10  # multiply-adds per example


def load_average():
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def stats(samples):
    """``{"median", "best", "samples"}`` of rates (best: the largest)."""
    import numpy as np

    a = np.asarray(samples, dtype=np.float64)
    return {"median": float(np.median(a)), "best": float(a.max()), "samples": a.tolist()}


def synthetic(n_train, n_val, n_test, shape=(28, 28, 1), classes=10, seed=0):
    """A :class:`lth_jax.data.Dataset` of random inputs and labels with the given shapes."""
    import numpy as np

    from lth_jax.data import Dataset

    r = np.random.default_rng(seed)
    mk = lambda n: (
        r.standard_normal((n, *shape), dtype=np.float32),
        r.integers(0, classes, n).astype(np.int32),
    )
    (tx, ty), (vx, vy), (sx, sy) = mk(n_train), mk(n_val), mk(n_test)
    return Dataset(tx, ty, vx, vy, sx, sy, classes, "synthetic")


def optimizer(name="adam", lr=1.2e-3):
    """The base config's optimizer block with ``name`` and ``lr``."""
    from lth_jax import config as config_lib

    opt = config_lib.base_config().optimizer
    opt.name, opt.learning_rate = name, lr
    return opt


class Compiles:
    """Counts backend compiles (and their seconds) by function name, via jax.monitoring."""

    def __init__(self):
        import jax

        self.events = []
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            self.events.append((str(kw.get("fun_name", "")), float(duration)))

    def count(self, name, since=0):
        return sum(1 for n, _ in self.events[since:] if name in n)

    def seconds(self, name, since=0):
        return sum(d for n, d in self.events[since:] if name in n)


def rss_mib(who=resource.RUSAGE_SELF):
    """Peak resident memory (``ru_maxrss``) in MiB of this process or its waited-for children."""
    return maxrss_mib(resource.getrusage(who))


def maxrss_mib(usage):
    """``usage.ru_maxrss`` (a ``resource.struct_rusage``) in MiB."""
    r = usage.ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def device_memory():
    """Peak and current bytes in use per device, where the backend reports them (GPU, TPU)."""
    import jax

    out = {}
    for d in jax.local_devices():
        try:
            st = d.memory_stats()
        except Exception:  # noqa: BLE001 - not every backend has them
            st = None
        if st:
            out[str(d)] = {
                k: int(v) for k, v in st.items() if k in ("peak_bytes_in_use", "bytes_in_use")
            }
    return out or None


def cpu_name():
    """The CPU model from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cores():
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine(quick, load_before):
    """The ``meta`` block: date, host, CPU, cores, jax, backend and devices."""
    import jax

    dev = jax.local_devices()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cores": cores(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in dev],
        "device_count": len(dev),
        "device_kind": dev[0].device_kind,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "persistent_compilation_cache": jax.config.jax_compilation_cache_dir,
        "quick": quick,
        "load_1min_before": load_before,
    }
