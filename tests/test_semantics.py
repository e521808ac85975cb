"""Rules whose meaning is easy to get wrong: one-shot densities, fine-tuning's rate,
the controls of lr/finetune retraining, and batch norm on the instability path."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_config as _tiny

from lth_jax import config as config_lib
from lth_jax import instability, lottery, masks, parallel, pruning
from lth_jax import workdir as wd
from lth_jax.data import pipeline
from lth_jax.models.vgg import VGG
from lth_jax.optim import FixedLR
from lth_jax.train import Engine


def tiny_config(**overrides):
    base = {"arms": ("ticket",), "imp.rounds": 1, "imp.prune_rate": 0.2}
    return _tiny(**{**base, **overrides})


def fake_round0(exp):
    """A round-0 state without training: every trial's initialization stands for its
    trained dense network (enough for :meth:`Experiment.round_inputs`)."""
    params, bs = exp.engine.init(exp.keys(0, "init"))
    perturbed = jax.tree.map(lambda p: p * 1.5 + 0.01, params)  # "trained": not the init
    mask = jax.vmap(masks.ones_like)(params)
    return {
        "init": {"params": params, "batch_stats": bs},
        "rewind": {"params": params, "batch_stats": bs},
        "ticket": {"mask": mask, "params": perturbed, "batch_stats": bs},
    }


# ----------------------------------------------------------------------------- one-shot


SHAPES = {
    "Dense_0": {"bias": np.zeros(32), "kernel": np.zeros((40, 32))},
    "Dense_1": {"bias": np.zeros(16), "kernel": np.zeros((32, 16))},
    "head": {"bias": np.zeros(10), "kernel": np.zeros((16, 10))},
}
SIZES = {"Dense_0/kernel": 1280, "Dense_1/kernel": 512, "head/kernel": 160}


@pytest.mark.parametrize("density", [0.5, 0.1, 0.02])
@pytest.mark.parametrize("rates", [(("head", 0.1),), (("head", 0.1), ("Dense_0", 0.3))])
def test_one_shot_rates_are_imp_at_a_real_number_of_rounds(density, rates):
    shot = pruning.one_shot_rates(SHAPES, density, 0.2, rates)
    own = dict(rates)
    L = shot.rounds
    assert L > 0
    # Every layer at (1 - its rate)^L, and the prunable weights as a whole at density.
    got = dict(shot.layer_rates)
    for pattern, r in own.items():
        assert got[pattern] == pytest.approx(1 - (1 - r) ** L, rel=1e-12)
    assert shot.rate == pytest.approx(1 - 0.8**L, rel=1e-12)
    keep = {p: 1 - next((got[q] for q in own if q in p), shot.rate) for p in SIZES}
    overall = sum(SIZES[p] * keep[p] for p in SIZES) / sum(SIZES.values())
    assert overall == pytest.approx(density, rel=1e-12)


def test_one_shot_without_layer_rates_is_every_layer_at_the_density():
    shot = pruning.one_shot_rates(SHAPES, 0.2, 0.2)
    assert shot.rate == pruning.rate_for_density(1.0, 0.2) and shot.layer_rates is None
    assert pruning.one_shot_rates(SHAPES, 1.0, 0.2, (("head", 0.1),)).layer_rates == (
        ("head", 0.0),
    )


def test_one_shot_density_out_of_reach_is_an_error():
    # The head at rate 0 keeps 160 of 1952 weights: 5% overall cannot be reached.
    with pytest.raises(ValueError, match="out of reach"):
        pruning.one_shot_rates(SHAPES, 0.05, 0.2, (("head", 0.0),))
    with pytest.raises(config_lib.ConfigError, match="imp.one_shot_density"):
        lottery.Experiment(
            tiny_config(**{"imp.one_shot_density": 0.05, "imp.layer_rates": (("head", 0.0),)})
        )


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_one_shot_run_lands_at_imp_per_layer_densities(scope):
    """imp.one_shot_density=0.1 with the head at its own 0.1: the head ends near 0.9^L
    (about 0.37 here), not at 0.9 as one prune at the head's own rate would leave it."""
    d = 0.1
    c = tiny_config(**{"imp.one_shot_density": d, "imp.prune_rate": 0.2, "imp.scope": scope})
    assert tuple(map(tuple, c.imp.layer_rates)) == (("head", 0.1),)
    exp = lottery.Experiment(c)
    s0, _ = exp.dense_round()
    _, recs = exp.prune_round(s0, 1)
    L = pruning.one_shot_rates(SHAPES, d, 0.2, (("head", 0.1),)).rounds
    for rec in recs:
        dens = {p: v for p, v in rec["layer_density"].items() if p.endswith("kernel")}
        assert abs(dens["head/kernel"] - 0.9**L) <= 1 / SIZES["head/kernel"]
        hidden = ("Dense_0/kernel", "Dense_1/kernel")
        if scope == "layerwise":
            for p in hidden:
                assert abs(dens[p] - 0.8**L) <= 1 / SIZES[p]
        pool = sum(dens[p] * SIZES[p] for p in hidden) / sum(SIZES[p] for p in hidden)
        assert abs(pool - 0.8**L) <= 2 / sum(SIZES[p] for p in hidden)
        alive = sum(dens[p] * SIZES[p] for p in SIZES)
        assert abs(alive - d * sum(SIZES.values())) <= len(SIZES)


