"""Sparse inference, measured: file size and CPU latency of exported networks by density.

Run through the speed benchmark (one process, a few minutes on 2 CPU cores)::

    python experiments/benchmark.py --sparse [--quick] [--out DIR] [--update-readme]

For two networks, the MNIST-1D MLP of the default config (40-100-100-10) and
LeNet-300-100 (784-300-100-10), and for each density (100, 50, 20, 10, 5 and
2% of the weights of every layer kept at random; biases dense), the network is
written with :func:`lth_jax.sparse.save` (the ``lth-jax export`` format) and
timed at batch 1 and batch 1,000 (random normalized inputs already on the
device) computed five ways:

* ``dense``: the Flax model on the dense kernels (pruned entries are zeros);
* ``masked``: the Flax model with the mask multiplied into every kernel on
  each call (what training does);
* ``bcsr`` and ``bcoo``: :func:`lth_jax.sparse.load` with that backend, every
  Dense layer a ``jax.experimental.sparse`` product (``W^T @ x^T``);
* ``scipy``: ``scipy.sparse.csr_matrix`` products in numpy (``W^T @ x^T`` per
  layer, bias, ReLU), one thread.

Each figure is the median of repeated timings after two warm-up calls (the
JAX ones compile there): ``--repeats`` calls, fewer when a figure's time
budget (``--budget`` seconds) is spent, at least 3. Before timing, every way's
logits are checked against ``dense`` (``max_abs_diff`` in the JSON).

It writes ``sparse_benchmark.json`` (every figure, the machine: CPU, cores,
jax, scipy and numpy versions, load average) and ``sparse_benchmark.md`` (the
table and the sentences that compare, generated from the JSON by
:func:`render`) into ``--out``; ``--update-readme`` puts the markdown into the
README's Performance section, between the ``sparse benchmark`` markers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import textwrap
import time

from bench import common  # experiments/ is on the path: this script's folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02)
NETWORKS = {  # name: (model, model kwargs, input shape)
    "MNIST-1D MLP": ("mlp", {"features": [100, 100]}, (40,)),
    "LeNet-300-100": ("lenet300_100", {}, (784,)),
}
METHODS = ("dense", "masked", "bcsr", "bcoo", "scipy")
LABELS = {
    "dense": "dense",
    "masked": "masked dense",
    "bcsr": "jax BCSR",
    "bcoo": "jax BCOO",
    "scipy": "scipy CSR",
}
BEGIN = "<!-- sparse benchmark (experiments/benchmark.py --sparse): begin -->"
END = "<!-- sparse benchmark (experiments/benchmark.py --sparse): end -->"


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 densities, few repeats")
    p.add_argument("--out", default="sparse_benchmark", help="folder for the JSON and markdown")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per figure")
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per figure")
    p.add_argument("--batch", type=int, default=1000, help="the large batch size")
    p.add_argument("--update-readme", action="store_true", help="rewrite README's table")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- networks


def _network(model_name, kwargs, shape, density, seed, folder):
    """Writes one network with random masks at ``density``; ``(path, info)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lth_jax import models, sparse

    model = models.get(model_name, num_classes=10, **{k: tuple(v) for k, v in kwargs.items()})
    params = jax.device_get(jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, *shape))))
    params = params["params"]
    r = np.random.default_rng(seed)

    def mask_of(p):
        if p.ndim < 2:
            return np.ones(p.shape, bool)
        keep = int(round(density * p.size))
        m = np.zeros(p.size, bool)
        m[r.permutation(p.size)[:keep]] = True
        return m.reshape(p.shape)

    mask = jax.tree.map(mask_of, params)
    meta = {
        "model": {"name": model_name, "kwargs": kwargs, "num_classes": 10},
        "input": {"shape": list(shape), "mean": 0.0, "std": 1.0},
        "source": {"benchmark": "random masks", "density": density, "seed": seed},
    }
    path = os.path.join(folder, f"{model_name}-{density:g}.npz")
    info = sparse.save(path, params, mask, {}, meta)
    return path, info, model, params, mask


