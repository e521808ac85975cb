"""Pruning at initialization (SNIP, GraSP, SynFlow) and the sanity checks of Frankle et al. 2021.

The score functions against hand implementations on tiny networks, the masks'
counts and tie rules, and the arms in a small run on MNIST-1D: records at the
ticket's densities, shuffles that keep per-layer counts, re-inits on fresh
weights, one compilation per shape.
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from tiny import kernels

from lth_jax import arms, lottery, masks, pruning, saliency
from lth_jax import config as config_lib
from lth_jax.checks import set_value
from lth_jax.models.vgg import VGG
from lth_jax.train import Engine

# ----------------------------------------------------------------------------- a tiny network


def _tiny():
    """A 6-5-3 ReLU network with biases, as a pure function, and 8 examples."""
    r = np.random.default_rng(0)
    params = {
        "Dense_0": {"bias": r.normal(size=5) * 0.1, "kernel": r.normal(size=(6, 5))},
        "head": {"bias": r.normal(size=3) * 0.1, "kernel": r.normal(size=(5, 3))},
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    x = jnp.asarray(r.normal(size=(8, 6)), jnp.float32)
    y = jnp.asarray(r.integers(0, 3, 8))
    return params, (x, y)


def _logits(p, x, activation=jax.nn.relu):
    bias = lambda layer: p[layer].get("bias", 0.0)
    h = activation(x @ p["Dense_0"]["kernel"] + bias("Dense_0"))
    return h @ p["head"]["kernel"] + bias("head")


def _loss(p, batch, activation=jax.nn.relu):
    x, y = batch
    logp = jax.nn.log_softmax(_logits(p, x, activation))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))


def _at(tree, t):
    return jax.tree.map(lambda a: a[t], tree)


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _close(a, b, rtol=1e-4, atol=1e-6):
    for (path, u), v in zip(masks.named_leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol, err_msg=path)


# ----------------------------------------------------------------------------- the scores


def test_snip_is_the_gradient_times_the_weight_by_hand():
    params, (x, y) = _tiny()
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x64 = np.asarray(x, np.float64)
    # Backpropagation written out: softmax cross-entropy, ReLU.
    z = x64 @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    h = np.maximum(z, 0)
    out = h @ p["head"]["kernel"] + p["head"]["bias"]
    prob = np.exp(out - out.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    d_out = (prob - np.eye(3)[np.asarray(y)]) / len(x64)
    d_z = (d_out @ p["head"]["kernel"].T) * (z > 0)
    grads = {
        "Dense_0": {"bias": d_z.sum(0), "kernel": x64.T @ d_z},
        "head": {"bias": d_out.sum(0), "kernel": h.T @ d_out},
    }
    want = jax.tree.map(lambda g, w: np.abs(g * w), grads, p)
    _close(saliency.snip_scores(_loss, params, (x, y)), want)
    # SNIP's own definition: the derivative with respect to a multiplicative gate c at c = 1.
    ones = jax.tree.map(jnp.ones_like, params)
    gates = jax.grad(lambda c: _loss(jax.tree.map(jnp.multiply, c, params), (x, y)))(ones)
    _close(saliency.snip_scores(_loss, params, (x, y)), jax.tree.map(jnp.abs, gates))


def test_hessian_vector_product_is_the_explicit_hessian_times_the_vector():
    params, batch = _tiny()
    flat, unravel = ravel_pytree(params)
    hessian = jax.hessian(lambda f: _loss(unravel(f), batch))(flat)
    v = jax.random.normal(jax.random.PRNGKey(3), flat.shape)
    got = saliency.hessian_vector_product(_loss, params, batch, unravel(v))
    np.testing.assert_allclose(ravel_pytree(got)[0], hessian @ v, rtol=1e-4, atol=1e-6)


def test_grasp_is_minus_w_times_the_hessian_times_the_weights_gradient():
    params, batch = _tiny()
    flat, unravel = ravel_pytree(params)
    hessian = jax.hessian(lambda f: _loss(unravel(f), batch))(flat)
    g = jax.grad(_loss)(params, batch)
    g = {k: {"bias": jnp.zeros_like(v["bias"]), "kernel": v["kernel"]} for k, v in g.items()}
    want = -flat * (hessian @ ravel_pytree(g)[0])  # g on the prunable kernels only (authors' code)
    got = saliency.grasp_scores(_loss, params, batch)
    np.testing.assert_allclose(ravel_pytree(got)[0], want, rtol=1e-4, atol=1e-6)


def test_grasp_score_is_half_the_first_order_change_of_the_gradient_norm():
    """S_q = -w_q (Hg)_q: removing w_q changes ||g||^2 by 2 S_q to first order (the sign)."""
    params, batch = _tiny()
    params = {k: {"kernel": v["kernel"]} for k, v in params.items()}  # every leaf prunable
    loss = lambda p, b: _loss(p, b, jnp.tanh)  # smooth: no kink between the two points
    norm = lambda p: sum(jnp.sum(g**2) for g in jax.tree.leaves(jax.grad(loss)(p, batch)))
    scores = saliency.grasp_scores(loss, params, batch)
    flat_s = ravel_pytree(scores)[0]
    flat, unravel = ravel_pytree(params)
    eps = 1e-2
    for q in np.argsort(-np.abs(np.asarray(flat_s)))[:5]:
        step = jnp.zeros_like(flat).at[q].set(eps * flat[q])
        change = (norm(unravel(flat - step)) - norm(unravel(flat + step))) / (2 * eps)
        np.testing.assert_allclose(change, 2 * flat_s[q], rtol=3e-2)


def test_synflow_on_a_two_layer_linear_net_is_the_closed_form():
    r = np.random.default_rng(1)
    w1, w2 = r.normal(size=(4, 3)), r.normal(size=(3, 2))
    params = {"a": {"kernel": jnp.asarray(w1, jnp.float32)}, "b": {"kernel": jnp.asarray(w2)}}
    apply_fn = lambda p, x: x @ p["a"]["kernel"] @ p["b"]["kernel"]
    got = saliency.synflow_scores(apply_fn, params, (4,))
    # R = 1^T |W1| |W2| 1: S(W1_ij) = |W1_ij| sum_k |W2_jk|, S(W2_jk) = (sum_i |W1_ij|) |W2_jk|.
    a1, a2 = np.abs(w1), np.abs(w2)
    want = {"a": {"kernel": a1 * a2.sum(1)[None, :]}, "b": {"kernel": a1.sum(0)[:, None] * a2}}
    _close(got, want)


def _mlp_and_mask(scope_like=0.3):
    r = np.random.default_rng(2)
    params = {
        "Dense_0": {"bias": jnp.asarray(r.normal(size=7), jnp.float32) * 0.1,
                    "kernel": jnp.asarray(r.normal(size=(5, 7)), jnp.float32)},
        "head": {"bias": jnp.zeros(3), "kernel": jnp.asarray(r.normal(size=(7, 3)), jnp.float32)},
    }  # fmt: skip
    like = pruning.magnitude_prune(params, masks.ones_like(params), 1 - scope_like)
    apply_fn = lambda p, x: _logits(p, x)
    return params, like, apply_fn


def test_synflow_mask_is_the_iterative_rule_by_hand():
    params, like, apply_fn = _mlp_and_mask()
    n = 5
    for scope in ("layerwise", "global"):
        kernels = ["Dense_0", "head"]
        a = {k: int(like[k]["kernel"].sum()) for k in kernels}
        size = {k: like[k]["kernel"].size for k in kernels}
        mask = masks.ones_like(params)
        for k in range(1, n + 1):  # the exponential schedule, written out
            scores = saliency.synflow_scores(apply_fn, params, (5,), mask)
            s = {j: np.where(mask[j]["kernel"], scores[j]["kernel"], -np.inf) for j in kernels}
            if scope == "layerwise":
                for j in kernels:
                    keep = (
                        a[j] if k == n else max(a[j], round(size[j] * (a[j] / size[j]) ** (k / n)))
                    )
                    order = np.argsort(s[j].ravel(), kind="stable")
                    kept = np.zeros(size[j], bool)
                    kept[order[size[j] - keep :]] = True
                    mask[j]["kernel"] = jnp.asarray(kept.reshape(s[j].shape))
            else:
                total, alive = sum(size.values()), sum(a.values())
                keep = alive if k == n else max(alive, round(total * (alive / total) ** (k / n)))
                flat = np.concatenate([s[j].ravel() for j in kernels])
                kept = np.zeros(total, bool)
                kept[np.argsort(flat, kind="stable")[total - keep :]] = True
                mask["Dense_0"]["kernel"] = jnp.asarray(kept[: size["Dense_0"]].reshape(5, 7))
                mask["head"]["kernel"] = jnp.asarray(kept[size["Dense_0"] :].reshape(7, 3))
        got = saliency.synflow_mask(apply_fn, params, like, (5,), n, scope)
        for j in kernels:
            assert np.array_equal(got[j]["kernel"], mask[j]["kernel"]), (scope, j)
            assert got[j]["bias"].all()
        counts = [int(got[j]["kernel"].sum()) for j in kernels]
        if scope == "layerwise":
            assert counts == [a[j] for j in kernels]
        else:
            assert sum(counts) == sum(a.values())


def test_one_synflow_iteration_is_one_shot_synflow():
    params, like, apply_fn = _mlp_and_mask()
    once = saliency.synflow_mask(apply_fn, params, like, (5,), iterations=1)
    direct = saliency.keep_top_like(saliency.synflow_scores(apply_fn, params, (5,)), like)
    assert _same(once, direct)


def test_keep_top_like_layerwise_is_top_scores_like_and_global_ranks_all_weights():
    params, like, _ = _mlp_and_mask(0.4)
    scores = jax.tree.map(lambda a: jnp.round(jnp.abs(a), 1), params)  # many ties
    layer = saliency.keep_top_like(scores, like)
    same = pruning.top_scores_like(scores, like)
    assert _same(layer, same)
    glob = saliency.keep_top_like(scores, like, "global")
    kept = np.concatenate([np.asarray(scores[k]["kernel"])[glob[k]["kernel"]] for k in glob])
    gone = np.concatenate([np.asarray(scores[k]["kernel"])[~glob[k]["kernel"]] for k in glob])
    assert kept.min() >= gone.max()
    assert sum(int(glob[k]["kernel"].sum()) for k in glob) == masks.count(like)[0]
    with pytest.raises(ValueError, match="scope"):
        saliency.keep_top_like(scores, like, "per_layer")


def test_score_functions_are_reexported_from_pruning():
    assert pruning.snip_scores is saliency.snip_scores
    assert pruning.grasp_scores is saliency.grasp_scores
    assert pruning.synflow_scores is saliency.synflow_scores


def test_docstring_examples():
    result = doctest.testmod(saliency, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- the arms in a run


def small_config(**overrides):
    c = config_lib.default_config()
    c.num_trials = 2
    c.progress = False
    c.model.kwargs.features = (32, 16)
    c.train.steps = 40
    c.train.eval_every = 20
    c.train.batch_size = 50
    c.imp.rounds = 2
    c.imp.prune_rate = 0.5
    c.num_devices = 1
    c.arms = ("ticket", "reinit", *arms.PAI_ARMS)
    for key, value in overrides.items():
        set_value(c, key, value)
    return c


def _leaves(tree, start, stop):
    return [np.asarray(a[start:stop]) for a in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def layerwise_run():
    exp = lottery.Experiment(small_config())
    s0, r0 = exp.dense_round()
    s1, r1 = exp.prune_round(s0, 1)
    compiles, traces = exp.engine.compilations, dict(arms.PAI_TRACES)
    s2, r2 = exp.prune_round(s1, 2)
    new = {m: arms.PAI_TRACES[m] - traces.get(m, 0) for m in saliency.METHODS}
    return exp, (s0, s1, s2), (r1, r2), (compiles, new)


def test_every_arm_has_records_at_the_tickets_densities(layerwise_run):
    exp, _, (r1, r2), _ = layerwise_run
    for recs in (r1, r2):
        by = {(r["arm"], r["trial"]): r for r in recs}
        assert {a for a, _ in by} == set(exp.config.arms)
        for (arm, t), rec in by.items():
            assert rec["status"] == "ok"
            assert rec["density"] == by[("ticket", t)]["density"]
            assert rec["layer_density"] == by[("ticket", t)]["layer_density"], arm


def test_one_compilation_per_shape(layerwise_run):
    exp, _, _, (compiles, new) = layerwise_run
    assert exp.engine.compilations == compiles  # round 2: new masks, the same training program
    assert new == {"snip": 0, "grasp": 0, "synflow": 0}  # each method's mask traced in round 1


def _loss_at(model, temp):
    """The training loss with the logits divided by ``temp`` (GraSP's temperature)."""

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch[0], train=True) / temp
        lp = jax.nn.log_softmax(logits)
        return jnp.mean(-jnp.take_along_axis(lp, batch[1][:, None], 1))

    return loss_fn


