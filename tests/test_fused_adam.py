"""optimizer.fused_adam_cpu: the one-pass masked Adam kernel against optax's Adam, the
engine and the command with it, and its refusals."""

from __future__ import annotations

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from cli_runs import LTH_JAX, SMALL_RUN, cli_env
from tiny import tiny_config

from lth_jax import checks, fused_adam, lottery
from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax.optim import make_optimizer, set_learning_rate
from lth_jax.train import Engine


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(tmp_path_factory):
    """Builds into this module's own directory (once; the tests reuse the build)."""
    path = str(tmp_path_factory.mktemp("kernels"))
    old = os.environ.get("LTH_JAX_KERNEL_CACHE")
    os.environ["LTH_JAX_KERNEL_CACHE"] = path
    yield path
    if old is None:
        del os.environ["LTH_JAX_KERNEL_CACHE"]
    else:
        os.environ["LTH_JAX_KERNEL_CACHE"] = old


@pytest.fixture(scope="module")
def kernel(kernel_cache):
    """The kernel, built and registered; a machine without a C++ compiler skips its tests."""
    try:
        fused_adam.load()
    except fused_adam.KernelBuildError as e:
        pytest.skip(f"no kernel here: {e}")
    return kernel_cache


def _opt(**kw):
    opt = config_lib.base_config().optimizer
    opt.learning_rate = 0.01
    for k, v in kw.items():
        opt[k] = v
    return opt


def _problem(seed=0):
    """Params (a kernel and a bias), a mask with pruned kernel weights, a state after a step."""
    r = np.random.default_rng(seed)
    params = {
        "Dense_0": {
            "kernel": jnp.asarray(r.standard_normal((33, 17), dtype=np.float32)),
            "bias": jnp.asarray(r.standard_normal(17, dtype=np.float32)),
        }
    }
    mask = {
        "Dense_0": {"kernel": jnp.asarray(r.random((33, 17)) < 0.6), "bias": jnp.ones(17, bool)}
    }
    tx = make_optimizer(_opt())
    params = masks_lib.apply(mask, params)
    state = masks_lib.set_mask(tx.init(params), mask)
    grad = lambda: jax.tree.map(
        lambda p: jnp.asarray(r.standard_normal(p.shape, np.float32)), params
    )
    # one optax step first, so the moments are not zero
    u, state = tx.update(grad(), set_learning_rate(state, 0.01), params)
    params = optax.apply_updates(params, u)
    return tx, params, mask, state, grad()


def _optax_step(tx, params, state, grads, lr):
    u, new = tx.update(grads, set_learning_rate(state, lr), params)
    return optax.apply_updates(params, u), new


def test_one_step_is_optax_adam_up_to_rounding(kernel):
    tx, params, mask, state, grads = _problem()
    want_p, want_s = _optax_step(tx, params, state, grads, 0.01)
    got_p, got_s = jax.jit(fused_adam.update)(grads, state, params, 0.01, True)
    assert jax.tree.structure(got_s) == jax.tree.structure(want_s)
    for got, want in zip(jax.tree.leaves((got_p, got_s)), jax.tree.leaves((want_p, want_s))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-6, atol=1e-9)
    k = np.asarray(got_p["Dense_0"]["kernel"])
    pruned = ~np.asarray(mask["Dense_0"]["kernel"])
    assert pruned.any() and (k[pruned] == 0).all() and not np.signbit(k[pruned]).any()
    alive = ~pruned
    assert (k[alive] != np.asarray(params["Dense_0"]["kernel"])[alive]).all()  # it moved them
    adam = got_s.inner_state.inner_state[0][0]
    assert int(adam.count) == 2 and int(got_s.inner_state.count) == 2


