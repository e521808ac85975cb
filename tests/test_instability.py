"""Instability analysis: the barrier, the interpolation, and the kind end to end."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lth_jax import config as config_lib
from lth_jax import data, instability, lottery


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("instability_data")
    data.load("mnist1d", "train", data_dir=d)
    return str(d)


def tiny_config(data_dir, **overrides):
    c = config_lib.default_config()
    c.kind = "instability"
    c.num_trials = 2
    c.num_devices = 1
    c.progress = False
    c.arms = ("ticket", "random_mask")
    c.dataset.data_dir = data_dir
    c.model.kwargs.features = (32, 16)
    c.train.steps = 100
    c.train.eval_every = 50
    c.train.batch_size = 50
    c.imp.rounds = 2
    c.imp.prune_rate = 0.5
    from lth_jax.checks import set_value

    for key, value in overrides.items():
        set_value(c, key, value)
    return c


@pytest.fixture(scope="module")
def exp(data_dir):
    return lottery.Experiment(tiny_config(data_dir))


def test_barrier_by_hand():
    # max 0.30 minus the mean of the endpoints (0.10 + 0.12) / 2 = 0.11
    assert instability.barrier([0.10, 0.30, 0.12]) == pytest.approx(0.19)
    # A convex (below the chord) curve: max is an endpoint; barrier = half their gap.
    assert instability.barrier([0.2, 0.1, 0.05, 0.1]) == pytest.approx(0.2 - 0.15)
    np.testing.assert_allclose(
        instability.barrier(np.array([[0.1, 0.1, 0.1], [0.0, 0.5, 0.2]])), [0.0, 0.4]
    )


def test_interpolate_endpoints_exact_and_linear():
    a = {"k": jnp.array([1.0, -2.0, 3.3]), "b": jnp.array(0.7)}
    b = {"k": jnp.array([0.1, 5.0, -1.0]), "b": jnp.array(-0.2)}
    at = lambda t: instability.interpolate(a, b, jnp.float32(t))
    assert all(bool(jnp.all(x == y)) for x, y in zip(jax.tree.leaves(at(0.0)), jax.tree.leaves(a)))
    assert all(bool(jnp.all(x == y)) for x, y in zip(jax.tree.leaves(at(1.0)), jax.tree.leaves(b)))
    np.testing.assert_allclose(at(0.3)["k"], 0.7 * a["k"] + 0.3 * b["k"], atol=1e-6)


def test_identical_copies_have_zero_barrier(exp):
    params, bs = exp.engine.init(exp.keys(0, "init"))
    alphas = np.linspace(0, 1, 5)
    errors = instability.interpolation_errors(exp.engine, params, bs, params, bs, alphas)
    assert errors.shape == (2, 5)
    assert np.all(errors == errors[:, :1])
    np.testing.assert_array_equal(instability.barrier(errors), [0.0, 0.0])


def test_interpolation_errors_match_a_hand_computation(exp):
    pa, ba = exp.engine.init(exp.keys(0, "init"))
    pb, bb = exp.engine.init(exp.keys(0, "reinit"))
    alphas = np.array([0.0, 0.25, 0.5, 1.0])
    errors = instability.interpolation_errors(exp.engine, pa, ba, pb, bb, alphas)
    x, y = exp.dataset.test_x, exp.dataset.test_y
    for trial in range(2):
        for j, alpha in enumerate(alphas):
            lerp = lambda u, v, t=trial, a=alpha: (1 - a) * u[t] + a * v[t]
            p = jax.tree.map(lerp, pa, pb)
            logits = np.asarray(exp.model.apply({"params": p}, x))
            err = np.mean(np.argmax(logits, -1) != y)
            assert errors[trial, j] == pytest.approx(err, abs=1.5 / len(y))


def test_kind_runs_end_to_end_and_resumes(data_dir, tmp_path, capsys):
    c = tiny_config(data_dir)
    workdir = str(tmp_path / "inst")
    records = instability.run(c, workdir)
    assert {(r["round"], r["arm"]) for r in records} == {
        (0, "dense"),
        (1, "ticket"),
        (1, "random_mask"),
        (2, "ticket"),
        (2, "random_mask"),
    }
    for r in records:
        if r["arm"] in ("ticket", "dense"):
            assert 0.0 <= r["barrier"] <= 1.0
            assert len(r["barrier_test_error"]) == len(r["barrier_alphas"]) == 11
            e = r["barrier_test_error"]
            assert r["barrier"] == pytest.approx(max(e) - (e[0] + e[-1]) / 2)
        else:
            assert "barrier" not in r
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        on_disk = [json.loads(line) for line in f]
    assert on_disk == records
    cache = os.path.join(workdir, instability.INSTABILITY)
    with open(cache) as f:
        assert len(f.readlines()) == 3 * 2  # (rounds 0-2) x 2 trials

    # Resuming a finished run trains nothing new and gives the same records.
    before = os.path.getmtime(cache)
    assert instability.run(c, workdir) == records
    assert os.path.getmtime(cache) == before

    # The report shows the barrier.
    from lth_jax import report

    table = report.write_report(workdir)
    assert "error barrier" in table


def test_too_few_checkpoints_kept_is_refused(data_dir, tmp_path):
    c = tiny_config(data_dir)
    c.checkpoint.max_to_keep = 2
    with pytest.raises(config_lib.ConfigError, match="max_to_keep"):
        instability.run(c, str(tmp_path / "x"))
    c = tiny_config(data_dir)
    c.instability = ml_collections.ConfigDict({"num_points": 1})
    with pytest.raises(config_lib.ConfigError, match="num_points"):
        instability.run(c, str(tmp_path / "y"))
