"""Every ```python block of README.md runs as written, in order, in one fresh interpreter.

The blocks are joined into one script (each after the ones above it, as a
reader pastes them) and run by a subprocess on CPU (``JAX_PLATFORMS=cpu``) in
a temporary folder. The block that reads ``ticket.npz`` (the sparse-export
section) is preceded by what the README says makes that file: a tiny
``lth-jax run`` and ``lth-jax export --out ticket.npz``, through
:func:`lth_jax.cli.main` in the same interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```\s*$", re.S | re.M)
TIMEOUT_S = 300

#: The README's ``lth-jax run`` and ``lth-jax export``, made tiny.
RUN = [
    "run",
    "--workdir",
    "run",
    "--config.num_trials=1",
    "--config.imp.rounds=1",
    "--config.train.steps=50",
    "--config.train.eval_every=50",
    "--config.arms=ticket",
    "--config.model.kwargs.features=(32,16)",
    "--config.progress=false",
    "--config.num_devices=1",
]
EXPORT = ["export", "run", "--round", "1", "--trial", "0", "--out", "ticket.npz"]
MAKE_TICKET = f"""\
# test set-up, not in the README: the sparse-export section's `lth-jax run` and `lth-jax export`
import lth_jax.cli
assert lth_jax.cli.main({RUN!r}) == 0
assert lth_jax.cli.main({EXPORT!r}) == 0
"""


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def script(blocks: list[str]) -> str:
    parts, made = [], False
    for i, block in enumerate(blocks, 1):
        if "ticket.npz" in block and not made:
            parts.append(MAKE_TICKET)
            made = True
        parts.append(f"# ---- README.md, python block {i}\n{block}")
    return "\n".join(parts)


def test_the_readme_has_python_blocks_that_compile():
    blocks = python_blocks()
    assert len(blocks) >= 4, f"found {len(blocks)} python blocks"
    for i, block in enumerate(blocks, 1):
        compile(block, f"README.md python block {i}", "exec")


def test_the_readme_python_blocks_run_in_order(tmp_path):
    path = tmp_path / "readme_blocks.py"
    path.write_text(script(python_blocks()), encoding="utf-8")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "MPLBACKEND": "Agg",
    }
    start = time.monotonic()
    p = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    took = time.monotonic() - start
    assert p.returncode == 0, (
        f"the README's python blocks failed (script {path}):\n{p.stderr[-4000:]}"
    )
    assert "Traceback" not in p.stderr, p.stderr[-4000:]
    print(f"README python blocks ran in {took:.1f} s")
