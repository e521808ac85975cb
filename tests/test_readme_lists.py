"""The README's lists of models, presets, workdir files and harmless keys match the code.

Each test reads one list from README.md and compares it with what the code
registers, so a model, preset or workdir entry added (or a key removed)
without the README fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from lth_jax import configs, models
from lth_jax.config import base_config
from lth_jax.workdir import layout

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def _first_column(text: str) -> set[str]:
    """The backticked names in the first cell of each table row of ``text``."""
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first = line.split(" | ")[0]
            names |= {re.split(r"[:\[]", n)[0] for n in re.findall(r"`([^`]+)`", first)}
    return names


def _bullet(start: str) -> str:
    i = README.index(start)
    return README[i : README.index("\n- ", i + 1)]


def test_the_models_table_lists_every_registered_model():
    table = _first_column(_section("Datasets and models"))
    assert set(models.names()) <= table, set(models.names()) - table
    assert table - {"mnist1d", "mnist", "fashion_mnist", "cifar10", "cifar100"} <= set(
        models.names()
    )


def test_the_presets_table_lists_every_preset():
    table = _first_column(_section("Paper presets"))
    assert table == set(configs.names()), table ^ set(configs.names())


def test_the_deletes_bullet_names_every_entry_lth_jax_owns():
    text = _bullet("- **What lth-jax deletes.**")
    for name in (layout.CONFIG, layout.METRICS, layout.TIMING, *layout.REPORT_FILES):
        assert f"`{name}`" in text or f"`{name.split('.')[0]}.*`" in text, name
    for folder in ("checkpoints", "tensorboard"):
        assert f"`{folder}/`" in text, folder


def test_harmless_keys_are_config_keys_and_the_readme_names_them():
    config = base_config()
    for key in layout.HARMLESS_KEYS:
        node = config
        for part in key.split("."):
            assert part in node, f"{key} is not a config key"
            node = node[part]
    text = _bullet("- **Config drift.**")
    for key in layout.HARMLESS_KEYS:
        assert f"`{key}`" in text or f"`{key.split('.')[0]}.*`" in text, key


def test_the_presets_table_gives_each_presets_arguments_with_the_default_first():
    """``name[:a|b|c]``: every choice loads, and the first is what ``name`` alone runs."""
    from lth_jax.workdir import config_to_json

    rows = [
        n
        for line in _section("Paper presets").splitlines()
        if line.startswith("| `")
        for n in re.findall(r"`([^`]+)`", line.split(" | ")[0])
    ]
    checked = 0
    for cell in rows:
        name, _, arg = cell.partition("[:")
        if not arg or arg == "k]":
            continue
        choices = re.sub(r"\[,dropout\]", "", arg[:-1]).replace("\\", "").split("|")
        for choice in choices:
            configs.get(name, choice)
        assert config_to_json(configs.get(name)) == config_to_json(configs.get(name, choices[0]))
        checked += 1
    assert checked >= 9
