"""The generated result blocks are what the committed metrics give, regenerated here.

Every ``<!-- generated from PATH: begin -->`` ... ``end`` block of README.md, of
the preset docstrings under lth_jax/configs/ and of the READMEs under
experiments/results/ is rewritten by :func:`lth_jax.report.readme.render_blocks`
from the folder it names; any difference fails (fix: ``python -m
lth_jax.report.readme``).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil

import pytest

from lth_jax.report import readme

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
README = os.path.join(ROOT, "README.md")
RESULTS = os.path.join(ROOT, "experiments", "results")
CONFIGS = os.path.join(ROOT, "lth_jax", "configs")
FILES = [os.path.relpath(p, ROOT) for p in readme.default_files(ROOT)]


def _read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def _text() -> str:
    return _read("README.md")


def _blocks(text: str) -> list[tuple[str, int, int]]:
    """``(path, start, end)`` of each block's body."""
    out = []
    for m in readme.BEGIN.finditer(text):
        end = text.index(readme.end_marker(m["path"]), m.end())
        out.append((m["path"], m.end(), end))
    return out


def _results_folders() -> list[str]:
    """``experiments/results/<name>`` of every folder with results (its own or its subfolders')."""
    out = []
    for name in sorted(os.listdir(RESULTS)):
        d = os.path.join(RESULTS, name)
        if not os.path.isdir(d):
            continue
        has = any(os.path.isfile(os.path.join(d, f)) for f in ("metrics.jsonl", "results.json"))
        has = has or any(os.path.isfile(os.path.join(d, s, "metrics.jsonl")) for s in os.listdir(d))
        if has:
            out.append(f"experiments/results/{name}")
    return out


def test_the_command_covers_the_readme_the_presets_and_the_results_readmes():
    assert FILES[0] == "README.md"
    presets = sorted(f for f in os.listdir(CONFIGS) if f.endswith(".py"))
    assert [f for f in FILES if f.startswith("lth_jax/configs/")] == [
        f"lth_jax/configs/{f}" for f in presets
    ]
    assert "experiments/results/transfer/README.md" in FILES
    assert "experiments/results/regularizers/README.md" in FILES


@pytest.mark.parametrize(
    "path", [f for f in FILES if readme.BEGIN.search(_read(f))], ids=lambda p: p
)
def test_blocks_are_what_the_committed_metrics_give(path):
    text = _read(path)
    root = os.path.dirname(os.path.join(ROOT, path))
    assert readme.render_blocks(text, root, readme.style_of(path)) == text, (
        f"a generated block of {path} differs from the committed metrics; "
        "run: python -m lth_jax.report.readme"
    )


