"""The benchmark's printed table, its README markdown and its targets, all from the result JSON.

:func:`table` is the text table the command prints; :func:`render` is the
markdown that ``--update-readme`` puts into README.md's Performance section
between :data:`BEGIN` and :data:`END` (and ``--out DIR`` writes as
``benchmark.md``): the machine line, the table, the end-to-end time split and
the targets, each sentence computed from the JSON, so that the committed JSON
and the README cannot drift apart unnoticed (``tests/test_benchmark.py``).
"""

from __future__ import annotations

import os

from bench.roofline import ADAM_EXTRA_BYTES, adam_ceiling

BEGIN = "<!-- speed benchmark (experiments/benchmark.py): begin -->"
END = "<!-- speed benchmark (experiments/benchmark.py): end -->"
PARTS = (
    ("startup_s", "start-up (imports, data, set-up)"),
    ("compile_s", "compile"),
    ("train_s", "training"),
    ("eval_s", "evaluation"),
    ("checkpoint_s", "checkpoint writes"),
    ("host_s", "host work (pruning, metrics, report)"),
    ("events_s", "live metrics (TensorBoard)"),
)
TARGETS = {  # key: what it says when met
    "e2e_ge_3x_peer": "end to end at least 3x the PyTorch peer, a first run",
    "e2e_again_ge_3x_peer": "the same, a later run (compilation cache warm)",
    "mfu_8_trials_ge_70pct": "the compiled loop at least 70% of the roofline (MFU) with 8 trials",
    "peak_memory_lt_2GiB": "peak memory under 2 GiB",
    "one_chunk_compile_per_shape_in_imp": "one compile per shape over a 10-round run",
    "8_trials_ge_1.5x_one_trial": "8 trials at least 1.5x one trial alone",
}


def _lenet_rows(res):
    L = res["lenet"]
    roof = res["roofline"]["gflops"]
    rows = [("roofline: f32 matmul, best", f"{roof:.0f} GFLOP/s", "")]
    for n, e in res["roofline"]["sizes"].items():
        for where, v in e.items():
            name = f"  matmul {n}^3, {where.replace('_', ' ')}"
            rows.append((name, f"{v['median']:.0f}", f"best {v['best']:.0f} GFLOP/s"))
    if "roofline_again" in res:
        a = res["roofline_again"]
        _, n, where = max((v["best"], n, w) for n, e in a["sizes"].items() for w, v in e.items())
        rows.append(
            (
                "  all sizes again, after the loops",
                f"{a['gflops']:.0f}",
                f"best GFLOP/s ({n}^3, {where.replace('_', ' ')}); the roofline: the higher best",
            )
        )
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
            f"the masked step costs {L['mask_overhead_pct']:+.1f}% (median of paired samples)",
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
    if "loop_breakdown_skipped" in L:
        rows.append(("  where its step goes", "skipped", L["loop_breakdown_skipped"][:80]))
    if "loop_breakdown" in L:
        b = L["loop_breakdown"]
        rows.append(
            (
                "  where its step goes (one call traced)",
                f"{b['step_us']:.0f} us",
                f"a trial-step on a device (untraced {b['untraced_step_us']:.0f} us): "
                + _breakdown_text(b),
            )
        )
    for r in L["trials"]:
        rows.append(
            (
                f"  K={r['K']:<3d} runs, all devices"
                + (f" ({r['runs_computed']} computed)" if r["runs_computed"] != r["K"] else ""),
                f(r) + " trial-steps/s",
                f"x{r['ratio_to_K1']:.2f} K=1, MFU {pct(r['mfu'])}, compile {r['compile_s']:.1f} s"
                + cores(r),
            )
        )
    sg = L["engine_many_sgd_unmasked"]
    rows.append(
        (
            f"LeNet engine, {sg['K']} trials, plain SGD, no mask",
            f(sg) + " trial-steps/s",
            f"MFU {pct(sg['mfu'])}: masked Adam costs "
            f"{100 * (sg['median'] / many['median'] - 1):+.0f}% per step",
        )
    )
    fu = L.get("engine_many_fused")
    if fu:
        same = (
            "bit-identical to optax's"
            if fu["bit_identical"]
            else f"final validation losses within {fu['val_loss_max_rel_diff']:.1e} of optax's "
            f"(relative), weights within {fu['params_max_abs_diff']:.1e}"
        )
        rows.append(
            (
                f"LeNet engine, {fu['K']} trials, fused_adam_cpu",
                f(fu) + " trial-steps/s",
                f"MFU {pct(fu['mfu'])}, x{fu['ratio_to_optax']:.2f} the optax loop: the masked "
                f"Adam step as one C++ kernel (opt-in); {same}",
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
                    f(g) + (" trial-steps/s" if g["K"] > 1 else " steps/s"),
                    "MFU " + pct(g["mfu"]) + " (the matmuls of a step, nothing else)",
                )
            )
    if "stream" in res:
        st = res["stream"]
        rows.append(
            (
                f"memory stream, {st['K']} runs, {st['devices']} devices",
                f"{st['median'] / 1e9:.1f} GB/s",
                "x = 0.999 x + a, arrays of 4 x LeNet's weights (an Adam step's), 12 B/element",
            )
        )
        c = _adam_ceiling(res)
        rows.append(
            (
                "LeNet ceiling: SGD engine + one-pass masked Adam",
                f"{c['median']:.0f} trial-steps/s",
                f"MFU {pct(c['mfu'])}: moments and mask moved once "
                f"({ADAM_EXTRA_BYTES} B/weight) at that bandwidth",
            )
        )
    return rows


