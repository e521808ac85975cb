"""The regularizer comparison (``experiments/regularizers.py``): its table and findings.

``experiments/regularizers.py`` writes ``results.json``: one entry per setting
(``setting``, ``regularizer``, per-trial lists ``final_test_accuracy``,
``test_accuracy_at_best_val``, ``exact_zero_fraction`` and
``below_1e-3_fraction``, in trial order, and the setting's ``config``) and
``table.md``. Every setting runs the same trials with the same ``seed``, so
trial ``t`` of every setting starts from the same initialization with the
same data order: settings are compared **paired by trial**
(:func:`lth_jax.report.paired.compare`), by the paired rule of
:mod:`lth_jax.report.findings`.

Which comparisons (:func:`effects`), on final test accuracy: every setting
against the one without regularizer (``regularizer == "none"``); a setting
that adds a regularizer to another's (its ``regularizer`` parts, split at
``", "``, contain all of the other's) against that one; and the setting with
the highest mean against every other. :func:`findings_bullets` adds which
settings leave kernel weights at exactly 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from lth_jax.checks import get
from lth_jax.report.findings import A_ABOVE, B_ABOVE, verdict
from lth_jax.report.paired import compare
from lth_jax.report.stats import trial_stats
from lth_jax.report.tables import markdown_table

__all__ = [
    "RESULTS_FILE",
    "TABLE_FILE",
    "load_results",
    "format_table",
    "effects",
    "findings_bullets",
    "setup_line",
]

RESULTS_FILE = "results.json"
TABLE_FILE = "table.md"
_LISTS = ("final_test_accuracy", "test_accuracy_at_best_val", "exact_zero_fraction")


def load_results(folder: str) -> list[dict]:
    """The entries of ``<folder>/results.json`` (:class:`ValueError` naming it when malformed)."""
    path = os.path.join(folder, RESULTS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(results, list) or not results:
        raise ValueError(f"{path}: expected a non-empty list of settings")
    for k, r in enumerate(results):
        missing = [key for key in ("setting", "regularizer", *_LISTS) if key not in r]
        if missing:
            raise ValueError(f"{path}: setting {k} has no {missing[0]!r}")
    return results


def _ms(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """``"61.70 ± 1.77"``: mean ± sample std of ``values * scale`` (one value: just it)."""
    st = trial_stats([scale * v for v in values])
    if len(values) == 1:
        return f"{st['mean']:.{digits}f}"
    return f"{st['mean']:.{digits}f} ± {st['std']:.{digits}f}"


def format_table(results: Sequence[Mapping]) -> str:
    """The table of ``table.md``: one row per setting, mean ± sample std over trials, in %."""
    header = [
        "setting",
        "regularizer",
        "final test acc (%)",
        "test acc at early stop (%)",
        "weights exactly 0 (%)",
        "weights with abs < 1e-3 (%)",
    ]
    body = [
        [r["setting"], r["regularizer"]] + [_ms(r[k]) for k in (*_LISTS, "below_1e-3_fraction")]
        for r in results
    ]
    return markdown_table(header, body, [False, False, True, True, True, True], padded=False)


def _by_trial(r: Mapping) -> dict[int, dict]:
    return {t: {"final_test_accuracy": v} for t, v in enumerate(r["final_test_accuracy"])}


def _name(r: Mapping) -> str:
    """The setting's regularizers, readable: ``dropout 0.2 + max-norm 3``."""
    return r["regularizer"].replace(", ", " + ")


def _parts(r: Mapping) -> set[str]:
    return set() if r["regularizer"] == "none" else set(r["regularizer"].split(", "))


