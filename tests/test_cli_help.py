"""The help a researcher reads first: ``lth-jax --help``, ``COMMAND --help``, ``--version``,
``run --print-config``; and what the package says about itself (version, license, typing,
its public modules).

Everything goes through :func:`lth_jax.cli.main` in-process (no training).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lth_jax
from lth_jax import checks, cli, cli_help
from lth_jax import config as config_lib

ROOT = Path(__file__).resolve().parent.parent
#: Sphinx and reStructuredText markup that must not reach a terminal.
MARKUP = re.compile(r":(mod|func|class|data|meth|attr):|``")


def _main(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _commands() -> list[str]:
    return [line.replace("usage:", "").split()[1] for line in cli.USAGE.splitlines()]


# ----------------------------------------------------------------------------- lth-jax --help


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"]])
def test_main_help_lists_the_commands_and_options_in_plain_text(capsys, argv):
    rc, out, err = _main(capsys, *argv)
    assert rc == 0 and err == ""
    assert out.startswith("usage: lth-jax ")
    for command in _commands():
        assert re.search(rf"^  {command} +\S", out, re.M), f"{command} has no line:\n{out}"
    assert "--version" in out and "-h, --help" in out
    assert "exit status:" in out and "130" in out
    assert not MARKUP.search(out), MARKUP.search(out)


def test_version(capsys):
    rc, out, err = _main(capsys, "--version")
    assert (rc, out, err) == (0, f"lth-jax {lth_jax.__version__}\n", "")
    assert re.fullmatch(r"\d+\.\d+\.\d+(\S*)", lth_jax.__version__)


def test_help_command_is_command_help(capsys):
    for command in ("run", "report", "export"):
        assert _main(capsys, "help", command) == _main(capsys, command, "--help")


# ----------------------------------------------------------------------------- run --help


def test_run_help_lists_every_option_and_config_key_with_default_and_meaning(capsys):
    rc, out, err = _main(capsys, "run", "--help")
    assert rc == 0 and err == ""
    assert out.startswith("usage: lth-jax run ")
    for option in ("--config FILE", "--workdir DIR", "--config.KEY=VALUE", "--overwrite"):
        assert re.search(rf"^  {re.escape(option)}", out, re.M), option
    assert re.search(r"^  --print-config", out, re.M)
    assert not MARKUP.search(out), MARKUP.search(out)
    values = checks.flatten(config_lib.default_config())
    lines = out.splitlines()
    for key in config_lib.known_keys():
        head = f"  {key}={cli_help.format_value(values[key])}"
        at = [i for i, line in enumerate(lines) if line.startswith(head)]
        assert len(at) == 1, f"{head!r} is not one line of run --help"
        i = at[0]
        listed = " ".join(line.strip() for line in lines[i : i + 3])
        assert cli_help.meaning(key).split()[0] in listed, (key, listed)
    # the defaults are the embedded default's: what `lth-jax run` runs with no --config
    assert "  imp.rounds=13 " in out and "  kind=lottery " in out


def test_run_help_with_a_config_file_shows_its_values(capsys, tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "from lth_jax.config import base_config\n\n"
        "def get_config():\n"
        "    c = base_config()\n"
        "    c.train.steps = 777\n"
        "    return c\n",
        encoding="utf-8",
    )
    rc, out, _ = _main(capsys, "run", "--config", str(path), "--help")
    assert rc == 0
    assert "  train.steps=777 " in out and f"--config {path}" in " ".join(out.split())


def test_every_config_key_has_a_one_line_meaning():
    """The help's list of keys cannot fall behind the config: a new key needs a meaning."""
    from lth_jax.transfer.config import transfer_config

    keys = set(config_lib.known_keys()) | set(checks.flatten(transfer_config()))
    missing = sorted(k for k in keys if not cli_help.meaning(k))
    assert not missing, f"add a line to lth_jax.cli_help.KEY_MEANINGS for {missing}"
    stale = sorted(set(cli_help.KEY_MEANINGS) - keys)
    assert not stale, f"KEY_MEANINGS has keys no config declares: {stale}"
    for key in keys:
        text = cli_help.meaning(key)
        assert "\n" not in text and len(text) <= 80 and not MARKUP.search(text), (key, text)