def _scipy_forward(path):
    """A numpy forward pass of an exported MLP with ``scipy.sparse`` CSR products."""
    import numpy as np
    import scipy.sparse as sp

    from lth_jax.sparse import fileformat

    _, params, _ = fileformat.read(path)
    names = sorted((k for k in params if k != "head"), key=lambda k: int(k.split("_")[-1]))
    layers = []
    for name in [*names, "head"]:
        k = params[name]["kernel"]
        w = sp.csr_matrix((k.data, k.indices, k.indptr), shape=k.matrix)
        layers.append((w.T.tocsr(), np.asarray(params[name]["bias"], np.float32)))

    def forward(x):
        h = np.asarray(x, np.float32).reshape(len(x), -1)
        for i, (wt, b) in enumerate(layers):
            h = (wt @ h.T).T + b
            if i + 1 < len(layers):
                np.maximum(h, 0, out=h)
        return h

    return forward


def _methods(path, model, params, mask):
    """``{method: forward((device x, host x))}``, each returning a finished array.

    The JAX ways take the inputs already on the device, scipy the host copy.
    """
    import jax
    import numpy as np

    from lth_jax import sparse

    loaded = {b: sparse.load(path, backend=b) for b in ("dense", "bcsr", "bcoo")}
    fmask = jax.tree.map(lambda m: np.asarray(m, np.float32), mask)
    masked = jax.jit(
        lambda p, m, x: model.apply({"params": jax.tree.map(lambda a, b: a * b, p, m)}, x)
    )
    dev_params = jax.device_put(params)
    dev_mask = jax.device_put(fmask)
    out = {b: (lambda x, m=m: m.forward(x[0]).block_until_ready()) for b, m in loaded.items()}
    out["masked"] = lambda x: masked(dev_params, dev_mask, x[0]).block_until_ready()
    scipy_fwd = _scipy_forward(path)
    out["scipy"] = lambda x: scipy_fwd(x[1])
    return {k: out[k] for k in METHODS}


def _time(fn, x, repeats, budget):
    import numpy as np

    fn(x)
    fn(x)  # warm-up: compiles, caches
    samples, stop = [], time.perf_counter() + budget
    while len(samples) < repeats and (len(samples) < 3 or time.perf_counter() < stop):
        t0 = time.perf_counter()
        fn(x)
        samples.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(samples)), "min_s": float(min(samples)), "n": len(samples)}