# ----------------------------------------------------------------------------- fine-tuning


def test_finetune_at_a_vanishing_last_rate_is_refused():
    # Linear decay ends at 1/steps of the base rate: refused from 1,000 steps on.
    for schedule in ("cosine", "linear"):
        over = {"optimizer.schedule": schedule, "train.steps": 2000}
        c = tiny_config(**{"imp.rewind": "finetune", **over})
        with pytest.raises(config_lib.ConfigError, match=r"imp\.finetune_lr") as e:
            config_lib.validate(c)
        assert "last learning rate" in str(e.value) and "\n" not in str(e.value)
    # A step decay to 1e-4 of the base rate too; to 1e-2 (Renda et al.'s) is fine.
    over = {"imp.rewind": "finetune", "optimizer.schedule": "step"}
    c = tiny_config(
        **over, **{"optimizer.step_boundaries": (0.3, 0.6), "optimizer.step_factor": 0.01}
    )
    with pytest.raises(config_lib.ConfigError, match=r"imp\.finetune_lr"):
        config_lib.validate(c)
    config_lib.validate(tiny_config(**over, **{"optimizer.step_boundaries": (0.3, 0.6)}))
    # An explicit rate makes any schedule fine; the constant schedule needs none.
    config_lib.validate(
        tiny_config(**{**over, "optimizer.schedule": "cosine"}, **{"imp.finetune_lr": 1e-4})
    )
    config_lib.validate(tiny_config(**{"imp.rewind": "finetune"}))


@pytest.mark.parametrize("rewind", ["weights", "lr"])
def test_finetune_lr_with_another_rewind_is_refused(rewind):
    with pytest.raises(config_lib.ConfigError, match="imp.finetune_lr is read only"):
        config_lib.validate(tiny_config(**{"imp.rewind": rewind, "imp.finetune_lr": 0.01}))


def test_finetune_trains_at_the_explicit_rate():
    c = tiny_config(
        **{"imp.rewind": "finetune", "imp.finetune_lr": 3e-4, "optimizer.schedule": "cosine"}
    )
    exp = lottery.Experiment(c)
    *_, fixed = exp.round_inputs(fake_round0(exp), 1)
    assert fixed == FixedLR(3e-4)
    exp.config = tiny_config(**{"imp.rewind": "finetune"})
    *_, fixed = exp.round_inputs(fake_round0(exp), 1)
    assert fixed == 99  # unset: the schedule's rate at the last step


