"""The f32 matmul roofline of this machine, and the GEMMs-only ceiling of a LeNet-300-100 step."""

from __future__ import annotations

import time

from bench.common import LENET_MACS, stats


def roofline(s):
    """Best f32 matmul GFLOP/s: one device (intra-op threads) and all devices at once."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from lth_jax import parallel

    out = {"sizes": {}, "note": "2 n^3 / seconds, best of the repeats"}
    devices = jax.local_devices()
    mesh = parallel.make_mesh(len(devices)) if len(devices) > 1 else None
    for n in s.roof_sizes:
        r = np.random.default_rng(n)
        a = jnp.asarray(r.standard_normal((n, n), dtype=np.float32))
        b = jnp.asarray(r.standard_normal((n, n), dtype=np.float32))
        one = jax.jit(jnp.matmul)
        reps = max(3, int(4e9 / (2 * n**3)))  # about 4 GFLOP per timed sample
        entry = {"one_device": _time_matmul(one, (a, b), reps, 2 * n**3, s.repeats)}
        if mesh is not None:
            d = len(devices)
            sh = NamedSharding(mesh, PartitionSpec("runs"))
            A = jax.device_put(jnp.broadcast_to(a, (d, n, n)), sh)
            B = jax.device_put(jnp.broadcast_to(b, (d, n, n)), sh)
            every = jax.jit(
                jax.shard_map(
                    lambda x, y: jnp.matmul(x, y),
                    mesh=mesh,
                    in_specs=(PartitionSpec("runs"), PartitionSpec("runs")),
                    out_specs=PartitionSpec("runs"),
                )
            )
            entry["all_devices"] = _time_matmul(every, (A, B), reps, d * 2 * n**3, s.repeats)
        out["sizes"][str(n)] = entry
    best = max(v["best"] for e in out["sizes"].values() for v in e.values() if isinstance(v, dict))
    out["gflops"] = best
    return out


def _time_matmul(f, args, reps, flops, repeats):
    import jax

    jax.block_until_ready(f(*args))
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            r = f(*args)
        jax.block_until_ready(r)
        samples.append(flops * reps / (time.perf_counter() - t) / 1e9)
    return stats(samples)


def gemm_ceiling(s, roof):
    """The matmuls of a LeNet-300-100 step alone, laid out like the engine: a ceiling for its MFU.

    Per run, a ``lax.scan`` of ``steps`` iterations of exactly the GEMMs of a
    training step at batch 60 (3 forward, 3 weight-gradient and 2
    input-gradient products; the first layer's input gradient is not
    computed, as in the real step) plus an SGD-like update so that each
    iteration depends on the last; no activation, loss, optimizer, mask or
    data indexing. Runs are spread over the devices with ``shard_map`` and
    computed one after another on each device, as :class:`lth_jax.train.Engine`
    does. Reported as steps/s and as MFU with the same model-FLOP count as the
    engine, so the gap between the two is the cost of everything that is not a
    matmul. The model FLOPs include the first layer's input gradient, which is
    not computed (67.6 of 95.8 MFLOP are), so matmuls running at the roofline
    would show about 140% here.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from lth_jax import parallel

    batch, dims = 60, (784, 300, 100, 10)
    r = np.random.default_rng(0)
    x = jnp.asarray(r.standard_normal((batch, dims[0]), dtype=np.float32))
    g = jnp.asarray(r.standard_normal((batch, dims[-1]), dtype=np.float32))
    w0 = [
        (0.05 * r.standard_normal((a, b))).astype(np.float32) for a, b in zip(dims[:-1], dims[1:])
    ]
    steps = s.steps

    def step(ws, _):
        w1, w2, w3 = ws
        h1 = x @ w1
        h2 = h1 @ w2
        d3 = g + 1e-3 * (h2 @ w3)
        d2 = d3 @ w3.T
        d1 = d2 @ w2.T
        grads = (x.T @ d1, h1.T @ d2, h2.T @ d3)
        return tuple(w - 1e-6 * dw for w, dw in zip(ws, grads)), None

    def one_run(ws):
        return jax.lax.scan(step, ws, None, length=steps)[0]

    flops = 6 * LENET_MACS * batch
    out = {"steps_per_call": steps, "note": "GEMMs of a LeNet step only; MFU as for the engine"}
    for label, ndev, k in (("1run_1device", 1, 1), ("many", len(jax.local_devices()), s.many)):
        mesh = parallel.make_mesh(ndev)
        spec = PartitionSpec("runs")
        f = jax.jit(
            jax.shard_map(
                lambda ws: jax.lax.map(one_run, ws),
                mesh=mesh,
                in_specs=spec,
                out_specs=spec,
            )
        )
        ws = tuple(
            jax.device_put(jnp.broadcast_to(w, (k, *w.shape)), NamedSharding(mesh, spec))
            for w in w0
        )
        jax.block_until_ready(f(ws))
        samples = []
        for _ in range(s.repeats):
            t = time.perf_counter()
            jax.block_until_ready(f(ws))
            samples.append(k * steps / (time.perf_counter() - t))
        st = stats(samples)
        st.update(K=k, devices=ndev, mfu=st["median"] * flops / (roof * 1e9))
        out[label] = st
    return out