def _grasp_mask(model, temp, params, batch, like):
    scores = saliency.grasp_scores(_loss_at(model, temp), params, batch)
    return saliency.keep_top_like(jax.tree.map(jnp.negative, scores), like)


def test_masks_are_the_methods_on_the_rewind_source(layerwise_run):
    exp, (_, s1, s2), _, _ = layerwise_run
    rewind = s1["rewind"]
    model = exp.model
    for t in range(2):
        params, like = _at(rewind["params"], t), _at(s2["ticket"]["mask"], t)
        # SynFlow is data-free: the mask by the pure function, on the rewind source.
        apply_fn = lambda p, x: model.apply({"params": p}, x, train=False)
        shape = exp.dataset.train_x.shape[1:]
        want = saliency.synflow_mask(apply_fn, params, like, shape, 100)
        assert _same(_at(s2["arms"]["synflow"]["mask"], t), want)
        # SNIP and GraSP: the batch drawn with key purpose "pai" of (seed, trial, round).
        data_key, _ = jax.random.split(exp.keys(2, "pai")[t])
        idx = jax.random.choice(data_key, exp.dataset.train_x.shape[0], (256,), replace=False)
        batch = (jnp.asarray(exp.dataset.train_x)[idx], jnp.asarray(exp.dataset.train_y)[idx])

        temp = exp.config.pai.grasp_temperature
        assert temp == 200.0  # the default: the authors' code
        snip = saliency.keep_top_like(
            saliency.snip_scores(_loss_at(model, 1.0), params, batch), like
        )
        grasp = _grasp_mask(model, temp, params, batch, like)
        # The temperature changes the mask (so this test tells T = 200 from T = 1).
        old = _grasp_mask(model, 1.0, params, batch, like)
        assert sum(int((a != b).sum()) for a, b in zip(*map(jax.tree.leaves, (grasp, old)))) > 10
        for name, want in (("snip", snip), ("grasp", grasp)):
            got = kernels(s2["arms"][name]["mask"], t)
            for p, m in kernels(jax.tree.map(lambda a: a[None], want), 0).items():
                # float32 sums may differ in the last bit: allow a weight or two at a tie
                assert (got[p] != m).sum() <= 2, (name, p)