# ----------------------------------------------------------------------------- report, export


@pytest.mark.parametrize(
    "command, shown",
    [
        ("report", ["DIR", "--out DIR", "--band", "(default: ci)", "(default: the first DIR"]),
        (
            "export",
            ["DIR", "--round R", "--trial T", "--arm ARM", "--out FILE", "(default: trained)"],
        ),
    ],
)
def test_report_and_export_help_list_their_options_and_defaults(capsys, command, shown):
    rc, out, err = _main(capsys, command, "--help")
    assert rc == 0 and err == ""
    assert out.startswith(f"usage: lth-jax {command} ")
    assert "options:" in out and "-h, --help" in out
    for text in shown:
        assert text in out, (text, out)
    assert not MARKUP.search(out), MARKUP.search(out)


def test_help_imports_no_jax():
    code = (
        "import sys\n"
        "from lth_jax import cli\n"
        "for argv in (['--help'], ['report', '--help'], ['export', '--help'], ['--version']):\n"
        "    assert cli.main(argv) == 0\n"
        "assert 'jax' not in sys.modules, 'imported jax'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


# ----------------------------------------------------------------------------- --print-config


def test_print_config_prints_the_resolved_config_and_runs_nothing(capsys, tmp_path):
    wd = tmp_path / "wd"
    rc, out, err = _main(
        capsys,
        "run",
        "--print-config",
        "--workdir",
        str(wd),
        "--config.imp.rounds=3",
        "--config.arms=ticket,reinit",
    )
    assert rc == 0 and err == ""
    printed = json.loads(out)
    assert printed["imp"]["rounds"] == 3 and printed["arms"] == ["ticket", "reinit"]
    assert printed["num_trials"] == 4  # the embedded default's, not base_config's
    assert not wd.exists()


def test_print_config_needs_no_workdir_and_reads_the_config_file(capsys, tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "from lth_jax.config import base_config\n\n"
        "def get_config(steps):\n"
        "    c = base_config()\n"
        "    c.train.steps = int(steps)\n"
        "    c.train.eval_every = 10\n"
        "    return c\n",
        encoding="utf-8",
    )
    rc, out, _ = _main(capsys, "run", "--config", f"{path}:50", "--config.seed=3", "--print-config")
    assert rc == 0
    printed = json.loads(out)
    assert (printed["train"]["steps"], printed["seed"]) == (50, 3)


def test_print_config_refuses_a_bad_config(capsys):
    rc, out, err = _main(capsys, "run", "--print-config", "--config.imp.prune_rate=1.5")
    assert rc == 2 and out == ""
    assert err.startswith("lth-jax: error:") and "prune_rate" in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- the package


def _public_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(lth_jax.__path__) if m.name[0] != "_")


def test_every_public_module_is_listed_and_reachable_as_an_attribute():
    names = dir(lth_jax)
    for must in ("instability", "regularizers_sp", "sparse", "dropout", "__version__"):
        assert must in names
    for name in _public_modules():
        assert name in names and name in lth_jax.__all__, name
        module = getattr(lth_jax, name)
        assert module is importlib.import_module(f"lth_jax.{name}"), name
    with pytest.raises(AttributeError):
        lth_jax.no_such_module  # noqa: B018


def test_one_version_license_typing_and_citation():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^dynamic = \["version"\]', project, re.M)
    assert not re.search(r"^version = ", project, re.M), "the version is set twice"
    assert 'version = { attr = "lth_jax.__version__" }' in pyproject
    assert 'license = "Apache-2.0"' in pyproject and 'license-files = ["LICENSE"]' in pyproject
    assert re.search(r'^lth_jax = \[.*"py\.typed".*\]', pyproject, re.M)
    assert (ROOT / "lth_jax" / "py.typed").is_file()
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    citation = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert "cff-version: 1.2.0" in citation
    assert f'version: "{lth_jax.__version__}"' in citation
    assert "license: Apache-2.0" in citation


def test_the_console_script_prints_the_version():
    exe = Path(sys.executable).with_name("lth-jax")
    if not exe.exists():
        pytest.skip("no lth-jax console script next to this interpreter")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    p = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env)
    assert (p.returncode, p.stdout) == (0, f"lth-jax {lth_jax.__version__}\n")