def effects(results: Sequence[Mapping]) -> list[dict[str, Any]]:
    """The paired comparisons of final test accuracy (see the module), without repeats.

    Rows ``{a, b, kind, trials, n, mean, std, ci_low, ci_high, wins, ties,
    losses}``: ``a``/``b`` name the settings' regularizers (``dropout 0.2 +
    max-norm 3``), ``kind`` is ``"vs none"``, ``"added"`` (a adds a
    regularizer to b) or ``"best"`` (a has the highest mean).
    """
    pairs: list[tuple[Mapping, Mapping, str]] = []
    none = [r for r in results if r["regularizer"] == "none"]
    for r in results:
        if none and r is not none[0]:
            pairs.append((r, none[0], "vs none"))
    for r in results:
        for q in results:
            if r is not q and _parts(q) and _parts(q) < _parts(r):
                pairs.append((r, q, "added"))
    best = max(results, key=lambda r: trial_stats(r["final_test_accuracy"])["mean"])
    pairs += [(best, r, "best") for r in results if r is not best]
    out, seen = [], set()
    for a, b, kind in pairs:
        key = frozenset((a["setting"], b["setting"]))
        if key in seen:
            continue
        seen.add(key)
        c = compare(_by_trial(a), _by_trial(b), "final_test_accuracy")
        out.append({"a": _name(a), "b": _name(b), "kind": kind, **c})
    return out


def _effect_bullet(e: Mapping) -> str:
    v = verdict(e)
    diff = f"{100 * e['mean']:+.1f} points [{100 * e['ci_low']:+.1f}, {100 * e['ci_high']:+.1f}]"
    best = " (highest mean)" if e["kind"] == "best" else ""
    head = f"- **{e['a']}{best} vs {e['b']}, final test accuracy**: "
    if v == A_ABOVE:
        return head + f"{e['a']} above {e['b']} in {e['wins']}/{e['n']} trials ({diff})."
    if v == B_ABOVE:
        return head + f"{e['b']} above {e['a']} in {e['losses']}/{e['n']} trials ({diff})."
    return head + f"no clear difference ({diff}, {e['a']} higher in {e['wins']}/{e['n']} trials)."


def _zeros_bullet(results: Sequence[Mapping]) -> str:
    """Which settings leave kernel weights at exactly 0, in how many trials."""
    n = lambda r: sum(v > 0 for v in r["exact_zero_fraction"])
    some = [r for r in results if n(r)]
    if not some:
        return "- **weights exactly 0**: no kernel weight is exactly 0 in any trial of any setting."
    parts = [
        f"{_name(r)} (in {n(r)}/{len(r['exact_zero_fraction'])} trials; "
        f"{_ms(r['exact_zero_fraction'], digits=1)}% of the kernel weights)"
        for r in some
    ]
    text = ("only " if len(some) == 1 else "") + ", ".join(parts)
    text += (" leaves" if len(some) == 1 else " leave") + " kernel weights at exactly 0"
    if len(some) < len(results):
        text += "; no weight is exactly 0 in any trial of the other settings"
    return f"- **weights exactly 0**: {text}."


def findings_bullets(results: Sequence[Mapping]) -> list[str]:
    """The Findings bullets: exact zeros, then every effect of :func:`effects`."""
    return [_zeros_bullet(results), *(_effect_bullet(e) for e in effects(results))]


def setup_line(results: Sequence[Mapping]) -> str:
    """The shared settings of the runs, from each setting's ``config``."""
    cfg = results[0].get("config") or {}
    g = lambda key: get(cfg, key, None)
    feats = (g("model.kwargs") or {}).get("features")
    parts = [
        f"{g('model.name')}" + (f" {list(feats)}" if feats else "") + f" on {g('dataset.name')}",
        f"{g('optimizer.name')} learning rate {g('optimizer.learning_rate'):g}",
        f"batch {g('train.batch_size')}",
        f"{g('train.steps')} steps",
        f"{len(results[0]['final_test_accuracy'])} trials",
        f"seed {g('seed')} in every setting (trial t of every setting shares its "
        "initialization and data order, so the settings are compared paired by trial)",
    ]
    return f"Setup (`{RESULTS_FILE}`): " + ", ".join(parts) + "."


def block(folder: str) -> tuple[str, list[str]]:
    """The README block of a regularizer folder (markdown) and its Findings bullets."""
    results = load_results(folder)
    bullets = findings_bullets(results)
    line = (
        "Mean ± sample std over trials, in % (`table.md`; weights counted over all kernels "
        "of the final network):"
    )
    rule = (
        "Findings (paired by trial, final test accuracy: mean paired difference a − b "
        "[95% CI], by the findings rule):"
    )
    parts = [setup_line(results), line, format_table(results), rule + "\n\n" + "\n".join(bullets)]
    return "\n\n".join(parts), bullets