def test_shuffled_masks_keep_the_methods_per_layer_counts(layerwise_run):
    exp, (_, s1, s2), _, _ = layerwise_run
    arms_, params, _, mask, _, _ = exp.round_inputs(s1, 2)
    i = arms_.index("ticket")
    for method in saliency.METHODS:
        j, k = arms_.index(method), arms_.index(f"{method}_shuffled")
        for t in range(2):
            a, b = (
                kernels(s2["arms"][method]["mask"], t),
                kernels(s2["arms"][f"{method}_shuffled"]["mask"], t),
            )
            assert all(a[p].sum() == b[p].sum() for p in a)
            assert any(not np.array_equal(a[p], b[p]) for p in a)
        # the same weights as the method (the rewind source, as the ticket)
        for x, y, z in zip(_leaves(params, 2 * j, 2 * j + 2), _leaves(params, 2 * k, 2 * k + 2),
                           _leaves(params, 2 * i, 2 * i + 2)):  # fmt: skip
            assert np.array_equal(x, y) and np.array_equal(x, z)


def test_reinit_checks_use_the_methods_mask_on_fresh_weights(layerwise_run):
    exp, (_, s1, s2), _, _ = layerwise_run
    arms_, params, _, mask, _, _ = exp.round_inputs(s1, 2)
    fresh, _ = exp.engine.init(exp.keys(2, "reinit"))
    r, i = arms_.index("reinit"), arms_.index("ticket")
    for method in saliency.METHODS:
        j, k = arms_.index(method), arms_.index(f"{method}_reinit")
        assert _same(_leaves(mask, 2 * j, 2 * j + 2), _leaves(mask, 2 * k, 2 * k + 2))
        for x, y, f in zip(_leaves(params, 2 * k, 2 * k + 2), _leaves(params, 2 * r, 2 * r + 2),
                           _leaves(fresh, 0, 2)):  # fmt: skip
            assert np.array_equal(x, y) and np.array_equal(x, f)  # the reinit arm's fresh init
        kernel = [n for n, _ in masks.named_leaves(params)].index("Dense_0/kernel")
        leaf = jax.tree.leaves(params)[kernel]
        assert not np.array_equal(leaf[2 * k : 2 * k + 2], leaf[2 * i : 2 * i + 2])


