"""The speed benchmark runs end to end in quick mode and measures something.

It asserts only that the benchmark ran and wrote positive figures, never a
speed: timings depend on the machine and its load.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_benchmark_quick(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    env["LTH_JAX_COMPILATION_CACHE"] = str(tmp_path / "xla_cache")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "experiments", "benchmark.py"),
            "--quick",
            "--out",
            str(out),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "roofline" in proc.stdout
    res = json.loads(out.read_text())

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

    cc = res["compile_cache"]
    assert _positive(cc["cold_s"]) and _positive(cc["cached_s"])
    assert _positive(res["memory"]["peak_rss_mib"])
    assert set(res["targets"]) >= {"mfu_8_trials_ge_70pct", "8_trials_ge_1.5x_one_trial"}


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
