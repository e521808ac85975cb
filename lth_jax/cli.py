"""The ``lth-jax`` command.

::

    lth-jax run [--config FILE[:ARG]] --workdir DIR [--config.KEY=VALUE ...] [--overwrite]
    lth-jax report DIR [DIR ...] [--out DIR]

``run`` with no ``--config`` runs the embedded default (IMP on MNIST-1D, see
:func:`lth_jax.config.default_config`). Configs are Python files defining
``get_config()`` that returns an ``ml_collections.ConfigDict``; a file may take
an argument after a colon (``--config experiments/configs/foo.py:arg`` calls
``get_config("arg")``). Running the same command on the same workdir resumes it.

Overrides ``--config.KEY=VALUE`` (or ``--config.KEY VALUE``) set one existing
key, parsed as the key's type: integers, floats, strings, booleans
(``true``/``false``, or ``--config.KEY`` alone for true and
``--noconfig.KEY`` for false), lists as Python literals or comma-separated
(``--config.arms=ticket,reinit``, ``--config.model.kwargs.features="(300,100)"``).
Under the free-form blocks ``imp.layer_rates``, ``model.kwargs`` and
``instability`` new keys may be added (``--config.imp.layer_rates.head=0.1``:
everything after the block's name is the key, dots included).

Configs are ``ml_collections`` ``ConfigDict`` s and overrides are typed by them,
as with ``ml_collections.config_flags``; the arguments are parsed here rather
than by ``config_flags`` because it cannot add keys under the free-form blocks
(``--config.imp.layer_rates.head=0.1`` is an unknown flag to it) and its
errors are absl usage dumps, not the one line with exit status 2 below.

Exit status: 0 done; 2 bad input (one plain line on stderr, ``lth-jax: error:
...``, naming the bad value and what is allowed; no traceback); 130 stopped by
SIGINT and 143 by SIGTERM (a checkpoint was saved first: run the same command to
resume); 1 anything else (with a traceback).
"""

from __future__ import annotations

import ast
import os
import sys

USAGE = (
    "usage: lth-jax run [--config FILE] --workdir DIR [--config.KEY=VALUE ...] [--overwrite]\n"
    "       lth-jax report DIR [DIR ...] [--out DIR]"
)

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


def _default_config_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")


# ----------------------------------------------------------------------------- config files


def load_config_file(spec: str):
    """The ``ConfigDict`` of ``FILE[:ARG]`` (``get_config()`` or ``get_config(ARG)``).

    Raises:
      UsageError: the file is missing, fails to import, has no ``get_config`` or
        that does not return a config.
    """
    import importlib.util

    import ml_collections

    path, sep, arg = spec.partition(":")
    if not path:
        raise UsageError("--config needs a file name")
    if not os.path.exists(path):
        raise UsageError(f"--config {path}: no such file")
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
        raise UsageError(f"--config {path}: cannot be loaded ({_short(e)})") from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UsageError(f"--config {path}: defines no get_config() function")
    try:
        config = get_config(arg) if sep else get_config()
    except Exception as e:  # noqa: BLE001
        call = f"get_config({arg!r})" if sep else "get_config()"
        raise UsageError(f"--config {path}: {call} failed ({_short(e)})") from None
    if isinstance(config, dict):
        config = ml_collections.ConfigDict(config)
    if not isinstance(config, ml_collections.ConfigDict):
        raise UsageError(
            f"--config {path}: get_config() must return an ml_collections.ConfigDict, "
            f"got {type(config).__name__}"
        )
    return config


