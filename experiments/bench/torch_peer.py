"""The PyTorch peer: open_lth's way of training a masked LeNet-300-100, the same IMP work.

open_lth (facebookresearch/open_lth) trains a pruned network as a
``PrunedModel``: the masks are buffers, and every ``forward`` first multiplies
each mask into its weight (``param.data *= mask``); the optimizer is a plain
``torch.optim.Adam`` over all parameters. This script does the same work as
``lth-jax run --config preset:lenet300_100_mnist`` with the benchmark's
overrides, the PyTorch way, one training after another:

* LeNet-300-100 (784-300-100-10, ReLU; Glorot-normal kernels, zero biases),
  batch 60, Adam 1.2e-3, ``--steps`` steps per training, a fresh random order
  of the training set each epoch (indexing tensors in memory: no DataLoader);
* evaluation of the validation and test sets (batches of 1,000, no gradients)
  every ``--eval-every`` steps; the mean training loss over the same chunk;
* IMP: round 0 trains ``--trials`` dense networks; each later round prunes
  20% of each hidden layer's and 10% of the output layer's remaining weights
  by magnitude (layerwise) from the last round's ticket, rewinds to the
  initialization and trains each arm: ``ticket`` (the mask, the init),
  ``reinit`` (the mask, a new init), ``random_mask`` (a random mask with the
  ticket's per-layer counts, the init);
* the model and mask saved (``torch.save``) at the end of each training.

The data is read from the ``.npz`` that ``mnist_data.py`` writes (the same
images lth-jax reads through TFDS): the first ``--val`` images of a fixed
permutation of the training images are the validation set. ``--threads``
intra-op threads (default: the cores this process may use).

Run as a script in its own process (the benchmark times the whole process)::

    python experiments/bench/torch_peer.py DATA.npz --out peer.json [--trials 8] [--steps 2000]

It writes the counts and the seconds (import and data, training, evaluation,
saving) to ``--out`` as JSON.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

LAYERS = (784, 300, 100, 10)
ARMS = ("ticket", "reinit", "random_mask")


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="the .npz of mnist_data.py")
    p.add_argument("--out", required=True, help="JSON output file")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2, help="pruning rounds after round 0")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--val", type=int, default=5000, help="validation images held out")
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--eval-batch", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1.2e-3)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def _lenet(torch):
    """open_lth's ``mnist_lenet_300_100`` layout: hidden Linear layers, ReLU, an output layer."""
    nn = torch.nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_layers = nn.ModuleList(
                nn.Linear(a, b) for a, b in zip(LAYERS[:-2], LAYERS[1:-1])
            )
            self.fc = nn.Linear(LAYERS[-2], LAYERS[-1])

        def forward(self, x):
            x = x.view(x.size(0), -1)
            for layer in self.fc_layers:
                x = torch.relu(layer(x))
            return self.fc(x)

    return LeNet


def _pruned(torch, model, mask):
    """open_lth's ``PrunedModel``: the mask multiplied into the weights on every forward."""

    class PrunedModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.names = list(mask)
            for k, v in mask.items():
                self.register_buffer("mask_" + k.replace(".", "___"), v.float())
            self._apply_mask()

        def _apply_mask(self):
            for name, param in self.model.named_parameters():
                key = "mask_" + name.replace(".", "___")
                if hasattr(self, key):
                    param.data *= getattr(self, key)

        def forward(self, x):
            self._apply_mask()
            return self.model(x)

    return PrunedModel()


def _init(torch, LeNet, seed):
    torch.manual_seed(seed)
    m = LeNet()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear):
            torch.nn.init.xavier_normal_(mod.weight)
            torch.nn.init.zeros_(mod.bias)
    return {k: v.clone() for k, v in m.state_dict().items()}


def _weights(state):
    return [k for k in state if k.endswith("weight")]


def _prune(torch, trained, mask):
    """Layerwise magnitude pruning: 20% of each hidden layer's alive weights, 10% of the head's."""
    new = {}
    for k, m in mask.items():
        rate = 0.1 if k.startswith("fc.") else 0.2
        alive = int(m.sum())
        drop = int(round(rate * alive))
        w = torch.where(m.bool(), trained[k].abs(), torch.full_like(trained[k], float("inf")))
        order = torch.argsort(w.flatten(), stable=True)
        flat = m.flatten().clone()
        flat[order[:drop]] = 0
        new[k] = flat.view_as(m)
    return new


def _random_like(torch, mask, gen):
    out = {}
    for k, m in mask.items():
        flat = torch.zeros(m.numel())
        flat[torch.randperm(m.numel(), generator=gen)[: int(m.sum())]] = 1
        out[k] = flat.view_as(m)
    return out