def test_check_of_every_file_passes(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert readme.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "README.md: " in out and "lth_jax/configs/mnist1d_lottery.py: " in out


def test_readme_marks_up_every_results_folder():
    """Each folder of experiments/results with results has a block in README.md."""
    paths = [p for p, _, _ in _blocks(_text())]
    assert len(paths) == len(set(paths))
    for p in paths:
        assert os.path.isdir(os.path.join(ROOT, p)), p
    for folder in _results_folders():
        assert any(p == folder or p.startswith(folder + "/") for p in paths), folder


def test_presets_state_our_results_only_in_generated_blocks():
    """Each results folder is in a preset's docstring, generated, under an "Ours" heading."""
    docs = {}
    for f in sorted(os.listdir(CONFIGS)):
        if f.endswith(".py"):
            docs[f] = ast.get_docstring(ast.parse(_read(f"lth_jax/configs/{f}")), clean=False)
    for folder in _results_folders():
        begin = f"<!-- generated from {folder}: begin -->"
        holders = [f for f, doc in docs.items() if begin in doc]
        assert holders, f"no preset docstring has a generated block of {folder}"
        for f in holders:
            head = docs[f].split(begin)[0]
            assert f"Ours (paired by trial; generated from {folder}/" in head.split("\n\n")[-2], f
    for f, doc in docs.items():
        assert "Our result" not in doc, f"{f}: a hand-written result paragraph"
        for _, start, end in _blocks(doc):
            assert all(len(line) <= 100 for line in doc[start:end].splitlines()), f
    # Hand-typed claims that the metrics contradict or do not support stay out.
    inst = docs["mnist1d_instability.py"]
    for claim in ("11-17", "every network is stable", "still beat"):
        assert claim not in inst


@pytest.mark.parametrize("path", ["README.md", "lth_jax/configs/mnist1d_lottery.py"])
def test_a_modified_block_is_detected_and_restored(path):
    text = _read(path)
    style = readme.style_of(path)
    root = os.path.dirname(os.path.join(ROOT, path))
    _, start, end = _blocks(text)[0]
    body = text[start:end]
    m = re.search(r"\d+/\d+", body)
    assert m, "no k/n in the first block"
    changed = body[: m.start()] + "0/9" + body[m.end() :]
    tampered = text[:start] + changed + text[end:]
    assert tampered != text
    assert readme.render_blocks(tampered, root, style) == text
    # A sentence added by hand inside a block is found too.
    added = text[:end] + "Tickets win everywhere.\n" + text[end:]
    assert readme.render_blocks(added, root, style) == text


def test_results_prose_has_no_hand_typed_numbers():
    """Outside the blocks, the results subsections of README.md carry no measured numbers."""
    text = _text()
    section = text[text.index("## Results we measured") :]
    section = section[: section.index("\n## ", 1)]
    subs = section.split("\n### ")[1:]
    assert subs and all("<!-- generated from" in sub for sub in subs)
    for sub in subs:
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
    doc = readme.render_block("experiments/results/mnist1d_instability", ROOT, "docstring")
    assert doc.startswith("experiments/results/mnist1d_instability/k0:\n- error barrier")
    assert "**" not in doc and "`" not in doc
    assert all(len(line) <= 100 for line in doc.splitlines())


def test_the_regularizers_block_is_generated_from_results_json():
    block = readme.render_block("experiments/results/regularizers", ROOT)
    with open(os.path.join(RESULTS, "regularizers", "table.md"), encoding="utf-8") as f:
        assert f.read().strip() in block
    assert "- **weights exactly 0**: only proximal L1" in block
    assert "- **dropout 0.2 vs none, final test accuracy**: dropout 0.2 above none in 5/5" in block


def _study(tmp_path, densities=None) -> str:
    """A study folder of two lottery workdirs; ``a_lr`` sorts first by name, last by method."""
    src = os.path.join(RESULTS, "mnist1d_lottery")
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    with open(os.path.join(src, "metrics.jsonl"), encoding="utf-8") as f:
        recs = [json.loads(line) for line in f if line.strip()]
    study = tmp_path / "experiments" / "results" / "study"
    for name, rewind, step, shift in (("b_init", "weights", 0, 0.0), ("a_lr", "lr", 500, 0.02)):
        os.makedirs(study / name)
        c = {**cfg, "imp": {**cfg["imp"], "rewind": rewind, "rewind_step": step}}
        c["arms"] = ["ticket", "reinit"] if name == "b_init" else ["ticket"]
        with open(study / name / "config.json", "w") as f:
            json.dump(c, f)
        with open(study / name / "metrics.jsonl", "w") as f:
            for r in recs:
                if r["round"] and r["arm"] not in c["arms"]:
                    continue
                r = dict(r)
                if r["round"]:
                    r["final_test_accuracy"] += shift + 0.001 * r["trial"]
                if name == "a_lr" and densities and r["round"] in densities:
                    r["density"] = densities[r["round"]]
                f.write(json.dumps(r) + "\n")
    return "experiments/results/study"


def test_a_folder_of_lottery_workdirs_is_one_block_compared_across_them(tmp_path):
    path = _study(tmp_path)
    block = readme.render_block(path, tmp_path)
    table = next(p for p in block.split("\n\n") if p.startswith("| % weights"))
    header = table.splitlines()[0]
    assert header == (
        "| % weights | b_init: ticket − random re-init | a_lr: ticket − b_init: ticket "
        "| b_init: ticket − dense | b_init: random re-init − dense | a_lr: ticket − dense |"
    )
    assert "`b_init`: rewinding (weights) to step 0, arms ticket, random re-init; " in block
    assert "`a_lr`: rewinding (lr) to step 500, arm ticket." in block
    assert "trials with the same final test accuracy in both workdirs: a_lr vs b_init 5/5." in block
    assert (
        "- **a_lr: ticket vs b_init: ticket, final test accuracy**: a_lr: ticket above b_init: "
        "ticket in 5/5 trials" in block
    )
    assert "test accuracy at early stop," not in block  # final test accuracy only
    doc = readme.render_block(path, tmp_path, "docstring")
    assert doc.startswith("- b_init: ticket vs b_init: random re-init, final test accuracy: ")
    assert all(len(line) <= 100 for line in doc.splitlines())


def test_a_study_block_says_which_rounds_it_could_not_compare(tmp_path):
    path = _study(tmp_path, densities={3: 0.5})
    block = readme.render_block(path, tmp_path)
    assert "Not compared (their per-round densities or setups differ):" in block
    assert "- `a_lr: ticket` vs `b_init: ticket`, round 3: trial 0: density 50% vs 52.6%." in block
    assert "from 65.1% to 42.6%" not in block  # no range runs over round 3 (52.6%)


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
        readme.render_block("lth_jax/configs", ROOT)
    with pytest.raises(ValueError, match="unknown style"):
        readme.render_block(p, ROOT, "html")


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


def test_main_rewrites_a_preset_docstring(tmp_path):
    """In a Python file the block is the wrapped Findings, and the file still parses."""
    (tmp_path / "configs").mkdir()
    shutil.copy(os.path.join(CONFIGS, "mnist1d_instability.py"), tmp_path / "configs" / "x.py")
    os.symlink(os.path.join(ROOT, "experiments"), tmp_path / "experiments")
    target = tmp_path / "configs" / "x.py"
    text = target.read_text()
    _, start, end = _blocks(text)[0]
    target.write_text(text[:start] + "\nstale\n" + text[end:])
    assert readme.main([str(target), "--check"]) == 1
    assert readme.main([str(target)]) == 0
    assert target.read_text() == text
    doc = ast.get_docstring(ast.parse(text))
    assert "- error barrier, ticket (100%: dense): above the 2-point threshold" in doc