def test_a_fixed_rate_reaches_the_optimizer_without_recompiling():
    """Training at FixedLR(x) under a cosine schedule is bit for bit training under a
    constant schedule at x; a second rate reuses the compiled chunk."""
    c = tiny_config(**{"optimizer.schedule": "cosine", "optimizer.learning_rate": 0.01})
    exp = lottery.Experiment(c)
    const = config_lib.default_config().optimizer
    const.learning_rate = 2e-3
    other = Engine(exp.model, exp.dataset, const, steps=100, batch_size=50, eval_every=50)
    other.progress = exp.engine.progress = False
    params, bs = exp.engine.init(exp.keys(0, "init"))
    mask = jax.vmap(masks.ones_like)(params)
    keys = exp.keys(0, "data")
    fit = lambda eng, fixed: eng.fit(params, bs, mask, keys, keys, 50, fixed_lr_step=fixed)
    got = fit(exp.engine, FixedLR(2e-3))
    want = fit(other, None)
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    schedule = fit(exp.engine, None)
    assert not np.array_equal(
        np.asarray(schedule.params["Dense_0"]["kernel"]),
        np.asarray(got.params["Dense_0"]["kernel"]),
    )
    before = exp.engine.compilations
    fit(exp.engine, FixedLR(5e-3))
    assert exp.engine.compilations == before


