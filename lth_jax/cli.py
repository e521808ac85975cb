"""The ``lth-jax`` command: ``run``, ``report`` and ``export``.

What each command does, its options with their defaults, the override syntax
(``--config.KEY=VALUE``) and the exit status are in the help texts, plain
text: ``lth-jax --help`` and ``lth-jax run --help`` (every config key with its
value and meaning) come from :mod:`lth_jax.cli_help`, ``lth-jax report
--help`` and ``lth-jax export --help`` from the argparse parsers below.
``lth-jax run --print-config`` prints the resolved config and exits;
``lth-jax --version`` prints the version.

Parsing is ``config_flags.DEFINE_config_dict`` on a private
``absl.flags.FlagValues``, with ``--workdir`` and ``--overwrite`` absl flags
next to it. Five things are done around it (the override parts in
:mod:`lth_jax.cli_overrides`), because ``config_flags`` (ml_collections 1.1.0,
absl-py 2.5.1) does them otherwise:

* the ``--config`` file is loaded here (:func:`load_config_file`):
  ``DEFINE_config_file`` turns a missing file into a config that raises on
  first use and re-raises a failing ``get_config`` with its whole traceback in
  the message;
* override keys are looked up first: an unknown key
  (``--config.train.stpes=10``) is a bare ``AttributeError("'stpes'")`` raised
  while the flags are defined; here it names the key and the nearest one;
* comma-separated words are split here: the tuple parser reads
  ``--config.arms=ticket,reinit`` as the one-element tuple
  ``('ticket,reinit',)`` (``ast.literal_eval`` fails on bare words, and the
  whole text is then taken as one string), so a tuple value with a comma and
  no brackets or quotes is split at its commas;
* absl's errors (``flag --config.train.steps=abc: invalid literal for int()
  with base 10: 'abc'``) become the one line below, saying what the key takes;
* ``--config.model.name`` naming another model clears the config's
  ``model.kwargs`` that model does not take (the default config's
  ``features``, say, when switching to ``cnn1d``), unless they are set on the
  command line too.

A config file is only Python run here: one that calls ``sys.exit()`` (while
loading or in ``get_config``) is a bad config like one that raises.

Exit status (:data:`lth_jax.cli_help.EXIT_STATUS`): 0 done; 2 bad input, one
plain line on stderr (``lth-jax: error: ...``), no traceback (input checked
before the run starts leaves the workdir as it was); 1 the run could not go
on (:class:`lth_jax.workdir.RunFailed`, one line; a traceback for anything
unexpected); 130 / 143 stopped by SIGINT / SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from lth_jax import __version__, cli_help, configs, kinds, report, sweep
from lth_jax.checks import ConfigError, with_detail
from lth_jax.cli_overrides import (
    UsageError,
    absl_error,
    check_override_keys,
    drop_other_model_kwargs,
    explained,
    one_line,
)
from lth_jax.workdir import RunFailed, config_to_json

USAGE = (
    "usage: lth-jax run [--config FILE[:ARG]|preset:NAME[:ARG]] --workdir DIR"
    " [--config.KEY=VALUE ...] [--overwrite] [--print-config]\n"
    "       lth-jax report DIR [DIR ...] [--pool] [--out DIR] [--band ci|std|sem|minmax]\n"
    "       lth-jax export DIR --round R --trial T [--arm ARM] [--weights trained|rewind]"
    " --out FILE\n"
    "       lth-jax sweep --workdir DIR --sweep KEY=V1,V2[,...] [--sweep ...]"
    " [--launcher local|slurm] [--parallel N] [--config FILE[:ARG]] [--config.KEY=VALUE ...]\n"
    "       lth-jax presets [NAME]"
)


WEIGHTS = ("trained", "rewind")


#: The command could not do its work, for a known reason that is not bad input:
#: :func:`main` prints the message as one line and returns exit status 1.
CommandFailed = RunFailed


class _ArgumentParser(argparse.ArgumentParser):
    """Raises :class:`UsageError` where argparse would print usage and exit."""

    def error(self, message):
        raise UsageError(message)


class _Help(Exception):
    """Help was asked for: ``args[0]`` is the text to print (none: ``lth-jax --help``)."""


def _short(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _exit_arg(e: SystemExit) -> str:
    return "" if e.code is None else repr(e.code)


# ----------------------------------------------------------------------------- config files


def load_config_file(spec: str):
    """The ``ConfigDict`` of ``FILE[:ARG]`` or ``preset:NAME[:ARG]`` (``get_config([ARG])``).

    ``preset:NAME`` is the module ``NAME`` of :mod:`lth_jax.configs`, installed
    with the package (``lth-jax presets`` lists them).

    Raises:
      UsageError: no such file or preset, or the file fails to import, has no
        ``get_config`` or that does not return a config.
    """
    label = spec.partition(":")[0]  # what messages call the config: the file, or the preset
    if spec.startswith(configs.PREFIX):
        name, preset_arg = configs.split_spec(spec)
        label = f"{configs.PREFIX}{name}"
        try:
            spec = configs.path(name) + ("" if preset_arg is None else f":{preset_arg}")
        except ValueError as e:
            raise UsageError(f"--config {label}: {e} (lth-jax presets)") from None
    path, sep, arg = spec.partition(":")
    if not path:
        raise UsageError("--config needs a file name or preset:NAME")
    if not os.path.exists(path):
        hint = "a config file, or preset:NAME: lth-jax presets"
        if path in configs.names():  # a preset named without preset:
            hint = f"did you mean --config {configs.PREFIX}{spec}?"
        raise UsageError(f"--config {path}: no such file ({hint})")
    if os.path.isdir(path):
        raise UsageError(f"--config {path}: is a directory, not a config file")
    name = "lth_jax_config_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    try:
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError("not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any failure is the file's
        raise UsageError(f"--config {label}: cannot be loaded ({_short(e)})") from None
    except SystemExit as e:
        raise UsageError(
            f"--config {label}: calls sys.exit({_exit_arg(e)}) while loading; a config file "
            "defines get_config() and returns a config"
        ) from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UsageError(f"--config {label}: defines no get_config() function")
    try:
        config = get_config(arg) if sep else get_config()
    except Exception as e:  # noqa: BLE001
        call = f"get_config({arg!r})" if sep else "get_config()"
        raise UsageError(f"--config {label}: {call} failed ({_short(e)})") from None
    except SystemExit as e:
        call = f"get_config({arg!r})" if sep else "get_config()"
        raise UsageError(
            f"--config {label}: {call} calls sys.exit({_exit_arg(e)}) instead of returning a config"
        ) from None
    if isinstance(config, dict):
        config = ml_collections.ConfigDict(config)
    if not isinstance(config, ml_collections.ConfigDict):
        raise UsageError(
            f"--config {label}: get_config() must return an ml_collections.ConfigDict, "
            f"got {type(config).__name__}"
        )
    return config


def _take_config_file(argv: list[str]) -> tuple[str | None, list[str]]:
    """``(FILE[:ARG] or None, the other arguments)``; the last ``--config`` wins."""
    spec, rest = None, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg == "--":
            rest.extend(argv[i:])
            break
        if name in ("--config", "-config"):
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise UsageError("--config needs a value (a config file)")
                i += 1
                value = argv[i]
            spec = value
        else:
            rest.append(arg)
        i += 1
    return spec, rest


def parse_run_args(argv, workdir_required: bool = True):
    """``(config, workdir, overwrite)`` from ``lth-jax run`` arguments.

    Raises:
      UsageError: any bad argument (the message is one line).
    """
    from lth_jax.config import default_config  # here: `lth-jax report` never imports JAX

    argv = list(argv)
    # The config is loaded first: the types of its keys decide how overrides parse.
    spec, rest = _take_config_file(argv)
    config = default_config() if spec is None else load_config_file(spec)
    if any(a in ("-h", "--help") for a in rest):
        raise _Help(cli_help.run_help(USAGE.splitlines()[0], config, spec))
    check_override_keys(config, rest)
    before = config.get("model", {}).get("name")
    args = ["lth-jax run", *rest]
    fv = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict(
            "config", config, flag_values=fv, lock_config=False, sys_argv=args
        )
        flags.DEFINE_string("workdir", None, "results and checkpoints", flag_values=fv)
        flags.DEFINE_boolean("overwrite", False, "discard the workdir's run", flag_values=fv)
        for name in list(fv):
            if name != "config":
                fv[name].parser = explained(fv[name].parser)
        positional = fv(args)[1:]
    except flags.UnrecognizedFlagError as e:
        raise UsageError(
            f"unknown option --{e.flagname}; options are --config, --workdir, --overwrite, "
            "--print-config, --config.KEY=VALUE (lth-jax run --help)"
        ) from None
    except (flags.Error, ValueError, TypeError, KeyError, AttributeError) as e:
        raise UsageError(absl_error(e)) from None
    if positional:
        raise UsageError(f"unexpected argument {positional[0]!r}; {USAGE.splitlines()[0]}")
    drop_other_model_kwargs(config, before, rest)
    if not fv.workdir and workdir_required:
        raise UsageError("--workdir is required (the directory for results and checkpoints)")
    return config, fv.workdir, fv.overwrite


# ----------------------------------------------------------------------------- commands


def _run(argv) -> int:
    from lth_jax import data, parallel  # here: `lth-jax report` never imports JAX

    print_config = "--print-config" in argv
    argv = [a for a in argv if a != "--print-config"]
    config, workdir, overwrite = parse_run_args(argv, workdir_required=not print_config)
    k = kinds.get(config.get("kind", "lottery"))
    if print_config:  # the config a run would write as config.json; a bad one is exit 2
        k.validate(config)
        try:
            print(json.dumps(config_to_json(config), indent=2, sort_keys=True), flush=True)
        except BrokenPipeError:  # the reader went away (lth-jax run --print-config | head)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
            return 141  # what a shell reports for a command killed by SIGPIPE
        return 0
    parallel.configure_host_devices()
    k.validate(config)
    try:
        parallel.initialize_distributed()
    except parallel.DistributedStartError as e:
        raise CommandFailed(str(e)) from None
    try:
        k.run(config, workdir, overwrite=overwrite)
    except data.DatasetUnavailableError as e:  # a dataset the runner did not check first
        raise with_detail(e) from None
    if parallel.is_main():
        text = k.report(workdir)
        print(text)
        metrics = os.path.join(workdir, "metrics.jsonl")
        print(f"wrote {metrics}, report.md, summary.json and report.png")
    return 0


def _formatter(prog):
    return argparse.HelpFormatter(prog, width=cli_help.WIDTH, max_help_position=26)


def _parse(p, argv, usage: str):
    """``p``'s arguments from ``argv``: ``--help`` raises :class:`_Help`; errors, one line."""
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    if any(a in ("-h", "--help") for a in argv):
        p.formatter_class, p.usage = _formatter, usage
        raise _Help(p.format_help().rstrip())
    try:
        args, unknown = p.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from None
    if unknown:
        raise UsageError(f"unexpected argument {unknown[0]!r}; {usage}")
    return args


