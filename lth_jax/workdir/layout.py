"""A workdir's layout and life: the path, its contents, the lock, ``--overwrite``, drift.

See :mod:`lth_jax.workdir` for the rules.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from lth_jax import checks
from lth_jax.checks import ConfigError
from lth_jax.workdir.files import read_json, remove_stale_tmp_files

__all__ = [
    "CONFIG",
    "METRICS",
    "TIMING",
    "REPORT_FILES",
    "LOCK",
    "FOLDERS",
    "HARMLESS_KEYS",
    "check_path",
    "check_contents",
    "lock",
    "prepare",
    "check_config_drift",
    "config_diff",
    "differing_keys",
    "DriftError",
    "note",
    "note_resume",
]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TIMING = "timing.jsonl"
REPORT_FILES = ("report.md", "report.png", "summary.json")
LOCK = ".lth-jax.lock"
#: The entries of a workdir that are folders (every other entry lth-jax writes is a file).
FOLDERS = ("checkpoints", "source", "target_imp", "tensorboard")
#: Config keys that may differ between a workdir's config.json and a run resuming it, or
#: between pooled workdirs: they do not change results.
HARMLESS_KEYS = (
    "progress",
    "checkpoint.max_to_keep",
    "checkpoint.every_steps",
    "num_devices",
    "log",
    "dataset.data_dir",
)


def check_path(workdir: str) -> None:
    """Refuses a workdir that cannot be created or written, before any work.

    Raises:
      ConfigError: not a path, not a directory, not writable, or under a file.
    """
    if not isinstance(workdir, str | os.PathLike) or not str(workdir):
        raise ConfigError(f"workdir must be a directory path, got {workdir!r}")
    path = os.path.abspath(workdir)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"workdir {workdir} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"workdir {workdir} is not writable")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"workdir {workdir} cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"workdir {workdir} cannot be created: {parent} is not writable")


def check_contents(workdir: str, owned: Sequence[str]) -> None:
    """Refuses a workdir whose contents lth-jax must not touch, before anything is written.

    Refused: a non-empty folder that holds none of ``owned`` (not an lth-jax
    workdir: lth-jax never mixes its files with others' or deletes them), and an
    entry of ``owned`` of the wrong kind: a symbolic link, a file where a
    folder belongs (the names in :data:`FOLDERS`) or a folder where a file does.

    Raises:
      ConfigError: naming the entry and what to do.
    """
    if not os.path.isdir(workdir):
        return
    entries = sorted(n for n in os.listdir(workdir) if n != LOCK)
    ours = [n for n in entries if n in owned or n.rpartition(".tmp-")[0] in owned]
    if entries and not ours:
        shown = ", ".join(entries[:5]) + (
            f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        )
        raise ConfigError(
            f"workdir {workdir} is not empty and holds no lth-jax run (it has {shown}); "
            "use a new or empty folder"
        )
    for name in owned:
        p = os.path.join(workdir, name)
        if os.path.islink(p):
            raise ConfigError(
                f"{p} is a symbolic link; lth-jax neither follows nor deletes links in a workdir: "
                "remove it or use another --workdir"
            )
        want_dir = name in FOLDERS
        if os.path.exists(p) and os.path.isdir(p) != want_dir:
            kind = "a folder" if want_dir else "a file"
            raise ConfigError(
                f"{p} must be {kind} (lth-jax writes it); move it away or use another --workdir"
            )


_HELD: dict[str, int] = {}


@contextlib.contextmanager
def lock(workdir: str, is_main: bool = True):
    """Holds an exclusive lock on ``workdir`` for a whole run (creating the folder).

    The lock is ``fcntl.flock`` on ``<workdir>/.lth-jax.lock``, which names the
    holder (pid, host, start time); the operating system releases it when the
    process ends, however it ends, so a killed run never leaves a stale lock.
    Re-entrant within a process (a runner that runs another on the same
    workdir). Only the main process of a multi-host run locks. A run that fails
    before writing anything removes the lock file (and the folder it created).

    Raises:
      ConfigError: another process holds the lock (naming it), or the folder
        cannot be created.
    """
    path = os.path.abspath(os.path.join(workdir, LOCK))
    if not is_main or path in _HELD:
        yield
        return
    created = not os.path.isdir(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"workdir {workdir} cannot be created: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(
            f"workdir {workdir} is in use by {holder}; wait for that run to end, or use "
            "another --workdir"
        ) from None
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    os.ftruncate(fd, 0)
    os.pwrite(
        fd, f"lth-jax pid {os.getpid()} on {socket.gethostname()} since {started}".encode(), 0
    )
    _HELD[path] = fd
    try:
        yield
    except BaseException:
        # A run that failed before writing anything leaves no trace: not even the lock.
        if os.listdir(workdir) == [LOCK]:
            with contextlib.suppress(OSError):
                os.remove(path)
                if created:
                    os.rmdir(workdir)
        raise
    finally:
        del _HELD[path]
        os.close(fd)


def prepare(workdir: str, overwrite: bool, owned: Sequence[str], is_main: bool = True) -> None:
    """Creates ``workdir``; with ``overwrite``, deletes the files and folders in ``owned``.

    Call it only once every check has passed (the config, the data, the model):
    nothing is deleted before. Also removes the ``<name>.tmp-<pid>`` files a
    killed writer of an owned file left behind. Only the main process
    (``is_main``) deletes anything; nothing but ``owned`` is ever deleted.

    Raises:
      ConfigError: the directory cannot be created.
    """
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"workdir {workdir} cannot be created: {e.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError(f"workdir {workdir} is not writable")
    if not is_main:
        return
    if overwrite:
        for name in owned:
            p = os.path.join(workdir, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    remove_stale_tmp_files(workdir, owned)


class DriftError(ConfigError):
    """:func:`check_config_drift`'s refusal: ``problem``, then ``; advice``.

    ``advice`` names the ``lth-jax run`` options (``--workdir``, ``--overwrite``);
    a command without them (a sweep, a script) words its own from ``problem``.
    ``differences``: for a config that differs, every differing key as
    ``(key, saved value, new value)`` (``checks.MISSING`` for a key one side
    lacks), after the saved config's upgrade; ``()`` for the other refusals.
    """

    def __init__(self, problem: str, advice: str, differences: Sequence[tuple] = ()):
        super().__init__(f"{problem}; {advice}")
        self.problem = problem
        self.advice = advice
        self.differences = tuple(differences)

    def __reduce__(self):  # pickled and copied from its parts
        return (type(self), (self.problem, self.advice, self.differences))


def check_config_drift(
    workdir: str,
    new: dict,
    *,
    defaults: dict,
    harmless: Sequence[str] = (),
    growable: Sequence[str] = (),
    upgrade: Callable[[dict], dict] | None = None,
    results: Sequence[str] = (METRICS, "checkpoints"),
) -> None:
    """Refuses to resume ``workdir`` with a config whose results would differ.

    Args:
      workdir: the workdir; nothing is checked when it holds no ``config.json``.
      new: the config to run, as JSON (:func:`config_to_json`).
      defaults: every key's default, as JSON: a key that one side lacks (a
        key added after the workdir was made) counts as different only when
        the other side's value is not its default.
      harmless: keys (or blocks) that may differ (they do not change results).
      growable: integer keys that may grow (``imp.rounds``: finished rounds do
        not depend on how many follow); they may not shrink.
      upgrade: converts a ``config.json`` written by an older version to the
        current layout before comparing.
      results: the entries that hold results: with any of them present (and
        not empty) but no ``config.json``, the results cannot be checked against
        the config, and the workdir is refused.

    Raises:
      DriftError: (a :class:`~lth_jax.checks.ConfigError`) naming the differing keys, with
        both values; or for an unreadable ``config.json``, or results without one.
    """
    try:
        saved = read_json(os.path.join(workdir, CONFIG))
    except ValueError as e:
        raise DriftError(
            f"workdir {workdir}: {e}", "fix or remove it, or use --overwrite to discard the run"
        ) from None
    if saved is None:
        held = [n for n in results if _has_content(os.path.join(workdir, n))]
        if held:
            raise DriftError(
                f"workdir {workdir} holds results ({', '.join(held)}) but no {CONFIG}, so they "
                "cannot be checked against this config",
                f"put its {CONFIG} back, or use --overwrite to discard them",
            )
        return
    diff = _differences(
        saved, new, defaults=defaults, harmless=harmless, growable=growable, upgrade=upgrade
    )
    if diff:
        raise DriftError(
            f"workdir {workdir} holds a run with a different config: {_show_diff(diff)}",
            "use another --workdir, or --overwrite to discard it",
            diff,
        )


def config_diff(
    saved: dict,
    new: dict,
    *,
    defaults: dict,
    harmless: Sequence[str] = (),
    growable: Sequence[str] = (),
    upgrade: Callable[[dict], dict] | None = None,
) -> str:
    """The keys where ``new`` differs from ``saved``, as ``"key (old -> new), ..."``; ``""``: none.

    The rules of :func:`check_config_drift` (whose arguments these are): a key
    one side lacks differs only when the other side's value is not its default,
    ``harmless`` keys and blocks are skipped, ``growable`` keys may grow. At
    most five keys are shown, then how many more.
    """
    return _show_diff(
        _differences(
            saved, new, defaults=defaults, harmless=harmless, growable=growable, upgrade=upgrade
        )
    )


def _differences(saved, new, *, defaults, harmless, growable, upgrade) -> list[tuple]:
    """``[(key, saved value, new value), ...]`` by :func:`config_diff`'s rules
    (:data:`~lth_jax.checks.MISSING` for a key one side lacks)."""
    if upgrade is not None:
        saved = upgrade(saved)
    diff = differing_keys(saved, new, defaults=defaults, harmless=harmless, growable=growable)
    old, cur = checks.flatten(saved), checks.flatten(new)
    return [(k, old.get(k, checks.MISSING), cur.get(k, checks.MISSING)) for k in diff]


def _show_diff(diff: Sequence[tuple]) -> str:
    """``"key (old -> new), ..."`` for :func:`_differences`' triples (five at most)."""
    shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in diff[:5])
    return shown + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")