def test_global_scope_keeps_the_overall_count_with_the_methods_allocation():
    c = small_config(**{"arms": ("ticket", *arms.PAI_ARMS), "pai.scope": "global"})
    c.num_trials, c.imp.rounds = 1, 1
    exp = lottery.Experiment(c)
    s0, _ = exp.dense_round()
    s1, recs = exp.prune_round(s0, 1)
    by = {r["arm"]: r for r in recs}
    assert set(by) == set(c.arms)
    ticket = kernels(s1["ticket"]["mask"], 0)
    moved = False
    for arm in arms.PAI_ARMS:
        assert by[arm]["density"] == by["ticket"]["density"]  # the ticket's overall count
        got = kernels(s1["arms"][arm]["mask"], 0)
        assert sum(m.sum() for m in got.values()) == sum(m.sum() for m in ticket.values())
        method = kernels(s1["arms"][arm.split("_")[0]]["mask"], 0)
        assert all(got[p].sum() == method[p].sum() for p in got)  # the method's allocation
        moved |= by[arm]["layer_density"] != by["ticket"]["layer_density"]
    assert moved  # the methods' own per-layer allocation, not the ticket's


def test_batch_norm_synflow_uses_eval_mode_with_initialization_statistics():
    class Images:
        r = np.random.default_rng(0)
        train_x = r.normal(size=(64, 8, 8, 3)).astype(np.float32)
        train_y = r.integers(0, 4, 64)
        val_x, val_y, test_x, test_y = train_x[:16], train_y[:16], train_x[:16], train_y[:16]

    opt = config_lib.base_config().optimizer
    model = VGG(plan=(4,), num_classes=4, batch_norm=True)
    engine = Engine(model, Images(), opt, steps=10, batch_size=16, eval_every=10,
                    eval_batch_size=16, progress=False)  # fmt: skip
    params, bs = engine.init(jax.random.split(jax.random.PRNGKey(0), 2))
    like = jax.jit(jax.vmap(lambda p: pruning.magnitude_prune(p, masks.ones_like(p), 0.7)))(params)
    odd = jax.tree.map(lambda a: a + 3.0, bs)  # statistics far from an initialization's
    pai = config_lib.base_config().pai
    pai.batch_size, pai.synflow_iterations = 32, 10

    def inputs(stats):
        return arms.ArmInputs(
            source=lambda: (params, stats), mask=like, fresh=None,
            key=lambda purpose: jax.random.split(jax.random.PRNGKey(7), 2),
            pai=arms.PaI(engine, pai),
        )  # fmt: skip

    a = inputs(bs).pai.mask("synflow", inputs(bs))
    b = inputs(odd).pai.mask("synflow", inputs(odd))
    assert _same(a, b)
    stats = jax.tree.map(lambda v: v, bs)
    for layer in stats:
        stats[layer] = {"mean": jnp.zeros_like(bs[layer]["mean"][0]),
                        "var": jnp.ones_like(bs[layer]["var"][0])}  # fmt: skip
    apply_fn = lambda p, x: model.apply({"params": p, "batch_stats": stats}, x, train=False)
    p0, like0 = jax.tree.map(lambda v: v[0], (params, like))
    want = saliency.synflow_mask(apply_fn, p0, like0, (8, 8, 3), 10)
    got = jax.tree.map(lambda v: v[0], a)
    assert _same(got, want)
    for method in ("snip", "grasp"):  # train mode (batch statistics): counts kept per layer
        m = inputs(bs).pai.mask(method, inputs(bs))
        for (p, x), y in zip(masks.layer_alive(m).items(), masks.layer_alive(like).values()):
            assert np.array_equal(x, y), (method, p)


# ----------------------------------------------------------------------------- bad input


def test_pai_arms_need_weight_rewinding_and_read_the_pai_block_only():
    with pytest.raises(config_lib.ConfigError, match="imp.rewind=weights"):
        config_lib.validate(small_config(**{"imp.rewind": "lr", "arms": ("ticket", "snip")}))
    with pytest.raises(config_lib.ConfigError, match="pai.scope"):
        config_lib.validate(small_config(**{"arms": ("ticket",), "pai.scope": "global"}))
    with pytest.raises(config_lib.ConfigError, match="pai.scope must be one of"):
        config_lib.validate(small_config(**{"pai.scope": "per_layer"}))
    with pytest.raises(config_lib.ConfigError, match="pai.synflow_iterations"):
        config_lib.validate(small_config(**{"pai.synflow_iterations": 0}))


def test_a_pai_batch_larger_than_the_training_set_is_refused():
    with pytest.raises(config_lib.ConfigError, match="pai.batch_size must be <="):
        lottery.Experiment(small_config(**{"pai.batch_size": 10**6}))
    # SynFlow draws no batch: no limit
    lottery.Experiment(small_config(**{"pai.batch_size": 10**6, "arms": ("ticket", "synflow")}))