def _report(argv) -> int:
    p = _ArgumentParser(
        prog="lth-jax report", exit_on_error=False, add_help=False, **cli_help.REPORT
    )
    p.add_argument("dirs", nargs="*", metavar="DIR", help=cli_help.DIRS)
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where the report goes (default: the first DIR; with --pool, pooled/ beside the DIRs)",
    )
    p.add_argument("--band", default="ci", choices=tuple(report.BANDS), help=cli_help.BAND)
    p.add_argument(
        "--pool",
        action="store_true",
        help="one report of the trials of all DIRs, whose configs differ only in seed; trials "
        "keyed by (seed, trial)",
    )
    usage = USAGE.splitlines()[1].strip()
    args = _parse(p, argv, usage)
    if not args.dirs:
        raise UsageError(f"report needs a DIR; {usage}")
    try:
        return report.main_report(args.dirs, out_dir=args.out, band=args.band, pooled=args.pool)
    except (ValueError, OSError) as e:
        raise UsageError(one_line(str(e))) from None


def _export(argv) -> int:
    p = _ArgumentParser(
        prog="lth-jax export", exit_on_error=False, add_help=False, **cli_help.EXPORT
    )
    p.add_argument("workdir", nargs="?", metavar="DIR", help="the workdir (required)")
    p.add_argument("--round", type=int, metavar="R", help="the round; 0: dense (required)")
    p.add_argument("--trial", type=int, metavar="T", help="the trial (required)")
    p.add_argument("--arm", help="the arm (default: ticket; dense in round 0)")
    p.add_argument("--weights", default="trained", choices=WEIGHTS, help=cli_help.WEIGHTS)
    p.add_argument("--out", metavar="FILE", help="the .npz file to write (required)")
    usage = USAGE.splitlines()[2].strip()
    args = _parse(p, argv, usage)
    given = {"DIR": args.workdir, "--round": args.round, "--trial": args.trial, "--out": args.out}
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise UsageError(f"export needs {', '.join(missing)}; {usage}")
    from lth_jax.sparse import export  # here: `lth-jax report` never imports JAX

    info = export.export(args.workdir, args.round, args.trial, args.out, args.arm, args.weights)
    print(f"wrote {args.out}: {export.summary(info)}")
    return 0


