"""``experiments/regularizers.py``: other settings in a workdir are one line; --overwrite reruns."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "regularizers.py")


def _run(tmp_path, *extra):
    args = [
        *("--out", str(tmp_path / "out"), "--workroot", str(tmp_path / "runs")),
        *("--settings", "none", "--config.train.steps=20", "--config.train.eval_every=20"),
        *extra,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_other_settings_are_refused_in_one_line_and_overwrite_reruns(tmp_path):
    first = _run(tmp_path, "--trials", "1")
    assert first.returncode == 0, first.stderr
    refused = _run(tmp_path, "--trials", "2")
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "num_trials (1 -> 2)" in errors[0], refused.stderr
    assert "--workroot, or --overwrite" in errors[0] and "Traceback" not in refused.stderr
    typo = _run(tmp_path, "--trials", "2", "--config.train.stepz=20")
    assert typo.returncode == 2 and "Traceback" not in typo.stderr, typo.stderr
    assert "unknown config key train.stepz" in typo.stderr
    again = _run(tmp_path, "--trials", "2", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert "± " in (tmp_path / "out" / "table.md").read_text()  # two trials: mean ± std
