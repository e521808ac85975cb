"""Real ``lth-jax`` processes in tests: the command, a small fast run, its environment."""

from __future__ import annotations

import os
import sys

#: A lottery run of a few seconds: 1 trial, 2 rounds of 200 steps, a 32-unit MLP.
SMALL_RUN = [
    "--config.progress=False",
    "--config.train.steps=200",
    "--config.train.eval_every=100",
    "--config.imp.rounds=2",
    "--config.num_trials=1",
    "--config.model.kwargs.features=(32,)",
]

_SCRIPT = os.path.join(os.path.dirname(sys.executable), "lth-jax")
#: The installed console script, or the module where it is not installed.
LTH_JAX = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "lth_jax.cli"]


def cli_env(cache_dir: str, devices: int = 1) -> dict:
    """The environment of a test's ``lth-jax`` process: CPU, ``devices`` host devices, no
    network for TFDS, and a compilation cache shared by the processes of a test module."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_COMPILATION_CACHE_DIR": cache_dir,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "TFDS_DISABLE_GCS": "1",
    }
