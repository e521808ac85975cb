"""The lottery engine: rounds, rewinding, arms, devices, resume, compilation."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_config

from lth_jax import config as config_lib
from lth_jax import lottery, masks, rng, workdir
from lth_jax.curves import early_stop


@pytest.fixture(scope="module")
def exp():
    return lottery.Experiment(tiny_config())


@pytest.fixture(scope="module")
def two_rounds(exp):
    s0, r0 = exp.dense_round()
    s1, r1 = exp.prune_round(s0, 1)
    return s0, s1, r0, r1


def _kernel_counts(mask, trial):
    return {
        p: int(np.sum(np.asarray(m)[trial]))
        for p, m in masks.named_leaves(mask)
        if p.endswith("kernel")
    }


def test_densities_follow_the_rate_per_layer(exp, two_rounds):
    s0, s1, _, r1 = two_rounds
    sizes = {p: int(np.prod(np.shape(m)[1:])) for p, m in masks.named_leaves(s0["ticket"]["mask"])}
    for t in range(2):
        counts = _kernel_counts(s1["ticket"]["mask"], t)
        for p, n in counts.items():
            rate = 0.1 if p.startswith("head") else 0.5
            assert abs(n - round((1 - rate) * sizes[p])) <= 1, p
    # The random-mask control keeps the ticket's per-layer counts.
    for t in range(2):
        assert _kernel_counts(s1["arms"]["random_mask"]["mask"], t) == _kernel_counts(
            s1["ticket"]["mask"], t
        )
    rec = {(r["arm"], r["trial"]): r for r in r1}
    assert rec[("ticket", 0)]["density"] == pytest.approx(
        float(masks.density(jax.tree.map(lambda m: m[0], s1["ticket"]["mask"])))
    )


def test_rewound_params_equal_mask_times_saved(exp, two_rounds):
    _, s1, _, _ = two_rounds
    arms, params, bs, mask, k, fixed = exp.round_inputs(s1, 2)
    assert arms == ["ticket", "reinit", "random_mask"] and k == 0 and fixed is None
    data_keys = jnp.zeros((6, 2), jnp.uint32)
    runs = exp.engine.new_runs(params, bs, mask, data_keys, data_keys)
    saved = s1["rewind"]["params"]  # rewind_step=0: the initialization
    ticket_start = jax.tree.map(lambda a: a[:2], runs.params)
    ticket_mask = jax.tree.map(lambda a: a[:2], mask)
    expected = masks.apply(ticket_mask, saved)
    for a, b in zip(jax.tree.leaves(ticket_start), jax.tree.leaves(expected)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # reinit: same mask as the ticket, different weights.
    reinit_start = jax.tree.map(lambda a: a[2:4], runs.params)
    k0 = reinit_start["Dense_0"]["kernel"]
    assert np.all(np.asarray(k0)[~np.asarray(ticket_mask["Dense_0"]["kernel"])] == 0)
    assert not np.array_equal(np.asarray(k0), np.asarray(expected["Dense_0"]["kernel"]))


def test_rewind_to_step_k_saves_the_step_k_weights():
    c = tiny_config(**{"imp.rewind_step": 50, "imp.rounds": 1, "num_trials": 1})
    e = lottery.Experiment(c)
    s0, _ = e.dense_round()
    init = s0["init"]["params"]["Dense_0"]["kernel"]
    rewind = s0["rewind"]["params"]["Dense_0"]["kernel"]
    final = s0["ticket"]["params"]["Dense_0"]["kernel"]
    assert not np.array_equal(init, rewind) and not np.array_equal(rewind, final)
    s1, r1 = e.prune_round(s0, 1)
    assert all(r["start_step"] == 50 and r["train_steps"] == 50 for r in r1)


def test_arms_share_data_order(exp):
    """Identical starting points in two arms train to identical weights."""
    s0, _ = exp.dense_round()
    p, bs = s0["init"]["params"], s0["init"]["batch_stats"]
    m = s0["ticket"]["mask"]
    stack = lambda tree: jax.tree.map(lambda a: jnp.concatenate([a, a]), tree)
    # Arm-major: runs 0-1 are "arm A" trials 0-1, runs 2-3 are "arm B" trials 0-1.
    out = exp._fit(stack(p), stack(bs), stack(m), 1, 0)
    params, curves = out.params, out.curves
    for leaf in jax.tree.leaves(params):
        assert np.array_equal(leaf[:2], leaf[2:])
    assert not np.array_equal(curves.val_loss[0], curves.val_loss[1])  # trials differ
    assert np.array_equal(curves.val_loss[:2], curves.val_loss[2:])


def test_early_stop_step_is_argmin_of_recorded_val_losses(two_rounds):
    _, _, r0, r1 = two_rounds
    for r in r0 + r1:
        i = int(np.argmin(r["val_loss_curve"]))
        assert r["best_val_step"] == r["eval_steps"][i]
        assert r["test_accuracy_at_best_val"] == r["test_accuracy_curve"][i]
        assert r["best_val_loss"] == min(r["val_loss_curve"])
    assert early_stop([2.0, float("nan"), 1.0, 1.0], [5, 6, 7, 8]) == (2, 7)


def test_early_stop_on_validation_accuracy():
    """train.early_stop_metric=val_accuracy: the first step of the highest validation accuracy."""
    c = tiny_config(**{"imp.rounds": 0, "train.early_stop_metric": "val_accuracy"})
    (rec,) = [r for r in lottery.Experiment(c).dense_round()[1] if r["trial"] == 0]
    acc = rec["val_accuracy_curve"]
    i = int(np.argmax(acc))
    assert rec["best_val_step"] == rec["eval_steps"][i]
    assert rec["test_accuracy_at_best_val"] == rec["test_accuracy_curve"][i]
    assert rec["final_val_accuracy"] == acc[-1]
    assert early_stop([0.5, float("nan"), 0.7, 0.7], [5, 6, 7, 8], "val_accuracy") == (2, 7)
    assert early_stop([0.5, 0.7], [1, 2]) == (0, 1)  # the same curve as a loss: the minimum
    c.train.early_stop_metric = "test_accuracy"
    with pytest.raises(config_lib.ConfigError, match="early_stop_metric"):
        config_lib.validate(c)


def test_masks_change_between_rounds_without_recompiling(exp, two_rounds):
    before = exp.engine.compilations
    s0, s1, _, _ = two_rounds
    s2, _ = exp.prune_round(s1, 2)
    assert exp.engine.compilations == before  # round 2: new masks, same program
    assert float(masks.density(jax.tree.map(lambda m: m[0], s2["ticket"]["mask"]))) < float(
        masks.density(jax.tree.map(lambda m: m[0], s1["ticket"]["mask"]))
    )


def test_pruned_weights_stay_zero_after_training(two_rounds):
    _, s1, _, _ = two_rounds
    for arm in ("reinit", "random_mask"):
        for m, p in zip(
            jax.tree.leaves(s1["arms"][arm]["mask"]), jax.tree.leaves(s1["arms"][arm]["params"])
        ):
            assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return f.read()


def test_sharded_over_4_devices_equals_1_device(tmp_path):
    assert len(jax.devices()) >= 4, "conftest asks XLA for 4 CPU devices"
    one = lottery.run(tiny_config(num_devices=1, **{"imp.rounds": 1}), str(tmp_path / "one"))
    four = lottery.run(tiny_config(num_devices=4, **{"imp.rounds": 1}), str(tmp_path / "four"))
    assert one == four


def test_resume_between_rounds_gives_identical_metrics(tmp_path):
    full = tmp_path / "full"
    lottery.run(tiny_config(), str(full))
    part = tmp_path / "part"
    c = tiny_config()
    # Interrupt after round 1 by running a config that stops there, then resume.
    c1 = tiny_config(**{"imp.rounds": 1})
    lottery.run(c1, str(part))
    cfg_path = part / "config.json"
    cfg_path.write_text(json.dumps(workdir.config_to_json(c), indent=2, sort_keys=True))
    lottery.run(c, str(part))
    assert _metrics(full) == _metrics(part)
    recs = [json.loads(line) for line in _metrics(full).splitlines()]
    assert sorted({r["round"] for r in recs}) == [0, 1, 2]
    assert {r["arm"] for r in recs if r["round"] > 0} == {"ticket", "reinit", "random_mask"}


def test_finished_rounds_are_not_repeated(tmp_path):
    c = tiny_config(**{"imp.rounds": 1})
    lottery.run(c, str(tmp_path))
    before = _metrics(tmp_path)
    mtime = os.path.getmtime(tmp_path / "checkpoints" / "1")
    lottery.run(c, str(tmp_path))
    assert _metrics(tmp_path) == before
    assert os.path.getmtime(tmp_path / "checkpoints" / "1") == mtime


@pytest.mark.parametrize("mode", ["lr", "finetune"])
def test_lr_rewinding_and_finetuning_start_from_trained_weights(mode):
    c = tiny_config(
        **{
            "imp.rewind": mode,
            "imp.rewind_step": 50,
            "num_trials": 1,
            "arms": ("ticket", "random_mask"),  # reinit is not defined with lr/finetune
        }
    )
    e = lottery.Experiment(c)
    s0, _ = e.dense_round()
    arms, params, _, _, k, fixed = e.round_inputs(s0, 1)
    trained = s0["ticket"]["params"]["Dense_0"]["kernel"]
    assert np.array_equal(np.asarray(params["Dense_0"]["kernel"][0]), np.asarray(trained[0]))
    assert k == 50
    assert fixed == (99 if mode == "finetune" else None)


def test_keys_depend_on_seed_trial_round_purpose(exp):
    k = exp.keys(1, "data")
    assert np.array_equal(np.asarray(k[1]), np.asarray(rng.derive(0, 1, 1, "data")))


MULTIHOST = r"""
import os, sys, json
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2])
)
sys.path.insert(0, sys.argv[4])
from test_lottery import tiny_config
from lth_jax import lottery
assert jax.device_count() == 2, jax.devices()
lottery.run(tiny_config(num_devices=0, **{"imp.rounds": 1}), sys.argv[3])
"""


def test_two_processes_give_the_same_metrics_as_one(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    script = tmp_path / "mh.py"
    script.write_text(MULTIHOST)
    here = os.path.dirname(os.path.abspath(__file__))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), f"127.0.0.1:{port}", str(i), str(tmp_path / "mh"), here],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    single = lottery.run(tiny_config(num_devices=2, **{"imp.rounds": 1}), str(tmp_path / "one"))
    assert _metrics(tmp_path / "mh") == _metrics(tmp_path / "one")
    assert len(single) == 2 + 6
