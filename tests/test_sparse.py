"""Exporting a ticket as a sparse model file, loading it, predicting: ``lth_jax.sparse``.

One tiny MNIST-1D lottery run (2 trials, 2 rounds, 100 steps a round) is
exported, loaded and run on the raw test set, whose accuracy must be the
run's recorded ``final_test_accuracy``; the refusals go through
``lth_jax.cli.main`` and must exit with status 2.
"""

from __future__ import annotations

import doctest
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse as jsparse
from tiny import tiny_config

from lth_jax import checkpoint, cli, data, lottery, models, sparse
from lth_jax.sparse import fileformat


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("sparse") / "run")
    c = tiny_config()
    records = lottery.run(c, wd)
    return wd, records


@pytest.fixture(scope="module")
def test_set():
    return data.load("mnist1d", "test")


def _record(records, round_, arm, trial):
    return next(r for r in records if (r["round"], r["arm"], r["trial"]) == (round_, arm, trial))


def _export(run_dir, tmp_path, *args):
    out = str(tmp_path / "model.npz")
    assert cli.main(["export", run_dir, *args, "--out", out]) == 0
    return out


@pytest.mark.parametrize("arm", ["ticket", "random_mask"])
def test_exported_run_reproduces_its_recorded_accuracy(run_dir, test_set, tmp_path, arm, capsys):
    wd, records = run_dir
    out = _export(wd, tmp_path, "--round", "2", "--trial", "1", "--arm", arm)
    printed = capsys.readouterr().out
    assert "bytes, against" in printed and "dense float32 weights" in printed
    model = sparse.load(out)
    x, y = test_set
    rec = _record(records, 2, arm, 1)
    correct = int(np.sum(model.predict(x).argmax(-1) == y))
    assert abs(correct - round(rec["final_test_accuracy"] * len(y))) <= 1
    # every Dense layer is a BCSR product; the file is smaller than the dense weights
    assert sorted(model.matrices) == ["Dense_0", "Dense_1", "head"]
    assert all(isinstance(m, jsparse.BCSR) for m in model.matrices.values())
    meta = model.metadata
    assert os.path.getsize(out) < meta["sizes"]["dense_float32_bytes"]
    assert meta["sizes"]["alive"] / meta["sizes"]["prunable"] == pytest.approx(rec["density"])
    assert meta["model"] == {"name": "mlp", "kwargs": {"features": [32, 16]}, "num_classes": 10}
    assert meta["source"]["round"] == 2 and meta["source"]["arm"] == arm
    assert meta["record"]["final_test_accuracy"] == rec["final_test_accuracy"]
    ds = data.get_dataset("mnist1d", seed=0)
    np.testing.assert_array_equal(model.normalize(x), ds.test_x)  # normalized as the run did
    # the other backends give the same logits up to summation order
    for backend in ("bcoo", "dense"):
        other = sparse.load(out, backend=backend).predict(x[:200])
        np.testing.assert_allclose(other, model.predict(x[:200]), rtol=1e-4, atol=1e-4)


def test_rewind_weights_are_the_masked_rewind_point(run_dir, tmp_path):
    wd, _ = run_dir
    out = _export(wd, tmp_path, "--round", "2", "--trial", "1", "--weights", "rewind")
    meta, params, _ = fileformat.read(out)
    assert meta["source"]["weights"] == "rewind"
    ck = checkpoint.RoundCheckpointer(os.path.join(wd, "checkpoints"))
    try:
        state, _ = ck.restore(2)
    finally:
        ck.close()
    for path, csr in fileformat.flat(params).items():
        if isinstance(csr, fileformat.CSR):
            mod = path.split("/")[0]
            mask = np.asarray(state["ticket"]["mask"][mod]["kernel"][1])
            want = np.where(mask, np.asarray(state["rewind"]["params"][mod]["kernel"][1]), 0)
            np.testing.assert_array_equal(csr.dense(), want)
            assert csr.data.size == mask.sum()


