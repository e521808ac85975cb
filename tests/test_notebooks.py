"""The Colab notebooks: every ``colab/*.ipynb`` runs top to bottom and draws a figure.

Each notebook is executed with nbclient in quick mode (``LTH_JAX_QUICK=1``: the
same cells with tiny runs) in a fresh kernel of *this* interpreter: the test
writes a kernelspec whose ``argv`` is ``sys.executable`` into a temporary
``JUPYTER_PATH``, so neither ``PATH`` nor kernels installed elsewhere decide which
Python (and which lth_jax) runs the notebook. Experiment workdirs go to a
temporary ``LTH_JAX_WORKDIR``, never into the repository, and the notebook files
are only read.

The committed notebooks carry the outputs of a full run (``LTH_JAX_QUICK``
unset) for readers; the static tests check that they do, that they stay small,
and that the first cell is the Colab-only install.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
EXPECTED = {"dropout", "lottery", "regularization", "transfer"}
KERNEL = "lth_jax_tests"
CELL_TIMEOUT_S = 600
STARTUP_TIMEOUT_S = 180
MAX_BYTES = 1_000_000
INSTALL = 'pip install -q "lth_jax @ git+https://github.com/lth-jax/lth_jax"'


def _ids(paths):
    return [p.stem for p in paths]


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _outputs(nb):
    return [o for c in _code_cells(nb) for o in c.get("outputs", [])]


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


def _errors(nb) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in _outputs(nb) if o.output_type == "error"]


def _text(nb) -> str:
    parts = []
    for o in _outputs(nb):
        if o.output_type == "stream":
            parts.append(o.text)
        elif "text/plain" in o.get("data", {}):
            parts.append(o.data["text/plain"])
    return "\n".join(parts)


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory) -> Path:
    """A JUPYTER_PATH holding one kernelspec: this interpreter running ipykernel."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "lth_jax tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    return root


def test_the_notebooks_are_there():
    assert EXPECTED <= {p.stem for p in NOTEBOOKS}, f"found {_ids(NOTEBOOKS)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook(path):
    """Colab install first; outputs of a full run, without errors, with figures; small."""
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "code", "the first cell must be the Colab install"
    first = nb.cells[0].source
    assert "if 'google.colab' in sys.modules" in first.replace('"', "'"), first
    assert INSTALL in first, first
    cells = _code_cells(nb)
    assert all(c.execution_count is not None for c in cells), f"{path.name} was not run in full"
    assert not _errors(nb), _errors(nb)
    assert _images(nb) >= 1, f"{path.name} carries no figure"
    assert "QUICK mode" not in _text(nb), f"{path.name} carries the outputs of a quick run"


#: Notebooks whose quick run is left to the slow set: what they run (the dropout functions and
#: the regularizer transforms, each on a small MLP) is what tests/test_dropouts.py and
#: tests/test_regularizers.py test directly, faster; test_committed_notebook still checks them.
SLOW_RUNS = ("dropout", "regularization")


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_RUNS else p for p in NOTEBOOKS],
    ids=_ids(NOTEBOOKS),
)
def test_notebook_runs_in_quick_mode(path, jupyter_path, tmp_path, monkeypatch):
    """The notebook runs top to bottom without error and shows at least one figure."""
    work = tmp_path / "workdir"
    monkeypatch.setenv("LTH_JAX_QUICK", "1")
    monkeypatch.setenv("LTH_JAX_WORKDIR", str(work))
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    # Inline figures even where the environment asks for another backend (CI often sets Agg).
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Quick mode is mostly XLA compilation; fewer optimizations compile faster.
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    nb = nbformat.read(path, as_version=4)
    before = sorted(p.name for p in (ROOT / "colab").iterdir())
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=STARTUP_TIMEOUT_S,
        record_timing=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
    assert not _errors(nb), _errors(nb)
    assert _images(nb) >= 1, f"{path.name} drew no figure in quick mode"
    assert "QUICK mode" in _text(nb), "the notebook did not see LTH_JAX_QUICK=1"
    assert sorted(p.name for p in (ROOT / "colab").iterdir()) == before, "it wrote into colab/"
    if path.stem in ("lottery", "transfer"):
        assert work.is_dir(), "the notebook did not use LTH_JAX_WORKDIR"


def _headers(text: str) -> set[tuple[str, ...]]:
    """The column names of each markdown table in ``text`` (the line above a ``|---|`` line)."""
    lines = text.splitlines()
    return {
        tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        for line, below in zip(lines, lines[1:])
        if line.startswith("|") and below.startswith("|") and set(below) <= set("|:- ")
    }


def test_committed_outputs_show_the_current_tables():
    """The tables the committed lottery and transfer notebooks print have today's columns."""
    from lth_jax import report

    results = ROOT / "experiments" / "results"
    lottery_rows = report.summarize(report.load_records(results / "mnist1d_lottery"))
    records = report.transfer.load_records(str(results / "transfer"))
    expected = {
        "lottery": _headers(report.format_table(lottery_rows)),
        "transfer": _headers(
            report.transfer.format_table(report.transfer.summarize(records))
            + "\n\n"
            + report.transfer.format_effects(report.transfer.effects(records))
        ),
    }
    for name, headers in expected.items():
        shown = _headers(_text(nbformat.read(ROOT / "colab" / f"{name}.ipynb", as_version=4)))
        assert len(headers) == (1 if name == "lottery" else 2) and headers <= shown, (name, shown)
