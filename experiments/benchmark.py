"""Speed benchmark: matmul roofline, LeNet-300-100 training, trials x arms, IMP rounds.

One command, one process (a few minutes on 2 CPU cores; ``--quick``: under a minute)::

    python experiments/benchmark.py [--quick] [--out benchmark.json]

It prints a table and writes every figure to ``--out`` (JSON). What it measures:

* **roofline**: f32 matmul throughput of this machine measured with JAX on
  square matrices (sizes 512 to 2048; one matmul on one device with all its
  intra-op threads, and one matmul per device on all devices at once). The
  roofline is the best of these (GFLOP/s = ``2 n^3 / time``).
* **LeNet-300-100** (784-300-100-10, MNIST-shaped random data, batch 60, Adam
  1.2e-3, a pruned mask at 51% density): training steps per second and
  model-FLOPs utilization, ``MFU = F * steps/s / roofline`` with ``F = 6 x MACs x
  batch`` (``MACs`` = 266,200 multiply-adds of the three dense kernels per
  example; forward 2, backward 4 FLOPs per MAC: ``F`` = 95.8 MFLOP). XLA's own
  count of the FLOPs it executes in one jitted step (cost analysis; no FLOPs
  for the input gradient of the first layer, which is never computed, but
  FLOPs for the elementwise work) is reported beside it. Measured for

  - ``engine``: :class:`lth_jax.train.Engine` (``eval_every`` steps per compiled
    ``lax.scan`` chunk, data on the device), one trial on one device and 8
    trials on all local devices;
  - ``python_loop``: a jitted step called from a Python loop with host numpy
    batches, the usual Flax-example way (one trial);
  - ``masked`` vs ``unmasked``: the engine step with the mask (the optimizer
    zeroes gradients and updates of pruned weights) and without (the same
    optimizer without the mask), one trial on one device;
  - ``trials``: K = 1, 2, 4, 8, 16 runs as one program on all local devices,
    aggregate trial-steps/s and the ratio to K = 1.

* **IMP**: an ``lth_jax.lottery.run`` of 8 trials (10 rounds; MNIST-shaped
  random data of MNIST's sizes, 55,000 / 5,000 / 10,000 examples): seconds
  per round (training, evaluation, pruning and checkpointing), how many times
  the chunk program compiled (``jax.monitoring`` compile events) and the
  compile time; and the persistent compilation cache: the same compile cold
  and from the cache.
* **memory**: peak resident memory (``ru_maxrss``) after the IMP run and at the
  end, and device memory statistics where the backend has them (GPU).
* On a GPU it also times Conv-6 and ResNet-20 on CIFAR-shaped data (FLOPs from
  XLA's cost analysis of one step); ``--conv`` does so on a CPU too.

``--sparse`` measures something else instead: exported file size and CPU
inference latency of pruned networks by density, dense against masked dense,
``jax.experimental.sparse`` and ``scipy.sparse`` (``experiments/sparse_benchmark.py``;
``python experiments/benchmark.py --sparse --help`` lists its options)::

    python experiments/benchmark.py --sparse [--quick] [--out DIR] [--update-readme]

Timings are repeated (``--repeats``); the table shows the median and the JSON
also holds the best and every sample. The 1-minute load average before and
after is recorded: on a shared machine, other processes lower every figure.

On a CPU the benchmark asks XLA for one host device per core (at most 8) unless
``XLA_FLAGS`` already sets ``--xla_force_host_platform_device_count``, as the
``lth-jax`` command does (:func:`lth_jax.parallel.configure_host_devices`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import tempfile
import time
import types

LENET_MACS = 784 * 300 + 300 * 100 + 100 * 10  # multiply-adds per example


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: small sizes, few steps")
    p.add_argument("--out", default="benchmark.json", help="JSON output file")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per figure")
    p.add_argument("--steps", type=int, default=None, help="steps per timed engine call")
    p.add_argument("--trials", default=None, help="comma-separated K for the trials sweep")
    p.add_argument("--imp-rounds", type=int, default=None, help="IMP rounds (round 0 included)")
    p.add_argument("--imp-steps", type=int, default=None, help="training steps per IMP round")
    p.add_argument("--imp-trials", type=int, default=None, help="trials of the IMP run")
    p.add_argument(
        "--imp-arms",
        default="ticket",
        help="comma-separated arms of the IMP run (ticket,reinit,random_mask)",
    )
    p.add_argument("--conv", action="store_true", help="also time Conv-6 and ResNet-20 on a CPU")
    p.add_argument(
        "--sparse",
        action="store_true",
        help="instead: sparse inference by density (experiments/sparse_benchmark.py; its own "
        "options: --quick, --out DIR, --repeats, --budget, --batch, --update-readme)",
    )
    p.add_argument("--no-imp", action="store_true", help="skip the IMP run")
    p.add_argument(
        "--cache",
        action="store_true",
        help="use the persistent compilation cache (compile figures then show cache loads)",
    )
    return p.parse_args(argv)


def _settings(args):
    q = args.quick
    s = types.SimpleNamespace(
        quick=q,
        repeats=args.repeats or (2 if q else 5),
        steps=args.steps or (60 if q else 300),
        trials=tuple(int(k) for k in args.trials.split(","))
        if args.trials
        else ((1, 2) if q else (1, 2, 4, 8, 16)),
        many=2 if q else 8,  # the "8 trials" figure
        n_train=3000 if q else 55000,
        roof_sizes=(256, 512) if q else (512, 1024, 2048),
        imp_rounds=args.imp_rounds or (2 if q else 10),
        imp_steps=args.imp_steps or (60 if q else 500),
        imp_trials=args.imp_trials or (2 if q else 8),
        imp_arms=tuple(a.strip() for a in args.imp_arms.split(",") if a.strip()),
        imp_eval_every=30 if q else 250,
        imp_sizes=(3000, 300, 300) if q else (55000, 5000, 10000),
        loop_steps=args.steps or (60 if q else 500),
    )
    return s


# ----------------------------------------------------------------------------- helpers


def _load():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _stats(samples):
    import numpy as np

    a = np.asarray(samples, dtype=np.float64)
    return {"median": float(np.median(a)), "best": float(a.max()), "samples": a.tolist()}


def _synthetic(n_train, n_val, n_test, shape=(28, 28, 1), classes=10, seed=0):
    """A Dataset of random inputs and labels with the given shapes."""
    import numpy as np

    from lth_jax.data import Dataset

    r = np.random.default_rng(seed)
    mk = lambda n: (
        r.standard_normal((n, *shape), dtype=np.float32),
        r.integers(0, classes, n).astype(np.int32),
    )
    (tx, ty), (vx, vy), (sx, sy) = mk(n_train), mk(n_val), mk(n_test)
    return Dataset(tx, ty, vx, vy, sx, sy, classes, "synthetic")


def _optimizer(name="adam", lr=1.2e-3):
    from lth_jax import config as config_lib

    opt = config_lib.base_config().optimizer
    opt.name, opt.learning_rate = name, lr
    return opt


class _Compiles:
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


# ----------------------------------------------------------------------------- roofline


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
    return _stats(samples)


# ----------------------------------------------------------------------------- engine


def _unmasked_optimizer(lr=1.2e-3, name="adam"):
    """Adam (or SGD) as ``make_optimizer`` builds it, with the same state layout but no masking."""
    import optax

    from lth_jax import masks as masks_lib

    opt = getattr(optax, name)
    inner = optax.inject_hyperparams(lambda learning_rate: optax.chain(opt(learning_rate)))(
        learning_rate=lr
    )

    def init(params):
        return masks_lib.KeepPrunedState(masks_lib.ones_like(params), inner.init(params))

    def update(updates, state, params=None):
        updates, inner_state = inner.update(updates, state.inner_state, params)
        return updates, masks_lib.KeepPrunedState(state.mask, inner_state)

    return optax.GradientTransformation(init, update)


def _make_engine(model, dataset, steps, eval_every, mesh, tx=None, batch_size=60):
    from lth_jax.train import Engine

    eng = Engine(
        model=model,
        dataset=dataset,
        optimizer=_optimizer(),
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
        eval_batch_size=min(1000, int(dataset.val_x.shape[0])),
        mesh=mesh,
        progress=False,
        tx=tx,
    )
    return eng


_INIT_CACHE = {}


def _init_params(model, sample):
    """One trial's ``(params, batch_stats)``: Glorot-normal numpy arrays of the model's shapes.

    Drawn in numpy from the shapes (no compile): the values do not change the
    cost of a step.
    """
    import jax
    import numpy as np

    key = (id(model), sample.shape)
    if key not in _INIT_CACHE:
        shapes = jax.eval_shape(
            lambda k: model.init({"params": k}, sample, train=False), jax.random.PRNGKey(0)
        )
        rng = np.random.default_rng(0)

        def draw(path, a):
            name = str(getattr(path[-1], "key", path[-1]))
            if name in ("kernel",) and len(a.shape) >= 2:
                fan_in = int(np.prod(a.shape[:-1]))
                std = np.sqrt(2.0 / (fan_in + a.shape[-1]))
                return (rng.standard_normal(a.shape) * std).astype(a.dtype)
            if name in ("scale", "var"):
                return np.ones(a.shape, a.dtype)
            return np.zeros(a.shape, a.dtype)

        v = jax.tree_util.tree_map_with_path(draw, shapes)
        _INIT_CACHE[key] = (v["params"], v.get("batch_stats", {}))
    return _INIT_CACHE[key]


def _random_mask(params, density, seed=0):
    """A numpy mask: kernels keep about ``density`` of their weights, the rest all alive."""
    import jax
    import numpy as np

    from lth_jax import masks as masks_lib

    rng = np.random.default_rng(seed)
    flags = masks_lib.prunable_tree(params)
    return jax.tree.map(
        lambda p, f: (
            rng.random(np.shape(p)) < density
            if f and density is not None
            else np.ones(np.shape(p), bool)
        ),
        params,
        flags,
    )


def _fresh_runs(eng, k, density=None, seed=0):
    """Inputs of ``k`` new runs for :meth:`Engine.fit`: one init tiled ``k`` times, a random mask.

    Neither the init nor the mask's pattern changes the cost of a step; the
    runs differ by their data-order keys.
    """
    import jax
    import numpy as np

    params, bs = _init_params(eng.model, np.asarray(eng.dataset.train_x[:1]))
    mask = _random_mask(params, density, seed)
    tile = lambda t: jax.tree.map(lambda a: np.broadcast_to(a, (k, *np.shape(a))).copy(), t)
    keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.PRNGKey(seed), k)))
    return tile(params), tile(bs), tile(mask), keys, keys


class _Timed:
    """One engine and ``k`` runs, timed one ``Engine.fit`` call at a time.

    ``warm()`` makes the first call (compile included); every ``sample()`` then
    times one call on fresh runs: trial-steps/s, and the process CPU time over
    the wall time (how many cores the process had on average).
    """

    def __init__(self, eng, k, density=0.51):
        # density 0.51: three IMP rounds of 20% (the mask's sparsity does not change the cost)
        self.eng, self.k, self.density = eng, k, density
        self.samples, self.cores = [], []
        self.first_call_s = None

    def _call(self):
        import jax

        inputs = _fresh_runs(self.eng, self.k, self.density)
        jax.block_until_ready(inputs)
        t, c = time.perf_counter(), time.process_time()
        out = self.eng.fit(*inputs)
        jax.block_until_ready(out.params)
        curves = out.curves
        wall = time.perf_counter() - t
        return wall, (time.process_time() - c) / wall, curves

    def warm(self):
        self.first_call_s, _, curves = self._call()
        self.finite = bool(all(abs(float(v)) < 1e30 for v in curves.train_loss.ravel()))
        return self

    def sample(self):
        wall, cores, _ = self._call()
        self.samples.append(self.k * self.eng.steps / wall)
        self.cores.append(cores)

    def result(self):
        import numpy as np

        out = _stats(self.samples)
        out["first_call_s"] = self.first_call_s
        out["cores_used"] = float(np.median(self.cores))
        out["finite"] = self.finite
        return out


def _time_engine(eng, k, repeats, density=0.51):
    """Trial-steps/s of ``k`` runs over ``eng.steps`` steps (after a warm-up call)."""
    t = _Timed(eng, k, density).warm()
    for _ in range(repeats):
        t.sample()
    return t.result()


def python_loop(s, dataset, model, density=0.51):
    """A jitted train step called from a Python loop with host batches (one trial)."""
    import jax
    import numpy as np
    import optax

    from lth_jax import masks as masks_lib
    from lth_jax import optim, train

    tx = optim.make_optimizer(_optimizer())
    params, _ = _init_params(model, np.asarray(dataset.train_x[:1]))
    mask = _random_mask(params, density)
    params, opt_state = jax.jit(
        lambda p, m: (masks_lib.apply(m, p), masks_lib.set_mask(tx.init(p), m))
    )(params, mask)

    def step(params, opt_state, x, y):
        def loss_fn(p):
            return train.cross_entropy(model.apply({"params": p}, x), y)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jstep = jax.jit(step, donate_argnums=(0, 1))
    x0, y0 = dataset.train_x[:60], dataset.train_y[:60]
    compiled = jstep.lower(params, opt_state, x0, y0).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0
    xs, ys = dataset.train_x, dataset.train_y
    n = xs.shape[0] // 60
    rng = np.random.default_rng(0)

    def epoch_batches():
        while True:
            perm = rng.permutation(xs.shape[0])
            for i in range(n):
                idx = perm[i * 60 : (i + 1) * 60]
                yield xs[idx], ys[idx]

    batches = epoch_batches()
    for _ in range(5):
        params, opt_state, loss = jstep(params, opt_state, *next(batches))
    jax.block_until_ready(loss)
    samples, cores = [], []
    for _ in range(s.repeats):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(s.loop_steps):
            params, opt_state, loss = jstep(params, opt_state, *next(batches))
        jax.block_until_ready(loss)
        wall = time.perf_counter() - t
        samples.append(s.loop_steps / wall)
        cores.append((time.process_time() - c) / wall)
    out = _stats(samples)
    out["cores_used"] = float(np.median(cores))
    out["xla_flops_per_step"] = xla_flops
    return out


def lenet(s, roof, compiles):
    """Engine vs Python loop, masked vs unmasked, and the trials sweep for LeNet-300-100."""
    import jax

    from lth_jax import models, parallel

    model = models.get("lenet300_100")
    data = _synthetic(s.n_train, 60, 60)
    flops = 6 * LENET_MACS * 60
    ndev = len(jax.local_devices())
    mesh_all = parallel.make_mesh(ndev)
    mesh_one = parallel.make_mesh(1)
    steps = s.steps
    res = {
        "model_flops_per_step": flops,
        "formula": "6 x MACs x batch = 6 x 266,200 x 60 (forward 2 + backward 4 FLOPs per MAC)",
        "batch": 60,
        "steps_per_call": steps,
        "devices": ndev,
    }
    mfu = lambda rate: rate * flops / (roof * 1e9)

    # Engines: one trial on one device (masked, and unmasked), and K runs on all devices.
    eng_m = _make_engine(model, data, steps, steps, mesh_one)
    eng_u = _make_engine(model, data, steps, steps, mesh_one, tx=_unmasked_optimizer())
    eng_u.device_data = eng_m.device_data  # the same arrays on the same device: one copy
    eng_all = _make_engine(model, data, steps, steps, mesh_all)
    # The same K runs with unmasked plain SGD: how much of a step Adam and the mask cost.
    eng_sgd = _make_engine(model, data, steps, steps, mesh_all, tx=_unmasked_optimizer(name="sgd"))
    eng_sgd.device_data = eng_all.device_data
    masked = _Timed(eng_m, 1).warm()
    unmasked = _Timed(eng_u, 1, density=None).warm()
    sgd_many = _Timed(eng_sgd, s.many, density=None).warm()
    sweep = {}
    for k in sorted(set(s.trials) | {s.many}):
        before = len(compiles.events)
        sweep[k] = _Timed(eng_all, k).warm()
        sweep[k].compiles = compiles.count("_chunk_impl", before)
        sweep[k].compile_s = compiles.seconds("_chunk_impl", before)
    # Timed calls interleaved, so that every figure sees the same load.
    pairs_mask, pairs_many = [], []
    for _ in range(s.repeats):
        masked.sample()
        unmasked.sample()
        sgd_many.sample()
        for t in sweep.values():
            t.sample()
        pairs_mask.append(unmasked.samples[-1] / masked.samples[-1])
        pairs_many.append(sweep[s.many].samples[-1] / masked.samples[-1])
    import numpy as np

    res["engine_1trial_1device"] = masked.result()
    res["unmasked_1trial_1device"] = unmasked.result()
    res["mask_overhead_pct"] = 100.0 * (float(np.median(pairs_mask)) - 1.0)
    trials = []
    for k, t in sweep.items():
        r = t.result()
        shards = eng_all.num_shards()
        r.update(
            K=k, runs_computed=-(-k // shards) * shards, compiles=t.compiles, compile_s=t.compile_s
        )
        trials.append(r)
    base = trials[0]["median"]
    for r in trials:
        r["ratio_to_K1"] = r["median"] / base
        r["mfu"] = mfu(r["median"])
    res["trials"] = [r for r in trials if r["K"] in s.trials]
    many = next(r for r in trials if r["K"] == s.many)
    res["engine_many"] = {**many, "K": s.many}
    res["engine_many_sgd_unmasked"] = {**sgd_many.result(), "K": s.many}
    del eng_m, eng_u, eng_all, eng_sgd
    res["python_loop_1trial"] = python_loop(s, data, model)
    for key in (
        "engine_1trial_1device",
        "unmasked_1trial_1device",
        "python_loop_1trial",
        "engine_many_sgd_unmasked",
    ):
        res[key]["mfu"] = mfu(res[key]["median"])
    res["xla_flops_per_step"] = res["python_loop_1trial"]["xla_flops_per_step"]
    res["many_vs_one_trial_alone"] = float(np.median(pairs_many))
    res["many_vs_K1_same_mesh"] = many["median"] / base
    return res


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
    matmul; the gap between this and 100% is what XLA's CPU GEMMs reach at these
    small shapes.
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
        st = _stats(samples)
        st.update(K=k, devices=ndev, mfu=st["median"] * flops / (roof * 1e9))
        out[label] = st
    return out


# ----------------------------------------------------------------------------- IMP


def imp(s, compiles):
    """An 8-trial IMP run through ``lottery.run``; rounds, compiles, peak memory."""
    import jax

    from lth_jax import config as config_lib
    from lth_jax import data as data_lib
    from lth_jax import lottery
    from lth_jax import workdir as wd

    n_train, n_val, n_test = s.imp_sizes
    dataset = _synthetic(n_train, n_val, n_test, seed=1)
    c = config_lib.base_config()
    c.num_trials = s.imp_trials
    c.arms = s.imp_arms
    c.progress = False
    c.dataset.name = "mnist"
    c.model.name = "lenet300_100"
    c.train.steps = s.imp_steps
    c.train.batch_size = 60
    c.train.eval_every = s.imp_eval_every
    c.train.eval_batch_size = 1000
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1.2e-3
    c.imp.rounds = s.imp_rounds - 1  # rounds 0 .. imp.rounds
    c.imp.prune_rate = 0.2
    c.imp.layer_rates = (("head", 0.1),)
    real = data_lib.get_dataset
    data_lib.get_dataset = lambda *a, **k: dataset
    before = len(compiles.events)
    t = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            records = lottery.run(c, workdir, overwrite=True, progress=False)
            rounds = [r["wall_time_s"] for r in wd.read_jsonl(os.path.join(workdir, wd.TIMING))]
    finally:
        data_lib.get_dataset = real
    total = time.perf_counter() - t
    import numpy as np

    later = rounds[1:] if len(rounds) > 1 else rounds
    out = {
        "trials": s.imp_trials,
        "arms": list(c.arms),
        "rounds": len(rounds),
        "steps_per_round": s.imp_steps,
        "eval_every": s.imp_eval_every,
        "data": {"train": n_train, "val": n_val, "test": n_test},
        "round_s": rounds,
        "first_round_s": rounds[0],
        "later_round_s_median": float(np.median(later)),
        "total_s": total,
        "chunk_compiles": compiles.count("_chunk_impl", before),
        "chunk_compile_s": compiles.seconds("_chunk_impl", before),
        "all_compiles": len(compiles.events) - before,
        "all_compile_s": sum(d for _, d in compiles.events[before:]),
        "final_density": float(min(r["density"] for r in records)),
        "peak_rss_mib": _rss_mib(),
        "device_memory": _device_memory(),
    }
    out["trial_steps_per_s_later_rounds"] = s.imp_trials * s.imp_steps / out["later_round_s_median"]
    del jax
    return out


def compile_cache(s):
    """The same chunk compile without, then with, a warm persistent compilation cache."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    from lth_jax import models, parallel

    model = models.get("lenet300_100")
    data = _synthetic(600, 60, 60)
    mesh = parallel.make_mesh(len(jax.local_devices()))
    keys = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    old = {k: getattr(jax.config, k) for k in keys}
    times = []
    with tempfile.TemporaryDirectory() as d:
        jax.config.update("jax_compilation_cache_dir", d)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        cc.reset_cache()
        try:
            for _ in range(2):
                jax.clear_caches()
                eng = _make_engine(model, data, 20, 20, mesh)
                lowered = eng.lower(*_fresh_runs(eng, len(jax.local_devices())))
                t = time.perf_counter()
                lowered.compile()
                times.append(time.perf_counter() - t)
        finally:
            for k, v in old.items():
                jax.config.update(k, v)
            cc.reset_cache()
    return {"cold_s": times[0], "cached_s": times[1], "speedup": times[0] / max(times[1], 1e-9)}