def _presets(argv) -> int:
    p = _ArgumentParser(
        prog="lth-jax presets", exit_on_error=False, add_help=False, **cli_help.PRESETS
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="one preset: its whole description")
    name = _parse(p, argv, USAGE.splitlines()[4].strip()).name
    try:
        cli_help.emit(configs.listing() if name is None else configs.info(name).doc)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return 0


def main(argv=None) -> int:
    """Entry point of the ``lth-jax`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("-h", "--help", "help"):
            if argv[0] == "help" and argv[1:2] and argv[1] != "help":  # lth-jax help COMMAND
                return main([argv[1], "--help"])
            raise _Help()
        if argv and argv[0] == "--version":
            print(f"lth-jax {__version__}")
            return 0
        if not argv:
            raise UsageError("missing command; " + USAGE.splitlines()[0])
        cmd, rest = argv[0], argv[1:]
        if cmd == "run":
            return _run(rest)
        if cmd == "report":
            return _report(rest)
        if cmd == "export":
            return _export(rest)
        if cmd == "sweep":
            return sweep.main(rest, parse_run_args, UsageError)
        if cmd == "presets":
            return _presets(rest)
        raise UsageError(
            f"unknown command {cmd!r}; commands are: run, report, export, sweep, presets"
        )
    except _Help as e:
        cli_help.emit(e.args[0] if e.args else cli_help.main_help(USAGE, __version__))
        return 0
    except (UsageError, ConfigError) as e:
        detail = f"\n{e.detail}" if getattr(e, "detail", "") else ""  # a dataset's how-to
        print(f"lth-jax: error: {one_line(str(e))}{detail}", file=sys.stderr, flush=True)
        return 2
    except CommandFailed as e:
        print(f"lth-jax: error: {one_line(str(e))}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as e:
        code = getattr(e, "exit_code", 130)
        msg = one_line(str(e)) or "interrupted"
        print(f"lth-jax: {msg}", file=sys.stderr, flush=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
