"""The files of a report: reading ``metrics.jsonl`` and ``config.json``, writing ``report.md``.

A workdir holds ``metrics.jsonl`` (read with :func:`lth_jax.workdir.read_jsonl`,
the project's one JSON-lines reader) and usually ``config.json``; the report
writes ``report.md`` and ``report.png``, into the workdir unless told another
folder, and ``summary.json``, the numbers of the report for programs
(:func:`write_summary`: plain JSON, ``NaN`` written as ``null``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

from lth_jax.workdir import read_jsonl

__all__ = [
    "METRICS_FILE",
    "CONFIG_FILE",
    "FIELD_TYPES",
    "REPORT_MD",
    "REPORT_PNG",
    "SUMMARY_JSON",
    "read_records",
    "read_config",
    "workdir_kind",
    "unfinished",
    "RESUME",
    "labels",
    "out_dir_for",
    "write_markdown",
    "plain",
    "write_summary",
]

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
SUMMARY_JSON = "summary.json"


#: What a record's field may hold, for :func:`read_records`'s ``types``.
FIELD_TYPES = {
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a string": lambda v: isinstance(v, str),
}


def read_records(
    path: str, required: Sequence[str] = (), types: Mapping[str, str] | None = None
) -> list[dict]:
    """The records of the JSON-lines file ``path``; each must hold the keys ``required``.

    ``types`` maps a key to what its value must be, ``"an integer"`` or ``"a
    string"`` (:data:`FIELD_TYPES`), where the record has the key; ``null`` is
    allowed for a key that is not ``required``.

    Raises:
      ValueError: as :func:`lth_jax.workdir.read_jsonl` does (``<path>:<line>:
        malformed JSON line (...)``, ``<path>:<line>: expected a JSON object``),
        ``<path>:<line>: record has no '<key>'`` for a missing key, and
        ``<path>:<line>: record's '<key>' must be an integer, got [1]`` for a
        value of the wrong type.
    """
    records = read_jsonl(path, missing_ok=True)
    types = dict(types or {})
    for k, rec in enumerate(records):
        for key in required:
            if key not in rec:
                raise ValueError(f"{path}:{_line_of_record(path, k)}: record has no {key!r}")
        for key, want in types.items():
            if key not in rec or (rec[key] is None and key not in required):
                continue
            if not FIELD_TYPES[want](rec[key]):
                raise ValueError(
                    f"{path}:{_line_of_record(path, k)}: record's {key!r} must be {want}, "
                    f"got {json.dumps(rec[key])}"
                )
    return records


def _line_of_record(path: str, k: int) -> int:
    """The line number of the ``k``-th record: blank lines hold none, every other line does."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    return [i + 1 for i, line in enumerate(lines) if line.strip()][k]


def read_config(workdir: str) -> tuple[dict | None, str | None]:
    """``(config, error)``: the parsed config.json, or ``None`` and why not (``None`` if absent)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{CONFIG_FILE} unreadable: {e}"
    if not isinstance(cfg, dict):
        return None, f"{CONFIG_FILE} is not a JSON object"
    return cfg, None


#: How an unfinished run is finished (what the report says about one).
RESUME = "unless it is still running, run its lth-jax run command again to finish it"


def unfinished(cfg: Mapping | None, records: Sequence[Mapping]) -> str | None:
    """What a lottery or instability run still lacks, or ``None`` when it is finished.

    ``cfg``: its ``config.json`` (a dict); ``records``: its ``metrics.jsonl``.
    Finished: every round ``0..imp.rounds`` has records, and for kind
    ``instability`` every ticket and dense record (not skipped) has its
    ``barrier``. Other kinds, and a missing config: ``None`` (not judged here).

    Example:
      >>> unfinished({"imp": {"rounds": 3}}, [{"round": 0}, {"round": 1}])
      'rounds 0-1 of 0-3 done'
      >>> unfinished({"imp": {"rounds": 1}}, [{"round": 0}, {"round": 1}]) is None
      True
    """
    kind = None if cfg is None else cfg.get("kind", "lottery")
    if kind not in ("lottery", "instability"):
        return None
    target = int(cfg.get("imp", {}).get("rounds", 0))
    done = sorted({r.get("round") for r in records if isinstance(r.get("round"), int)})
    if not all(r in done for r in range(target + 1)):
        have = "no round" if not done else f"rounds {done[0]}-{done[-1]}"
        return f"{have} of 0-{target} done"
    if kind == "instability" and not all(
        "barrier" in r
        for r in records
        if r.get("arm") in ("ticket", "dense") and r.get("status") != "skipped"
    ):
        return "the instability of some rounds is not computed yet"
    return None


def workdir_kind(workdir: str) -> str | None:
    """The ``kind`` in ``workdir/config.json`` (``lottery`` when unset), ``None`` without one."""
    cfg, _ = read_config(os.fspath(workdir))
    return None if cfg is None else cfg.get("kind", "lottery")


def labels(workdirs: Sequence[str]) -> list[str]:
    """Short unique labels: the directory names, with parents added until unique."""
    parts = [os.path.normpath(os.path.abspath(d)).split(os.sep) for d in workdirs]
    depth = 1
    while True:
        found = ["/".join(p[-depth:]) for p in parts]
        if len(set(found)) == len(found) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    seen: dict[str, int] = {}
    out = []
    for lab in found:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return out


def out_dir_for(workdir: str, out_dir: str | os.PathLike | None) -> str:
    """The folder the report goes into (``out_dir``, default ``workdir``), created."""
    out = os.fspath(out_dir) if out_dir is not None else workdir
    os.makedirs(out, exist_ok=True)
    return out


def write_markdown(out: str, lines: list[str], title: str, notes: str) -> None:
    """Writes ``out/report.md``: ``lines``, then the figure and the ``notes`` paragraph."""
    lines = [*lines, f"![{title}]({REPORT_PNG})", "", notes, ""]
    with open(os.path.join(out, REPORT_MD), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def plain(value):
    """``value`` as plain JSON data: floats to 12 significant digits, non-finite ones ``None``.

    Mappings become dicts (keys as strings), sequences lists; 12 digits keep
    the file independent of the last bit of the arithmetic that made it.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return int(value)
    v = float(value)
    return float(f"{v:.12g}") if math.isfinite(v) else None


def _dumps(value, level: int = 0) -> str:
    """JSON text, indented one space a level; a list of rows (objects) holds one row a line."""
    pad = " " * level
    one = lambda v: json.dumps(v, ensure_ascii=False, allow_nan=False)
    if isinstance(value, dict) and value:
        items = [f"{pad} {one(k)}: {_dumps(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        if all(not any(_has_objects(x) for x in v.values()) for v in value):  # rows
            return "[\n" + ",\n".join(f"{pad} {one(v)}" for v in value) + "\n" + pad + "]"
        return "[\n" + ",\n".join(f"{pad} {_dumps(v, level + 1)}" for v in value) + "\n" + pad + "]"
    return one(value)


def _has_objects(value) -> bool:
    """Whether ``value`` is a list holding objects (a table, not a row's field)."""
    return isinstance(value, list) and any(isinstance(v, dict) for v in value)


def write_summary(out: str, data: Mapping) -> str:
    """Writes ``out/summary.json``: :func:`plain` of ``data``, one row (object of a list) a line."""
    path = os.path.join(out, SUMMARY_JSON)
    with open(path, "w", encoding="utf-8") as f:
        f.write(_dumps(plain(data)) + "\n")
    return path
