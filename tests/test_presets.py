"""Every preset under lth_jax/configs/ loads, validates, builds its model and runs.

Two levels:

* every ``(file, argument)`` pair: ``get_config`` works, the config validates,
  the model builds with ``model.kwargs`` and every ``imp.layer_rates`` pattern
  matches a prunable layer (no data, no training: cheap);
* one argument per file: ``lth-jax run --config FILE:ARG`` end to end for a
  couple of steps (1 round, 1 trial, tiny batch), on MNIST-1D or on TFDS data
  mocked by ``tfds.testing.mock_data``, then the report.
"""

from __future__ import annotations

import ast
import glob
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from lth_jax import cli, configs, data, models, pruning
from lth_jax import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "lth_jax", "configs")
FILES = sorted(
    os.path.basename(p)
    for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
    if not os.path.basename(p).startswith("_")
)

# Every argument each preset accepts (None: the file takes none, or its default).
ARGS = {
    "lenet300_100_mnist.py": [None],
    "conv_cifar10.py": [None, "conv2", "conv4", "conv6", "conv2,dropout", "conv4,dropout",
                        "conv6,dropout"],
    "vgg19_cifar10.py": [None, "rewind", "warmup", "init"],
    "resnet20_cifar10.py": [None, "rewind", "warmup", "init"],
    "renda_resnet20.py": [None, "weights", "lr", "finetune", "init"],
    "srivastava_dropout_mnist.py": [None, "maxnorm", "dropout", "standard", "l2"],
    "regularizers_mnist1d.py": [None, "none", "l2", "weight_decay", "l1", "dropout",
                                "dropout_maxnorm"],
    "mnist1d_lottery.py": [None],
    "mnist1d_lottery_notebook.py": [None],
    "mnist1d_rewinding.py": [None, "init", "step500", "lr"],
    "mnist1d_methods.py": [None],
    "mnist1d_instability.py": [None, "0", "500"],
    "resnet20_instability.py": [None, "0", "500", "2000"],
}  # fmt: skip

# The argument run end to end for each file (the cheapest that still covers the file).
RUN = {
    "lenet300_100_mnist.py": None,
    "conv_cifar10.py": "conv6,dropout",
    "vgg19_cifar10.py": "rewind",
    "resnet20_cifar10.py": "warmup",
    "renda_resnet20.py": "lr",
    "srivastava_dropout_mnist.py": None,
    "regularizers_mnist1d.py": "dropout_maxnorm",
    "mnist1d_lottery.py": None,
    "mnist1d_lottery_notebook.py": None,
    "mnist1d_rewinding.py": "init",
    "mnist1d_methods.py": None,
    "mnist1d_instability.py": None,
    "resnet20_instability.py": "2000",
}


def _get_config(name, arg):
    return configs.get(name[:-3], arg)


# Kinds this file runs; presets of other kinds (``transfer``) are only loaded here and
# are run by their own runner's tests.
KINDS = ("lottery", "instability")


def _kind(name, arg=None):
    return _get_config(name, arg).get("kind", "lottery")


def test_every_preset_is_listed():
    ours = {n for n in FILES if _kind(n) in KINDS}
    assert ours == set(ARGS) == set(RUN)


@pytest.mark.parametrize("name", FILES)
def test_docstring_has_command_and_published_result(name):
    with open(os.path.join(CONFIG_DIR, name)) as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    assert doc, f"{name} has no module docstring"
    assert f"--config preset:{name[:-3]}" in doc
    assert "--workdir" in doc
    assert "Published" in doc or "published" in doc


@pytest.mark.parametrize("name", FILES)
def test_every_preset_loads(name):
    assert _get_config(name, None) is not None


@pytest.mark.parametrize("name,arg", [(n, a) for n in ARGS for a in ARGS[n]])
def test_config_validates_and_model_builds(name, arg):
    c = _get_config(name, arg)
    config_lib.validate(c)
    spec = data.get_spec(c.dataset.name)
    model = models.get(c.model.name, num_classes=spec.num_classes, **config_lib.model_kwargs(c))
    x = np.zeros((1, *spec.input_shape), np.float32)
    shapes = jax.eval_shape(lambda k: model.init({"params": k}, x), jax.random.key(0))
    rates = pruning.resolve_layer_rates(shapes["params"], c.imp.prune_rate, c.imp.layer_rates)
    # The config survives the round trip through config.json (what resuming compares):
    # read back, its lists where tuples were, it validates and means the same.
    saved = json.loads(c.to_json(sort_keys=True))
    back = ml_collections.ConfigDict(saved)
    config_lib.validate(back)
    assert config_lib.model_kwargs(back) == config_lib.model_kwargs(c)
    assert (
        pruning.resolve_layer_rates(shapes["params"], back.imp.prune_rate, back.imp.layer_rates)
        == rates
    )