def measure(args) -> dict:
    import jax
    import numpy as np
    import scipy

    densities = (0.5, 0.1) if args.quick else DENSITIES
    repeats = args.repeats or (3 if args.quick else 50)
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 10.0)
    batches = (1, args.batch)
    res = {"meta": _machine(jax, np, scipy), "rows": []}
    res["meta"].update(
        {"repeats": repeats, "budget_s": budget, "warmup_calls": 2, "batches": list(batches)}
    )
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for net, (model_name, kwargs, shape) in NETWORKS.items():
            r = np.random.default_rng(0)
            xs = r.standard_normal((max(batches), *shape), dtype=np.float32)
            for d in densities:
                path, info, model, params, mask = _network(model_name, kwargs, shape, d, 0, folder)
                fns = _methods(path, model, params, mask)
                s = info["sizes"]
                row = {
                    "network": net,
                    "density": d,
                    "alive": s["alive"],
                    "prunable": s["prunable"],
                    "weights": s["weights"],
                    "file_bytes": info["file_bytes"],
                    "dense_float32_bytes": s["dense_float32_bytes"],
                    "latency": {},
                    "max_abs_diff": {},
                }
                check = xs[:16]
                ref = np.asarray(fns["dense"]((jax.device_put(check), check)))
                for m, fn in fns.items():
                    got = np.asarray(fn((jax.device_put(check), check)))
                    row["max_abs_diff"][m] = float(np.max(np.abs(got - ref)))
                for b in batches:
                    x = (jax.device_put(xs[:b]), xs[:b])
                    for m, fn in fns.items():
                        row["latency"].setdefault(m, {})[str(b)] = _time(fn, x, repeats, budget)
                res["rows"].append(row)
                print(_row_line(row, batches), flush=True)
    res["meta"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    res["meta"]["load_1min_after"] = common.load_average()
    return res


def _machine(jax, np, scipy) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "cpu": common.cpu_name(),
        "cores": common.cores(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "load_1min_before": common.load_average(),
    }


def _row_line(row, batches) -> str:
    lat = " ".join(
        f"{m}@{b}={row['latency'][m][str(b)]['median_s'] * 1e6:.0f}us"
        for b in batches
        for m in METHODS
    )
    return f"{row['network']} {row['density']:.0%} {row['file_bytes']:,} B {lat}"


# ----------------------------------------------------------------------------- rendering


def _pct(d: float) -> str:
    return f"{d * 100:g}%"


def _fmt(seconds: float, unit: str) -> str:
    v = seconds * (1e6 if unit == "us" else 1e3)
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _list(ds) -> str:
    ds = [_pct(d) for d in ds]
    return ds[0] if len(ds) == 1 else ", ".join(ds[:-1]) + " and " + ds[-1]


def findings(res) -> list[str]:
    """The comparisons the README states, each computed from ``res``."""
    out = []
    nets = list(dict.fromkeys(r["network"] for r in res["rows"]))
    for net in nets:
        rows = [r for r in res["rows"] if r["network"] == net]
        larger = [r["density"] for r in rows if r["file_bytes"] >= r["dense_float32_bytes"]]
        ten = [r for r in rows if r["density"] == 0.1]
        text = f"{net}: the file is "
        text += (
            f"larger than the dense float32 weights at {_list(larger)}"
            if larger
            else "smaller than the dense float32 weights at every density"
        )
        if ten:
            text += f"; at 10% it is {ten[0]['file_bytes'] / ten[0]['dense_float32_bytes']:.2f}x"
        for b in res["meta"]["batches"]:
            slow = []
            for m in ("bcsr", "bcoo", "scipy"):
                ds = [
                    r["density"]
                    for r in rows
                    if r["latency"][m][str(b)]["median_s"]
                    > r["latency"]["dense"][str(b)]["median_s"]
                ]
                if len(ds) == len(rows):
                    slow.append(f"{LABELS[m]} at every density")
                elif ds:
                    slow.append(f"{LABELS[m]} at {_list(ds)}")
                else:
                    slow.append(f"{LABELS[m]} at no density")
            text += f". Slower than dense at batch {b:,}: " + "; ".join(slow)
        out.append(text + ".")
    return out


def render(res) -> str:
    """The markdown tables and sentences of a result (what the README shows)."""
    m = res["meta"]
    b1, bn = m["batches"]
    head = (
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, jax {m['jax']} "
        f"({m['backend']}, {m['devices']} device), scipy {m['scipy']}, numpy {m['numpy']}; "
        f"load average {m['load_1min_before']} before, {m['load_1min_after']} after "
        f"({m['wall_s']:.0f} s). MNIST-1D MLP: 40-100-100-10 (the default config's); "
        "LeNet-300-100: 784-300-100-10; random masks, every layer at the density. Latency: "
        f"median of up to {m['repeats']} timed forward passes after {m['warmup_calls']} "
        "warm-up calls, inputs already normalized and on the device; the fastest way in bold. "
        "File: the exported `.npz`, against the dense float32 weights."
    )
    lines = [textwrap.fill(head, 100)]
    for b, unit in ((b1, "µs"), (bn, "ms")):
        cols = [LABELS[k] for k in METHODS]
        first = b == b1
        lines += [
            "",
            f"Batch {b:,}, {unit} per forward pass:",
            "",
            "| network | weights kept | "
            + ("file | x dense | " if first else "")
            + " | ".join(cols)
            + " |",
            "|---|---:|" + ("---:|---:|" if first else "") + "---:|" * len(cols),
        ]
        for r in res["rows"]:
            cells = [r["network"], f"{_pct(r['density'])} ({r['alive']:,})"]
            if first:
                cells += [
                    f"{r['file_bytes'] / 1024:.1f} KiB",
                    f"{r['file_bytes'] / r['dense_float32_bytes']:.2f}",
                ]
            times = {k: r["latency"][k][str(b)]["median_s"] for k in METHODS}
            best = min(times.values())
            for k in METHODS:
                t = _fmt(times[k], "us" if unit == "µs" else "ms")
                cells.append(f"**{t}**" if times[k] == best else t)
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *[textwrap.fill(f"- {s}", 100, subsequent_indent="  ") for s in findings(res)]]
    return "\n".join(lines) + "\n"


def readme_block(markdown: str) -> str:
    return f"{BEGIN}\n{markdown}{END}"


def update_readme(path: str, markdown: str) -> None:
    """Replaces the block between the markers of ``path`` with ``markdown``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:start] + readme_block(markdown) + text[end:])


def main(argv=None) -> int:
    args = _parse(argv)
    res = measure(args)
    os.makedirs(args.out, exist_ok=True)
    md = render(res)
    with open(os.path.join(args.out, "sparse_benchmark.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "sparse_benchmark.md"), "w", encoding="utf-8") as f:
        f.write(md)
    print()
    print(md)
    print(f"wrote {args.out}/sparse_benchmark.json and sparse_benchmark.md")
    if args.update_readme:
        update_readme(os.path.join(ROOT, "README.md"), md)
        print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
