"""An IMP run in process (rounds, compiles, memory) and the persistent compilation cache."""

from __future__ import annotations

import os
import tempfile
import time

from bench.common import device_memory, rss_mib, synthetic
from bench.lenet import fresh_runs, make_engine


def imp(s, compiles):
    """An 8-trial IMP run through ``lottery.run``; rounds, compiles, peak memory."""
    import jax

    from lth_jax import config as config_lib
    from lth_jax import data as data_lib
    from lth_jax import lottery
    from lth_jax import workdir as wd

    n_train, n_val, n_test = s.imp_sizes
    dataset = synthetic(n_train, n_val, n_test, seed=1)
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
        "peak_rss_mib": rss_mib(),
        "device_memory": device_memory(),
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
    data = synthetic(600, 60, 60)
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
                eng = make_engine(model, data, 20, 20, mesh)
                lowered = eng.lower(*fresh_runs(eng, len(jax.local_devices())))
                t = time.perf_counter()
                lowered.compile()
                times.append(time.perf_counter() - t)
        finally:
            for k, v in old.items():
                jax.config.update(k, v)
            cc.reset_cache()
    return {"cold_s": times[0], "cached_s": times[1], "speedup": times[0] / max(times[1], 1e-9)}