# ----------------------------------------------------------------------------- GPU extras


def _xla_step_flops(model, x, y):
    """FLOPs of one training step of one trial (Adam), from XLA's cost analysis."""
    import jax
    import optax

    from lth_jax import optim, train

    variables = jax.eval_shape(lambda k: model.init({"params": k}, x[:1]), jax.random.PRNGKey(0))
    tx = optim.make_optimizer(_optimizer())
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


def conv_models(s, roof):
    """Conv-6 and ResNet-20 on CIFAR-shaped data: trial-steps/s and MFU (XLA FLOPs)."""
    import jax

    from lth_jax import models, parallel

    out = {}
    mesh = parallel.make_mesh(len(jax.local_devices()))
    data = _synthetic(600 if s.quick else 20000, 60, 60, shape=(32, 32, 3))
    steps = 4 if s.quick else 200
    for name, batch in (("conv6", 60), ("resnet20", 128)):
        model = models.get(name)
        flops = _xla_step_flops(model, data.train_x[:batch], data.train_y[:batch])
        entry = {"batch": batch, "xla_flops_per_step": flops}
        eng = _make_engine(model, data, steps, steps, mesh, batch_size=batch)
        for k in (1, s.many):
            r = _time_engine(eng, k, s.repeats)
            r["mfu"] = r["median"] * flops / (roof * 1e9) if flops else None
            entry[f"K{k}"] = r
        out[name] = entry
    return out


