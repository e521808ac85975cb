"""LeNet-300-100 training speed: the engine (1 and K trials, masked and not) and a Python loop."""

from __future__ import annotations

import time

from bench.common import LENET_MACS, optimizer, stats, synthetic


def unmasked_optimizer(lr=1.2e-3, name="adam"):
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


def make_engine(model, dataset, steps, eval_every, mesh, tx=None, batch_size=60, fused=False):
    from lth_jax.train import Engine

    opt = optimizer()
    opt.fused_adam_cpu = fused  # the one-pass kernel (lth_jax.fused_adam)
    eng = Engine(
        model=model,
        dataset=dataset,
        optimizer=opt,
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


def fresh_runs(eng, k, density=None, seed=0):
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


def _fused_difference(eng, eng_fused, k):
    """How far the kernel's results are from optax's: the same runs trained by both engines.

    ``val_loss_max_rel_diff``: the largest relative difference of the final
    validation losses; ``params_max_abs_diff``: of the trained weights.
    """
    import jax
    import numpy as np

    a = eng.fit(*fresh_runs(eng, k, 0.51))
    b = eng_fused.fit(*fresh_runs(eng_fused, k, 0.51))
    va, vb = np.asarray(a.curves.val_loss)[:, -1], np.asarray(b.curves.val_loss)[:, -1]
    diff = max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params))
    )
    return {
        "val_loss_max_rel_diff": float(np.max(np.abs(vb - va) / np.abs(va))),
        "params_max_abs_diff": diff,
        "bit_identical": diff == 0.0 and bool((va == vb).all()),
    }


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

        inputs = fresh_runs(self.eng, self.k, self.density)
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

        out = stats(self.samples)
        out["first_call_s"] = self.first_call_s
        out["cores_used"] = float(np.median(self.cores))
        out["finite"] = self.finite
        return out


def time_engine(eng, k, repeats, density=0.51):
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

    tx = optim.make_optimizer(optimizer())
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
    out = stats(samples)
    out["cores_used"] = float(np.median(cores))
    out["xla_flops_per_step"] = xla_flops
    return out


def lenet(s, roof, compiles):
    """Engine vs Python loop, masked vs unmasked, and the trials sweep for LeNet-300-100."""
    import jax

    from lth_jax import models, parallel

    model = models.get("lenet300_100")
    data = synthetic(s.n_train, 60, 60)
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
    eng_m = make_engine(model, data, steps, steps, mesh_one)
    eng_u = make_engine(model, data, steps, steps, mesh_one, tx=unmasked_optimizer())
    eng_u.device_data = eng_m.device_data  # the same arrays on the same device: one copy
    eng_all = make_engine(model, data, steps, steps, mesh_all)
    # The same K runs with unmasked plain SGD: how much of a step Adam and the mask cost.
    eng_sgd = make_engine(model, data, steps, steps, mesh_all, tx=unmasked_optimizer(name="sgd"))
    eng_sgd.device_data = eng_all.device_data
    # The same K runs with optimizer.fused_adam_cpu (CPU only): the masked Adam step in one pass.
    fused_many = None
    if jax.default_backend() == "cpu":
        eng_fused = make_engine(model, data, steps, steps, mesh_all, fused=True)
        eng_fused.device_data = eng_all.device_data
        fused_many = _Timed(eng_fused, s.many).warm()
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
        if fused_many is not None:
            fused_many.sample()
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
    if fused_many is not None:
        fused = fused_many.result()
        res["engine_many_fused"] = {
            **fused,
            "K": s.many,
            "mfu": mfu(fused["median"]),
            "ratio_to_optax": fused["median"] / many["median"],
            **_fused_difference(eng_all, eng_fused, s.many),
        }
        del eng_fused
    # Where the K-run loop's time goes: one more call of the same engine, traced.
    from bench import breakdown

    runs = fresh_runs(eng_all, s.many, density=sweep[s.many].density)  # the loop row's runs
    try:
        res["loop_breakdown"] = breakdown.loop(eng_all, runs, s.many * steps, many["median"])
    except Exception as e:  # a profiler that traces differently (another backend): say so
        res["loop_breakdown_skipped"] = f"{type(e).__name__}: {e}"
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
