"""Where the compiled loop's time goes: one ``Engine.fit`` call under the JAX profiler.

The trace holds one event per executed XLA operation (its HLO name, device and
duration). Each operation's own time (its duration less that of operations run
inside it, such as a conditional's branch) is put in a category read from the
compiled chunk program's HLO:

* ``matmuls``: the training steps' ``dot`` operations and fusions that contain one (XLA's CPU
  library fusions of a matmul and its neighbours);
* the rest by the named scope in the operation's metadata, set by
  :func:`lth_jax.loop.train_step`: ``update`` (the optimizer chain with its
  mask, applying the update, the non-finite-loss guard), ``batch`` (data order
  and the batch gather), ``forward_backward`` (activations, loss and their
  gradients: the matmuls are counted above), ``evaluate`` (the evaluation
  after the chunk's steps, matmuls included), and ``other`` (the loops'
  bookkeeping, the learning rate).

Figures are per trial-step on one device: the summed time of a category over
all devices divided by the trial-steps done. ``executor`` is the rest of the
traced call's time (its wall time x devices / trial-steps), the ``while``
loops' own time included: the runtime's dispatch between operations, the
host's work in ``fit``, and the cost of tracing itself, which makes the traced
call slower than the untraced one (``untraced_step_us``, from the loop row's
median rate; the table shows both).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

CATEGORIES = ("matmuls", "update", "batch", "forward_backward", "evaluate", "other")

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([\w\-]+)\((.*)$")


def hlo_ops(text):
    """``{name: (category, op_name)}`` for every instruction of an HLO module's text.

    A ``while`` loop's own time (between the operations it runs) is the
    runtime's: category ``executor``.
    """
    comps, cur = {}, None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if head and not line.startswith(" "):
            cur = comps.setdefault(head.group(1), [])
            continue
        if cur is not None and line.strip() and line.strip() != "}":
            cur.append(line)
    matmul_in = lambda body: any(" dot(" in ln or " convolution(" in ln for ln in body)
    has_dot = {c: matmul_in(body) for c, body in comps.items()}
    ops = {}
    for body in comps.values():
        for line in body:
            m = _INSTR.match(line)
            if not m:
                continue
            name, opcode = m.group(1), m.group(2)
            called = re.search(r"calls=%?([\w.\-]+)", line)
            op_name = re.search(r'op_name="([^"]*)"', line)
            op_name = op_name.group(1) if op_name else ""
            matmul = opcode in ("dot", "convolution") or (
                opcode == "fusion" and called is not None and has_dot.get(called.group(1), False)
            )
            cat = _scope(op_name)
            if opcode == "while":
                cat = "executor"
            elif matmul and cat != "evaluate":
                cat = "matmuls"
            ops[name] = (cat, op_name)
    return ops


def _scope(op_name):
    for cat in ("evaluate", "update", "batch", "forward_backward"):
        if f"/{cat}/" in op_name or op_name.endswith(f"/{cat}"):
            return cat
    return "other"


def own_times(events):
    """Each event's duration less its children's (events nested in it on the same thread)."""
    by_tid = collections.defaultdict(list)
    for e in events:
        by_tid[e["tid"]].append(e)
    out = []
    for evs in by_tid.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [event, own]
        for e in evs:
            while stack and e["ts"] >= stack[-1][0]["ts"] + stack[-1][0]["dur"]:
                out.append(tuple(stack.pop()))
            if stack:
                stack[-1][1] -= e["dur"]
            stack.append([e, e["dur"]])
        out += [tuple(x) for x in stack]
    return out


def loop(eng, runs_inputs, trial_steps, untraced_rate):
    """The breakdown of one ``eng.fit(*runs_inputs)`` call (``trial_steps`` = runs x steps).

    ``untraced_rate``: trial-steps/s of the same call without the profiler (the
    loop row), which sets the time of a step.
    """
    import jax

    module = "jit__chunk_impl"
    ops = hlo_ops(eng.lower(*runs_inputs).compile().as_text())
    jax.block_until_ready(eng.fit(*runs_inputs).params)  # warm (compiled already)
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        t = time.perf_counter()
        jax.block_until_ready(eng.fit(*runs_inputs).params)
        traced_s = time.perf_counter() - t
        jax.profiler.stop_trace()
        events = []
        for path in glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True):
            with gzip.open(path) as f:
                events += json.load(f)["traceEvents"]
    events = [
        e
        for e in events
        if e.get("ph") == "X" and e.get("args", {}).get("hlo_module", "").startswith(module)
    ]
    if not events:
        raise RuntimeError(f"the trace holds no operation of {module} (another backend?)")
    devices = eng.num_shards()
    per_cat = dict.fromkeys((*CATEGORIES, "executor"), 0.0)
    per_op = collections.Counter()
    unknown = 0
    for e, own in own_times(events):
        name = e["args"].get("hlo_op", e["name"])
        cat = ops.get(name, ("other", ""))[0]
        unknown += name not in ops
        per_cat[cat] += own
        per_op[(name, cat)] += own
    us = lambda t: t / trial_steps  # trace times are microseconds
    step_us = 1e6 * devices * traced_s / trial_steps
    ops_us = sum(us(per_cat[c]) for c in CATEGORIES)
    out = {
        "trial_steps": trial_steps,
        "devices": devices,
        "step_us": step_us,
        "untraced_step_us": 1e6 * devices / untraced_rate,
        "categories_us": {c: us(per_cat[c]) for c in CATEGORIES},
        "executor_us": step_us - ops_us,
        "top_ops": [{"op": n, "category": c, "us": us(v)} for (n, c), v in per_op.most_common(12)],
        "events": len(events),
        "ops_not_in_hlo": unknown,
        "note": "per trial-step on one device, in the traced call; executor: the rest",
    }
    return out