def _imp_rows(res):
    rows = []
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
    return rows


def _e2e_rows(res):
    e = res.get("e2e")
    if not e:
        return []
    o, b, p = e["ours"], e["roofline_bound"], e["peer"]
    steps = o["trial_steps"] // max(o["trainings"], 1)
    rows = [
        (
            f"End to end: lth-jax run, LeNet preset, {e['settings']['trials']} trials",
            f"{o['trial_steps_per_s']:.0f} trial-steps/s",
            f"{o['trainings']} trainings x {steps} steps in {o['process_s']:.1f} s; "
            f"{100 * b['fraction']:.0f}% of the roofline bound ({b['trial_steps_per_s']:.0f})",
        )
    ]
    if "skipped" in p:
        rows.append(("  PyTorch peer", "skipped", p["skipped"]))
    else:
        rows.append(
            (
                f"  PyTorch peer (open_lth masked Adam, {p['threads']} thread"
                + ("s)" if p["threads"] != 1 else ")"),
                f"{p['trial_steps_per_s']:.0f} trial-steps/s",
                f"{'the same work' if e['same_work'] else 'DIFFERENT work'} in "
                f"{p['process_s']:.1f} s; ours x{e['ratio_to_peer']:.2f}",
            )
        )
    again = e.get("ours_again")
    if again is not None:
        ratio = e.get("ratio_to_peer_again")
        rows.append(
            (
                "  the same command again (compilation cache warm)",
                f"{again['trial_steps_per_s']:.0f} trial-steps/s",
                f"in {again['process_s']:.1f} s, compile "
                f"{again['split']['parts']['compile_s'] or 0:.1f} s"
                + ("" if ratio is None else f"; ours x{ratio:.2f}"),
            )
        )
    rows.append(("  peak RSS of the command", f"{o['peak_rss_mib']:.0f} MiB", ""))
    sp = o["split"]
    for key, label in PARTS:
        v = sp["parts"][key]
        rows.append((f"  {label}", "n/a" if v is None else f"{v:.1f} s", _pct(sp["shares"][key])))
    rest = sp.get("rest_s")
    label = "  the rest (in none of the parts)"
    if rest is None:  # timing.jsonl without the parts: outside the rounds, measured here
        rest, label = sp["outside_rounds_s"], "  outside the rounds (start, data, report)"
    rows.append((label, f"{rest:.1f} s", _pct(rest / o["process_s"])))
    return rows


def _accel_rows(res):
    c = res.get("conv")
    if not c:
        return []
    rows = []
    peak = c.get("peak_tflops")
    for name, e in c.items():
        if not isinstance(e, dict):
            continue
        for k, r in e.items():
            if not isinstance(r, dict) or "median" not in r:
                continue
            ceiling = f"of {peak:g} TFLOP/s peak" if peak else "of the roofline"
            mfu = "" if r.get("mfu") is None else f"MFU {_pct(r['mfu'])} {ceiling}, "
            rows.append(
                (
                    f"{name} {k} (batch {e['batch']})",
                    f"{r['median']:.0f} trial-steps/s",
                    f"{mfu}{r['ms_per_step_one_trial']:.2f} ms/step, "
                    f"{r['trials_per_device']} trials/device",
                )
            )
    return rows


