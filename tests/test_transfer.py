"""Transfer learning: head replacement, freezing, L2-SP, ticket transfer, the runner."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth_jax import config as config_lib
from lth_jax import masks, models, pruning, rng, transfer
from lth_jax import report as report_lib
from lth_jax.regularizers_sp import add_l2_sp, l2_sp_penalty
from lth_jax.train import Engine


def _bits(x):
    return np.asarray(x).view(np.uint32)


def _toy_dataset(n=64, d=12, classes=3, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, d)).astype(np.float32)
    y = (np.arange(n) % classes).astype(np.int32)
    x[np.arange(n), y] += 2.0  # learnable
    return types.SimpleNamespace(
        train_x=x, train_y=y, val_x=x[:16], val_y=y[:16], test_x=x[:16], test_y=y[:16]
    )


def _opt(**kw):
    c = config_lib.base_config().optimizer
    c.name = kw.pop("name", "adam")
    c.learning_rate = kw.pop("learning_rate", 1e-2)
    for k, v in kw.items():
        c[k] = v
    return c


# ----------------------------------------------------------------------------- head


def test_new_head_on_class_count_change_and_never_a_wrong_sized_one():
    x = jnp.zeros((1, 12))
    src_model = models.get("mlp", features=(8, 6), num_classes=10)
    tgt_model = models.get("mlp", features=(8, 6), num_classes=3)
    src = src_model.init({"params": jax.random.PRNGKey(1)}, x)["params"]
    init = tgt_model.init({"params": jax.random.PRNGKey(2)}, x)["params"]

    assert transfer.head_is_new(10, 3) is True
    assert transfer.head_is_new(3, 3) is True  # default: a new head even when counts match
    assert transfer.head_is_new(3, 3, reuse_head=True) is False
    with pytest.raises(config_lib.ConfigError, match="reuse_head"):
        transfer.head_is_new(10, 3, reuse_head=True)

    out = transfer.load_params(init, src)
    assert out["head"]["kernel"].shape == (6, 3) and out["head"]["bias"].shape == (3,)
    # The head is the target's fresh init, not (a slice of) the source head.
    np.testing.assert_array_equal(out["head"]["kernel"], init["head"]["kernel"])
    assert not np.allclose(out["head"]["kernel"], src["head"]["kernel"][:, :3])
    for layer in ("Dense_0", "Dense_1"):
        np.testing.assert_array_equal(out[layer]["kernel"], src[layer]["kernel"])
    # Asked to load everything, a head of the wrong size is an error, never truncated.
    with pytest.raises(ValueError, match="head/(kernel|bias)"):
        transfer.load_params(init, src, dont_load=())
    # A body that does not fit is an error too.
    other = models.get("mlp", features=(8, 7), num_classes=3)
    bad = other.init({"params": jax.random.PRNGKey(3)}, x)["params"]
    with pytest.raises(ValueError, match="Dense_1/"):
        transfer.load_params(init, bad)


def test_layer_order_follows_creation_not_sorting():
    model = models.get("mlp", features=(3,) * 11, num_classes=2)
    order = transfer.param_order(model, jnp.zeros((1, 4)))
    assert order[20:22] == ["Dense_10/kernel", "Dense_10/bias"] and order[-2] == "head/kernel"
    shapes = jax.eval_shape(
        lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 4)))
    )
    flags = transfer.trainable_tree(shapes["params"], order, "all_but_first", 2)
    assert flags["Dense_1"]["bias"] is False and flags["Dense_2"]["kernel"] is True
    assert flags["Dense_10"]["kernel"] is True and flags["head"]["bias"] is True
    with pytest.raises(ValueError, match="freeze_layers"):
        transfer.trainable_tree(shapes["params"], order, "all_but_first", 12)


# ----------------------------------------------------------------------------- freezing


@pytest.mark.parametrize("mode,k", [("head", 0), ("all_but_first", 1)])
def test_frozen_params_unchanged_bit_for_bit(mode, k):
    ds = _toy_dataset()
    model = models.get("mlp", features=(16, 8), num_classes=3)
    opt = _opt(weight_decay=0.1, l2=0.01, l1=1e-3, max_norm=2.0)
    order = transfer.param_order(model, ds.train_x[:1])
    p0 = model.init({"params": jax.random.PRNGKey(0)}, ds.train_x[:1])["params"]
    trainable = transfer.trainable_tree(p0, order, mode, k)
    tx = transfer.make_finetune_optimizer(opt, trainable, l2_sp=0.1)
    eng = Engine(
        model=model,
        dataset=ds,
        optimizer=opt,
        steps=20,
        batch_size=16,
        eval_every=10,
        progress=False,
        tx=tx,
    )
    keys = jnp.stack([rng.derive(0, t, 0, "init") for t in range(2)])
    params, bs = eng.init(keys)
    start = jax.tree.map(np.array, params)
    runs = eng.fit(params, bs, jax.vmap(masks.ones_like)(params), keys, keys)
    flat = dict(masks.named_leaves(jax.tree.map(lambda a: a, trainable)))
    for path, after in masks.named_leaves(runs.params):
        before = dict(masks.named_leaves(start))[path]
        if flat[path]:
            assert not np.array_equal(after, before), path
        else:
            np.testing.assert_array_equal(_bits(after), _bits(before), err_msg=path)
    if mode == "head":
        assert [p for p, f in flat.items() if f] == ["head/bias", "head/kernel"]


# ----------------------------------------------------------------------------- L2-SP


def test_l2_sp_gradient_matches_the_gradient_of_its_penalty():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "Dense_0": {"kernel": jax.random.normal(k[0], (4, 3)), "bias": jnp.ones(3)},
        "head": {"kernel": jax.random.normal(k[1], (3, 2)), "bias": jnp.ones(2)},
    }
    anchor = jax.tree.map(lambda p: p + 0.5 * jax.random.normal(k[2], p.shape), params)
    grads = jax.tree.map(lambda p: jax.random.normal(k[3], p.shape), params)
    for mask in (None, "Dense_0/kernel", lambda path, leaf: True):
        tx = add_l2_sp(0.3, anchor, mask=mask)
        out, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        want = jax.grad(lambda p, m=mask: l2_sp_penalty(p, anchor, 0.3, mask=m))(params)
        expect = jax.tree.map(jnp.add, grads, want)
        for (path, a), (_, b) in zip(masks.named_leaves(out), masks.named_leaves(expect)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=f"{mask} {path}")
    # Default mask: kernels only; biases get no term.
    out, _ = add_l2_sp(0.3, anchor).update(grads, add_l2_sp(0.3, anchor).init(params), params)
    np.testing.assert_array_equal(out["head"]["bias"], grads["head"]["bias"])
    # anchor_params=None anchors at the params given to init: no pull at the start.
    tx = add_l2_sp(0.3)
    state = tx.init(params)
    out, _ = tx.update(grads, state, params)
    np.testing.assert_array_equal(out["Dense_0"]["kernel"], grads["Dense_0"]["kernel"])
    moved = jax.tree.map(lambda p: p + 1.0, params)
    out, _ = tx.update(grads, state, moved)
    np.testing.assert_allclose(out["Dense_0"]["kernel"], grads["Dense_0"]["kernel"] + 0.3)
    with pytest.raises(ValueError, match="strength"):
        add_l2_sp(-1.0)


def test_l2_sp_before_sgd_is_a_step_toward_the_anchor():
    w0 = {"kernel": jnp.array([[1.0, -2.0]])}
    w = {"kernel": jnp.array([[3.0, -2.0]])}
    tx = optax.chain(add_l2_sp(0.5, w0), optax.sgd(0.1))
    u, _ = tx.update({"kernel": jnp.zeros((1, 2))}, tx.init(w), w)
    np.testing.assert_allclose(u["kernel"], [[-0.1, 0.0]])


# ----------------------------------------------------------------------------- tickets


def test_transferred_mask_keeps_its_zeros_on_the_target():
    ds = _toy_dataset(classes=3)
    x = ds.train_x[:1]
    src_model = models.get("mlp", features=(16, 8), num_classes=5)
    tgt_model = models.get("mlp", features=(16, 8), num_classes=3)
    src = src_model.init({"params": jax.random.PRNGKey(0)}, x)["params"]
    src_mask = pruning.magnitude_prune(src, masks.ones_like(src), 0.7, layer_rates={"head": 0.5})
    shapes = jax.eval_shape(lambda: tgt_model.init({"params": jax.random.PRNGKey(0)}, x)["params"])
    tmask = transfer.transfer_mask(src_mask, shapes, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(tmask["Dense_0"]["kernel"], src_mask["Dense_0"]["kernel"])
    assert tmask["head"]["kernel"].shape == (8, 3)
    assert int(tmask["head"]["kernel"].sum()) == 12  # round(0.5 * 24)
    dense_head = transfer.transfer_mask(src_mask, shapes, jax.random.PRNGKey(1), head="dense")
    assert bool(dense_head["head"]["kernel"].all())

    opt = _opt(weight_decay=0.1, name="adamw")
    eng = Engine(
        model=tgt_model,
        dataset=ds,
        optimizer=opt,
        steps=20,
        batch_size=16,
        eval_every=10,
        progress=False,
        tx=transfer.make_finetune_optimizer(opt),
    )
    init, bs = eng.init(jax.random.PRNGKey(2)[None])
    params = transfer.load_params(init, jax.tree.map(lambda a: a[None], src))
    mask = jax.tree.map(lambda a: a[None], tmask)
    runs = eng.fit(params, bs, mask, jax.random.PRNGKey(3)[None], jax.random.PRNGKey(4)[None])
    for (path, p), (_, m) in zip(masks.named_leaves(runs.params), masks.named_leaves(mask)):
        p, m = np.asarray(p), np.asarray(m)
        assert np.all(p[~m] == 0.0), path
        if path.endswith("kernel"):
            assert np.any(p[m] != 0.0), path

    # Another subset of the same size (the next trial) reuses the compiled program.
    other = eng.for_dataset(_toy_dataset(classes=3, seed=1))
    runs2 = other.fit(params, bs, mask, jax.random.PRNGKey(3)[None], jax.random.PRNGKey(4)[None])
    assert eng.compilations == 1
    assert not np.array_equal(runs2.params["head"]["bias"], runs.params["head"]["bias"])


# ----------------------------------------------------------------------------- config


def tiny_config(**overrides):
    c = transfer.transfer_config()
    c.num_trials = 1
    c.progress = False
    c.num_devices = 1
    c.dataset.classes = (0, 1, 2, 3, 4)
    c.model.kwargs.features = (16, 8)
    c.train.steps = 40
    c.train.eval_every = 20
    c.train.batch_size = 50
    c.imp.rounds = 1
    c.imp.prune_rate = 0.5
    c.target.classes = (5, 6, 7)
    c.target.train_sizes = (0.05,)
    c.finetune.steps = 40
    c.finetune.eval_every = 20
    c.finetune.batch_size = 50
    c.finetune.l2_sp = 0.01
    c.transfer.arms = (
        "scratch",
        "pretrained",
        "pretrained+dropout+l2sp",
        "ticket_source",
        "ticket_target",
        "random_mask",
    )
    from lth_jax.checks import set_value

    for key, value in overrides.items():
        set_value(c, key, value)
    return c


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("transfer.arms", ("scratch+l2sp",), "scratch"),
        ("transfer.arms", ("pretrained+bogus",), "modifier"),
        ("transfer.arms", ("ticket_source",), None),
        ("target.train_sizes", (0.0,), "train_sizes"),
        ("finetune.trainable", "body", "trainable"),
        ("finetune.dropout", 1.0, "finetune.dropout"),
        ("finetune.steps", 30, "finetune.eval_every"),
        ("finetune.optimizer.name", "rmsprop", "finetune.optimizer.name"),
    ],
)
def test_bad_config_values_are_named(key, value, match):
    c = tiny_config(**{key: value})
    if match is None:  # ticket arms without IMP rounds
        c.imp.rounds = 0
        match = "imp.rounds"
    with pytest.raises(config_lib.ConfigError, match=match):
        transfer.validate(c)


@pytest.mark.parametrize(
    "name",
    [
        "transfer_mnist1d",
        # slow (TFDS mock data, bigger models); transfer_mnist1d covers the same CLI path and
        # tests/test_presets.py the TFDS mock-data path
        pytest.param("transfer_mnist_fashion", marks=pytest.mark.slow),
        pytest.param("transfer_cifar10_cifar100", marks=pytest.mark.slow),
    ],
)
def test_presets_validate(name):
    import importlib

    module = importlib.import_module(f"lth_jax.configs.{name}")
    for setting in module.SETTINGS:
        transfer.validate(module.get_config(setting))


# ----------------------------------------------------------------------------- end to end


def test_transfer_runs_end_to_end_and_resumes(tmp_path):
    c = tiny_config()
    wd = str(tmp_path / "tr")
    recs = transfer.run(c, wd)
    assert sorted(os.listdir(wd)) == sorted(
        [".lth-jax.lock", "config.json", "metrics.jsonl", "report.md", "report.png", "source"]
        + ["summary.json", "target_imp", "tensorboard"]  # tensorboard: the fine-tuning arms'
    )
    by = {r["arm"]: r for r in recs}
    assert list(by) == list(c.transfer.arms)
    for r in recs:
        assert r["status"] == "ok" and 0.0 <= r["final_test_accuracy"] <= 1.0
        assert r["num_classes"] == 3 and r["source_num_classes"] == 5
    assert by["pretrained"]["head"] == "new"
    assert by["pretrained"]["density"] == 1.0
    assert by["pretrained+dropout+l2sp"]["dropout"] == 0.5
    assert by["pretrained+dropout+l2sp"]["l2_sp"] == 0.01
    # The ticket carried over and the target's own ticket have (nearly) the same density.
    assert by["ticket_source"]["density"] < 0.6
    assert abs(by["ticket_source"]["density"] - by["ticket_target"]["density"]) < 0.02
    assert by["random_mask"]["density"] == by["ticket_source"]["density"]
    report = open(os.path.join(wd, "report.md")).read()
    assert "pretraining (no dropout): pretrained - scratch" in report
    assert report_lib.workdir_kind(wd) == "transfer"
    # `lth-jax report DIR` on a transfer workdir writes the transfer report.
    os.remove(os.path.join(wd, "report.md"))
    text = report_lib.write_report([wd])
    assert "pretrained" in text and "scratch" in text
    assert "Target test accuracy" in open(os.path.join(wd, "report.md")).read()
    with pytest.raises(ValueError, match="on its own"):
        report_lib.write_report([wd, str(tmp_path)])
    # Running again resumes: nothing retrained, identical records.
    again = transfer.run(c, wd)
    assert json.dumps(again, sort_keys=True) == json.dumps(recs, sort_keys=True)
    # Another config in the same workdir is refused.
    with pytest.raises(config_lib.ConfigError, match="different config"):
        transfer.run(tiny_config(**{"finetune.steps": 60}), wd)
    # Reusing the source head for a target with another class count is refused.
    with pytest.raises(config_lib.ConfigError, match="reuse_head"):
        transfer.run(tiny_config(**{"finetune.reuse_head": True}), str(tmp_path / "bad"))


def test_a_signal_stops_fine_tuning_at_a_chunk_end_and_the_rerun_resumes(tmp_path, monkeypatch):
    import signal

    from lth_jax import events
    from lth_jax import workdir as workdir_lib

    c = tiny_config(
        **{"transfer.arms": ("scratch", "pretrained"), "target.train_sizes": (0.05, 0.1)}
    )
    whole = transfer.run(c, str(tmp_path / "whole"))
    finetune = events.Live.finetune

    def signalled(self, size_index, trial, arms, label, on_chunk=None):
        def chunk(step, get_state):
            if size_index == 1:  # the second size's first chunk: as if Ctrl-C came
                os.kill(os.getpid(), signal.SIGINT)
            return on_chunk(step, get_state)

        return finetune(self, size_index, trial, arms, label, chunk)

    wd = str(tmp_path / "stopped")
    monkeypatch.setattr(events.Live, "finetune", signalled)
    with pytest.raises(workdir_lib.Interrupted, match="stopped by SIGINT in the fine-tuning") as e:
        transfer.run(c, wd)
    assert e.value.exit_code == 130
    kept = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert {r["size_index"] for r in kept} == {0}  # the finished size is kept
    monkeypatch.setattr(events.Live, "finetune", finetune)
    again = transfer.run(c, wd)
    assert json.dumps(again, sort_keys=True) == json.dumps(whole, sort_keys=True)


def test_a_pretrained_source_is_checked_before_anything_is_written(tmp_path):
    arms = {"transfer.arms": ("pretrained", "ticket_source")}
    first = str(tmp_path / "first")
    recs = transfer.run(tiny_config(**arms), first)
    # The same source, loaded instead of pretrained: the same records.
    reuse = {**arms, "transfer.pretrained_workdir": first}
    second = str(tmp_path / "second")
    again = transfer.run(tiny_config(**reuse), second)
    acc = lambda rs: [(r["arm"], r["final_test_accuracy"], r["density"]) for r in rs]
    assert acc(again) == acc(recs)
    assert not os.path.exists(os.path.join(second, "source"))
    # A source trained otherwise is refused, naming the keys, and nothing is written.
    other = str(tmp_path / "other")
    for key, value, shown in [
        ("train.steps", 60, "train.steps (40 -> 60)"),
        ("imp.prune_rate", 0.2, "imp.prune_rate (0.5 -> 0.2)"),
        ("seed", 1, "seed (0 -> 1)"),
    ]:
        with pytest.raises(config_lib.ConfigError, match="trained another source") as e:
            transfer.run(tiny_config(**reuse, **{key: value}), other)
        assert shown in str(e.value)
        assert not os.path.exists(other)
    # Only the dense network of round 0 loaded: the source's IMP settings do not matter.
    dense = {"transfer.arms": ("pretrained",), "transfer.pretrained_workdir": first}
    transfer.run(tiny_config(**dense, **{"imp.prune_rate": 0.2}), str(tmp_path / "dense"))
    # More trials than the source has: refused before --overwrite deletes anything.
    with pytest.raises(config_lib.ConfigError, match="only 1 trials"):
        transfer.run(tiny_config(**reuse, num_trials=2), second, overwrite=True)
    assert json.loads(open(os.path.join(second, "config.json")).read())["num_trials"] == 1
    assert len(open(os.path.join(second, "metrics.jsonl")).read().splitlines()) == len(again)


@pytest.mark.parametrize(
    "name",
    [
        "transfer_mnist1d",
        # slow (TFDS mock data, bigger models); transfer_mnist1d covers the same CLI path and
        # tests/test_presets.py the TFDS mock-data path
        pytest.param("transfer_mnist_fashion", marks=pytest.mark.slow),
        pytest.param("transfer_cifar10_cifar100", marks=pytest.mark.slow),
    ],
)
def test_preset_runs_through_the_cli(name, tmp_path, monkeypatch, capsys):
    """Each transfer preset (every arm, ticket arms included) runs a few steps end to end."""
    from lth_jax import cli

    path = os.path.join(os.path.dirname(__file__), "..", "lth_jax", "configs", f"{name}.py")
    mock = name != "transfer_mnist1d"
    data_dir = str(tmp_path / "data")
    tiny = {
        "num_trials": 1,
        "num_devices": 1,
        "progress": False,
        "train.steps": 2,
        "train.eval_every": 1,
        "train.batch_size": 4,
        "train.eval_batch_size": 8,
        "optimizer.warmup_steps": 0,
        "imp.rounds": 1,
        "imp.rewind_step": 0,
        "dataset.data_dir": data_dir,
        "target.data_dir": data_dir,
        "target.train_sizes": "(1.0,)",
        "finetune.steps": 2,
        "finetune.eval_every": 1,
        "finetune.batch_size": 4,
        "finetune.eval_batch_size": 8,
        "finetune.optimizer.warmup_steps": 0,
    }
    if mock:  # 16 mock examples per split: a small validation split
        tiny.update({"dataset.val_size": 4, "target.val_size": 4})
    workdir = str(tmp_path / "run")
    argv = ["run", "--config", path, "--workdir", workdir]
    argv += [f"--config.{k}={v}" for k, v in tiny.items()]
    if mock:
        pytest.importorskip("tensorflow")
        tfds = pytest.importorskip("tensorflow_datasets")
        monkeypatch.setenv("LTH_JAX_OFFLINE", "0")  # "download": a no-op under mock_data
        with tfds.testing.mock_data(num_examples=16):
            rc = cli.main(argv)
    else:
        rc = cli.main(argv)
    assert rc == 0, capsys.readouterr().err
    recs = report_lib.transfer.load_records(workdir)
    c = cli.load_config_file(path)
    assert {r["arm"] for r in recs} == set(c.transfer.arms)
    assert all(np.isfinite(r["final_test_accuracy"]) for r in recs)
    assert os.path.exists(os.path.join(workdir, "report.png"))