class _Trainer:
    """Trains one masked network with Adam; counts seconds in training, evaluation and saving."""

    def __init__(self, torch, LeNet, data, args, save_dir):
        self.torch, self.LeNet, self.args, self.save_dir = torch, LeNet, args, save_dir
        self.train_x, self.train_y, self.evals = data
        self.seconds = {"train": 0.0, "eval": 0.0, "save": 0.0}
        self.trainings = 0
        self.eval_examples = 0

    def _evaluate(self, model):
        torch = self.torch
        out = {}
        model.eval()
        with torch.no_grad():
            for name, (x, y) in self.evals.items():
                loss, correct = 0.0, 0
                for i in range(0, x.shape[0], self.args.eval_batch):
                    logits = model(x[i : i + self.args.eval_batch])
                    yb = y[i : i + self.args.eval_batch]
                    loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
                    correct += int((logits.argmax(1) == yb).sum())
                out[name] = (loss / x.shape[0], correct / x.shape[0])
                self.eval_examples += x.shape[0]
        model.train()
        return out

    def train(self, init, mask, seed, tag):
        """One training from ``init`` under ``mask``; returns the trained state."""
        torch, a = self.torch, self.args
        t = time.perf_counter()
        net = self.LeNet()
        net.load_state_dict(init)
        model = _pruned(torch, net, mask)
        opt = torch.optim.Adam(model.parameters(), lr=a.lr)
        gen = torch.Generator().manual_seed(seed)
        n = self.train_x.shape[0]
        per_epoch = n // a.batch
        perm, pos = torch.randperm(n, generator=gen), 0
        chunk_loss = torch.zeros(())
        curve = []
        train_s = 0.0
        for step in range(1, a.steps + 1):
            if pos == per_epoch:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos * a.batch : (pos + 1) * a.batch]
            pos += 1
            loss = torch.nn.functional.cross_entropy(model(self.train_x[idx]), self.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            chunk_loss += loss.detach()
            if step % a.eval_every == 0 or step == a.steps:
                e = time.perf_counter()
                train_s += e - t
                curve.append((step, float(chunk_loss) / a.eval_every, self._evaluate(model)))
                chunk_loss = torch.zeros(())
                t = time.perf_counter()
                self.seconds["eval"] += t - e
        train_s += time.perf_counter() - t
        self.seconds["train"] += train_s
        t = time.perf_counter()
        model._apply_mask()
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        torch.save({"model": state, "mask": mask}, os.path.join(self.save_dir, f"{tag}.pt"))
        self.seconds["save"] += time.perf_counter() - t
        self.trainings += 1
        self.last_curve = curve
        return state


def _data(torch, path, n_val):
    d = np.load(path)
    x = d["train_x"].reshape(len(d["train_x"]), -1).astype(np.float32) / np.float32(255)
    y = d["train_y"].astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    tx = d["test_x"].reshape(len(d["test_x"]), -1).astype(np.float32) / np.float32(255)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    evals = {"val": (t(x[val]), t(y[val])), "test": (t(tx), t(d["test_y"].astype(np.int64)))}
    return t(x[tr]), t(y[tr]), evals


def run(args) -> dict:
    """The whole IMP run; the counts and seconds."""
    t_import = time.perf_counter()
    import torch

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    LeNet = _lenet(torch)
    data = _data(torch, args.data, args.val)
    setup_s = time.perf_counter() - T_START
    arms = [a for a in args.arms.split(",") if a]
    t_loop = time.perf_counter()
    with tempfile.TemporaryDirectory() as save_dir:
        tr = _Trainer(torch, LeNet, data, args, save_dir)
        gen = torch.Generator().manual_seed(1)
        inits = [_init(torch, LeNet, 1000 + t) for t in range(args.trials)]
        masks = [{k: torch.ones_like(s[k]) for k in _weights(s)} for s in inits]
        trained = [tr.train(inits[t], masks[t], t, f"r0_t{t}") for t in range(args.trials)]
        for r in range(1, args.rounds + 1):
            masks = [_prune(torch, trained[t], masks[t]) for t in range(args.trials)]
            next_trained = list(trained)
            for arm in arms:
                for t in range(args.trials):
                    seed = 100 * r + t
                    init, mask = inits[t], masks[t]
                    if arm == "reinit":
                        init = _init(torch, LeNet, 10_000 * r + t)
                    elif arm == "random_mask":
                        mask = _random_like(torch, mask, gen)
                    out = tr.train(init, mask, seed, f"r{r}_{arm}_t{t}")
                    if arm == "ticket":
                        next_trained[t] = out
            trained = next_trained
    loop_s = time.perf_counter() - t_loop
    return {
        "torch": torch.__version__,
        "threads": threads,
        "trials": args.trials,
        "rounds": args.rounds + 1,
        "arms": arms,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "batch": args.batch,
        "trainings": tr.trainings,
        "trial_steps": tr.trainings * args.steps,
        "eval_examples": tr.eval_examples,
        "data": {
            "train": int(data[0].shape[0]),
            "val": int(data[2]["val"][0].shape[0]),
            "test": int(data[2]["test"][0].shape[0]),
        },
        "import_s": t_loop - t_import,
        "setup_s": setup_s,
        "loop_s": loop_s,
        "train_s": tr.seconds["train"],
        "eval_s": tr.seconds["eval"],
        "save_s": tr.seconds["save"],
        "final_curve": tr.last_curve,
        "trial_steps_per_s_loop": tr.trainings * args.steps / loop_s,
    }


def main(argv=None) -> int:
    args = _parse(argv)
    res = run(args)
    res["process_s"] = time.perf_counter() - T_START
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