def _pct(x):
    return "" if x is None else f"{100 * x:.0f}%"


def table(res):
    """The text table of a result (what the command prints, and the README's code block)."""
    rows = _lenet_rows(res) + _imp_rows(res) + _e2e_rows(res) + _accel_rows(res)
    if "conv_skipped" in res:
        rows.append(("Conv-6 / ResNet-20 (accelerator)", "skipped", res["conv_skipped"]))
    rows.append(
        (
            "peak RSS, the benchmark's own process",
            f"{res['memory']['peak_rss_mib']:.0f} MiB",
            "not a target (the targets: the command's and the IMP run's)",
        )
    )
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w}}  {b:>{v}}  {c}".rstrip() for a, b, c in rows)


def targets(res):
    """``{target: True | False | None}`` from the measured figures.

    ``None``: not measured at the target's size (the end-to-end run and the
    loop with fewer than 8 trials, an IMP run of fewer than 10 rounds, as in
    ``--quick``), or not run.
    """
    L = res["lenet"]
    e = res.get("e2e") or {}
    m = res.get("imp")
    many = L["engine_many"]
    peaks = [x["peak_rss_mib"] for x in (m, e.get("ours")) if x]
    full_e2e = "ratio_to_peer" in e and e["settings"]["trials"] >= 8
    return {
        "e2e_ge_3x_peer": (e["ratio_to_peer"] >= 3.0) if full_e2e else None,
        "e2e_again_ge_3x_peer": (
            (e["ratio_to_peer_again"] >= 3.0) if full_e2e and "ratio_to_peer_again" in e else None
        ),
        "mfu_8_trials_ge_70pct": (
            (max(many["mfu"], (L.get("engine_many_fused") or {}).get("mfu", 0.0)) >= 0.70)
            if many["K"] >= 8
            else None
        ),
        "peak_memory_lt_2GiB": (max(peaks) < 2048) if peaks else None,
        "one_chunk_compile_per_shape_in_imp": (
            (m["chunk_compiles"] == 1) if m and m["rounds"] >= 10 else None
        ),
        "8_trials_ge_1.5x_one_trial": (
            (L["many_vs_one_trial_alone"] >= 1.5) if many["K"] >= 8 else None
        ),
    }


def targets_text(res):
    """One sentence per target with its measured figure: met, **missed** or not measured."""
    t = res["targets"]
    L, e, m = res["lenet"], res.get("e2e") or {}, res.get("imp")
    many = L["engine_many"]
    figure = {
        "e2e_ge_3x_peer": f"x{e['ratio_to_peer']:.2f}" if "ratio_to_peer" in e else "",
        "e2e_again_ge_3x_peer": (
            f"x{e['ratio_to_peer_again']:.2f}" if "ratio_to_peer_again" in e else ""
        ),
        "mfu_8_trials_ge_70pct": f"{_pct(many['mfu'])} with {many['K']} trials"
        + (
            f" and optax's Adam (the default), {_pct(L['engine_many_fused']['mfu'])} with "
            "optimizer.fused_adam_cpu"
            if "engine_many_fused" in L
            else ""
        ),
        "peak_memory_lt_2GiB": ", ".join(
            f"{w} {x['peak_rss_mib'] / 1024:.2f} GiB"
            for w, x in (("command", e.get("ours")), ("IMP run", m))
            if x
        ),
        "one_chunk_compile_per_shape_in_imp": (
            f"{m['chunk_compiles']} over {m['rounds']} rounds" if m else ""
        ),
        "8_trials_ge_1.5x_one_trial": f"x{L['many_vs_one_trial_alone']:.2f}",
    }
    out = []
    for key, what in TARGETS.items():
        v = t.get(key)
        state = "not measured" if v is None else ("met" if v else "**missed**")
        if key == "mfu_8_trials_ge_70pct" and v and many["mfu"] < 0.70:
            state = "met with optimizer.fused_adam_cpu, **missed** by default"
        out.append(f"{what}: {figure[key]} ({state})" if figure[key] else f"{what}: {state}")
    text = "Targets: " + "; ".join(out) + "."
    if many["mfu"] < 0.70 and t.get("mfu_8_trials_ge_70pct") is not None:
        sgd = L["engine_many_sgd_unmasked"]
        text += (
            " What limits the loop with optax's Adam: measured, the same program with plain "
            "SGD and no mask "
            f"reaches {_pct(sgd['mfu'])} of the roofline"
        )
        g = (res.get("gemm_ceiling") or {}).get("many")
        text += f", and its matmuls alone {_pct(g['mfu'])}" if g else ""
        if "stream" in res:
            c = _adam_ceiling(res)["mfu"]
            text += (
                "; estimated from the measured memory bandwidth, with a masked Adam that moves the "
                f"moments and the mask once per step it would reach at most {_pct(c)}"
                + (", below the target" if c < 0.70 else "")
            )
        b = L.get("loop_breakdown")
        if b:
            text += (
                f"; a traced step of the {many['K']}-trial loop goes to "
                + _breakdown_text(b)
                + " (the optimizer update: Adam's moments, the mask, the non-finite-loss guard)"
            )
        text += "."
    return text


