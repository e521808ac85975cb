"""The committed reports under ``experiments/results/`` regenerate byte for byte.

``report.md`` and ``summary.json`` always; ``report.png`` with the matplotlib
that drew the committed figures; the regularizers' ``table.md`` from their
``results.json``.
"""

from __future__ import annotations

import os

import matplotlib
import pytest

from lth_jax import cli, configs, kinds
from lth_jax.report import regularizers

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments", "results")

#: The matplotlib version the committed figures were drawn with.
FIGURES_DRAWN_WITH = "3.11.2"

#: report folder -> the workdirs ``lth-jax report`` was run on.
REPORTS = {
    "mnist1d_lottery": ["mnist1d_lottery"],
    "mnist1d_lottery_notebook": ["mnist1d_lottery_notebook"],
    "mnist1d_methods": ["mnist1d_methods"],
    "mnist1d_instability/k0": ["mnist1d_instability/k0"],
    "mnist1d_instability/k500": ["mnist1d_instability/k500"],
    "mnist1d_instability": ["mnist1d_instability/k0", "mnist1d_instability/k500"],
    "transfer": ["transfer"],
    "mnist1d_rewinding": [
        "mnist1d_rewinding/init",
        "mnist1d_rewinding/step500",
        "mnist1d_rewinding/lr",
    ],
}


@pytest.mark.parametrize("folder", sorted(REPORTS))
def test_committed_report_regenerates(folder, tmp_path, capsys):
    dirs = [os.path.join(RESULTS, d) for d in REPORTS[folder]]
    out = str(tmp_path / "out")
    assert cli.main(["report", *dirs, "--out", out]) == 0
    capsys.readouterr()
    for name in ("report.md", "summary.json"):
        with open(os.path.join(RESULTS, folder, name), encoding="utf-8") as f:
            want = f.read()
        with open(os.path.join(out, name), encoding="utf-8") as f:
            got = f.read()
        assert got == want, f"{folder}/{name} differs from what the report code writes now"
    # The figures too, byte for byte, with the matplotlib that drew the committed ones
    # (another version may place a pixel differently; the text files above still must match).
    if matplotlib.__version__ == FIGURES_DRAWN_WITH:
        with open(os.path.join(RESULTS, folder, "report.png"), "rb") as f:
            want_png = f.read()
        with open(os.path.join(out, "report.png"), "rb") as f:
            assert f.read() == want_png


def test_committed_regularizer_table_is_what_results_json_gives():
    folder = os.path.join(RESULTS, "regularizers")
    with open(os.path.join(folder, regularizers.TABLE_FILE), encoding="utf-8") as f:
        want = f.read()
    assert regularizers.format_table(regularizers.load_results(folder)) + "\n" == want


#: results folder -> the preset (and argument) whose command made it.
PRESETS = {
    "mnist1d_lottery": ("mnist1d_lottery", None),
    "mnist1d_lottery_notebook": ("mnist1d_lottery_notebook", None),
    "mnist1d_methods": ("mnist1d_methods", None),
    "mnist1d_rewinding/init": ("mnist1d_rewinding", "init"),
    "mnist1d_rewinding/step500": ("mnist1d_rewinding", "step500"),
    "mnist1d_rewinding/lr": ("mnist1d_rewinding", "lr"),
    "mnist1d_instability/k0": ("mnist1d_instability", "0"),
    "mnist1d_instability/k500": ("mnist1d_instability", "500"),
    "transfer": ("transfer_mnist1d", None),  # its source/ is checked by the transfer run
}


def test_every_results_workdir_is_what_its_preset_runs_now():
    """The committed results are those the preset's command gives with today's code: its
    workdir would resume without drift (a changed default, e.g. a new key whose default
    differs from what the results ran with, fails here until they are re-run)."""
    found = {
        os.path.relpath(folder, RESULTS).replace(os.sep, "/")
        for folder, _, files in os.walk(RESULTS)
        if "config.json" in files and os.path.basename(folder) != "source"
    }
    assert found == set(PRESETS)
    for folder, (name, arg) in PRESETS.items():
        config = configs.get(name, arg)
        kinds.get(config.get("kind", "lottery")).check_drift(os.path.join(RESULTS, folder), config)
