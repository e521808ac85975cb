"""Test set-up: 4 CPU devices (trial sharding is tested on 1 and 4), no network."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