#: The loop breakdown's categories as the README names them (bench.breakdown).
BREAKDOWN_NAMES = {
    "matmuls": "matmuls",
    "update": "optimizer update",
    "batch": "batch",
    "forward_backward": "other forward/backward",
    "evaluate": "evaluation",
    "other": "other",
    "executor": "runtime and tracing",
}


def _breakdown_text(b, at_least=0.005):
    """``matmuls 53%, optimizer update 30%, ...``: shares of the traced step, largest first."""
    parts = {**b["categories_us"], "executor": b["executor_us"]}
    shares = sorted(((v / b["step_us"], k) for k, v in parts.items()), reverse=True)
    return ", ".join(f"{BREAKDOWN_NAMES[k]} {_pct(x)}" for x, k in shares if x >= at_least)


def _adam_ceiling(res):
    """The plain-SGD engine plus a one-pass masked Adam at the measured bandwidth."""
    L = res["lenet"]
    return adam_ceiling(
        L["engine_many_sgd_unmasked"]["median"],
        res["stream"]["median"],
        L["model_flops_per_step"],
        res["roofline"]["gflops"],
    )


def _machine(res):
    mt = res["meta"]
    peer = ((res.get("e2e") or {}).get("peer")) or {}
    torch = f", torch {peer['torch']}" if "torch" in peer else ""
    return (
        f"Measured {mt['date'][:10]} on {mt['cpu']}, {mt['cores']} cores, jax {mt['jax']} "
        f"({mt['backend']}, {mt['device_count']} devices){torch}; load average "
        f"{mt['load_1min_before']} before, {mt['load_1min_after']} after ({mt['wall_s']:.0f} s)."
        + (" A quick run (`--quick`): small sizes, not the figures." if mt["quick"] else "")
    )


def _e2e_text(res):
    e = res.get("e2e")
    if not e:
        return ""
    o, d, st = e["ours"], e["data"], e["settings"]
    return (
        f"End to end: `lth-jax run --config {o['config']}` with {st['trials']} trials, "
        f"{st['steps']:,} steps, rounds 0-{st['rounds']} (arms {', '.join(o['arms'])}: "
        f"{o['trainings']} trainings), validation ({st['val']:,}) and test ({st['test']:,}) "
        f"every {st['eval_every']} steps; the whole command timed, start-up included, "
        + (
            "first with lth-jax's compilation cache empty (a first run: the time split is this "
            "run's), then the same command again (a later run: its programs read from the cache)"
            if "ours_again" in e
            else "with the compilation cache off"
        )
        + f". Data: {d['train']:,} training images ({st['val']:,} "
        f"of them held out for validation) and {d['test']:,} test images, {d['what']} (prepared "
        f"in {d['process_s']:.0f} s, not counted)."
    )


def render(res):
    """The README markdown of a result: machine, table, end-to-end setting, targets."""
    parts = [_machine(res), "```\n" + table(res) + "\n```", _e2e_text(res), targets_text(res)]
    return "\n\n".join(_wrap(p) if not p.startswith("```") else p for p in parts if p) + "\n"


def _wrap(text, width=100):
    import textwrap

    return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)


def readme_block(markdown):
    """``markdown`` between the README markers."""
    return f"{BEGIN}\n{markdown}{END}"


def update_readme(path, markdown):
    """Replaces the block between :data:`BEGIN` and :data:`END` of ``path`` with ``markdown``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{os.path.basename(path)} has no {BEGIN!r} ... {END!r} block")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:start] + readme_block(markdown) + text[end:])
