"""Reports of experiment workdirs: ``report.md`` (tables), ``report.png``, ``summary.json``.

:func:`write_report` (``lth-jax report DIR ...``, through :func:`main_report`)
reads each workdir's ``metrics.jsonl`` and ``config.json`` and writes the
report of its kind, with ``summary.json`` (its numbers, for programs) next to
``report.md``:

* lottery and instability workdirs (:mod:`lth_jax.report.lottery`, figure in
  :mod:`lth_jax.report.lottery_figure`): accuracy, early-stop step and error
  barrier against % weights, one or several workdirs compared, the paired
  comparisons between arms (:mod:`lth_jax.report.paired`) and, for several
  workdirs, across them, paired by trial (:mod:`lth_jax.report.across`);
* a transfer workdir (:mod:`lth_jax.report.transfer`): target accuracy against
  the target training-set size, reported on its own;
* workdirs that differ only in ``seed``, pooled into one report of all their
  trials, keyed by ``(seed, trial)`` (``lth-jax report --pool``,
  :mod:`lth_jax.report.pool`).

Every report opens with Findings generated from its paired comparisons by one
stated rule (:mod:`lth_jax.report.findings`; for instability workdirs also the
error barriers against the 2-point threshold), and
:mod:`lth_jax.report.readme` writes the result blocks of README.md, of the
results READMEs and of the preset docstrings from the committed metrics
(``python -m lth_jax.report.readme``; what a block holds:
:mod:`lth_jax.report.blocks`, the regularizer comparison's:
:mod:`lth_jax.report.regularizers`).

The pieces they share: :mod:`lth_jax.report.files` (reading and writing the
files), :mod:`lth_jax.report.stats` (failed records, statistics over trials,
confidence intervals, the figure's bands) and :mod:`lth_jax.report.tables`
(the markdown table writer, cell formats).
Nothing here imports JAX or a runner.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from lth_jax.report import lottery, pool, transfer
from lth_jax.report.files import (
    CONFIG_FILE,
    METRICS_FILE,
    REPORT_MD,
    REPORT_PNG,
    RESUME,
    SUMMARY_JSON,
    read_config,
    unfinished,
    workdir_kind,
)
from lth_jax.report.lottery import (
    TABLE_COLUMNS,
    config_summary,
    format_table,
    load_records,
    summarize,
)
from lth_jax.report.lottery_figure import arm_lines, band_edges, plot_report
from lth_jax.report.stats import BANDS, trial_stats
from lth_jax.report.tables import format_density

__all__ = [
    "METRICS_FILE",
    "CONFIG_FILE",
    "TABLE_COLUMNS",
    "load_records",
    "summarize",
    "format_table",
    "format_density",
    "config_summary",
    "plot_report",
    "arm_lines",
    "band_edges",
    "BANDS",
    "write_report",
    "main_report",
    "trial_stats",
    "workdir_kind",
]


def write_report(
    workdirs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    title: str | None = None,
    band: str = "ci",
) -> str:
    """Write ``report.md``, ``report.png`` and ``summary.json``; return the table text.

    Lottery and instability workdirs: :func:`lth_jax.report.lottery.write_report`
    (one workdir, or several compared on one figure, written into ``out_dir``,
    default the **first** workdir).

    A transfer workdir (``kind: transfer`` in its ``config.json``) gets its own
    report, :func:`lth_jax.report.transfer.write_report` (target accuracy against
    the target training-set size); it cannot be compared with others on one plot.

    ``band`` is the figure's band around the mean: ``ci`` (the 95% CI of the
    mean over trials), ``std``, ``sem`` or ``minmax`` (:data:`BANDS`).

    Raises :class:`ValueError` (one line, naming the path) for a missing
    directory, a missing ``metrics.jsonl``, or one without records, and for an
    unknown ``band``.
    """
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; bands are {', '.join(BANDS)}")
    if isinstance(workdirs, str | os.PathLike):
        workdirs = [workdirs]
    workdirs = [os.fspath(d) for d in workdirs]
    if not workdirs:
        raise ValueError("no experiment directory given")
    for d in workdirs:
        if not os.path.isdir(d):
            raise ValueError(f"no such experiment directory: {d}")
    kinds = [workdir_kind(d) == "transfer" for d in workdirs]
    if any(kinds):  # a transfer workdir has its own report
        if len(workdirs) > 1:
            raise ValueError(
                "a transfer workdir is reported on its own: lth-jax report "
                + workdirs[kinds.index(True)]
            )
        return transfer.write_report(workdirs[0], out_dir=out_dir, band=band)
    return lottery.write_report(workdirs, out_dir=out_dir, title=title, band=band)


def main_report(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    title: str | None = None,
    band: str = "ci",
    pooled: bool = False,
) -> int:
    """CLI helper for ``lth-jax report DIR [DIR ...]``: write the report, print the table, return 0.

    ``pooled``: one report of the trials of all ``paths``, whose configs must
    differ only in ``seed`` (:func:`lth_jax.report.pool.write_report`; default
    folder :func:`lth_jax.report.pool.default_out`).

    Raises :class:`ValueError` with a one-line message naming the path when a
    directory is missing or holds no metrics, or naming the bands for an
    unknown ``band``; with ``pooled``, also for workdirs that cannot be pooled.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no experiment directory given")
    if pooled:
        text = pool.write_report(paths, out_dir=out_dir, title=title, band=band)
        out = os.fspath(out_dir) if out_dir is not None else pool.default_out(paths)
    else:
        text = write_report(paths, out_dir=out_dir, title=title, band=band)
        out = os.fspath(out_dir) if out_dir is not None else paths[0]
    for p in paths:  # a report of a run still under way, or stopped, says so first
        if workdir_kind(p) == "transfer":
            continue
        why = unfinished(read_config(p)[0], load_records(p))
        if why:
            print(f"lth-jax: {p} is an unfinished run ({why}); {RESUME}")
    print(text)
    written = [os.path.join(out, name) for name in (REPORT_MD, REPORT_PNG, SUMMARY_JSON)]
    print(f"\nwrote {', '.join(written[:2])} and {written[2]}")
    return 0