def test_data_order_does_not_depend_on_the_chunks():
    """A run carries its epoch's order from chunk to chunk: trained in chunks that start
    mid-epoch and cross epoch boundaries, it is bit for bit the run trained in one chunk,
    from step 0 and from a step inside an epoch."""
    exp = lottery.Experiment(tiny_config())
    assert exp.engine.steps_per_epoch == 70  # chunks of 30 start mid-epoch and cross epochs
    opt = exp.config.optimizer
    params, bs = exp.engine.init(exp.keys(0, "init"))
    mask = jax.vmap(masks.ones_like)(params)
    keys = exp.keys(0, "data")

    def fit(eval_every, start):
        eng = Engine(exp.model, exp.dataset, opt, steps=180, batch_size=50, eval_every=eval_every)
        eng.progress = False
        return eng.fit(params, bs, mask, keys, keys, start_step=start).params

    same = lambda a, b: all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
    for start, whole in ((0, 180), (90, 90)):
        assert same(fit(30, start), fit(whole, start))
    # A new run starting mid-epoch draws the stated order; a carried one is used as it is.
    eng = Engine(exp.model, exp.dataset, opt, steps=180, batch_size=50, eval_every=30)
    fresh = lambda: eng.new_runs(params, bs, mask, keys, keys)
    stated = jax.vmap(lambda k: pipeline.epoch_permutation(k, 90 // 70, eng.n_train))(keys)
    chunk = lambda runs: eng.chunk(runs, 90, jnp.float32(-1))[0].params
    given = chunk(fresh()._replace(perm=jnp.array(stated)))  # runs are donated
    assert same(chunk(fresh()), given)
    assert not same(chunk(fresh()._replace(perm=jnp.roll(stated, 1, axis=1))), given)


# ----------------------------------------------------------------------------- controls


@pytest.mark.parametrize("rewind", ["lr", "finetune"])
def test_reinit_with_lr_or_finetune_retraining_is_refused(rewind):
    c = tiny_config(**{"imp.rewind": rewind, "arms": ("ticket", "reinit", "random_mask")})
    with pytest.raises(config_lib.ConfigError, match="'reinit' is not defined") as e:
        config_lib.validate(c)
    assert "imp.rewind=weights" in str(e.value) and "\n" not in str(e.value)
    config_lib.validate(tiny_config(**{"imp.rewind": rewind, "arms": ("ticket", "random_mask")}))


def test_random_mask_with_lr_rewinding_prunes_the_trained_network_at_random():
    c = tiny_config(
        **{"imp.rewind": "lr", "imp.rewind_step": 50, "arms": ("ticket", "random_mask")}
    )
    exp = lottery.Experiment(c)
    s0 = fake_round0(exp)
    arms, params, _, mask, k, _ = exp.round_inputs(s0, 1)
    t = len(exp.trials)
    part = lambda tree, j: parallel.take_runs(tree, j * t, (j + 1) * t)
    rand, ticket = part(mask, arms.index("random_mask")), part(mask, arms.index("ticket"))
    trained = s0["ticket"]["params"]["Dense_0"]["kernel"]
    got = part(params, arms.index("random_mask"))["Dense_0"]["kernel"]
    assert k == 50 and np.array_equal(np.asarray(got), np.asarray(trained))
    counts = lambda m: {p: np.asarray(v).sum(axis=tuple(range(1, np.ndim(v)))).tolist()
                        for p, v in masks.named_leaves(m)}  # fmt: skip
    assert counts(rand) == counts(ticket)
    assert not np.array_equal(
        np.asarray(rand["Dense_0"]["kernel"]), np.asarray(ticket["Dense_0"]["kernel"])
    )


# ----------------------------------------------------------------------------- batch norm


class _Images:
    """A tiny image dataset (8x8x3, 4 classes) for a batch-norm network."""

    def __init__(self):
        r = np.random.default_rng(0)
        make = lambda n: (r.normal(size=(n, 8, 8, 3)).astype(np.float32), r.integers(0, 4, n))
        self.train_x, self.train_y = make(64)
        self.val_x, self.val_y = make(32)
        self.test_x, self.test_y = make(32)


@pytest.fixture(scope="module")
def bn_pair():
    """Two copies of a small VGG with batch norm trained from one init with different data."""
    opt = config_lib.base_config().optimizer
    opt.name, opt.learning_rate = "momentum", 0.05
    model = VGG(plan=(4, "M", 8), num_classes=4, batch_norm=True)
    engine = Engine(model, _Images(), opt, steps=20, batch_size=16, eval_every=10,
                    eval_batch_size=32, progress=False)  # fmt: skip
    params, bs = engine.init(jnp.tile(jax.random.PRNGKey(0)[None], (2, 1)))
    mask = jax.vmap(masks.ones_like)(params)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    out = engine.fit(params, bs, mask, keys, keys)
    a = jax.tree.map(lambda x: x[:1], (out.params, out.batch_stats))
    b = jax.tree.map(lambda x: x[1:], (out.params, out.batch_stats))
    return engine, a, b


def test_recomputed_statistics_are_the_mean_of_batch_statistics(bn_pair):
    engine, (pa, ba), (pb, bb) = bn_pair
    half = jnp.float32(0.5)
    params = instability.interpolate(pa, pb, half)
    got = instability.recompute_batch_stats(engine, params, instability.interpolate(ba, bb, half))
    # By hand for the first batch norm: the conv's outputs, batch by batch (4 of 16).
    conv = nn.Conv(4, (3, 3), padding="SAME")
    x = engine.dataset.train_x
    means, variances = [], []
    for i in range(4):
        y = conv.apply(
            {"params": jax.tree.map(lambda v: v[0], params["Conv_0"])}, x[16 * i : 16 * (i + 1)]
        )
        means.append(jnp.mean(y, axis=(0, 1, 2)))
        variances.append(jnp.var(y, axis=(0, 1, 2)))
    np.testing.assert_allclose(
        got["BatchNorm_0"]["mean"][0], np.mean(means, 0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        got["BatchNorm_0"]["var"][0], np.mean(variances, 0), rtol=1e-4, atol=1e-6
    )
    # ... and not the interpolated statistics.
    lerp = instability.interpolate(ba, bb, half)
    assert not np.allclose(got["BatchNorm_1"]["var"], lerp["BatchNorm_1"]["var"], rtol=1e-3)


def test_barrier_endpoints_use_each_copy_with_recomputed_statistics(bn_pair):
    engine, (pa, ba), (pb, bb) = bn_pair
    alphas = [0.0, 0.5, 1.0]
    errors = instability.interpolation_errors(engine, pa, ba, pb, bb, alphas)
    for params, bs, j in ((pa, ba, 0), (pb, bb, 2)):
        _, acc = engine.evaluate(params, instability.recompute_batch_stats(engine, params, bs))
        assert errors[0, j] == 1.0 - float(np.asarray(acc, np.float64)[0])
    # "interpolate" evaluates the copies with their own running statistics.
    old = instability.interpolation_errors(engine, pa, ba, pb, bb, alphas, "interpolate")
    assert old[0, 0] == 1.0 - float(np.asarray(engine.evaluate(pa, ba)[1], np.float64)[0])


def test_networks_without_batch_norm_keep_their_statistics():
    exp = lottery.Experiment(tiny_config())
    params, bs = exp.engine.init(exp.keys(0, "init"))
    assert instability.recompute_batch_stats(exp.engine, params, bs) is bs


# ----------------------------------------------------------------------------- old workdirs


def test_old_config_json_gains_the_new_keys_at_their_defaults():
    saved = config_lib.base_config().to_dict()
    del saved["imp"]["finetune_lr"], saved["instability"]["batch_norm"]
    new = config_lib.upgrade_json(saved)
    assert new["imp"]["finetune_lr"] is None and new["instability"]["batch_norm"] == "recompute"
    bad = tiny_config(**{"instability.batch_norm": "average", "kind": "instability"})
    with pytest.raises(config_lib.ConfigError, match="instability.batch_norm must be one of"):
        config_lib.validate(bad)
    with pytest.raises(config_lib.ConfigError, match="read only by kind 'instability'"):
        config_lib.validate(tiny_config(**{"instability.batch_norm": "interpolate"}))


def test_an_old_grasp_workdir_reads_as_temperature_1_and_refuses_the_new_default(tmp_path):
    saved = wd.config_to_json(config_lib.base_config())
    del saved["pai"]["grasp_temperature"]  # written before the key existed
    assert config_lib.upgrade_json(saved)["pai"]["grasp_temperature"] == 200.0  # no GraSP arm
    saved["arms"] = ["ticket", "grasp_reinit"]
    assert config_lib.upgrade_json(saved)["pai"]["grasp_temperature"] == 1.0  # what it ran with
    del saved["arms"]  # no arms key: the default arms, none of them GraSP's
    assert config_lib.upgrade_json(saved)["pai"]["grasp_temperature"] == 200.0
    saved["arms"] = ["ticket", "grasp", "grasp_shuffled"]
    wd.write_json_atomic(str(tmp_path / "config.json"), saved)
    new = config_lib.base_config()
    new.arms = ("ticket", "grasp", "grasp_shuffled")
    with pytest.raises(
        config_lib.ConfigError, match=r"pai\.grasp_temperature \(1\.0 -> 200\.0\)"
    ) as e:
        config_lib.check_drift(str(tmp_path), new)
    assert e.value.advice.startswith("--config.pai.grasp_temperature=1 resumes it; or use another")
    new.pai.grasp_temperature = 1.0  # resumed as it ran
    config_lib.check_drift(str(tmp_path), new)
    # A workdir whose config.json says temperature 1 itself: refused without the old-workdir hint.
    saved["pai"]["grasp_temperature"] = 1.0
    wd.write_json_atomic(str(tmp_path / "config.json"), saved)
    new.pai.grasp_temperature = 200.0
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.check_drift(str(tmp_path), new)
    assert e.value.differences == (("pai.grasp_temperature", 1.0, 200.0),)
    assert "before pai.grasp_temperature existed" not in str(e.value)
    assert e.value.advice == "use another --workdir, or --overwrite to discard it"
