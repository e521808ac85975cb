"""Bad input to ``lth-jax``: exit status 2, one plain line on stderr, no traceback.

Each case names what must appear in the message (the bad key or value). Most
cases call :func:`lth_jax.cli.main` in-process; a few run the real console
script as a subprocess. Config errors also raise ``ValueError`` with the same
text from the Python API (:func:`lth_jax.lottery.run`), before any work: the
workdir is not even created.
"""

from __future__ import annotations

import os
import subprocess
import sys

import ml_collections
import pytest

from lth_jax import checks, cli, cli_overrides, lottery
from lth_jax import config as config_lib

TINY = [
    "--config.progress=False",
    "--config.num_devices=1",
    "--config.train.steps=20",
    "--config.train.eval_every=10",
    "--config.imp.rounds=1",
]

# (id, argv after "lth-jax" with {wd} for a fresh workdir, words the message must contain)
CASES = [
    ("no-command", [], ["missing command"]),
    ("unknown-command", ["train", "--workdir", "{wd}"], ["'train'", "run, report"]),
    ("no-workdir", ["run", *TINY], ["--workdir"]),
    ("unknown-option", ["run", "--workdir", "{wd}", "--bogus"], ["--bogus"]),
    ("positional", ["run", "--workdir", "{wd}", "extra"], ["'extra'"]),
    ("unknown-key", ["run", "--workdir", "{wd}", "--config.foo=1"], ["foo"]),
    (
        "unknown-nested-key",
        ["run", "--workdir", "{wd}", "--config.train.stpes=10"],
        ["train.stpes", "train.steps"],
    ),
    ("int-not-int", ["run", "--workdir", "{wd}", "--config.train.steps=abc"], ["train.steps"]),
    ("int-is-float", ["run", "--workdir", "{wd}", "--config.train.steps=1.5"], ["train.steps"]),
    ("bad-bool", ["run", "--workdir", "{wd}", "--config.progress=maybe"], ["progress"]),
    ("no-value", ["run", "--workdir", "{wd}", "--config.imp.rounds"], ["imp.rounds"]),
    ("dict-as-scalar", ["run", "--workdir", "{wd}", "--config.train=5"], ["--config.train"]),
    ("config-missing", ["run", "--workdir", "{wd}", "--config", "{wd}.py"], ["no such file"]),
    (
        "preset-without-prefix",
        ["run", "--workdir", "{wd}", "--config", "mnist1d_rewinding:lr"],
        ["no such file", "did you mean --config preset:mnist1d_rewinding:lr?"],
    ),
    ("config-no-get-config", ["run", "--workdir", "{wd}", "--config", "{noget}"], ["get_config"]),
    ("config-syntax-error", ["run", "--workdir", "{wd}", "--config", "{syntax}"], ["SyntaxError"]),
    ("config-raises", ["run", "--workdir", "{wd}", "--config", "{raises}"], ["boom"]),
    ("rate-above-1", ["run", "--workdir", "{wd}", "--config.imp.prune_rate=1.5"], ["prune_rate"]),
    ("rate-negative", ["run", "--workdir", "{wd}", "--config.imp.prune_rate=-0.1"], ["prune_rate"]),
    ("lr-zero", ["run", "--workdir", "{wd}", "--config.optimizer.learning_rate=0"], ["learning"]),
    ("lr-nan", ["run", "--workdir", "{wd}", "--config.optimizer.learning_rate=nan"], ["nan"]),
    ("steps-zero", ["run", "--workdir", "{wd}", "--config.train.steps=0"], ["train.steps"]),
    ("batch-zero", ["run", "--workdir", "{wd}", "--config.train.batch_size=0"], ["batch_size"]),
    (
        "batch-too-big",
        ["run", "--workdir", "{wd}", *TINY, "--config.train.batch_size=100000"],
        ["train.batch_size", "3500"],
    ),
    ("dataset", ["run", "--workdir", "{wd}", "--config.dataset.name=imagenet"], ["mnist1d"]),
    ("model", ["run", "--workdir", "{wd}", "--config.model.name=gpt"], ["gpt", "lenet300_100"]),
    ("optimizer", ["run", "--workdir", "{wd}", "--config.optimizer.name=lion"], ["lion", "adam"]),
    ("arm", ["run", "--workdir", "{wd}", "--config.arms=ticket,bogus"], ["bogus", "reinit"]),
    ("no-ticket-arm", ["run", "--workdir", "{wd}", "--config.arms=reinit"], ["ticket"]),
    ("scope", ["run", "--workdir", "{wd}", "--config.imp.scope=local"], ["local", "global"]),
    ("rewind", ["run", "--workdir", "{wd}", "--config.imp.rewind=late"], ["late", "finetune"]),
    (
        "rewind-step-past-end",
        ["run", "--workdir", "{wd}", *TINY, "--config.imp.rewind_step=30"],
        ["imp.rewind_step", "30"],
    ),
    (
        "eval-every-not-dividing",
        ["run", "--workdir", "{wd}", *TINY, "--config.train.eval_every=7"],
        ["train.eval_every"],
    ),
    (
        "layer-rate-matches-nothing",
        ["run", "--workdir", "{wd}", *TINY, "--config.imp.layer_rates=(('conv9', 0.5),)"],
        ["conv9", "Dense_0/kernel"],
    ),
    (
        "layer-rate-shadowed",
        ["run", "--workdir", "{wd}", *TINY, "--config.imp.layer_rates=(('e', 0.5), ('head', 0.1))"],
        ["'head'", "earlier pattern", "head/kernel"],
    ),
    (
        "layer-rate-bad-regex",
        ["run", "--workdir", "{wd}", *TINY, "--config.imp.layer_rates=(('(', 0.5),)"],
        ["'('", "regular expression"],
    ),
    (
        "layer-rate-out-of-range",
        ["run", "--workdir", "{wd}", *TINY, "--config.imp.layer_rates=(('head', 1.0),)"],
        ["imp.layer_rates['head']", "[0, 1)", "1.0"],
    ),
    (
        "layer-rate-not-a-pair",
        ["run", "--workdir", "{wd}", *TINY, "--config.imp.layer_rates=head"],
        ["imp.layer_rates", "(regex, rate) pairs", "'head'"],
    ),
    (
        "layer-rate-as-a-block",
        ["run", "--workdir", "{wd}", *TINY, "--config.imp.layer_rates.head=0.1"],
        ["imp.layer_rates.head", "--config.imp.layer_rates=VALUE"],
    ),
    (
        "model-kwarg",
        ["run", "--workdir", "{wd}", *TINY, "--config.model.kwargs.widht=3"],
        ["model.kwargs.widht", "model.kwargs.widths"],
    ),
    (
        "model-kwarg-of-another-model",
        ["run", "--workdir", "{wd}", *TINY, "--config.model.kwargs.depth=20"],
        ["model.kwargs.depth", "'mlp'", "features"],
    ),
    (
        "model-kwarg-wrong-type",
        ["run", "--workdir", "{wd}", *TINY, "--config.model.kwargs.dropout=0.5.1"],
        ["--config.model.kwargs.dropout=0.5.1", "number"],
    ),
    (
        "model-kwarg-bad-tuple",
        ["run", "--workdir", "{wd}", *TINY, "--config.model.kwargs.features=16 8"],
        ["--config.model.kwargs.features=16 8", "tuple"],
    ),
    (
        "instability-points",
        ["run", "--workdir", "{wd}", "--config.instability.num_points=1"],
        ["instability.num_points", ">= 2", "1"],
    ),
    (
        "instability-unknown-key",
        ["run", "--workdir", "{wd}", "--config.instability.points=3"],
        ["instability.points", "instability.num_points"],
    ),
    (
        "noconfig-not-a-bool",
        ["run", "--workdir", "{wd}", "--noconfig.train.steps"],
        ["--noconfig.train.steps", "true/false"],
    ),
    ("empty-key", ["run", "--workdir", "{wd}", "--config.=3"], ["--config.", "empty"]),
    ("kind", ["run", "--workdir", "{wd}", "--config.kind=bogus"], ["'bogus'", "lottery"]),
    (
        "too-many-devices",
        ["run", "--workdir", "{wd}", *TINY[:1], "--config.num_devices=512"],
        ["num_devices=512"],
    ),
    (
        "val-size-too-big",
        ["run", "--workdir", "{wd}", *TINY, "--config.dataset.val_size=100000"],
        ["val_size=100000"],
    ),
    (
        "every-steps-negative",
        ["run", "--workdir", "{wd}", "--config.checkpoint.every_steps=-1"],
        ["checkpoint.every_steps"],
    ),
    (
        "one-shot-rounds",
        ["run", "--workdir", "{wd}", "--config.imp.one_shot_density=0.1"],
        ["imp.one_shot_density", "imp.rounds"],
    ),
    ("workdir-is-a-file", ["run", "--workdir", "{file}", *TINY], ["is not a directory"]),
    ("workdir-under-a-file", ["run", "--workdir", "{file}/sub", *TINY], ["cannot be created"]),
    ("report-missing-dir", ["report", "{wd}"], ["{wd}"]),
]

