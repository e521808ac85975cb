"""The speed benchmark runs end to end in quick mode and measures something.

It asserts only that the benchmark ran and wrote positive figures, never a
speed: timings depend on the machine and its load; and that the README's
tables are what the committed JSON renders to.
"""

import importlib.util
import json
import os
import subprocess
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def _benchmark(args, env, cwd):
    """Runs ``experiments/benchmark.py args`` and checks that it succeeded."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "benchmark.py"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _bench_modules():
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    try:
        from bench import accel, breakdown, e2e, report
    finally:
        sys.path.pop(0)
    return types.SimpleNamespace(accel=accel, breakdown=breakdown, e2e=e2e, report=report)


def test_benchmark_quick(tmp_path):
    out = tmp_path / "bench"
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    env["LTH_JAX_COMPILATION_CACHE"] = str(tmp_path / "xla_cache")
    proc = _benchmark(["--quick", "--out", str(out)], env, tmp_path)
    assert "roofline" in proc.stdout
    res = json.loads((out / "benchmark.json").read_text())

    assert _positive(res["roofline"]["gflops"])
    L = res["lenet"]
    assert L["model_flops_per_step"] == 6 * 266_200 * 60
    for key in (
        "engine_1trial_1device",
        "unmasked_1trial_1device",
        "python_loop_1trial",
        "engine_many",
    ):
        assert _positive(L[key]["median"]), key
        assert _positive(L[key]["mfu"]), key
    assert isinstance(L["mask_overhead_pct"], float)
    assert [r["K"] for r in L["trials"]] == [1, 2]
    assert all(_positive(r["median"]) and _positive(r["ratio_to_K1"]) for r in L["trials"])
    assert _positive(L["xla_flops_per_step"])

    m = res["imp"]
    assert m["rounds"] == 2 and len(m["round_s"]) == 2
    assert all(_positive(t) for t in m["round_s"])
    assert m["chunk_compiles"] >= 1 and _positive(m["chunk_compile_s"])
    assert _positive(m["peak_rss_mib"])
    assert 0 < m["final_density"] < 1

    st = res["stream"]
    assert _positive(st["median"]) and st["K"] == 2 and st["bytes_per_element"] == 12
    ceiling = _bench_modules().report._adam_ceiling(res)
    sgd = L["engine_many_sgd_unmasked"]["median"]
    assert 0 < ceiling["median"] < sgd and 0 < ceiling["mfu"] < L["engine_many_sgd_unmasked"]["mfu"]

    # where the K-run loop's time goes: every traced operation found in the program's HLO,
    # the parts add up to the traced step, and the matmuls and the update took time
    bd = L["loop_breakdown"]
    assert bd["ops_not_in_hlo"] == 0 and bd["events"] > 0
    cats = bd["categories_us"]
    assert abs(sum(cats.values()) + bd["executor_us"] - bd["step_us"]) < 1e-6 * bd["step_us"]
    assert _positive(cats["matmuls"]) and _positive(cats["update"]) and _positive(cats["batch"])
    assert cats["matmuls"] + cats["update"] < bd["step_us"]

    cc = res["compile_cache"]
    assert _positive(cc["cold_s"]) and _positive(cc["cached_s"])
    assert _positive(res["memory"]["peak_rss_mib"])

    # the command end to end: 2 trials x 60 steps of round 0, evaluated every 30 steps
    e = res["e2e"]
    o = e["ours"]
    assert o["trainings"] == 2 and o["trial_steps"] == 120 and o["eval_points"] == 4
    assert o["eval_examples"] == 4 * (500 + 500)
    assert _positive(o["process_s"]) and _positive(o["peak_rss_mib"])
    assert 0 < e["roofline_bound"]["fraction"] < 1
    assert e["data"]["train"] == 3000 and e["data"]["test"] == 500
    sp = o["split"]
    assert sp["per_round"] and _positive(sp["rounds_s"])
    assert all(v is None or v >= 0 for v in sp["parts"].values())
    if importlib.util.find_spec("torch") is None:
        assert "not installed" in e["peer"]["skipped"]
    else:  # the peer did the same work
        assert e["same_work"] is True and _positive(e["ratio_to_peer"])
        assert e["peer"]["trainings"] == 2 and e["peer"]["eval_examples"] == 4000
    assert "cpu" in res["conv_skipped"]

    b = _bench_modules()
    assert res["targets"] == b.report.targets(res)
    # quick sizes are not the targets' sizes: only peak memory is judged
    assert [k for k, v in res["targets"].items() if v is not None] == ["peak_memory_lt_2GiB"]
    md = (out / "benchmark.md").read_text()
    assert md == b.report.render(res)
    assert "End to end: `lth-jax run --config" in md and b.report.table(res) in proc.stdout


def test_accel_refuses_a_cpu(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "benchmark.py"), "--accel", "--quick"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "--accel needs a GPU or TPU, and JAX's backend is cpu" in proc.stderr


def test_device_peaks():
    accel = _bench_modules().accel
    assert accel.device_peak("NVIDIA H100 80GB HBM3") == 494.7
    assert accel.device_peak("NVIDIA H100 PCIe") == 378.0
    assert accel.device_peak("NVIDIA A100-SXM4-40GB") == 156.0
    assert accel.device_peak("TPU v5 lite") == 197.0 and accel.device_peak("TPU v5") == 459.0
    assert accel.device_peak("cpu") is None and accel.device_peak("cpu", 1.5) == 1.5


def test_roofline_bound_of_the_issue_measurement():
    """8 trials, rounds 0-2 of 3 arms (56 trainings) x 2,000 steps, 5,000 + 10,000 examples
    evaluated every 250 steps, at 328 GFLOP/s: about 2,570 trial-steps/s."""
    e2e = _bench_modules().e2e
    trainings = 8 + 2 * 3 * 8
    b = e2e.roofline_bound(trainings * 2000, trainings * 8 * 15000, 328.0)
    assert b["train_flops"] == trainings * 2000 * 6 * 266_200 * 60
    assert round(b["trial_steps_per_s"], -1) == 2570


def test_time_split():
    e2e = _bench_modules().e2e
    rows = [
        {"round": 0, "wall_time_s": 6.0, "startup_s": 2.0, "compile_s": 3.0, "train_s": 2.0},
        {"round": 1, "wall_time_s": 3.0, "train_s": 2.5, "eval_s": 0.5},
    ]
    sp = e2e.time_split(rows, 10.0)
    assert sp["rounds_s"] == 9.0 and sp["outside_rounds_s"] == 1.0
    assert sp["parts"]["train_s"] == 4.5 and sp["parts"]["checkpoint_s"] is None
    assert sp["shares"]["compile_s"] == 0.3 and sp["rest_s"] == 0.0
    old = e2e.time_split([{"round": 0, "wall_time_s": 4.0}], 5.0)  # before the parts existed
    assert old["rest_s"] is None and set(old["parts"].values()) == {None}


def test_the_preset_resolves():
    e2e = _bench_modules().e2e
    spec = e2e.config_spec()
    assert spec == "preset:lenet300_100_mnist" or os.path.isfile(spec)


# ----------------------------------------------------------------------------- committed figures

RESULTS = os.path.join(ROOT, "experiments", "results", "benchmark")


def test_readme_shows_the_committed_benchmark():
    """README's table is the committed markdown, which is what the committed JSON renders to."""
    report = _bench_modules().report
    with open(os.path.join(RESULTS, "benchmark.json"), encoding="utf-8") as f:
        res = json.load(f)
    with open(os.path.join(RESULTS, "benchmark.md"), encoding="utf-8") as f:
        md = f.read()
    fix = "run: python experiments/benchmark.py --readme-only --out experiments/results/benchmark"
    assert md == report.render(res), fix
    assert res["targets"] == report.targets(res)
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert report.readme_block(md) in readme, fix
    assert not res["meta"]["quick"]
    st = res["e2e"]["settings"]
    assert (st["trials"], st["steps"], st["rounds"], st["eval_every"]) == (8, 2000, 2, 250)
    assert res["e2e"]["ours"]["trainings"] == 56