def test_round_zero_is_the_dense_network(run_dir, test_set, tmp_path):
    wd, records = run_dir
    out = _export(wd, tmp_path, "--round", "0", "--trial", "0")  # the arm defaults to dense
    model = sparse.load(out)
    assert model.metadata["source"]["arm"] == "dense"
    assert model.metadata["sizes"]["alive"] == model.metadata["sizes"]["prunable"]
    x, y = test_set
    correct = int(np.sum(model.predict(x).argmax(-1) == y))
    assert abs(correct - round(_record(records, 0, "dense", 0)["final_test_accuracy"] * 1000)) <= 1


def _fails(argv, capsys, *words):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lth-jax: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)


def test_refusals_exit_2_with_one_line(run_dir, tmp_path, capsys):
    wd, _ = run_dir
    out = str(tmp_path / "x.npz")
    base = ["export", wd, "--out", out]
    _fails(
        ["export", str(tmp_path / "nope"), "--round", "1", "--trial", "0", "--out", out],
        capsys,
        "does not exist",
    )
    _fails([*base, "--round", "7", "--trial", "0"], capsys, "round 7", "rounds available: 0-2")
    _fails([*base, "--round", "2", "--trial", "5"], capsys, "trial 5", "trials: 0-1")
    _fails(
        [*base, "--round", "2", "--trial", "0", "--arm", "one_shot"],
        capsys,
        "'one_shot'",
        "ticket, reinit, random_mask",
    )
    _fails(
        [*base, "--round", "1", "--trial", "0", "--arm", "reinit", "--weights", "rewind"],
        capsys,
        "reinit",
        "fresh initialization",
    )
    _fails([*base, "--round", "1", "--trial", "0", "--weights", "final"], capsys, "--weights")
    _fails(["export", wd, "--round", "1", "--trial", "0"], capsys, "--out")
    _fails([*base, "--round", "one", "--trial", "0"], capsys, "--round")
    assert not os.path.exists(out)
    # checkpoint.max_to_keep: a workdir that kept only the last rounds names the ones it has
    kept = str(tmp_path / "kept")
    shutil.copytree(wd, kept)
    shutil.rmtree(os.path.join(kept, "checkpoints", "0"))
    _fails(
        ["export", kept, "--round", "0", "--trial", "0", "--out", out],
        capsys,
        "round 0",
        "rounds available: 1-2",
    )


def test_ten_percent_of_a_layer_is_under_a_third_of_its_dense_size(tmp_path):
    """The issue's done-when: ~10% of the weights in under a third of the dense bytes."""
    r = np.random.default_rng(0)
    kernel = r.standard_normal((784, 300)).astype(np.float32)
    mask = r.random(kernel.shape) < 0.10
    params = {"Dense_0": {"kernel": kernel, "bias": np.zeros(300, np.float32)}}
    masks = {"Dense_0": {"kernel": mask, "bias": np.ones(300, bool)}}
    info = fileformat.save(str(tmp_path / "layer.npz"), params, masks, {}, {})
    dense = info["sizes"]["dense_float32_bytes"]
    assert dense == 4 * (784 * 300 + 300)
    assert info["file_bytes"] < dense / 3, (info["file_bytes"], dense)
    meta, back, _ = fileformat.read(str(tmp_path / "layer.npz"))
    np.testing.assert_array_equal(back["Dense_0"]["kernel"].dense(), np.where(mask, kernel, 0))
    assert back["Dense_0"]["kernel"].indices.dtype == np.uint16


def test_csr_round_trip_of_a_conv_kernel():
    r = np.random.default_rng(1)
    k = r.standard_normal((3, 3, 4, 8)).astype(np.float32)
    m = r.random(k.shape) < 0.3
    data_, indices, indptr = fileformat.to_csr(k, m)
    assert len(indptr) == 3 * 3 * 4 + 1 and data_.size == m.sum()
    np.testing.assert_array_equal(fileformat.from_csr(data_, indices, indptr, k.shape), k * m)
    d, i, p = fileformat.csr_transpose(data_, indices, indptr, 8)
    t = fileformat.from_csr(d, i, p, (8, 36))
    np.testing.assert_array_equal(t, (k * m).reshape(36, 8).T)