def test_a_step_not_ok_changes_nothing(kernel):
    _, params, _, state, grads = _problem(1)
    got_p, got_s = jax.jit(fused_adam.update)(grads, state, params, 0.5, False)
    for got, want in zip(jax.tree.leaves((got_p, got_s)), jax.tree.leaves((params, state))):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_many_steps_follow_optax_and_keep_pruned_weights_at_zero(kernel):
    tx, params, mask, state, _ = _problem(2)
    gs = jax.random.normal(jax.random.PRNGKey(0), (200, 33, 17))

    def run(step):
        def body(carry, g):
            p, s = carry
            grads = {"Dense_0": {"kernel": g, "bias": g[0]}}
            return step(p, s, grads), None

        return jax.jit(lambda p, s: jax.lax.scan(body, (p, s), gs)[0])(params, state)

    want, _ = run(lambda p, s, g: _optax_step(tx, p, s, g, 0.01))
    got, _ = run(lambda p, s, g: fused_adam.update(g, s, p, 0.01, True))
    k, w = np.asarray(got["Dense_0"]["kernel"]), np.asarray(want["Dense_0"]["kernel"])
    np.testing.assert_allclose(k, w, rtol=1e-4, atol=1e-5)
    assert (k[~np.asarray(mask["Dense_0"]["kernel"])] == 0).all()


def _toy():
    from lth_jax.data import Dataset

    r = np.random.default_rng(0)
    x = r.standard_normal((400, 8), dtype=np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    return Dataset(x, y, x[:100], y[:100], x[:100], y[:100], 2, "toy")


def _fit(eng):
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params, bs = eng.init(keys)
    masks = jax.vmap(masks_lib.ones_like)(params)
    return eng.fit(params, bs, masks, keys, keys)


def _engine(lr, fused, ds=None):
    from lth_jax import models

    model = models.get("mlp", features=(16,))
    opt = _opt(learning_rate=lr, fused_adam_cpu=fused)
    eng = Engine(model, ds or _toy(), opt, steps=60, batch_size=20, eval_every=20, progress=False)
    assert eng.fused_adam is fused
    return eng


def test_engine_with_the_kernel_trains_as_optax_does_and_stops_where_optax_stops(kernel):
    a, b = _fit(_engine(0.01, False)), _fit(_engine(0.01, True))
    np.testing.assert_allclose(b.curves.val_loss, a.curves.val_loss, rtol=1e-4)
    assert (a.fail_step == -1).all() and (b.fail_step == -1).all()
    # the loss overflows: the guard inside the kernel stops each run at optax's step
    bad, bad_optax = _fit(_engine(1e30, True)), _fit(_engine(1e30, False))
    assert (bad.fail_step >= 0).all()
    np.testing.assert_array_equal(bad.fail_step, bad_optax.fail_step)
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(bad.params))


def test_engine_for_another_dataset_keeps_the_kernel(kernel):
    eng = _engine(0.01, True)
    other = eng.for_dataset(_toy())
    assert other.fused_adam and other._chunk is eng._chunk
    np.testing.assert_array_equal(_fit(other).curves.val_loss, _fit(eng).curves.val_loss)


def test_gmp_on_two_devices_with_the_kernel_keeps_its_densities(kernel, tmp_path):
    kw = {"arms": ("ticket", "gmp"), "imp.rounds": 1, "num_devices": 2, "gmp.every": 10}
    records = {
        fused: lottery.run(
            tiny_config(**kw, **{"optimizer.fused_adam_cpu": fused}), str(tmp_path / str(fused))
        )
        for fused in (False, True)
    }
    got = {(r["round"], r["arm"], r["trial"]): r for r in records[True]}
    want = {(r["round"], r["arm"], r["trial"]): r for r in records[False]}
    assert got.keys() == want.keys() and (1, "gmp", 0) in got
    for k, r in got.items():
        assert r["status"] == "ok" and r["density"] == want[k]["density"]
        assert abs(r["final_test_accuracy"] - want[k]["final_test_accuracy"]) < 0.05
    assert got[1, "gmp", 0]["density"] < 0.9


