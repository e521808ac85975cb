"""The README's result blocks are what the committed metrics give, regenerated here.

Every ``<!-- generated from PATH: begin -->`` ... ``end`` block of README.md
is rewritten by :func:`lth_jax.report.readme.render_blocks` from the folder it
names; any difference fails (fix: ``python -m lth_jax.report.readme README.md``).
"""

from __future__ import annotations

import os
import re

import pytest

from lth_jax.report import readme

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
README = os.path.join(ROOT, "README.md")


def _text() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def _blocks(text: str) -> list[tuple[str, int, int]]:
    """``(path, start, end)`` of each block's body."""
    out = []
    for m in readme.BEGIN.finditer(text):
        end = text.index(readme.end_marker(m["path"]), m.end())
        out.append((m["path"], m.end(), end))
    return out


def test_readme_blocks_are_what_the_committed_metrics_give():
    text = _text()
    assert readme.render_blocks(text, ROOT) == text, (
        "a generated block of README.md differs from the committed metrics; "
        "run: python -m lth_jax.report.readme README.md"
    )


def test_readme_marks_up_every_results_folder():
    """Each folder of experiments/results with metrics (its own or its subfolders') has a block."""
    paths = [p for p, _, _ in _blocks(_text())]
    assert len(paths) == len(set(paths))
    for p in paths:
        assert os.path.isdir(os.path.join(ROOT, p)), p
    results = os.path.join(ROOT, "experiments", "results")
    for name in sorted(os.listdir(results)):
        d = os.path.join(results, name)
        if name == "regularizers" or not os.path.isdir(d):
            continue  # the regularizers are written by experiments/regularizers.py
        has = os.path.isfile(os.path.join(d, "metrics.jsonl")) or any(
            os.path.isfile(os.path.join(d, s, "metrics.jsonl")) for s in os.listdir(d)
        )
        folder = f"experiments/results/{name}"
        if has:
            assert any(p == folder or p.startswith(folder + "/") for p in paths), folder


def test_a_modified_block_is_detected_and_restored():
    text = _text()
    path, start, end = _blocks(text)[0]
    body = text[start:end]
    m = re.search(r"\d+/\d+", body)
    assert m, "no k/n in the first block"
    changed = body[: m.start()] + "0/9" + body[m.end() :]
    tampered = text[:start] + changed + text[end:]
    assert tampered != text
    assert readme.render_blocks(tampered, ROOT) == text
    # A sentence added by hand inside a block is found too.
    added = text[:end] + "Tickets win everywhere.\n" + text[end:]
    assert readme.render_blocks(added, ROOT) == text


def test_results_prose_has_no_hand_typed_numbers():
    """Outside the blocks, the marked-up results subsections carry no measured numbers."""
    text = _text()
    section = text[text.index("## Results we measured") :]
    section = section[: section.index("\n## ", 1)]
    for sub in section.split("\n### ")[1:]:
        if "<!-- generated from" not in sub:
            continue  # e.g. the regularizers, written by experiments/regularizers.py
        for _, start, end in reversed(_blocks(sub)):
            sub = sub[:start] + sub[end:]
        assert not re.search(r"\d\.\d|±", sub), sub


def test_an_empty_marker_pair_is_filled(tmp_path):
    path = "experiments/results/transfer"
    text = f"# x\n\n<!-- generated from {path}: begin -->\n{readme.end_marker(path)}\n\ntail\n"
    out = readme.render_blocks(text, ROOT)
    assert out.startswith(f"# x\n\n<!-- generated from {path}: begin -->\nSetup: ")
    assert out.endswith(f"\n{readme.end_marker(path)}\n\ntail\n")
    assert "pretrained above scratch in 5/5 trials" in out and "Findings:" in out
    assert readme.render_blocks(out, ROOT) == out


def test_a_folder_of_workdirs_gives_one_part_each():
    block = readme.render_block("experiments/results/mnist1d_instability", ROOT)
    assert block.count("**`experiments/results/mnist1d_instability/k") == 2
    assert block.index("/k0`**") < block.index("/k500`**")
    assert "error barrier (points), trials > 2" in block and "2-point threshold" in block


def test_bad_markers_and_folders_raise():
    p = "experiments/results/transfer"
    begin = f"<!-- generated from {p}: begin -->"
    with pytest.raises(ValueError, match="no '<!-- generated from .*: end -->'"):
        readme.render_blocks(f"{begin}\nbody\n", ROOT)
    nested = f"{begin}\n<!-- generated from x: begin -->\n{readme.end_marker(p)}\n"
    with pytest.raises(ValueError, match="no '"):
        readme.render_blocks(nested, ROOT)
    missing = "experiments/results/no_such_run"
    with pytest.raises(ValueError, match="names no folder"):
        readme.render_blocks(
            f"<!-- generated from {missing}: begin -->\n{readme.end_marker(missing)}", ROOT
        )
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        readme.render_block("experiments/configs", ROOT)


def test_main_rewrites_in_place_and_check_reports(tmp_path, capsys):
    os.symlink(os.path.join(ROOT, "experiments"), tmp_path / "experiments")
    p = "experiments/results/mnist1d_lottery"
    target = tmp_path / "README.md"
    begin = f"<!-- generated from {p}: begin -->"
    target.write_text(f"intro\n{begin}\nOLD TEXT\n{readme.end_marker(p)}\n")
    assert readme.main([str(target), "--check"]) == 1
    assert "OLD TEXT" in target.read_text()
    assert readme.main([str(target)]) == 0
    assert "OLD TEXT" not in target.read_text() and "ticket vs random re-init" in target.read_text()
    assert readme.main([str(target), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
