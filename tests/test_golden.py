"""Golden runs: small experiments whose every record is pinned, bit for bit.

A refactor must not change a result. Each case below runs a small experiment
of one kind and compares every field of every record of its ``metrics.jsonl``
(accuracies, losses, curves, densities, early-stop steps) with the records in
``tests/golden/<case>.json``, exactly (float equality: JSON keeps every bit of a
float64).

When a change is *meant* to change results, regenerate the files and say why
in the commit message::

    python tests/test_golden.py
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from lth_jax import checks

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


def _lottery(**overrides):
    from lth_jax import config as config_lib

    c = config_lib.default_config()
    c.seed = 4242
    c.num_trials = 2
    c.progress = False
    c.train.steps = 600
    c.imp.rounds = 3
    for key, value in overrides.items():
        checks.set_value(c, key, value)
    return c


def _transfer():
    from lth_jax import transfer

    c = transfer.transfer_config()
    c.seed = 4242
    c.num_trials = 2
    c.progress = False
    c.dataset.classes = (0, 1, 2, 3, 4)
    c.model.kwargs.features = (16, 8)
    c.train.steps = 60
    c.train.eval_every = 20
    c.train.batch_size = 50
    c.imp.rounds = 1
    c.imp.prune_rate = 0.5
    c.target.classes = (5, 6, 7)
    c.target.train_sizes = (0.05, 60)
    c.finetune.steps = 40
    c.finetune.eval_every = 20
    c.finetune.batch_size = 50
    c.finetune.l2_sp = 0.01
    c.finetune.trainable = "all_but_first"
    c.finetune.freeze_layers = 1
    c.transfer.arms = (
        "scratch",
        "scratch+dropout",
        "pretrained",
        "pretrained+dropout+l2sp",
        "ticket_source",
        "ticket_source_reinit",
        "ticket_target",
        "random_mask",
    )
    return c


def _instability():
    c = _lottery(**{"train.steps": 200, "imp.rounds": 1, "arms": ("ticket", "random_mask")})
    c.kind = "instability"
    c.instability.num_points = 3
    return c


#: case name -> config factory. The lottery cases cover every rewinding mode,
#: both scopes, per-layer rates, one-shot pruning and all three arms.
CASES = {
    "lottery_default": lambda: _lottery(),
    "lottery_lr_global": lambda: _lottery(
        **{
            "train.steps": 400,
            "imp.rounds": 2,
            "imp.rewind": "lr",
            "imp.rewind_step": 100,
            "arms": ("ticket", "random_mask"),  # reinit is refused in lr/finetune modes
            "imp.scope": "global",
            "optimizer.schedule": "cosine",
        }
    ),
    "lottery_finetune_momentum": lambda: _lottery(
        **{
            "train.steps": 300,
            "imp.rounds": 2,
            "imp.rewind": "finetune",
            "arms": ("ticket", "random_mask"),
            "optimizer.name": "momentum",
            "optimizer.learning_rate": 0.05,
            "optimizer.weight_decay": 1e-4,
            "model.kwargs.dropout": 0.1,
        }
    ),
    "lottery_one_shot_rewind_k": lambda: _lottery(
        **{
            "train.steps": 300,
            "imp.rounds": 1,
            "imp.one_shot_density": 0.2,
            "imp.rewind_step": 100,
        }
    ),
    "instability": _instability,
    "transfer": _transfer,
}


def _run(name: str, workdir: str) -> list[dict]:
    import importlib

    config = CASES[name]()
    runner = importlib.import_module(f"lth_jax.{config.kind}")  # lottery, instability, transfer
    return runner.run(config, workdir)


def _golden(name: str) -> list[dict]:
    with open(os.path.join(GOLDEN_DIR, f"{name}.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", sorted(CASES))
def test_records_are_bit_identical_to_the_golden_run(name, tmp_path):
    records = _run(name, str(tmp_path / name))
    # Through JSON, as metrics.jsonl stores them (tuples become lists).
    got = json.loads(json.dumps(records, sort_keys=True))
    want = _golden(name)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == w, f"{name}: record {w.get('round', w.get('size_index'))}/{w['arm']} differs"
    with open(os.path.join(str(tmp_path / name), "metrics.jsonl")) as f:
        on_disk = [json.loads(line) for line in f if line.strip()]
    assert on_disk == want


if __name__ == "__main__":  # regenerate: python tests/test_golden.py [CASE ...]
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import conftest  # noqa: F401  - the same XLA device count as the tests

    os.makedirs(GOLDEN_DIR, exist_ok=True)
    for name in sys.argv[1:] or sorted(CASES):
        with tempfile.TemporaryDirectory() as d:
            recs = json.loads(json.dumps(_run(name, os.path.join(d, name)), sort_keys=True))
        with open(os.path.join(GOLDEN_DIR, f"{name}.json"), "w") as f:
            json.dump(recs, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {name}: {len(recs)} records")
