"""Conv-6 and ResNet-20 on an accelerator: per-step time, MFU against the device's peak, trials.

Run on a GPU or TPU by ``python experiments/benchmark.py --accel`` (it stops
with a plain error on a CPU; ``--conv`` times the same on a CPU, slowly). For
each network (CIFAR-shaped random data, Adam, the engine of
:mod:`lth_jax.train`) and K = 1, 8 and 32 trials as one program over the local
devices: trial-steps/s, milliseconds per step of one trial, trials per device,
the device memory in use, and model-FLOPs utilization with the FLOPs of one
step from XLA's cost analysis, against two ceilings: the measured f32 matmul
roofline, and the device's peak dense matmul rate from its vendor's data
sheet (:data:`PEAK_TFLOPS`; TF32 on NVIDIA GPUs, which XLA uses for f32
matmuls at the default precision, bf16 on TPUs, which run f32 matmuls as bf16
passes at the default precision). ``--peak-tflops`` sets the peak for a device
not in the table.
"""

from __future__ import annotations

from bench.common import device_memory, optimizer, synthetic
from bench.lenet import make_engine, time_engine

#: Peak dense matmul TFLOP/s per device, vendor data sheets: (device_kind substring, peak).
#: NVIDIA: TF32 tensor cores without sparsity; TPU: bf16 per chip.
PEAK_TFLOPS = (
    ("H200", 494.7),
    ("H100 PCIe", 378.0),
    ("H100", 494.7),
    ("A100", 156.0),
    ("L4", 60.0),
    ("V100", 15.7),  # no TF32: the f32 peak
    ("T4", 8.1),  # no TF32: the f32 peak
    ("TPU v6 lite", 918.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5", 459.0),
    ("TPU v4", 275.0),
)
NETWORKS = (("conv6", 60), ("resnet20", 128))


def device_peak(kind, override=None):
    """The peak TFLOP/s of a device kind (``jax.Device.device_kind``), or ``None`` if unknown.

    Args:
      kind: e.g. ``"NVIDIA H100 80GB HBM3"`` or ``"TPU v4"``.
      override: a peak given on the command line (``--peak-tflops``), used as is.

    Returns:
      TFLOP/s, or ``None``.
    """
    if override:
        return float(override)
    for name, peak in PEAK_TFLOPS:
        if name.lower() in kind.lower():
            return peak
    return None


def _xla_step_flops(model, x, y):
    """FLOPs of one training step of one trial (Adam), from XLA's cost analysis."""
    import jax
    import optax

    from lth_jax import optim, train

    variables = jax.eval_shape(lambda k: model.init({"params": k}, x[:1]), jax.random.PRNGKey(0))
    tx = optim.make_optimizer(optimizer())
    opt_state = jax.eval_shape(tx.init, variables["params"])

    def step(variables, opt_state, x, y):
        def loss_fn(p):
            v = {**variables, "params": p}
            rngs = {"dropout": jax.random.PRNGKey(0)}
            if "batch_stats" in variables:
                logits, _ = model.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs)
            else:
                logits = model.apply(v, x, train=True, rngs=rngs)
            return train.cross_entropy(logits, y)

        g = jax.grad(loss_fn)(variables["params"])
        u, opt_state = tx.update(g, opt_state, variables["params"])
        return optax.apply_updates(variables["params"], u), opt_state

    try:
        cost = jax.jit(step).lower(variables, opt_state, x, y).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0))
    except Exception:  # noqa: BLE001 - cost analysis is optional
        return 0.0


def conv_models(s, roof, peak_tflops=None):
    """Conv-6 and ResNet-20 on CIFAR-shaped data: per-step time, MFU, trials per device.

    Args:
      s: the benchmark's settings (``quick``, ``repeats``).
      roof: the measured matmul roofline, GFLOP/s.
      peak_tflops: the device's peak (``None``: from :data:`PEAK_TFLOPS`).

    Returns:
      ``{"device_kind", "peak_tflops", "<network>": {"batch", "xla_flops_per_step",
      "K<k>": {...}}}``.
    """
    import jax

    from lth_jax import models, parallel

    devices = jax.local_devices()
    kind = devices[0].device_kind
    peak = device_peak(kind, peak_tflops)
    out = {"device_kind": kind, "devices": len(devices), "peak_tflops": peak}
    mesh = parallel.make_mesh(len(devices))
    data = synthetic(600 if s.quick else 20000, 60, 60, shape=(32, 32, 3))
    steps = 4 if s.quick else 200
    ks = (1, 2) if s.quick else (1, 8, 32)
    for name, batch in NETWORKS:
        model = models.get(name)
        flops = _xla_step_flops(model, data.train_x[:batch], data.train_y[:batch])
        entry = {"batch": batch, "xla_flops_per_step": flops}
        eng = make_engine(model, data, steps, steps, mesh, batch_size=batch)
        for k in ks:
            r = time_engine(eng, k, s.repeats)
            rate = r["median"]
            r["K"] = k
            r["trials_per_device"] = -(-k // len(devices))
            r["ms_per_step_one_trial"] = 1e3 * k / rate / r["trials_per_device"]
            r["mfu_vs_roofline"] = rate * flops / (roof * 1e9) if flops else None
            r["mfu_vs_peak"] = rate * flops / (peak * 1e12) if flops and peak else None
            r["mfu"] = r["mfu_vs_peak"] if peak else r["mfu_vs_roofline"]
            r["device_memory"] = device_memory()
            entry[f"K{k}"] = r
        out[name] = entry
    return out
