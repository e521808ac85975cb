"""The experiment presets, one module per experiment, installed with the package.

Each module here defines ``get_config()`` (or ``get_config(arg)``, an argument
that picks a variant) returning an ``ml_collections.ConfigDict``; its
docstring holds the exact command, the setup, the published result it is
compared with and ours (generated from committed metrics where we ran it).
They are used by name::

    lth-jax presets                                   # name, summary, command, results
    lth-jax presets mnist1d_lottery                   # one preset's whole docstring
    lth-jax run --config preset:mnist1d_lottery --workdir runs/mnist1d_lottery
    lth-jax run --config preset:mnist1d_rewinding:lr --workdir runs/rewinding/lr

or from Python: ``lth_jax.configs.get("mnist1d_rewinding", "lr")``. A config
file of your own works the same way by path (``--config my_config.py[:ARG]``).

:func:`names` and :func:`info` read the modules' docstrings without importing
them (no JAX), so listing the presets is instant.

Example::

    from lth_jax import configs
    config = configs.get("mnist1d_lottery")
    config.num_trials = 2
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import re

from lth_jax.report import readme

__all__ = ["PREFIX", "PresetInfo", "get", "info", "listing", "names", "path", "split_spec"]

PREFIX = "preset:"
_HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    """The preset names, sorted (the module names of this package)."""
    return sorted(f[:-3] for f in os.listdir(_HERE) if f.endswith(".py") and not f.startswith("_"))


def path(name: str) -> str:
    """The file of preset ``name``.

    Raises:
      ValueError: no preset of that name (the message lists them).
    """
    if name not in names():
        raise ValueError(f"no preset named {name!r}; presets are: {', '.join(names())}")
    return os.path.join(_HERE, f"{name}.py")


def split_spec(spec: str) -> tuple[str, str | None]:
    """``("NAME", "ARG" or None)`` of ``"preset:NAME[:ARG]"`` (or of ``"NAME[:ARG]"``)."""
    body = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    name, sep, arg = body.partition(":")
    return name, (arg if sep else None)


def get(name: str, arg: str | None = None):
    """The config of preset ``name``: ``get_config()``, or ``get_config(arg)``.

    Raises:
      ValueError: no preset of that name.
    """
    path(name)
    module = importlib.import_module(f"{__name__}.{name}")
    return module.get_config() if arg is None else module.get_config(arg)


@dataclasses.dataclass(frozen=True)
class PresetInfo:
    """What ``lth-jax presets`` shows of one preset, read from its docstring.

    Attributes:
      name: the preset's name (``--config preset:NAME``).
      summary: the docstring's first line.
      commands: the ``lth-jax`` command lines of its Command(s) block.
      published: the first sentence of its "Published ..." paragraph.
      ours: the first finding of its generated "Ours" block, or the first
        sentence of its "Ours" paragraph (which says when nothing was run).
      doc: the whole docstring.
    """

    name: str
    summary: str
    commands: tuple[str, ...]
    published: str
    ours: str
    doc: str


def info(name: str) -> PresetInfo:
    """The :class:`PresetInfo` of preset ``name`` (its docstring, not imported)."""
    with open(path(name), encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc) if p.strip()]
    commands = tuple(
        line.strip() for line in doc.splitlines() if line.strip().startswith("lth-jax ")
    )
    published = next((p for p in paragraphs if p.startswith("Published")), "")
    ours_at = doc.find("\nOurs")
    ours = ""
    if ours_at >= 0:
        begin = readme.BEGIN.search(doc, ours_at)  # the generated block, if any
        if begin:
            block = doc[begin.end() : doc.find(readme.end_marker(begin["path"]), begin.end())]
            head, _, bullets = block.partition("\n- ")
            head = head.strip().rstrip(":").rsplit("/", 1)[-1]  # a sub-run's folder, if any
            ours = (f"{head}: " if head else "") + _one_line(bullets.split("\n- ")[0])
        else:
            ours = _first_sentence(doc[ours_at:].split("\n\n")[0].strip().removeprefix("Ours: "))
    return PresetInfo(
        name=name,
        summary=doc.splitlines()[0].strip() if doc else "",
        commands=commands,
        published=_published(doc, published),
        ours=ours,
        doc=doc,
    )


def listing() -> str:
    """What ``lth-jax presets`` prints: per preset its name and summary, then the
    command, the published result and ours, a line each."""
    out = []
    for name in names():
        p = info(name)
        more = len(p.commands) - 1
        command = p.commands[0] if p.commands else "(none given)"
        if more > 0:
            command += f"   (and {more} more: lth-jax presets {name})"
        out += [
            f"{name}: {p.summary}",
            f"  command:   {command}",
            f"  published: {_source_first(p.published) or '(none stated)'}",
            f"  ours:      {p.ours or '(none stated)'}",
            "",
        ]
    out.append(
        "Run one with 'lth-jax run --config preset:NAME[:ARG] --workdir DIR'; "
        "'lth-jax presets NAME' prints its whole description."
    )
    return "\n".join(out)


def _source_first(text: str) -> str:
    """``"Published result (Source, Figure 1): finding"`` as ``"Source, Figure 1: finding"``."""
    text = re.sub(
        r"^Published( (results?|findings))?( this (tests|illustrates))?\s*:?\s*", "", text
    )
    if not text.startswith("("):
        return text
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:  # the parenthesis that opened the text closes here
            inner, rest = text[1:i], text[i + 1 :].lstrip()
            if rest.startswith(":"):
                return f"{inner}: {rest[1:].lstrip()}"
            return f"{inner}{rest}" if rest in ("", ".") else text
    return text


def _published(doc: str, paragraph: str) -> str:
    """The paragraph's first sentence, and more of it while that is only a heading."""
    text = _one_line(paragraph)
    first = _first_sentence(text)
    while len(first.split()) < 16 and len(first) < len(text) and not first.endswith(":"):
        first = first + " " + _first_sentence(text[len(first) :].strip())
    if first.endswith(":"):  # the published numbers are the list that follows
        after = doc[doc.find(paragraph) + len(paragraph) :]
        item = re.search(r"^\* (.*?)(?=^\* |\n\n|\Z)", after, re.S | re.M)
        if item:
            first = f"{first} {_one_line(item.group(1))}"
    return first


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not "et al." or "e.g.")."""
    text = _one_line(text)
    for m in re.finditer(r"\.(?=\s+[A-Z(`]|$)", text):
        before = text[: m.start()].rsplit(" ", 1)[-1]
        if before not in ("al", "e.g", "i.e", "cf", "Fig", "vs", "approx"):
            return text[: m.end()]
    return text