def test_config_refuses_what_the_kernel_does_not_run():
    def refused(**kw):
        with pytest.raises(checks.ConfigError) as e:
            config_lib.validate(tiny_config(**{"optimizer.fused_adam_cpu": True, **kw}))
        return str(e.value)

    config_lib.validate(tiny_config(**{"optimizer.fused_adam_cpu": True}))
    msg = refused(**{"optimizer.name": "momentum"})
    assert "optimizer.name is 'momentum': set optimizer.name=adam, or" in msg
    msg = refused(**{"optimizer.weight_decay": 1e-4})
    assert "optimizer.weight_decay=0.0001 adds to it: set it to 0" in msg
    assert "optimizer.l1" in refused(**{"optimizer.l1": 1e-5})
    from lth_jax.transfer import config as transfer_config

    c = transfer_config.transfer_config()
    c.optimizer.fused_adam_cpu = True
    with pytest.raises(checks.ConfigError, match="is for lottery and instability runs"):
        transfer_config.validate(c)


def test_engine_check_refuses_another_optimizer_and_other_backends():
    with pytest.raises(ValueError, match="was given another"):
        fused_adam.check(_opt(), optax.adam(1e-3), "cpu")
    with pytest.raises(ValueError, match="backend is gpu"):
        fused_adam.check(_opt(), None, "gpu")
    fused_adam.check(_opt(name="adamw"), None, "cpu")


def test_build_says_how_to_get_a_compiler_and_reuses_its_build(tmp_path, monkeypatch, kernel):
    first = fused_adam.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert fused_adam.build(tmp_path) == first and first.stat().st_mtime_ns == stamp
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(fused_adam.KernelBuildError, match="apt install g\\+\\+"):
        fused_adam.build(tmp_path / "other")


def test_the_command_trains_with_it_and_a_rerun_without_it_is_refused(tmp_path, kernel):
    env = {**cli_env(str(tmp_path / "cache")), "LTH_JAX_KERNEL_CACHE": kernel}
    cmd = [*LTH_JAX, "run", "--workdir", str(tmp_path / "w"), *SMALL_RUN]
    on = subprocess.run(
        [*cmd, "--config.optimizer.fused_adam_cpu=true"], env=env, capture_output=True, text=True
    )
    assert on.returncode == 0, on.stderr
    assert "Adam: fused_adam_cpu" in (tmp_path / "w" / "report.md").read_text()
    off = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert off.returncode == 2
    assert "optimizer.fused_adam_cpu (True -> False)" in off.stderr
    # no compiler: one line, exit 2, nothing trained
    bad = subprocess.run(
        [
            *LTH_JAX,
            "run",
            "--workdir",
            str(tmp_path / "v"),
            *SMALL_RUN,
            "--config.optimizer.fused_adam_cpu=true",
        ],
        env={**env, "CXX": "no-such-compiler-here", "LTH_JAX_KERNEL_CACHE": str(tmp_path / "k")},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("lth-jax: error: optimizer.fused_adam_cpu builds a C++ kernel")
    assert not (tmp_path / "v" / "metrics.jsonl").exists()


def test_the_report_config_line_names_it():
    from lth_jax.report.lottery import config_summary

    c = config_lib.default_config().to_dict()
    c["optimizer"]["fused_adam_cpu"] = True
    assert config_summary(c).endswith(" · Adam: fused_adam_cpu")
    c["optimizer"]["fused_adam_cpu"] = False
    assert "fused" not in config_summary(c)


def test_update_refuses_float_masks(kernel):
    _, params, mask, state, grads = _problem(3)
    state = state._replace(mask=jax.tree.map(lambda m: m.astype(jnp.float32), mask))
    with pytest.raises(ValueError, match="boolean masks"):
        fused_adam.update(grads, state, params, 0.01, True)


def test_a_refusal_while_the_engine_is_traced_keeps_its_own_message(kernel, monkeypatch):
    def refuse(*args):
        raise fused_adam.Unusable("optimizer.fused_adam_cpu needs float32 params, got float16")

    monkeypatch.setattr(fused_adam, "update", refuse)
    with pytest.raises(checks.ConfigError) as e:
        lottery.Experiment(tiny_config(**{"optimizer.fused_adam_cpu": True}))
    assert str(e.value) == "optimizer.fused_adam_cpu needs float32 params, got float16"
