"""The ``lth-jax`` command.

::

    lth-jax run [--config FILE] --workdir DIR [--config.KEY=VALUE ...] [--overwrite]
    lth-jax report DIR [DIR ...] [--out DIR]

``run`` with no ``--config`` runs the embedded default (IMP on MNIST-1D, see
:func:`lth_jax.config.default_config`). Configs are ``ml_collections`` files
defining ``get_config()``; a file may take an argument after a colon
(``--config experiments/configs/foo.py:arg``). Running the same command on the
same workdir resumes it.

Exit status: 0 done; 2 bad input (one plain line on stderr naming the bad value
and what is allowed, no traceback); 1 anything else.
"""

from __future__ import annotations

import os
import sys

USAGE = (
    "usage: lth-jax run [--config FILE] --workdir DIR [--config.KEY=VALUE ...] [--overwrite]\n"
    "       lth-jax report DIR [DIR ...] [--out DIR]"
)


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


def _default_config_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")


def _parse_run(argv):
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        _default_config_path(),
        "Experiment config file.",
        flag_values=fv,
        lock_config=False,
    )
    flags.DEFINE_string("workdir", None, "Directory for results and checkpoints.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Discard an existing run in --workdir.", flag_values=fv)
    try:
        rest = fv(["lth-jax run", *argv])
    except flags.Error as e:
        raise UsageError(str(e).splitlines()[0]) from None
    except Exception as e:  # a config file that fails to load or an override that fails
        raise UsageError(
            f"--config: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if len(rest) > 1:
        raise UsageError(f"unexpected argument {rest[1]!r}; {USAGE.splitlines()[0]}")
    if not fv.workdir:
        raise UsageError("--workdir is required")
    return fv.config, fv.workdir, fv.overwrite


def _run(argv) -> int:
    from lth_jax import parallel

    config, workdir, overwrite = _parse_run(argv)
    parallel.configure_host_devices()
    parallel.initialize_distributed()
    import jax

    from lth_jax import lottery, report

    kind = config.get("kind", "lottery")
    if kind == "instability":
        from lth_jax import instability

        instability.run(config, workdir, overwrite=overwrite)
    else:
        lottery.run(config, workdir, overwrite=overwrite)
    if jax.process_index() == 0:
        table = report.write_report([workdir])
        print(table)
        print(f"wrote {os.path.join(workdir, 'metrics.jsonl')}, report.md and report.png")
    return 0


def _report(argv) -> int:
    import argparse

    from lth_jax import report

    p = argparse.ArgumentParser(prog="lth-jax report", exit_on_error=False)
    p.add_argument("dirs", nargs="+")
    p.add_argument("--out", default=None)
    try:
        args = p.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as e:
        raise UsageError(str(e) or USAGE) from None
    try:
        return report.main_report(args.dirs, out_dir=args.out)
    except ValueError as e:
        raise UsageError(str(e).splitlines()[0]) from None


def main(argv=None) -> int:
    """Entry point of the ``lth-jax`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from lth_jax.config import ConfigError

    try:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(USAGE)
            return 0 if argv else 2
        cmd, rest = argv[0], argv[1:]
        if cmd == "run":
            return _run(rest)
        if cmd == "report":
            return _report(rest)
        raise UsageError(f"unknown command {cmd!r}; commands are: run, report")
    except (UsageError, ConfigError) as e:
        print(f"lth-jax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lth-jax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