def test_engine_permutation_is_jax_permutation():
    """The engine's faster epoch permutation is ``jax.random.permutation``, bit for bit."""
    import jax
    import numpy as np

    from lth_jax.data import pipeline

    for n in (1, 2, 3, 10, 999, 6000, 55000, 65535, 65536, 70001):
        f = jax.jit(lambda k, n=n: pipeline.permutation(k, n))
        for i in range(3):
            key = jax.random.fold_in(jax.random.PRNGKey(11), i)
            got, want = np.asarray(f(key)), np.asarray(jax.random.permutation(key, n))
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, want, err_msg=f"n={n}, key {i}")
    typed = jax.random.key(3)
    np.testing.assert_array_equal(
        pipeline.permutation(typed, 500), jax.random.permutation(typed, 500)
    )
    # ties in the sort keys keep their order, as a stable sort does
    keys = jax.numpy.asarray(np.random.default_rng(0).integers(0, 40, 3000).astype(np.uint32))
    np.testing.assert_array_equal(
        pipeline._stable_argsort_u32(keys), np.argsort(np.asarray(keys), kind="stable")
    )


# ----------------------------------------------------------------------------- sparse inference

SPARSE_RESULTS = os.path.join(ROOT, "experiments", "results", "sparse_benchmark")


def _sparse_module():
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    try:
        import sparse_benchmark
    finally:
        sys.path.pop(0)
    return sparse_benchmark


