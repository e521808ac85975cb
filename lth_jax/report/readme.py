"""The generated result blocks of README.md, the results READMEs and the preset docstrings.

A block sits between two markers that name a results folder::

    <!-- generated from experiments/results/mnist1d_lottery: begin -->
    ...
    <!-- generated from experiments/results/mnist1d_lottery: end -->

:func:`render_blocks` finds every marker pair by itself and rewrites what is
between them from that folder (its ``metrics.jsonl`` and ``config.json``, or
a regularizer comparison's ``results.json``), so a new results folder needs
only a new marker pair. A marker's folder is looked up from the file's own
folder upward (so relative to the repository root for every file of the
repository). What a block holds depends on the folder
(:func:`lth_jax.report.blocks.render`) and on the file:

* in a markdown file (``style="markdown"``): settings, levels, a compact
  table of paired differences and the Findings bullets;
* in a Python file (``style="docstring"``, the presets under
  ``lth_jax/configs/``, whose module docstrings hold the markers): the
  Findings bullets only, as plain text wrapped to fit 100-character lines.

``python -m lth_jax.report.readme`` rewrites every block of every such file
(:data:`DEFAULT_FILES`: README.md, the presets and the READMEs under
``experiments/results/``, from the current folder) in place, or of the files
named; ``--check`` only says whether they are up to date (exit status 1 when
not).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import textwrap
from collections.abc import Sequence

from lth_jax.report.blocks import MAX_ROUNDS, render

__all__ = [
    "BEGIN",
    "MAX_ROUNDS",
    "DEFAULT_FILES",
    "end_marker",
    "style_of",
    "render_block",
    "render_blocks",
    "default_files",
    "main",
]

#: A begin marker; its ``path`` names a folder (see :func:`render_blocks`).
BEGIN = re.compile(r"<!-- generated from (?P<path>[^\s:>]+): begin -->")

#: The files ``python -m lth_jax.report.readme`` rewrites by default (globs).
DEFAULT_FILES = ("README.md", "lth_jax/configs/*.py", "experiments/results/*/README.md")

#: The line length of a docstring block (ruff's limit).
WIDTH = 100


def end_marker(path: str) -> str:
    """The end marker of the block of ``path``."""
    return f"<!-- generated from {path}: end -->"


def style_of(filename: str) -> str:
    """``"docstring"`` for a Python file, else ``"markdown"``."""
    return "docstring" if filename.endswith(".py") else "markdown"


def _folder(path: str, start: str) -> str:
    """``path`` in the nearest folder from ``start`` upward that has it (else in ``start``)."""
    here = os.path.abspath(start)
    while True:
        if os.path.isdir(os.path.join(here, path)):
            return os.path.join(here, path)
        up = os.path.dirname(here)
        if up == here:
            return os.path.join(os.path.abspath(start), path)
        here = up


def render_block(
    path: str, root: str | os.PathLike, style: str = "markdown", indent: str = ""
) -> str:
    """The text of the block of ``path`` (a folder found from ``root`` upward).

    ``style="markdown"``: the block's markdown; ``"docstring"``: its Findings
    bullets without markdown emphasis, each wrapped to :data:`WIDTH`
    characters with ``indent`` before every line.
    """
    md, doc = render(_folder(path, os.fspath(root)), path)
    if style == "markdown":
        return md
    if style != "docstring":
        raise ValueError(f"unknown style {style!r}; styles are markdown, docstring")
    out = []
    for item in doc:
        bullet = item.startswith("- ")
        text = item.replace("**", "").replace("`", "")
        out += textwrap.wrap(
            text,
            width=WIDTH,
            initial_indent=indent,
            subsequent_indent=indent + ("  " if bullet else ""),
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(out)


def render_blocks(text: str, root: str | os.PathLike, style: str = "markdown") -> str:
    """``text`` with every generated block rewritten from the folders found from ``root``.

    Raises:
      ValueError: a begin marker without its end marker (or another begin
        marker before it), or a folder a marker names that holds no results.
    """
    out, pos = [], 0
    for m in BEGIN.finditer(text):
        if m.start() < pos:
            raise ValueError(f"generated block of {m['path']} starts inside another block")
        end = end_marker(m["path"])
        stop = text.find(end, m.end())
        nested = BEGIN.search(text, m.end())
        if stop < 0 or (nested is not None and nested.start() < stop):
            raise ValueError(f"no '{end}' after the begin marker of {m['path']}")
        line_start = text.rfind("\n", 0, m.start()) + 1
        indent = text[line_start : m.start()]
        indent = indent if not indent.strip() else ""
        block = render_block(m["path"], root, style, indent)
        out += [text[pos : m.end()], "\n", block.rstrip("\n"), "\n", indent, end]
        pos = stop + len(end)
    out.append(text[pos:])
    return "".join(out)


def default_files(root: str = ".") -> list[str]:
    """The files of :data:`DEFAULT_FILES` under ``root`` that exist, in order."""
    out = []
    for pattern in DEFAULT_FILES:
        out += [os.path.normpath(p) for p in sorted(glob.glob(os.path.join(root, pattern)))]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lth_jax.report.readme [FILE ...] [--check]``: rewrite the blocks in place.

    Without files, those of :func:`default_files` (from the current folder).
    Returns 0 when every file is (now) up to date, 1 with ``--check`` when
    one is not (nothing written).
    """
    p = argparse.ArgumentParser(prog="python -m lth_jax.report.readme")
    p.add_argument("files", nargs="*", help=f"default: {', '.join(DEFAULT_FILES)}")
    p.add_argument("--check", action="store_true", help="only check, exit 1 when out of date")
    args = p.parse_args(argv)
    paths = args.files or default_files()
    if not paths:
        p.error("no file to rewrite here; name one")
    stale = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        n = len(BEGIN.findall(text))
        if not n:
            continue
        new = render_blocks(text, os.path.dirname(os.path.abspath(path)), style_of(path))
        if new == text:
            print(f"{path}: {n} generated blocks up to date")
        elif args.check:
            stale += 1
            print(f"{path}: generated blocks out of date; run python -m lth_jax.report.readme")
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"{path}: {n} generated blocks rewritten")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
