"""A workdir's whole life: its path, its files, config drift, metrics, signals.

Every experiment kind (``lottery``, ``instability``, ``transfer``) keeps its
results in a workdir through this module; orbax checkpoints are
:mod:`lth_jax.checkpoint`'s. The files lth-jax writes there::

    config.json      the resolved config of the run (written before any training)
    metrics.jsonl    one JSON object per run record (finished rounds or sizes only)
    timing.jsonl     wall-clock seconds per round and where they went: ``wall_time_s``,
                     ``startup_s``, ``compile_s``, ``train_s``, ``eval_s`` (an
                     estimate), ``checkpoint_s``, ``events_s``, ``host_s``, ``shares``
                     (see :mod:`lth_jax.timing`; kept apart: it differs run to run)
    checkpoints/     orbax checkpoints (see :mod:`lth_jax.checkpoint`)
    tensorboard/     live metrics: TensorBoard event files (see :mod:`lth_jax.events`)
    report.md, report.png

Rules stated exactly:

* **Atomic files.** ``config.json`` and ``metrics.jsonl`` are rewritten whole:
  written to ``<name>.tmp-<pid>``, flushed, fsynced, then ``os.replace``-d, so
  they never hold a partial line. ``timing.jsonl`` is appended to (it need not
  be exact).
* **Reading JSON lines** (:func:`read_jsonl`, the one reader): blank lines are
  skipped; a final line that does not parse (a process died while appending
  it) is ignored; a line that does not parse anywhere else, or that is not a
  JSON object, is an error naming the file and line.
* **Drift.** A workdir holding a run of another config is refused
  (:func:`check_config_drift`) unless the run is overwritten.
* **Signals.** Within :class:`SignalGuard`, the first SIGINT or SIGTERM sets a
  flag the runner checks at safe points (after a chunk: it saves a checkpoint
  and raises :class:`Interrupted`); a second one stops at once.
"""

from __future__ import annotations

from lth_jax.workdir.files import (
    RunFailed,
    append_jsonl,
    config_to_json,
    disk_full,
    is_disk_full,
    read_json,
    read_jsonl,
    remove_stale_tmp_files,
    sync_metrics,
    write_json_atomic,
    write_jsonl_atomic,
    write_metrics,
)
from lth_jax.workdir.layout import (
    CONFIG,
    FOLDERS,
    HARMLESS_KEYS,
    LOCK,
    METRICS,
    REPORT_FILES,
    TIMING,
    DriftError,
    check_config_drift,
    check_contents,
    check_path,
    config_diff,
    lock,
    note,
    note_resume,
    prepare,
)
from lth_jax.workdir.signals import ChunkSaver, Interrupted, SignalGuard

__all__ = [
    "CONFIG",
    "METRICS",
    "TIMING",
    "REPORT_FILES",
    "LOCK",
    "FOLDERS",
    "HARMLESS_KEYS",
    "config_to_json",
    "write_json_atomic",
    "write_jsonl_atomic",
    "append_jsonl",
    "read_jsonl",
    "read_json",
    "remove_stale_tmp_files",
    "check_path",
    "check_contents",
    "lock",
    "prepare",
    "check_config_drift",
    "DriftError",
    "config_diff",
    "sync_metrics",
    "write_metrics",
    "note",
    "note_resume",
    "RunFailed",
    "is_disk_full",
    "disk_full",
    "Interrupted",
    "SignalGuard",
    "ChunkSaver",
]
