"""Pooled reports: the trials of workdirs that differ only in ``seed``, as one experiment.

``lth-jax report --pool DIR DIR ... [--out OUT]`` (:func:`write_report`)
reads the workdirs of one study run with several seeds (by hand, or the
points of ``lth-jax sweep --sweep seed=...``) and writes one report of all
their trials: the table, the figure, the paired comparisons and the Findings,
as for one workdir.

Rules, exactly:

* **Same study.** Every workdir has a ``config.json`` (read with
  :func:`lth_jax.report.files.read_config`, without JAX) of kind ``lottery``
  or ``instability``, and the configs differ only in ``seed`` and in the keys
  that do not change results (:data:`HARMLESS_KEYS`, as
  :data:`lth_jax.workdir.HARMLESS_KEYS`); a key one config lacks counts as a
  difference. Anything else is refused with one line naming the differing
  keys (:func:`config_differences`).
* **No trial twice.** Two workdirs with the same seed are refused: they hold
  the same trials (every key is a function of ``(seed, trial, round,
  purpose)``, :mod:`lth_jax.rng`).
* **Trials are keyed by (seed, trial).** A pooled record's ``trial`` is the
  pair ``(seed, trial)`` (written ``[seed, trial]`` in ``summary.json``), and
  it gains a ``seed`` field; nothing is renumbered. So the table's ``trials``
  column is the sum over workdirs, and a paired comparison pairs the arms of
  the same ``(seed, trial)``, which share the data order, the dropout keys
  and the dense run, exactly as within one workdir.
* **Where it goes.** ``--out``, default ``pooled`` in the workdirs' common
  parent folder; never one of the pooled workdirs (their own reports stay).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from lth_jax.checks import flatten
from lth_jax.config_base import base_config, upgrade_json
from lth_jax.report import files
from lth_jax.report.findings import findings_lines, lottery_findings
from lth_jax.report.lottery import (
    _notes,
    _records_summary,
    config_summary,
    early_stop_metric,
    format_table,
    load_records,
    summarize,
    summary_data,
)
from lth_jax.report.lottery_figure import plot_report
from lth_jax.report.paired import PAIRED_NOTE, arms_note, format_paired, lottery_pairs
from lth_jax.report.stats import BANDS, has_curve, latest
from lth_jax.workdir.files import config_to_json
from lth_jax.workdir.layout import HARMLESS_KEYS as HARMLESS
from lth_jax.workdir.layout import differing_keys

__all__ = [
    "HARMLESS_KEYS",
    "POOLED_DIR",
    "POOL_KINDS",
    "TRIAL_KEY_NOTE",
    "config_differences",
    "pool",
    "default_out",
    "write_report",
]

#: Keys that may differ between pooled workdirs: they do not change results.
HARMLESS_KEYS = HARMLESS
#: The kinds of workdir --pool takes.
POOL_KINDS = ("lottery", "instability")

#: The folder a pooled report goes into without ``--out``, in the workdirs' common parent.
POOLED_DIR = "pooled"

TRIAL_KEY_NOTE = (
    "Trials are keyed by (seed, trial): the pooled trials are every workdir's trials, none "
    "renumbered, and the paired comparisons pair the arms of the same (seed, trial)."
)


def config_differences(
    a: Mapping,
    b: Mapping,
    ignore: Sequence[str] = ("seed",),
    harmless=HARMLESS_KEYS,
    defaults: Mapping | None = None,
) -> list[str]:
    """The dotted keys where two ``config.json`` objects differ, sorted.

    Keys in ``ignore`` and in ``harmless`` (and the keys under them) are left
    out; a key one side lacks counts as a difference, unless ``defaults`` (a
    ``config.json`` of every key's default) holds it with the other side's
    value (a key added after one of the workdirs was made, at its default).

    Example:
      >>> config_differences({"seed": 0, "imp": {"rounds": 2}}, {"seed": 1, "imp": {"rounds": 3}})
      ['imp.rounds']
    """
    skip = (*ignore, *harmless)
    return differing_keys(a, b, defaults=defaults or {}, harmless=skip)


def _show(cfg: Mapping, key: str) -> str:
    flat = flatten(cfg)
    return repr(flat[key]) if key in flat else "<missing>"


def _configs(workdirs: Sequence[str]) -> list[dict]:
    out = []
    for d in workdirs:
        if not os.path.isdir(d):
            raise ValueError(f"no such experiment directory: {d}")
        cfg, err = files.read_config(d)
        if cfg is None:
            why = err or f"no {files.CONFIG_FILE}"
            raise ValueError(f"cannot pool {d}: {why} (the configs are compared before pooling)")
        kind = cfg.get("kind", "lottery")
        if kind not in POOL_KINDS:
            raise ValueError(
                f"cannot pool {d}: kind {kind!r}; --pool takes lottery and instability workdirs"
            )
        cfg = upgrade_json(cfg)  # an old config.json in the current layout
        seed = cfg.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"cannot pool {d}: its {files.CONFIG_FILE} has no integer seed")
        out.append(cfg)
    return out


def pool(workdirs: Sequence[str]) -> tuple[dict, list[dict], list[dict]]:
    """``(config, records, sources)`` of the pooled workdirs, checked (see the module docstring).

    Each ``config.json`` is first brought to the current layout
    (:func:`lth_jax.config_base.upgrade_json`), and a key one of them lacks
    differs only when the other's value is not its default, as when a run is
    resumed: a workdir made before a key existed pools with one made after when
    both ran the same.

    ``config`` is the first workdir's ``config.json`` with ``seed`` set to the
    list of seeds and ``num_trials`` to the pooled count; ``records`` are every
    workdir's latest records, each with ``seed`` and ``trial = (seed, trial)``,
    in the order of the seeds; ``sources`` lists ``{"workdir", "seed",
    "trials", "rounds"}`` in that order (``rounds``: those its records hold).

    Raises:
      ValueError: one line: a workdir without ``config.json`` or metrics, of
        another kind, configs that differ in more than the seed (naming the
        keys and their values), or two workdirs with the same seed.
    """
    workdirs = [os.fspath(d) for d in workdirs]
    if len(workdirs) < 2:
        raise ValueError("--pool needs at least two workdirs (one is reported as it is)")
    configs = _configs(workdirs)
    first, first_cfg = workdirs[0], configs[0]
    defaults = config_to_json(base_config())
    for d, cfg in zip(workdirs[1:], configs[1:]):
        diff = config_differences(first_cfg, cfg, defaults=defaults)
        if diff:
            shown = ", ".join(
                f"{k} ({_show(first_cfg, k)} in {first}, {_show(cfg, k)} in {d})" for k in diff[:3]
            )
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            raise ValueError(
                f"cannot pool: the configs differ in {', '.join(diff)}: {shown}{more}; --pool "
                "takes workdirs whose configs differ only in seed"
            )
    seen: dict[int, str] = {}
    for d, cfg in zip(workdirs, configs):
        if cfg["seed"] in seen:
            raise ValueError(
                f"cannot pool {seen[cfg['seed']]} and {d}: both have seed {cfg['seed']}, so "
                "they hold the same trials"
            )
        seen[cfg["seed"]] = d
    records, sources = [], []
    for d, cfg in sorted(zip(workdirs, configs), key=lambda p: p[1]["seed"]):
        seed = cfg["seed"]
        own = latest(load_records(d))
        for r in own:
            trial = r.get("trial")
            records.append({**r, "seed": seed, "trial": None if trial is None else (seed, trial)})
        trials = sorted({r["trial"] for r in own if r.get("trial") is not None})
        rounds = sorted({r["round"] for r in own if r.get("round") is not None})
        sources.append({"workdir": d, "seed": seed, "trials": trials, "rounds": rounds})
    config = {**first_cfg, "seed": [s["seed"] for s in sources]}
    config["num_trials"] = sum(len(s["trials"]) for s in sources)
    return config, records, sources


def default_out(workdirs: Sequence[str]) -> str:
    """``pooled`` in the common parent folder of ``workdirs``."""
    parents = [os.path.dirname(os.path.abspath(os.fspath(d))) for d in workdirs]
    return os.path.join(os.path.commonpath(parents), POOLED_DIR)


def _pooled_line(sources: Sequence[Mapping]) -> str:
    parts = [f"{s['workdir']} (seed {s['seed']}, {_trials(len(s['trials']))})" for s in sources]
    n = sum(len(s["trials"]) for s in sources)
    line = f"Pooled: {_trials(n)} from {len(sources)} workdirs: {', '.join(parts)}. "
    if len({tuple(s["rounds"]) for s in sources}) > 1:  # an unfinished workdir, or a shorter run
        held = ", ".join(f"{s['workdir']} {_rounds(s['rounds'])}" for s in sources)
        line += (
            f"Not every workdir holds every round ({held}): a round pools the workdirs that "
            "hold it (its `trials` column). "
        )
    return line


def _rounds(rounds: Sequence[int]) -> str:
    if len(rounds) < 2:
        return f"round {rounds[0]}" if rounds else "no rounds"
    if list(rounds) == list(range(rounds[0], rounds[-1] + 1)):
        return f"rounds {rounds[0]}-{rounds[-1]}"
    return "rounds " + ", ".join(map(str, rounds))


def _trials(n: int) -> str:
    return f"{n} trial" + ("" if n == 1 else "s")


def write_report(
    workdirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    title: str | None = None,
    band: str = "ci",
) -> str:
    """Writes the pooled ``report.md``, ``report.png`` and ``summary.json``; returns the table.

    Into ``out_dir`` (default :func:`default_out`). ``summary.json`` is
    :func:`lth_jax.report.lottery.summary_data` of the pooled trials, plus
    ``pooled``: the workdirs, their seeds and trials, and the trial key.

    Raises:
      ValueError: as :func:`pool`; an unknown ``band``; ``out_dir`` one of the
        pooled workdirs.
    """
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; bands are {', '.join(BANDS)}")
    workdirs = [os.fspath(d) for d in workdirs]
    config, records, sources = pool(workdirs)
    out_path = os.fspath(out_dir) if out_dir is not None else default_out(workdirs)
    for d in workdirs:
        if os.path.abspath(out_path) == os.path.abspath(d):
            raise ValueError(
                f"--out {out_path} is one of the pooled workdirs; give the pooled report its "
                "own folder"
            )
    out = files.out_dir_for(out_path, None)
    rows, pairs = summarize(records), lottery_pairs(records)
    label = "pooled"
    if title is None:
        names = files.labels([s["workdir"] for s in sources])
        title = f"Lottery ticket report, pooled: {', '.join(names)}"
    stops = sorted({early_stop_metric(d) for d in workdirs})
    plot_report(
        [(label, rows)],
        os.path.join(out, files.REPORT_PNG),
        title=title,
        band=band,
        early_stop=stops[0] if len(stops) == 1 else None,
    )
    md = [f"# {title}", "", _pooled_line(sources) + TRIAL_KEY_NOTE, ""]
    line = config_summary(config)
    if line:
        md += [f"Config: {line}", ""]
    md += [f"Metrics: {_records_summary(records, rows)}", ""]
    md += ["## Findings", "", *findings_lines(records, pairs), ""]
    md += [format_table(rows), ""]
    arms = [r["arm"] for r in records]
    if pairs:
        note = PAIRED_NOTE + arms_note(arms)
        md += ["## Paired comparisons", "", format_paired(pairs), "", note, ""]
    files.write_markdown(out, md, title, _notes(band, has_curve(rows), stops, arms))
    data = summary_data([(label, rows, pairs, lottery_findings(records, pairs))])
    data["pooled"] = {
        "trial_key": ["seed", "trial"],
        "workdirs": [{**s, "trials": list(s["trials"])} for s in sources],
    }
    files.write_summary(out, data)
    return format_table(rows)
