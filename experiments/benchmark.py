"""Speed benchmark: roofline, LeNet-300-100 training, trials, IMP, the command end to end.

One command, one process (about 10 minutes on 2 CPU cores; ``--quick``: about a
minute)::

    python experiments/benchmark.py [--quick] [--out benchmark.json]

The committed figures and the README's Performance table come from one run::

    python experiments/benchmark.py --out experiments/results/benchmark --update-readme

which writes ``benchmark.json`` (every figure, every sample, the machine) and
``benchmark.md`` (the README block, generated from the JSON by
:func:`bench.report.render`) into the folder and puts the block into README.md
between the ``speed benchmark`` markers; ``tests/test_benchmark.py`` fails when
the README, the markdown and the JSON disagree. ``--out FILE.json`` writes the
JSON only; ``--readme-only --out DIR`` measures nothing and renders
``DIR/benchmark.json`` again (after a change of the wording).

What it measures (the parts live in ``experiments/bench/``):

* **roofline** (:mod:`bench.roofline`): f32 matmul throughput of this machine
  measured with JAX on square matrices (sizes 512 to 2048; one matmul on one
  device with all its intra-op threads, and one matmul per device on all
  devices at once), before the loops and again after them. The roofline is the
  best of these (``2 n^3 / time``); every MFU is against it.
* **LeNet-300-100** (:mod:`bench.lenet`; 784-300-100-10, MNIST-shaped random
  data, batch 60, Adam 1.2e-3, a pruned mask at 51% density): training steps
  per second and model-FLOPs utilization, ``MFU = F * steps/s / roofline`` with
  ``F = 6 x MACs x batch`` (``MACs`` = 266,200 multiply-adds per example;
  forward 2, backward 4 FLOPs per MAC: ``F`` = 95.8 MFLOP), for the engine
  (:class:`lth_jax.train.Engine`) with one trial on one device and K = 1, 2,
  4, 8, 16 trials on all local devices, masked and unmasked, plain SGD, a
  jitted step called from a Python loop, and the matmuls of a step alone
  (the GEMM ceiling); and where the K-trial loop's step goes, from one call
  traced with the JAX profiler (:mod:`bench.breakdown`: matmuls, optimizer
  update, batch, other operations, the runtime between them).
* **IMP** (:mod:`bench.imp`): ``lth_jax.lottery.run`` of 8 trials x 10 rounds
  in process: seconds per round, how many times the chunk program compiled
  (``jax.monitoring`` events), peak memory; the persistent compilation cache,
  cold against warm.
* **End to end** (:mod:`bench.e2e`): ``lth-jax run --config
  preset:lenet300_100_mnist`` with 8 trials, 2,000 steps, rounds 0-2 (56
  trainings), validation and test every 250 steps, in a subprocess on
  MNIST-sized random data prepared as TFDS ``mnist``: trial-steps/s of the
  whole command, as a fraction of the roofline bound for the same training
  and evaluation FLOPs, its time split per part (from ``timing.jsonl``) and
  its peak memory; and the **PyTorch peer** (:mod:`bench.torch_peer`:
  open_lth's masked Adam, the optional extra ``bench``) on the same work in
  the same run, with the ratio.
* **Accelerators** (:mod:`bench.accel`): Conv-6 and ResNet-20 per-step time,
  MFU against the device's peak and trials per device, on a GPU or TPU
  (``--accel`` insists on one and stops with an error on a CPU; ``--conv``
  times them on a CPU).

``--sparse`` measures something else instead: exported file size and CPU
inference latency of pruned networks by density (``experiments/sparse_benchmark.py``;
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
import json
import os
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--quick", action="store_true", help="a smoke run: small sizes, few steps")
    a("--out", default="benchmark.json", help="JSON file, or a folder for benchmark.json/.md")
    a("--update-readme", action="store_true", help="put the table into README.md (needs --out DIR)")
    a(
        "--readme-only",
        action="store_true",
        help="measure nothing: render --out DIR/benchmark.json again into benchmark.md and README",
    )
    a("--repeats", type=int, default=None, help="timed repeats per figure")
    a("--steps", type=int, default=None, help="steps per timed engine call")
    a("--trials", default=None, help="comma-separated K for the trials sweep")
    a("--imp-rounds", type=int, default=None, help="IMP rounds (round 0 included)")
    a("--imp-steps", type=int, default=None, help="training steps per IMP round")
    a("--imp-trials", type=int, default=None, help="trials of the IMP run")
    a("--imp-arms", default="ticket", help="comma-separated arms of the IMP run")
    a("--e2e-trials", type=int, default=None, help="trials of the end-to-end run (8)")
    a("--e2e-steps", type=int, default=None, help="steps per training end to end (2000)")
    a("--e2e-rounds", type=int, default=None, help="pruning rounds after round 0 (2)")
    a("--peer-threads", type=int, default=None, help="PyTorch threads (default: the cores)")
    a("--no-e2e", action="store_true", help="skip the end-to-end run and the PyTorch peer")
    a("--no-imp", action="store_true", help="skip the IMP run")
    a("--accel", action="store_true", help="Conv-6 and ResNet-20 on a GPU/TPU (error on a CPU)")
    a("--conv", action="store_true", help="also time Conv-6 and ResNet-20 on a CPU")
    a("--peak-tflops", type=float, default=None, help="the device's peak, if not in the table")
    a("--sparse", action="store_true", help="instead: sparse inference by density (own options)")
    a("--cache", action="store_true", help="use the persistent compilation cache")
    return p.parse_args(argv)


def _settings(args):
    q = args.quick
    return types.SimpleNamespace(
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
        e2e_trials=args.e2e_trials or (2 if q else 8),
        e2e_steps=args.e2e_steps or (60 if q else 2000),
        e2e_eval_every=30 if q else 250,
        e2e_rounds=args.e2e_rounds if args.e2e_rounds is not None else (0 if q else 2),
        e2e_train=3000 if q else 60000,
        e2e_val=500 if q else 5000,
        e2e_test=500 if q else 10000,
        # quick: one thread (a smoke run; several threads spin badly on a busy machine)
        peer_threads=args.peer_threads or (1 if q else None),
    )


def _rescale_mfu(res, roof):
    """Every LeNet MFU against ``roof`` (a second roofline measurement that came out higher)."""
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


def measure(args, s):
    """Every section in order; the result dict (see the module docstring)."""
    from lth_jax import parallel

    parallel.configure_host_devices(compilation_cache=args.cache)
    import jax
    from bench import accel, common, e2e, imp, lenet, roofline

    if not args.cache:
        jax.config.update("jax_compilation_cache_dir", None)  # compile figures: real compiles
    if args.accel and jax.default_backend() == "cpu":
        raise SystemExit(
            "benchmark.py: error: --accel needs a GPU or TPU, and JAX's backend is cpu "
            f"({jax.local_devices()[0]}); --conv times Conv-6 and ResNet-20 on a CPU"
        )
    t0 = time.perf_counter()
    compiles = common.Compiles()
    res = {"meta": common.machine(s.quick, common.load_average())}
    sections = res["meta"]["section_s"] = {}

    def timed(name, fn, *a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        sections[name] = round(time.perf_counter() - t, 2)
        return out

    res["roofline"] = timed("roofline", roofline.roofline, s)
    roof = res["roofline"]["gflops"]
    if not args.no_imp:
        res["imp"] = timed("imp", imp.imp, s, compiles)
    res["lenet"] = timed("lenet", lenet.lenet, s, roof, compiles)
    res["gemm_ceiling"] = timed("gemm_ceiling", roofline.gemm_ceiling, s, roof)
    res["stream"] = timed("stream", roofline.stream, s)
    res["compile_cache"] = timed("compile_cache", imp.compile_cache, s)
    if jax.default_backend() != "cpu" or args.conv:
        res["conv"] = timed("conv", accel.conv_models, s, roof, args.peak_tflops)
    else:
        res["conv_skipped"] = "the backend is cpu (--accel on a GPU/TPU; --conv forces it)"
    # a second roofline measurement: the figures are compared to the best of both
    again = timed("roofline_again", roofline.roofline, s)
    res["roofline_again"] = again
    if again["gflops"] > roof:
        res["roofline"]["gflops"] = roof = again["gflops"]
        _rescale_mfu(res, roof)
    if not args.no_e2e:
        res["e2e"] = timed("e2e", e2e.end_to_end, s, roof)
        res["e2e"]["settings"] = {
            "trials": s.e2e_trials,
            "steps": s.e2e_steps,
            "rounds": s.e2e_rounds,
            "eval_every": s.e2e_eval_every,
            "val": s.e2e_val,
            "test": s.e2e_test,
        }
    res["memory"] = {"peak_rss_mib": common.rss_mib(), "device_memory": common.device_memory()}
    res["meta"]["load_1min_after"] = common.load_average()
    res["meta"]["wall_s"] = time.perf_counter() - t0
    return res


def _write(res, out, markdown):
    """``out``: a ``.json`` file, or a folder for ``benchmark.json`` and ``benchmark.md``."""
    if out.endswith(".json"):
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
        return out
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "benchmark.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    with open(os.path.join(out, "benchmark.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    return path


def _readme_only(out):
    """Renders a committed ``benchmark.json`` again (after a change of the markdown's wording)."""
    from bench import report

    path = os.path.join(out, "benchmark.json")
    if not os.path.isfile(path):
        raise SystemExit(f"benchmark.py: error: --readme-only needs --out DIR holding {path}")
    with open(path) as f:
        res = json.load(f)
    if res.get("meta", {}).get("quick"):
        raise SystemExit(
            f"benchmark.py: error: {path} is a --quick run; the README shows full runs"
        )
    md = report.render(res)
    with open(os.path.join(out, "benchmark.md"), "w", encoding="utf-8") as f:
        f.write(md)
    report.update_readme(os.path.join(ROOT, "README.md"), md)
    print(md)
    print(f"wrote {out}/benchmark.md and updated README.md")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--sparse" in argv:  # sparse inference: its own measurements (sparse_benchmark.py)
        import sparse_benchmark

        return sparse_benchmark.main([a for a in argv if a != "--sparse"])
    args = _parse(argv)
    if args.readme_only:
        return _readme_only(args.out)
    if args.update_readme and (args.quick or args.out.endswith(".json")):
        raise SystemExit("benchmark.py: error: --update-readme needs a full run and --out DIR")
    s = _settings(args)
    res = measure(args, s)
    from bench import report

    res["targets"] = report.targets(res)
    md = report.render(res)
    path = _write(res, args.out, md)
    print(report.table(res))
    mt = res["meta"]
    print(
        f"\nload average (1 min): {mt['load_1min_before']} before, {mt['load_1min_after']} "
        f"after; {mt['wall_s']:.0f} s; JSON: {path}"
    )
    print(report.targets_text(res))
    if args.update_readme:
        report.update_readme(os.path.join(ROOT, "README.md"), md)
        print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
