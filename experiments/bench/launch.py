"""Runs a command and reports its wall time, exit status and its own peak memory as JSON.

A process started from a large one inherits that one's peak resident memory
in ``ru_maxrss`` (Linux keeps the high-water mark of the forked copy across
``execve``), so the benchmark, holding about 1 GiB, starts its children through
this small launcher: the command's ``ru_maxrss`` (from ``os.wait4``) is then its
own. Usage::

    python experiments/bench/launch.py RESULT.json LOG -- COMMAND [ARG ...]

Output of the command goes to ``LOG``; ``RESULT.json`` gets ``{"wall_s",
"exit_status", "peak_rss_mib"}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    result, log_path, sep, *command = argv
    if sep != "--" or not command:
        raise SystemExit(__doc__)
    with open(log_path, "w") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
    rss = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024.0)
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as f:
        json.dump({"wall_s": wall, "exit_status": code, "peak_rss_mib": rss}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