def _short(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


# ----------------------------------------------------------------------------- overrides


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _parse_bool(flag: str, text: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise UsageError(f"{flag}={text}: must be true or false")


def _parse_value(flag: str, text: str, ftype, current):
    """``text`` as a value of type ``ftype`` for the override ``flag``."""
    import ml_collections

    if ftype is bool:
        return _parse_bool(flag, text)
    if ftype is int:
        try:
            return int(text.strip())
        except ValueError:
            raise UsageError(f"{flag}={text}: must be an integer") from None
    if ftype is float:
        try:
            return float(text.strip())
        except ValueError:
            raise UsageError(f"{flag}={text}: must be a number") from None
    if ftype is str:
        v = _literal(text)
        return v if isinstance(v, str) else text
    if ftype in (tuple, list):
        v = _literal(text)
        if isinstance(v, (tuple, list)):
            return ftype(v)
        if isinstance(v, str) or "," in text:
            return ftype(_literal(p.strip()) for p in text.split(",") if p.strip())
        return ftype((v,))
    if isinstance(current, ml_collections.ConfigDict) or ftype is ml_collections.ConfigDict:
        v = _literal(text)
        if not isinstance(v, dict):
            raise UsageError(f"{flag}={text}: must be a dict literal such as \"{{'key': 1}}\"")
        return ml_collections.ConfigDict(v)
    return _literal(text)


def apply_override(config, key: str, text: str | None, flag: str) -> None:
    """Sets ``config.<key>`` from the command-line text ``text`` (``None``: no value given).

    Raises:
      UsageError: an unknown key, a missing value, or a value of the wrong type.
    """
    import difflib

    import ml_collections

    from lth_jax.config import OPEN_KEYS, known_keys

    open_block = next((o for o in OPEN_KEYS if key.startswith(o + ".")), None)
    if open_block is not None:
        parents, leaf = open_block.split("."), key[len(open_block) + 1 :]
    else:
        *parents, leaf = key.split(".")
    node = config
    walked = []
    for p in parents:
        walked.append(p)
        if p not in node and ".".join(walked) in OPEN_KEYS:
            node[p] = ml_collections.ConfigDict()
        if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
            near = difflib.get_close_matches(key, known_keys(), n=1)
            hint = f"; did you mean --config.{near[0]}?" if near else ""
            raise UsageError(f"unknown config key {key} in {flag}{hint}")
        node = node[p]
    if not leaf:
        raise UsageError(f"{flag}: the key is empty")
    if leaf in node:
        ftype, current = node.get_type(leaf), node[leaf]
    elif open_block is not None:
        ftype, current = None, None
    else:
        near = difflib.get_close_matches(key, known_keys(), n=1)
        hint = f"; did you mean --config.{near[0]}?" if near else ""
        raise UsageError(f"unknown config key {key} in {flag}{hint}")
    if ftype is type(None):
        ftype = None
    if text is None:
        if ftype is not bool:
            raise UsageError(f"{flag} needs a value ({flag}=VALUE)")
        value = True
    elif text.strip() == "None":
        value = None
    else:
        value = _parse_value(flag, text, ftype, current)
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise UsageError(f"{flag}={text}: {_short(e).split(': ', 1)[-1]}") from None


# ----------------------------------------------------------------------------- run


def parse_run_args(argv):
    """``(config, workdir, overwrite)`` from ``lth-jax run`` arguments.

    Raises:
      UsageError: any bad argument (the message is one line).
    """
    argv = list(argv)
    config_spec = None
    workdir = None
    overwrite = False
    overrides: list[tuple[str, str | None, str]] = []
    # The config is loaded first: the types of its keys decide how overrides parse.
    for j, arg in enumerate(argv):
        if arg in ("-h", "--help"):
            raise _Help()
        if arg.startswith("--config="):
            config_spec = arg[len("--config=") :]
        elif arg == "--config":
            if j + 1 >= len(argv) or argv[j + 1].startswith("--"):
                raise UsageError("--config needs a value (a config file)")
            config_spec = argv[j + 1]
    if config_spec is None:
        from lth_jax.config import default_config

        config = default_config()
    else:
        config = load_config_file(config_spec)
    i = 0

    def value_of(flag, inline):
        nonlocal i
        if inline is not None:
            return inline
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            raise UsageError(f"{flag} needs a value")
        i += 1
        return argv[i]

    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        inline = inline if eq else None
        if name in ("-h", "--help"):
            raise _Help()
        if name == "--config":
            value_of("--config", inline)  # loaded above
        elif name == "--workdir":
            workdir = value_of("--workdir", inline)
        elif name == "--overwrite":
            overwrite = True if inline is None else _parse_bool("--overwrite", inline)
        elif name == "--nooverwrite":
            overwrite = False
        elif name.startswith("--config."):
            key = name[len("--config.") :]
            text = inline
            if (
                text is None
                and i + 1 < len(argv)
                and not argv[i + 1].startswith("--")
                and not _is_bool_key(config, key)
            ):
                i += 1
                text = argv[i]
            overrides.append((key, text, name))
        elif name.startswith("--noconfig."):
            if inline is not None:
                raise UsageError(f"{name} takes no value")
            overrides.append((name[len("--noconfig.") :], "false", name))
        elif arg.startswith("-"):
            raise UsageError(
                f"unknown option {name}; options are --config, --workdir, --overwrite, "
                "--config.KEY=VALUE"
            )
        else:
            raise UsageError(f"unexpected argument {arg!r}; {USAGE.splitlines()[0]}")
        i += 1
    if not workdir:
        raise UsageError("--workdir is required (the directory for results and checkpoints)")
    for key, text, flag in overrides:
        if flag.startswith("--noconfig.") and not _is_bool_key(config, key):
            raise UsageError(f"{flag}: {key} is not a true/false key")
        apply_override(config, key, text, flag)
    return config, workdir, overwrite


def _is_bool_key(config, key: str) -> bool:
    node = config
    for p in key.split("."):
        if not hasattr(node, "keys") or p not in node:
            return False
        node = node[p]
    return isinstance(node, bool)


class _Help(Exception):
    pass


def _run(argv) -> int:
    from lth_jax import parallel

    config, workdir, overwrite = parse_run_args(argv)
    parallel.configure_host_devices()
    parallel.initialize_distributed()
    import jax

    from lth_jax import lottery, report

    kind = config.get("kind", "lottery")
    if kind == "instability":
        from lth_jax import instability

        instability.run(config, workdir, overwrite=overwrite)
    elif kind == "transfer":
        from lth_jax import transfer

        transfer.run(config, workdir, overwrite=overwrite)
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

    p = argparse.ArgumentParser(prog="lth-jax report", exit_on_error=False, add_help=False)
    p.add_argument("dirs", nargs="+")
    p.add_argument("--out", default=None)
    if any(a in ("-h", "--help") for a in argv):
        raise _Help()
    try:
        args, unknown = p.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit) as e:
        raise UsageError(str(e) if str(e) and str(e) != "2" else "report needs a DIR") from None
    if unknown:
        raise UsageError(f"unexpected argument {unknown[0]!r}; {USAGE.splitlines()[1].strip()}")
    try:
        return report.main_report(args.dirs, out_dir=args.out)
    except (ValueError, OSError) as e:
        raise UsageError(_one_line(str(e))) from None


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv=None) -> int:
    """Entry point of the ``lth-jax`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from lth_jax.config import ConfigError

    try:
        if argv and argv[0] in ("-h", "--help", "help"):
            raise _Help()
        if not argv:
            raise UsageError("missing command; " + USAGE.splitlines()[0])
        cmd, rest = argv[0], argv[1:]
        if cmd == "run":
            return _run(rest)
        if cmd == "report":
            return _report(rest)
        raise UsageError(f"unknown command {cmd!r}; commands are: run, report")
    except _Help:
        print(__doc__.strip() if argv and argv[0] != "run" else USAGE)
        return 0
    except (UsageError, ConfigError) as e:
        print(f"lth-jax: error: {_one_line(str(e))}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as e:
        code = getattr(e, "exit_code", 130)
        msg = _one_line(str(e)) or "interrupted"
        print(f"lth-jax: {msg}", file=sys.stderr, flush=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