#: Bytes per weight a one-pass masked Adam step moves beyond an SGD step: the two
#: moments read and written (4 x 4 bytes) and the boolean mask read (1 byte).
ADAM_EXTRA_BYTES = 17


def stream(s):
    """Memory bandwidth in the engine's layout, at the size of LeNet-300-100's weights.

    Per run, a ``lax.scan`` of ``steps`` iterations of ``x = 0.999 * x + a``
    (one loop: ``x`` and ``a`` read, ``x`` written, 12 bytes per element) over
    arrays of 4 x 266,610 float32: a run's working set is then that of a
    masked-Adam step (weights, gradient, two moments; over 4 MB), larger than a
    core's L2 cache, as in the engine (with arrays of one weight tree it would
    stay in L2 and measure that cache instead). Runs are spread over the
    devices with ``shard_map`` and one after another on each device, as the
    engine trains them. Returns bytes per second over all devices (median of ``repeats``).
    With :func:`gemm_ceiling` and the plain-SGD engine it bounds what a
    masked-Adam loop could reach: the SGD step plus :data:`ADAM_EXTRA_BYTES`
    per weight at this bandwidth (the moments and the mask, moved once).
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from lth_jax import parallel

    n, k, steps = 4 * 266_610, s.many, s.steps
    ndev = len(jax.local_devices())
    mesh = parallel.make_mesh(ndev)
    spec = PartitionSpec("runs")

    def one_run(xa):
        x, a = xa
        return jax.lax.scan(lambda x, _: (0.999 * x + a, None), x, None, length=steps)[0]

    cpu = jax.default_backend() == "cpu"  # the engine's option: the carry updated in place
    f = jax.jit(
        jax.shard_map(
            lambda xa: jax.lax.map(one_run, xa), mesh=mesh, in_specs=spec, out_specs=spec
        ),
        compiler_options={"xla_cpu_copy_insertion_use_region_analysis": True} if cpu else None,
    )
    put = lambda v: jax.device_put(jnp.full((k, n), v, jnp.float32), NamedSharding(mesh, spec))
    xa = (put(1.0), put(1e-3))
    jax.block_until_ready(f(xa))
    samples = []
    for _ in range(s.repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(xa))
        samples.append(12 * n * k * steps / (time.perf_counter() - t))
    out = stats(samples)
    out.update(K=k, devices=ndev, elements=n, bytes_per_element=12, steps_per_call=steps)
    return out


def adam_ceiling(sgd_rate, bandwidth, flops, roof):
    """Trial-steps/s and MFU of the plain-SGD engine plus a one-pass masked Adam.

    Args:
      sgd_rate: the plain-SGD engine's trial-steps/s (all devices).
      bandwidth: :func:`stream`'s bytes/s (all devices).
      flops: model FLOPs per training step; roof: the roofline, GFLOP/s.
    """
    seconds = 1.0 / sgd_rate + ADAM_EXTRA_BYTES * 266_610 / bandwidth
    return {"median": 1.0 / seconds, "mfu": flops / seconds / (roof * 1e9)}