_SCRIPT = os.path.join(os.path.dirname(sys.executable), "lth-jax")
#: The installed console script (``python -m lth_jax.cli`` where it is missing).
LTH_JAX = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "lth_jax.cli"]

SUBPROCESS = {"unknown-key", "int-not-int", "config-missing", "rate-above-1", "batch-too-big"}


@pytest.fixture
def paths(tmp_path):
    noget = tmp_path / "noget.py"
    noget.write_text("def make_config():\n    return None\n")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def get_config(:\n")
    raises = tmp_path / "raises.py"
    raises.write_text("def get_config():\n    raise RuntimeError('boom')\n")
    file = tmp_path / "a_file"
    file.write_text("not a directory")
    return {
        "wd": str(tmp_path / "wd"),
        "noget": str(noget),
        "syntax": str(syntax),
        "raises": str(raises),
        "file": str(file),
    }


def _fill(items, paths):
    return [s.format(**paths) for s in items]


def _check(rc, err, words):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lth-jax: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("case_id,argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(case_id, argv, words, paths, capsys):
    argv, words = _fill(argv, paths), _fill(words, paths)
    if case_id in SUBPROCESS:
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        }
        p = subprocess.run(
            [*LTH_JAX, *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        rc, err = p.returncode, p.stderr
        assert p.stdout == ""
    else:
        rc = cli.main(argv)
        err = capsys.readouterr().err
    _check(rc, err, words)
    if argv[:1] == ["run"] and case_id not in ("workdir-is-a-file",):
        assert not os.path.exists(paths["wd"]), "bad input must stop before any work"


def _config(**overrides):
    c = config_lib.default_config()
    c.progress = False
    c.num_devices = 1
    c.train.steps = 20
    c.train.eval_every = 10
    c.imp.rounds = 1
    for key, value in overrides.items():
        checks.set_value(c, key, value)
    return c


API_CASES = [
    ("rate", {"imp.prune_rate": 1.5}, ["--config.imp.prune_rate=1.5"]),
    ("dataset", {"dataset.name": "imagenet"}, ["--config.dataset.name=imagenet"]),
    ("rewind-step", {"imp.rewind_step": 30}, ["--config.imp.rewind_step=30"]),
    ("batch", {"train.batch_size": 100000}, ["--config.train.batch_size=100000"]),
    (
        "layer-rate",
        {"imp.layer_rates": (("conv9", 0.5),)},
        ["--config.imp.layer_rates=(('conv9', 0.5),)"],
    ),
    ("model-kwarg", {"model.kwargs.depth": 20}, ["--config.model.kwargs.depth=20"]),
    ("arms-str", {"arms": ("ticket", "bogus")}, ["--config.arms=ticket,bogus"]),
]


@pytest.mark.parametrize("case_id,overrides,flags", API_CASES, ids=[c[0] for c in API_CASES])
def test_python_api_raises_valueerror_with_the_cli_text(
    case_id, overrides, flags, tmp_path, capsys
):
    wd = str(tmp_path / "wd")
    c = _config(**overrides)
    with pytest.raises(ValueError) as info:
        lottery.run(c, wd)
    assert isinstance(info.value, config_lib.ConfigError)
    assert "\n" not in str(info.value)
    rc = cli.main(
        [
            "run",
            "--workdir",
            wd,
            "--config.progress=False",
            "--config.num_devices=1",
            "--config.train.steps=20",
            "--config.train.eval_every=10",
            "--config.imp.rounds=1",
            *flags,
        ]
    )
    line = _check(rc, capsys.readouterr().err, [])
    assert line == f"lth-jax: error: {info.value}"
    assert not os.path.exists(wd)


def test_python_api_rejects_unknown_keys_and_wrong_types():
    c = _config()
    c.train.stpes = 10  # a typo in a config file
    with pytest.raises(
        ValueError, match=r"unknown config key train\.stpes; did you mean train\.steps"
    ):
        config_lib.validate(c)
    c = _config()
    c.train = {"steps": "20", "batch_size": 100, "eval_every": 10, "eval_batch_size": 1000}
    with pytest.raises(ValueError, match=r"train\.steps must be an integer >= 1, got '20'"):
        config_lib.validate(c)


def test_overrides_parse_as_the_keys_types(tmp_path):
    config, wd, overwrite = cli.parse_run_args(
        [
            "--workdir",
            str(tmp_path),
            "--config.arms=ticket,reinit",
            "--config.model.kwargs.features=(64, 32)",
            "--config.model.kwargs.dropout=0.1",
            "--config.imp.layer_rates=(('Dense_1', 0.3), ('head', 0.1))",
            "--config.kind=instability",  # the kind that reads instability.*
            "--config.instability.num_points=5",
            "--config.optimizer.learning_rate=1",
            "--config.dataset.classes=0,1,2",
            "--noconfig.progress",
            "--config.train.steps",
            "400",
            "--overwrite",
        ]
    )
    assert wd == str(tmp_path) and overwrite
    assert config.arms == ("ticket", "reinit")
    assert config_lib.model_kwargs(config) == {"features": (64, 32), "dropout": 0.1}
    assert config.imp.layer_rates == (("Dense_1", 0.3), ("head", 0.1))
    assert config.kind == "instability" and config.instability.num_points == 5
    assert config.optimizer.learning_rate == 1.0
    assert config.dataset.classes == (0, 1, 2)
    assert config.progress is False and config.train.steps == 400
    config_lib.validate(config)


@pytest.mark.parametrize(
    "argv",
    [
        ["--config.arms=ticket", "--config.arms=reinit"],
        ["--config.arms=('ticket', 'reinit')"],
        ["--config.arms", "ticket, reinit"],
    ],
)
def test_tuple_overrides_every_spelling(argv, tmp_path):
    config, _, overwrite = cli.parse_run_args(["--workdir", str(tmp_path), *argv])
    assert config.arms == ("ticket", "reinit") and not overwrite


def test_overrides_apply_to_a_config_file_in_any_order(tmp_path):
    preset = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "lth_jax",
        "configs",
        "conv_cifar10.py",
    )
    config, _, _ = cli.parse_run_args(
        ["--config.imp.rounds=2", "--workdir", str(tmp_path), "--config", f"{preset}:conv4"]
    )
    assert config.model.name == "conv4" and config.imp.rounds == 2
    assert config.imp.layer_rates == (("Conv_", 0.1), ("head", 0.1))


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("imp.layer_rates", {"head": 0.1}, ["imp.layer_rates", "(regex, rate) pairs"]),
        ("imp.layer_rates", (("head", 0.1, 2),), ["imp.layer_rates entries", "pairs"]),
        ("imp.layer_rates", (("head", 0.1), ("head", 0.2)), ["'head'", "twice"]),
        ("imp.layer_rates", ((3, 0.1),), ["imp.layer_rates entries"]),
        ("model.kwargs.features", 100, ["model.kwargs.features", "tuple"]),
        ("model.kwargs.dropout", 1.0, ["model.kwargs.dropout", "[0, 1)"]),
        ("model.kwargs.activation", 3, ["model.kwargs.activation", "string"]),
        ("instability.num_points", True, ["instability.num_points", ">= 2"]),
    ],
)
def test_python_api_checks_the_structured_keys(key, value, words):
    d = _config().to_dict()
    checks.set_value(d, key, value)  # a plain dict takes any value; a ConfigDict checks types
    c = ml_collections.ConfigDict(d)
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.validate(c)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_config_validate_leaves_transfer_configs_to_their_kind():
    c = _config(kind="transfer")
    with pytest.raises(config_lib.ConfigError, match="lth_jax.transfer.config.validate"):
        config_lib.validate(c)