def test_sparse_benchmark_quick(tmp_path):
    """``--sparse --quick``: both networks at 2 densities, every way timed and checked."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = tmp_path / "sparse"
    args = ["--sparse", "--quick", "--repeats", "2", "--budget", "0.1", "--batch", "50"]
    proc = _benchmark([*args, "--out", str(out)], env, tmp_path)
    res = json.loads((out / "sparse_benchmark.json").read_text())
    sb = _sparse_module()
    assert [(r["network"], r["density"]) for r in res["rows"]] == [
        (net, d) for net in sb.NETWORKS for d in (0.5, 0.1)
    ]
    assert res["meta"]["batches"] == [1, 50] and _positive(res["meta"]["cores"])
    for r in res["rows"]:
        assert abs(r["alive"] / r["prunable"] - r["density"]) < 1e-3
        assert 0 < r["file_bytes"] < r["dense_float32_bytes"]
        for m in sb.METHODS:
            assert r["max_abs_diff"][m] < 1e-3, (m, r["max_abs_diff"])
            for b in ("1", "50"):
                assert _positive(r["latency"][m][b]["median_s"]), (m, b)
    md = (out / "sparse_benchmark.md").read_text()
    assert md == sb.render(res) and md in proc.stdout
    assert "Slower than dense at batch 1:" in md


def test_readme_shows_the_committed_sparse_benchmark():
    """README's table is the committed markdown, which is what the committed JSON renders to."""
    sb = _sparse_module()
    with open(os.path.join(SPARSE_RESULTS, "sparse_benchmark.json"), encoding="utf-8") as f:
        res = json.load(f)
    with open(os.path.join(SPARSE_RESULTS, "sparse_benchmark.md"), encoding="utf-8") as f:
        md = f.read()
    assert md == sb.render(res), "run: python experiments/benchmark.py --sparse (see README)"
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert sb.readme_block(md) in readme
    assert [r["density"] for r in res["rows"]] == list(sb.DENSITIES) * len(sb.NETWORKS)
    assert res["meta"]["batches"] == [1, 1000]


def test_sparse_findings_say_where_sparse_loses():
    sb = _sparse_module()

    def row(d, times, size):
        lat = {m: {"1": {"median_s": t}, "1000": {"median_s": t}} for m, t in times.items()}
        return {
            "network": "net",
            "density": d,
            "file_bytes": size,
            "dense_float32_bytes": 100,
            "latency": lat,
        }

    t = lambda dense, bcsr: {"dense": dense, "masked": dense, "bcsr": bcsr, "bcoo": 9, "scipy": 0.1}
    res = {
        "meta": {"batches": [1, 1000]},
        "rows": [row(1.0, t(1, 2), 150), row(0.5, t(1, 1.5), 60), row(0.1, t(1, 0.5), 20)],
    }
    (text,) = sb.findings(res)
    assert "larger than the dense float32 weights at 100%; at 10% it is 0.20x" in text
    assert "jax BCSR at 100% and 50%" in text
    assert "jax BCOO at every density" in text and "scipy CSR at no density" in text


def test_breakdown_own_times_and_categories():
    """An operation's own time excludes what ran inside it; dots are matmuls, scopes the rest."""
    import jax
    import jax.numpy as jnp

    bd = _bench_modules().breakdown
    ev = lambda name, ts, dur, tid=1: {"name": name, "ts": ts, "dur": dur, "tid": tid}
    events = [ev("cond", 0, 10), ev("a", 1, 3), ev("b", 5, 4), ev("c", 12, 2), ev("d", 1, 5, 2)]
    own = {e["name"]: t for e, t in bd.own_times(events)}
    assert own == {"cond": 3, "a": 3, "b": 4, "c": 2, "d": 5}

    def f(w, x):
        with jax.named_scope("batch"):
            x = x * 2.0
        with jax.named_scope("update"):
            y = jnp.tanh(x @ w)
        return y

    w, x = jnp.ones((8, 8)), jnp.ones((4, 8))
    ops = bd.hlo_ops(jax.jit(f).lower(w, x).compile().as_text())
    # the entry's operations: the scaled input, the matmul (a library fusion or a dot), tanh
    entry = {n: c for n, (c, op) in ops.items() if op.startswith("jit(f)/")}
    assert {entry[n] for n in entry if "dot" in ops[n][1]} == {"matmuls"}
    assert {entry[n] for n in entry if ops[n][1].endswith("/mul")} == {"batch"}
    assert {entry[n] for n in entry if ops[n][1].endswith("/tanh")} == {"update"}


def test_readme_model_flops_arithmetic():
    """The README's MFU note: the model FLOPs of a LeNet-300-100 step and the part computed."""
    import jax
    import numpy as np

    from lth_jax import models

    shapes = jax.eval_shape(
        lambda k: models.get("lenet300_100").init(k, np.zeros((1, 28, 28, 1), np.float32)),
        jax.random.PRNGKey(0),
    )
    kernels = [a.shape for a in jax.tree.leaves(shapes) if len(a.shape) == 2]
    macs = sum(a * b for a, b in kernels)
    assert macs == 266_200
    model, first_input_grad = 6 * macs * 60, 2 * kernels[0][0] * kernels[0][1] * 60
    computed = model - first_input_grad
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    text = " ".join(text.split())  # the paragraph is wrapped
    assert f"= {model / 1e6:.1f} MFLOP per LeNet-300-100 training step" in text
    assert f"first layer's input gradient ({first_input_grad / 1e6:.1f} MFLOP)" in text
    assert f"matmuls are {computed / 1e6:.1f} of the {model / 1e6:.1f} MFLOP" in text
    assert f"would show about {round(100 * model / computed, -1):.0f}% MFU" in text
