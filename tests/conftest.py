"""Test set-up: 4 CPU devices (trial sharding is tested on 1 and 4), no network."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")

# Property tests draw the same examples on every run, so a failure reproduces and
# CI never fails by chance; HYPOTHESIS_PROFILE=random explores new examples.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True)
settings.register_profile("random", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
