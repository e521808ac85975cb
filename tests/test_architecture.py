"""The layout rules: small modules, no import cycles (function-level imports included).

Read from the source files (nothing is imported): every ``import`` statement of
a package module naming another package module is an edge, wherever it stands,
and so is every ``"module:function"`` name of the experiment-kinds table.
"""

from __future__ import annotations

import ast
import os
import re

import pytest

PKG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lth_jax")
MAX_LINES = 500
MAX_FUNCTION_LEVEL_IMPORTS = 8


def _modules() -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module an imported name belongs to (``lth_jax.a.b`` or its parent)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: str) -> list[tuple[str, bool]]:
    """``(imported package module, at function level)`` for every import in ``path``."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(
                        parts[: len(parts) - child.level + 1] + ([base] if base else [])
                    )
                names = [f"{base}.{a.name}" for a in child.names]
            for n in names:
                target = _resolve(n) if n.startswith("lth_jax") else None
                # The root package is lazy: it imports nothing at import time.
                if target and target not in (module, "lth_jax"):
                    out.append((target, inner))
            visit(child, inner)

    visit(tree, False)
    if module == "lth_jax.kinds":  # the kinds table names its functions as strings
        text = open(path, encoding="utf-8").read()
        for name in re.findall(r'"(lth_jax[\w.]*):\w+"', text):
            out.append((_resolve(name), False))
    return out


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in _imports(m, p)} for m, p in MODULES.items()}


def _cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(g.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if state.get(v) is None:
                found = dfs(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(g):
        if state.get(u) is None:
            found = dfs(u)
            if found:
                return found
    return None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module):
    with open(MODULES[module], encoding="utf-8") as f:
        n = sum(1 for _ in f)
    assert n <= MAX_LINES, f"{module} has {n} lines (at most {MAX_LINES})"


def test_no_import_cycle_counting_function_level_imports():
    g = _graph()
    assert _cycle(g) is None, " -> ".join(_cycle(g))


def test_few_function_level_imports_of_the_package():
    nested = sorted(
        f"{m} -> {t}" for m, p in MODULES.items() for t, inner in _imports(m, p) if inner
    )
    assert len(nested) <= MAX_FUNCTION_LEVEL_IMPORTS, nested


def test_config_and_report_import_no_runner():
    runners = {"lth_jax.lottery", "lth_jax.instability", "lth_jax.transfer.runner", "lth_jax.train"}
    g = _graph()

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            u = todo.pop()
            for v in g.get(u, ()):
                if v not in seen:
                    seen.add(v)
                    todo.append(v)
        return seen

    for m in ("lth_jax.config", "lth_jax.report", "lth_jax.report.lottery"):
        assert not reach(m) & runners, (m, sorted(reach(m) & runners))


#: Layers, top to bottom (the README's map): a module imports its own layer or lower ones.
LAYERS = [
    (
        "command",
        [
            "lth_jax.cli",
            "lth_jax.cli_help",
            "lth_jax.cli_overrides",
            "lth_jax.kinds",
            "lth_jax.sweep",
            "lth_jax.sweep.launch",
        ],
    ),
    ("runners", ["lth_jax.lottery", "lth_jax.diverged", "lth_jax.instability", "lth_jax.transfer"]),
    ("configs", ["lth_jax.config", "lth_jax.config_checks", "lth_jax.transfer.config"]),
    ("arms", ["lth_jax.arms"]),
    ("engine and reports", ["lth_jax.train", "lth_jax.loop", "lth_jax.optim", "lth_jax.curves"]),
    (
        "files",
        [
            "lth_jax.workdir",
            "lth_jax.config_base",
            "lth_jax.checkpoint",
            "lth_jax.sparse.export",
            "lth_jax.events",
        ],
    ),
]


def _layer(module: str) -> int:
    """The rank of ``module``'s layer (0 = top); everything unlisted is a primitive."""
    if module in ("lth_jax.transfer.runner", "lth_jax.transfer.source"):
        return 1
    if module.startswith("lth_jax.report"):
        return 4
    if module.startswith("lth_jax.configs"):  # the presets
        return 2
    if module.startswith("lth_jax.workdir"):
        return 5
    for rank, (_, names) in enumerate(LAYERS):
        if module in names:
            return rank
    return len(LAYERS)


def test_imports_go_down_the_layers():
    up = sorted(
        f"{m} ({_layer(m)}) -> {t} ({_layer(t)})"
        for m, p in MODULES.items()
        for t, _ in _imports(m, p)
        if _layer(t) < _layer(m)
    )
    assert not up, up


def test_the_cycle_check_can_fail():
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