# ----------------------------------------------------------------------------- memory


def _rss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def _device_memory():
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


# ----------------------------------------------------------------------------- report


def _table(res):
    L = res["lenet"]
    roof = res["roofline"]["gflops"]
    rows = [("roofline: f32 matmul, best", f"{roof:.0f} GFLOP/s", "")]
    for n, e in res["roofline"]["sizes"].items():
        for where, v in e.items():
            name = f"  matmul {n}^3, {where.replace('_', ' ')}"
            rows.append((name, f"{v['median']:.0f}", f"best {v['best']:.0f} GFLOP/s"))
    f = lambda r: f"{r['median']:.0f}"
    pct = lambda x: f"{100 * x:.0f}%"
    cores = lambda r: f", {r['cores_used']:.1f} cores" if r.get("cores_used") else ""
    e1, un, loop, many = (
        L["engine_1trial_1device"],
        L["unmasked_1trial_1device"],
        L["python_loop_1trial"],
        L["engine_many"],
    )
    rows += [
        (
            "LeNet engine, 1 trial, 1 device",
            f(e1) + " steps/s",
            "MFU " + pct(e1["mfu"]) + cores(e1),
        ),
        (
            "LeNet engine, unmasked, 1 trial",
            f(un) + " steps/s",
            f"the masked step costs {L['mask_overhead_pct']:+.1f}%",
        ),
        (
            "LeNet Python loop, jitted step",
            f(loop) + " steps/s",
            "MFU " + pct(loop["mfu"]) + cores(loop),
        ),
        (
            f"LeNet engine, {many['K']} trials, {L['devices']} devices",
            f(many) + " trial-steps/s",
            f"MFU {pct(many['mfu'])}, x{L['many_vs_one_trial_alone']:.2f} one trial alone"
            + cores(many),
        ),
    ]
    sg = L["engine_many_sgd_unmasked"]
    rows.append(
        (
            f"LeNet engine, {sg['K']} trials, plain SGD, no mask",
            f(sg) + " trial-steps/s",
            f"MFU {pct(sg['mfu'])}: masked Adam costs "
            f"{100 * (sg['median'] / many['median'] - 1):+.0f}% per step",
        )
    )
    if "gemm_ceiling" in res:
        for key, what in (
            ("1run_1device", "1 run, 1 device"),
            ("many", "{K} runs, {devices} devices"),
        ):
            g = res["gemm_ceiling"][key]
            rows.append(
                (
                    "LeNet GEMMs only, " + what.format(**g),
                    f(g) + " steps/s",
                    "MFU " + pct(g["mfu"]) + " (the matmuls of a step, nothing else)",
                )
            )
    for r in L["trials"]:
        rows.append(
            (
                f"  K={r['K']:<3d} runs, all devices",
                f(r) + " trial-steps/s",
                f"x{r['ratio_to_K1']:.2f} K=1, MFU {pct(r['mfu'])}, compile {r['compile_s']:.1f} s"
                + cores(r),
            )
        )
    if "imp" in res:
        m = res["imp"]
        rows += [
            (
                f"IMP, {m['trials']} trials x {m['rounds']} rounds",
                f"{m['total_s']:.1f} s",
                f"round 0 {m['first_round_s']:.1f} s (compiles), later rounds "
                f"{m['later_round_s_median']:.1f} s",
            ),
            (
                "  chunk-program compiles",
                str(m["chunk_compiles"]),
                f"{m['chunk_compile_s']:.1f} s; all programs: {m['all_compiles']}, "
                f"{m['all_compile_s']:.1f} s",
            ),
            ("  peak RSS after the IMP run", f"{m['peak_rss_mib']:.0f} MiB", ""),
        ]
    if "compile_cache" in res:
        cc = res["compile_cache"]
        rows.append(
            (
                "chunk compile: cold / from cache",
                f"{cc['cold_s']:.1f} / {cc['cached_s']:.2f} s",
                f"x{cc['speedup']:.0f}",
            )
        )
    for name, e in (res.get("conv") or {}).items():
        for k, r in e.items():
            if isinstance(r, dict):
                mf = "" if r.get("mfu") is None else "MFU " + pct(r["mfu"])
                rows.append((f"{name} {k} (batch {e['batch']})", f(r) + " trial-steps/s", mf))
    rows.append(("peak RSS, whole benchmark", f"{res['memory']['peak_rss_mib']:.0f} MiB", ""))
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w}}  {b:>{v}}  {c}".rstrip() for a, b, c in rows)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--sparse" in argv:  # sparse inference: its own measurements (sparse_benchmark.py)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import sparse_benchmark

        return sparse_benchmark.main([a for a in argv if a != "--sparse"])
    args = _parse(argv)
    s = _settings(args)
    from lth_jax import parallel

    parallel.configure_host_devices(compilation_cache=args.cache)
    import jax

    if not args.cache:
        jax.config.update("jax_compilation_cache_dir", None)  # compile figures: real compiles

    load0 = _load()
    t0 = time.perf_counter()
    compiles = _Compiles()
    dev = jax.local_devices()
    res = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(),
            "machine": platform.machine(),
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in dev],
            "device_kind": dev[0].device_kind,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "persistent_compilation_cache": jax.config.jax_compilation_cache_dir,
            "quick": s.quick,
            "load_1min_before": load0,
        }
    }
    sections = res["meta"]["section_s"] = {}

    def timed(name, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        sections[name] = round(time.perf_counter() - t, 2)
        return out

    res["roofline"] = timed("roofline", roofline, s)
    roof = res["roofline"]["gflops"]
    if not args.no_imp:
        res["imp"] = timed("imp", imp, s, compiles)
    res["lenet"] = timed("lenet", lenet, s, roof, compiles)
    res["gemm_ceiling"] = timed("gemm_ceiling", gemm_ceiling, s, roof)
    res["compile_cache"] = timed("compile_cache", compile_cache, s)
    if jax.default_backend() != "cpu" or args.conv:
        res["conv"] = timed("conv", conv_models, s, roof)
    # a second roofline measurement: the figures above are compared to the best of both
    again = timed("roofline_again", roofline, s)
    res["roofline_again"] = again
    if again["gflops"] > roof:
        res["roofline"]["gflops"] = roof = again["gflops"]
        L = res["lenet"]
        f = L["model_flops_per_step"]
        for r in [
            L["engine_1trial_1device"],
            L["unmasked_1trial_1device"],
            L["python_loop_1trial"],
            L["engine_many"],
            L["engine_many_sgd_unmasked"],
            *L["trials"],
            res["gemm_ceiling"]["1run_1device"],
            res["gemm_ceiling"]["many"],
        ]:
            r["mfu"] = r["median"] * f / (roof * 1e9)
    res["memory"] = {"peak_rss_mib": _rss_mib(), "device_memory": _device_memory()}
    res["meta"]["load_1min_after"] = _load()
    res["meta"]["wall_s"] = time.perf_counter() - t0
    L = res["lenet"]
    res["targets"] = {
        "mfu_8_trials_ge_70pct": L["engine_many"]["mfu"] >= 0.70,
        "8_trials_ge_1.5x_one_trial": L["many_vs_one_trial_alone"] >= 1.5,
        "one_chunk_compile_per_shape_in_imp": (res["imp"]["chunk_compiles"] == 1)
        if "imp" in res
        else None,
        "imp_peak_rss_lt_2GiB": (res["imp"]["peak_rss_mib"] < 2048) if "imp" in res else None,
    }
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2)
    print(_table(res))
    print(
        f"\nload average (1 min): {load0} before, {res['meta']['load_1min_after']} after; "
        f"{res['meta']['wall_s']:.0f} s; JSON: {args.out}"
    )
    print("targets:", json.dumps(res["targets"]))
    return 0


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
