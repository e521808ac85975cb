"""The speed benchmark's parts; ``experiments/benchmark.py`` is the command.

* :mod:`.common`: helpers (statistics, random data, compile counting, memory,
  the machine);
* :mod:`.roofline`: the f32 matmul roofline and the GEMMs-only ceiling of a
  LeNet-300-100 step;
* :mod:`.lenet`: the training engine's steps/s (one trial, K trials, masked
  and unmasked, a Python loop);
* :mod:`.imp`: an IMP run in process (compiles, rounds, memory) and the
  persistent compilation cache;
* :mod:`.accel`: Conv-6 and ResNet-20 on an accelerator (per-step time, MFU
  against the device's peak, trials per device);
* :mod:`.e2e`: the ``lth-jax run`` command end to end on the LeNet-300-100
  preset, its time split and its roofline bound, and the PyTorch peer
  (:mod:`.torch_peer`, run as a script) on the same work;
* :mod:`.mnist_data`: MNIST-sized random data prepared as TFDS ``mnist``;
* :mod:`.launch`: runs a child command and reports its own peak memory;
* :mod:`.report`: the printed table, the README markdown and the targets.
"""