@pytest.mark.parametrize("name,shape", [("cnn1d", (40,)), ("resnet20", (8, 8, 3))])
def test_conv_and_batch_norm_models_match_the_flax_model(tmp_path, name, shape):
    """Conv kernels are densified, Dense layers sparse, batch norm as the model has it."""
    model = models.get(name, num_classes=10)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
    r = np.random.default_rng(0)  # random values: faster than initializing ResNet-20
    params = jax.tree.map(lambda a: 0.2 * r.standard_normal(a.shape, np.float32), shapes["params"])
    stats = jax.tree.map(  # running means and variances that are not the identity
        lambda a: (0.5 + r.random(a.shape)).astype(np.float32), shapes.get("batch_stats", {})
    )
    mask = jax.tree.map(
        lambda p: r.random(p.shape) < 0.3 if p.ndim >= 2 else np.ones(p.shape, bool), params
    )
    meta = {
        "model": {"name": name, "kwargs": {}, "num_classes": 10},
        "input": {"shape": list(shape), "mean": 0.25, "std": 2.0},
    }
    path = str(tmp_path / f"{name}.npz")
    fileformat.save(path, params, mask, stats, meta)
    loaded = sparse.load(path)
    assert sorted(loaded.matrices) == ["head"]
    x = np.random.default_rng(2).random((3, *shape)).astype(np.float32)
    variables = {"params": jax.tree.map(lambda m, p: np.where(m, p, 0), mask, params)}
    if stats:
        variables["batch_stats"] = stats
    want = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, (x - 0.25) / 2.0)
    np.testing.assert_allclose(loaded.predict(x), want, rtol=1e-4, atol=1e-5)
    tensors = loaded.metadata["tensors"]
    assert {t["storage"] for n, t in tensors.items() if n.endswith("kernel")} == {"csr"}


def test_rewind_weights_with_learning_rate_rewinding(tmp_path, capsys):
    """``imp.rewind=lr``: a ticket started from the ticket trained the round before."""
    c = tiny_config()
    c.num_trials, c.arms, c.imp.rewind = 1, ("ticket", "one_shot"), "lr"
    c.model.kwargs.features, c.train.steps, c.train.eval_every = (16,), 50, 50
    c.checkpoint.max_to_keep = 2  # rounds 1 and 2 stay
    wd = str(tmp_path / "lr")
    lottery.run(c, wd)
    out = str(tmp_path / "m.npz")
    assert cli.main(["export", wd, "--round", "2", "--trial", "0", "--weights", "rewind",
                     "--out", out]) == 0  # fmt: skip
    ck = checkpoint.RoundCheckpointer(os.path.join(wd, "checkpoints"))
    try:
        assert ck.rounds() == [1, 2]
        s1, _ = ck.restore(1)
        s2, _ = ck.restore(2)
    finally:
        ck.close()
    _, params, _ = fileformat.read(out)
    for mod in ("Dense_0", "head"):
        mask = np.asarray(s2["ticket"]["mask"][mod]["kernel"][0])
        want = np.where(mask, np.asarray(s1["ticket"]["params"][mod]["kernel"][0]), 0)
        np.testing.assert_array_equal(params[mod]["kernel"].dense(), want)
    # one_shot rewinds to the trained dense network (kept in the state for that arm)
    argv = ["export", wd, "--round", "2", "--trial", "0", "--arm", "one_shot"]
    assert cli.main([*argv, "--weights", "rewind", "--out", out]) == 0
    _, params, _ = fileformat.read(out)
    mask = np.asarray(s2["arms"]["one_shot"]["mask"]["Dense_0"]["kernel"][0])
    want = np.where(mask, np.asarray(s2["dense"]["params"]["Dense_0"]["kernel"][0]), 0)
    np.testing.assert_array_equal(params["Dense_0"]["kernel"].dense(), want)
    capsys.readouterr()
    # round 1's rewind weights are round 0's ticket, whose checkpoint was not kept
    _fails(["export", wd, "--round", "1", "--trial", "0", "--weights", "rewind", "--out", out],
           capsys, "round 0", "rounds available: 1-2")  # fmt: skip


def test_file_format_examples():
    result = doctest.testmod(fileformat, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