def differing_keys(
    a: Mapping,
    b: Mapping,
    *,
    defaults: Mapping,
    harmless: Sequence[str] = (),
    growable: Sequence[str] = (),
) -> list[str]:
    """The dotted keys where two ``config.json`` objects differ, sorted: the rules of
    :func:`config_diff` (a key one side lacks differs only when the other side's value is
    not its value in ``defaults``; ``{}`` makes every such key differ)."""
    old, new, base = checks.flatten(a), checks.flatten(b), checks.flatten(defaults)
    missing = checks.MISSING

    def differs(k):
        x, y = old.get(k, missing), new.get(k, missing)
        if x is missing or y is missing:
            present = y if x is missing else x
            return k not in base or present != base[k]
        return x != y

    def grows(k):
        return k in growable and k in old and k in new and int(new[k]) > int(old[k])

    return sorted(
        k
        for k in set(old) | set(new)
        if not any(k == h or k.startswith(h + ".") for h in harmless)
        and differs(k)
        and not grows(k)
    )


def _has_content(path: str) -> bool:
    if os.path.isdir(path):
        return bool(os.listdir(path))
    return os.path.isfile(path) and os.path.getsize(path) > 0


def note(msg: str, is_main: bool = True) -> None:
    """Prints ``lth-jax: <msg>`` on stderr (from the main process only)."""
    if is_main:
        print(f"lth-jax: {msg}", file=sys.stderr, flush=True)


def note_resume(done: int, last: int, mid_round: bool, is_main: bool = True) -> None:
    """Says what a rerun found: every round ``0..last`` done, or a resume after round ``done``.

    Nothing for a new run (``done < 0``) or a resume from a mid-round
    checkpoint (``mid_round``: the runner says that one itself).
    """
    if done >= last:
        note(f"all rounds (0-{last}) are done already; writing the report", is_main)
    elif done >= 0 and not mid_round:
        have = "round 0 is" if done == 0 else f"rounds 0-{done} are"
        note(f"resuming after round {done} ({have} done)", is_main)