def _old_layout(saved: dict) -> dict:
    """A config.json as written before layer_rates were pairs and model.kwargs declared."""
    old = json.loads(json.dumps(saved))
    old["imp"]["layer_rates"] = dict(old["imp"]["layer_rates"])
    old["model"]["kwargs"] = {k: v for k, v in old["model"]["kwargs"].items() if v is not None}
    del old["instability"]
    return old


@pytest.mark.parametrize("name,arg", [(n, a) for n in ARGS for a in ARGS[n]])
def test_old_workdir_configs_upgrade_to_the_preset(name, arg):
    """A workdir made by this preset before the config layout changed resumes without drift."""
    c = _get_config(name, arg)
    saved = json.loads(c.to_json(sort_keys=True))
    assert config_lib.upgrade_json(_old_layout(saved)) == saved
    assert config_lib.upgrade_json(saved) == saved  # the current layout is left alone


def test_bad_argument_is_refused():
    for name in (
        "conv_cifar10.py",
        "vgg19_cifar10.py",
        "renda_resnet20.py",
        "resnet20_instability.py",
        "mnist1d_rewinding.py",
    ):
        with pytest.raises(ValueError, match="takes"):
            _get_config(name, "bogus")


def test_instability_rewind_steps_fall_on_evaluations():
    """k, a multiple of 100, evaluates every gcd(k, 1000) steps; k = 0 and 2,000 as before."""
    every = {
        k: _get_config("resnet20_instability.py", str(k)).train.eval_every
        for k in (0, 100, 500, 2000, 2500)
    }
    assert every == {0: 1000, 100: 100, 500: 500, 2000: 1000, 2500: 500}
    with pytest.raises(ValueError, match="a multiple of 100"):
        _get_config("resnet20_instability.py", "150")
    assert _get_config("conv_cifar10.py", "conv4,dropout").optimizer.learning_rate == 2e-4
    assert _get_config("conv_cifar10.py", "conv4").optimizer.learning_rate == 3e-4


@pytest.fixture(scope="module")
def mnist1d_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("presets_data")
    data.load("mnist1d", "train", data_dir=d)
    return str(d)


def _tiny_overrides(c, data_dir):
    """Command-line overrides that make a preset run in seconds."""
    k = 1 if c.imp.rewind_step else 0
    over = {
        "train.steps": 2,
        "train.eval_every": 1,
        "train.batch_size": 4,
        "train.eval_batch_size": 8,
        "imp.rounds": min(c.imp.rounds, 1),
        "imp.rewind_step": k,
        "num_trials": 1,
        "num_devices": 1,
        "progress": False,
        "optimizer.warmup_steps": min(c.optimizer.warmup_steps, 1),
        "dataset.data_dir": data_dir,
        "dataset.val_size": 4 if c.dataset.name != "mnist1d" else 100,
    }
    if c.dataset.name != "mnist1d":  # one arm: every round has one run, one compilation
        over["arms"] = "('ticket',)"
    return [f"--config.{key}={value}" for key, value in over.items()]


#: Presets whose end-to-end run is slow (big models compiled under mock data); faster tests
#: cover them: test_config_validates_and_model_builds (their config and model), the MNIST-1D
#: and resnet20_cifar10 runs below (the CLI path, with and without TFDS mock data), and
#: tests/test_models.py (each model trains).
SLOW_RUNS = ("vgg19_cifar10.py", "resnet20_instability.py", "conv_cifar10.py", "renda_resnet20.py")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_RUNS else n for n in sorted(RUN)]
)
def test_preset_runs_through_the_cli(name, tmp_path, mnist1d_dir, monkeypatch, capsys):
    arg = RUN[name]
    c = _get_config(name, arg)
    path = f"preset:{name[:-3]}" + ("" if arg is None else f":{arg}")
    workdir = str(tmp_path / "run")
    argv = ["run", "--config", path, "--workdir", workdir, *_tiny_overrides(c, mnist1d_dir)]
    if c.dataset.name == "mnist1d":
        rc = cli.main(argv)
    else:
        pytest.importorskip("tensorflow")
        tfds = pytest.importorskip("tensorflow_datasets")
        monkeypatch.setenv("LTH_JAX_OFFLINE", "0")  # "download": a no-op under mock_data
        with tfds.testing.mock_data(num_examples=16):
            rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 0, err
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    rounds = min(c.imp.rounds, 1)
    assert {r["round"] for r in recs} == set(range(rounds + 1))
    assert all(np.isfinite(r["final_test_accuracy"]) for r in recs)
    if c.kind == "instability":
        assert all("barrier" in r for r in recs if r["arm"] in ("ticket", "dense"))
    assert os.path.exists(os.path.join(workdir, "report.png"))
