"""Markdown tables and the numbers in their cells.

:func:`markdown_table` is the one table writer: every report table (and the
regularizer comparison of ``experiments/regularizers.py``) goes through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lth_jax.report.stats import finite

__all__ = ["markdown_table", "pct", "format_density", "ARM_LABELS", "arm_label"]

#: Readable names of the lottery arms, for figures and notes (tables keep the ids).
ARM_LABELS = {
    "ticket": "ticket",
    "reinit": "random re-init",
    "random_mask": "random pruning",
    "one_shot": "one-shot pruning",
    "gmp": "gradual magnitude pruning",
    "snip": "SNIP",
    "grasp": "GraSP",
    "synflow": "SynFlow",
    "snip_shuffled": "SNIP, shuffled",
    "grasp_shuffled": "GraSP, shuffled",
    "synflow_shuffled": "SynFlow, shuffled",
    "snip_reinit": "SNIP, re-init",
    "grasp_reinit": "GraSP, re-init",
    "synflow_reinit": "SynFlow, re-init",
    "dense": "dense",
}


def arm_label(arm) -> str:
    """The readable name of an arm (:data:`ARM_LABELS`), else the arm id itself."""
    return ARM_LABELS.get(arm, str(arm))


def markdown_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right_aligned: Sequence[bool],
    padded: bool = True,
) -> str:
    """A markdown table, one line per row, without a final newline.

    ``right_aligned[j]`` aligns column ``j`` right (``--:``) or left (``:--``).
    Padded (the default), every column is as wide as its widest cell (at least
    3) so that the columns line up in a terminal; unpadded, cells are written as
    they are and the separator is ``|:--|--:|``.

    Example:
      >>> print(markdown_table(["arm", "n"], [["ticket", "3"]], [False, True]))
      | arm    |   n |
      |:-------|----:|
      | ticket |   3 |
      >>> print(markdown_table(["arm", "n"], [["ticket", "3"]], [False, True], padded=False))
      | arm | n |
      |:--|--:|
      | ticket | 3 |
    """
    if padded:
        widths = [max(3, len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)]
    else:
        widths = [0] * len(header)

    def line(cells):
        padded_cells = (
            c.rjust(w) if rj else c.ljust(w)
            for c, w, rj in zip(cells, widths, right_aligned, strict=True)
        )
        return "| " + " | ".join(padded_cells) + " |"

    dashes = [w + 1 if padded else 2 for w in widths]
    sep = "|" + "|".join(
        ("-" * d + ":") if rj else (":" + "-" * d) for d, rj in zip(dashes, right_aligned)
    )
    return "\n".join([line(header), sep + "|", *(line(r) for r in rows)])


def pct(mean: float, std: float, n: int, nonfinite: str = "-") -> str:
    """An accuracy in %, 2 decimals: ``"97.12 ± 0.31"``, ``"97.12"`` for one trial.

    ``"failed"`` when ``n == 0``; ``nonfinite`` when the mean is not finite.
    """
    if n == 0:
        return "failed"
    if not math.isfinite(mean):
        return nonfinite
    if n == 1:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def format_density(density: float) -> str:
    """A density (fraction) as % weights: ``"100"``, ``"51.2"``, ``"3.5"``, ``"0.92"``.

    One decimal (a trailing ``.0`` dropped) at 1% and above, two significant
    digits below; ``"?"`` when not a finite number.
    """
    p = finite(density)
    if p is None:
        return "?"
    p *= 100.0
    if p >= 1.0 - 5e-3 or p == 0.0:
        s = f"{p:.1f}"
        return s[:-2] if s.endswith(".0") else s
    return f"{p:.2g}"
