"""Presets by name: ``--config preset:NAME[:ARG]``, ``lth-jax presets``, shipped in the wheel."""

import ast
import json
import os
import re
import subprocess
import sys
import zipfile

import pytest

from lth_jax import cli, configs
from lth_jax.workdir import config_to_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "lth_jax", "configs")
NAMES = sorted(
    f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_")
)


def test_names_are_the_preset_modules():
    assert configs.names() == NAMES
    assert "mnist1d_lottery" in NAMES and "_common" not in NAMES


@pytest.mark.parametrize(
    "name,arg", [("mnist1d_lottery", None), ("mnist1d_rewinding", "lr"), ("conv_cifar10", "conv4")]
)
def test_preset_name_and_file_path_give_the_same_config(name, arg):
    tail = "" if arg is None else f":{arg}"
    by_name = cli.load_config_file(f"preset:{name}{tail}")
    by_path = cli.load_config_file(os.path.join(CONFIG_DIR, f"{name}.py") + tail)
    assert config_to_json(by_name) == config_to_json(by_path)
    assert config_to_json(by_name) == config_to_json(configs.get(name, arg))


def test_an_unknown_preset_is_one_line_exit_2(capsys):
    rc = cli.main(["run", "--config", "preset:mnist1d_lotery", "--workdir", "w"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1
    assert "no preset named 'mnist1d_lotery'" in err and "mnist1d_lottery" in err
    rc = cli.main(["presets", "nope"])
    assert rc == 2 and "no preset named 'nope'" in capsys.readouterr().err


def test_a_bad_preset_argument_names_the_preset(capsys):
    rc = cli.main(["run", "--config", "preset:mnist1d_rewinding:bogus", "--workdir", "w"])
    err = capsys.readouterr().err
    assert rc == 2 and "--config preset:mnist1d_rewinding:" in err and "takes one of" in err


def test_print_config_of_a_preset_with_an_override(capsys):
    argv = ["run", "--config", "preset:mnist1d_lottery", "--config.num_trials=2", "--print-config"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_trials"] == 2 and printed["imp"]["rounds"] == 16


def _docstring(name):
    with open(os.path.join(CONFIG_DIR, f"{name}.py"), encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read()))


@pytest.mark.parametrize("name", NAMES)
def test_info_reads_the_docstring(name):
    info = configs.info(name)
    doc = _docstring(name)
    assert info.summary == doc.splitlines()[0]
    assert info.commands and all(c.startswith("lth-jax ") for c in info.commands)
    assert f"--config preset:{name}" in info.commands[0]
    assert info.published and info.published.startswith("Published")
    assert len(info.published) > 60  # a finding, not only a citation
    assert info.ours
    if "<!-- generated from" in doc:  # ours: the first generated finding
        block = doc.split(": begin -->\n", 1)[1].split("\n<!--", 1)[0]
        bullet = ("\n" + block).split("\n- ")[1]
        assert info.ours.endswith(" ".join(bullet.split()))
    else:
        assert "no result of ours is claimed" in info.ours


def test_the_listing_has_a_line_each_for_every_preset(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        info = configs.info(name)
        block = re.search(
            rf"^{name}: (.*)\n  command: +(.*)\n  published: +(.*)\n  ours: +(.*)$", out, re.M
        )
        assert block, name
        assert block.group(1) == info.summary
        assert block.group(2).startswith(info.commands[0])
        assert block.group(4) == info.ours
    assert "preset:NAME" in out


def test_presets_name_prints_the_whole_docstring(capsys):
    assert cli.main(["presets", "mnist1d_methods"]) == 0
    assert capsys.readouterr().out.strip() == _docstring("mnist1d_methods").strip()


def test_listing_presets_imports_no_jax():
    code = "import sys; from lth_jax import cli; cli.main(['presets']); print('jax' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("False")


def test_the_wheel_ships_the_presets_the_license_and_py_typed(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",  # the build backend comes from the package registry, as for a user
            "-q",
            "-w",
            str(tmp_path),
            ROOT,
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    names = set(zipfile.ZipFile(tmp_path / wheel).namelist())
    for name in NAMES + ["__init__", "_common"]:
        assert f"lth_jax/configs/{name}.py" in names, name
    assert "lth_jax/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