def test_every_model_attribute_is_a_declared_key():
    import dataclasses

    from lth_jax import models

    declared = set(config_lib.base_config().model.kwargs)
    assert declared == set(config_lib.MODEL_KWARGS)
    for name in models.names():
        cls = models._entry(name).cls
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        settable = fields - {"parent", "name", "num_classes", "kernel_init", "bias_init"}
        assert settable <= declared, (name, settable - declared)


def test_switching_model_on_the_command_line_drops_the_other_models_kwargs(tmp_path):
    """The default config sets features=(100, 100) for its mlp; cnn1d does not take features,
    so --config.model.name=cnn1d clears it (before: refused, naming a key the user never set).
    A kwarg given on the command line stays and is checked; the same model keeps its kwargs."""
    wd = ["--workdir", str(tmp_path)]
    config, _, _ = cli.parse_run_args([*wd, "--config.model.name=cnn1d"])
    assert config.model.kwargs.features is None
    config_lib.validate(config)
    c = config_lib.default_config()  # a kwarg both models take stays
    c.model.kwargs.dropout = 0.2
    c.model.name = "cnn1d"
    assert cli_overrides.drop_other_model_kwargs(c, "mlp", ["--config.model.name=cnn1d"]) == [
        "features"
    ]
    assert config_lib.model_kwargs(c) == {"dropout": 0.2}
    config, _, _ = cli.parse_run_args(
        [*wd, "--config.model.name=cnn1d", "--config.model.kwargs.features=(8,)"]
    )
    assert config.model.kwargs.features == (8,)
    with pytest.raises(ValueError, match="not an attribute of model 'cnn1d'"):
        config_lib.validate(config)
    config, _, _ = cli.parse_run_args([*wd, "--config.model.kwargs.features=(8,)"])
    assert config.model.name == "mlp" and config.model.kwargs.features == (8,)


def test_a_closed_pipe_is_no_traceback():
    """lth-jax run --print-config | true: the reader is gone before the config is written;
    exit status 141, as a shell gives a command killed by SIGPIPE, and nothing on stderr."""
    cmd = [sys.executable, "-m", "lth_jax.cli", "run", "--print-config"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the child writes: its write fails with EPIPE
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
