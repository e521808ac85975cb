"""MNIST-1D, generated locally and cached as ``.npz``.

MNIST-1D (Greydanus 2020) is 5,000 one-dimensional signals of length 40 in 10
classes, split 4,000 train / 1,000 test. :func:`load_mnist1d` builds it with
``mnist1d.data.make_dataset(get_dataset_args())`` (the package's default
arguments, seed 42), which runs offline from templates shipped in the package
in about 1-3 s. ``mnist1d.data.get_dataset`` is never called: it tries a
download first, with no timeout.

**Cache.** The first call writes ``<data_dir>/mnist1d/mnist1d-<hash>.npz``
(``data_dir`` defaults to :func:`~lth_jax.data.default_data_dir`; ``<hash>`` is
a digest of the generation arguments, so other arguments get another file);
later calls read it and do not regenerate. The write is atomic (temporary file
then rename), so concurrent runs cannot see a half-written cache. If
``data_dir`` is not writable the data is still returned, uncached. The cached
copy pins the data: regenerating with another scipy/numpy might differ in the
last bits, the cache does not. ``<data_dir>/mnist1d/index.json`` remembers the
file name of each installed ``mnist1d`` package version (the generation
arguments are the package's defaults), so a load from the cache does not import
the package (it imports scipy and matplotlib: seconds).

**Why not a TFDS builder.** A TFDS builder in ``array_record`` format read with
``tfds.data_source`` would also work without TensorFlow, but it adds a builder
class, a version and a ``dataset_info.json`` to maintain for 200 KB of data that
takes a second to make. Direct generation plus an ``.npz`` cache needs neither
TensorFlow nor TFDS on the default path (the embedded default experiment runs
on MNIST-1D with a plain ``pip install``), and the cache is one file anyone can
inspect with ``numpy.load``.

``make_dataset`` reseeds Python's and numpy's global random generators; this
module saves and restores both, so loading MNIST-1D leaves them untouched.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import random
import re
import tempfile
import warnings
import zipfile

import numpy as np

from lth_jax.data.registry import resolve_data_dir

__all__ = ["load_mnist1d", "cache_path", "parse_split"]

_CACHE_FORMAT = 1
_INDEX = "index.json"
_KEYS = ("train_x", "train_y", "test_x", "test_y", "t")
_SPLIT_RE = re.compile(r"^(?P<name>\w+)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def _dataset_args() -> dict:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # where get_dataset would download from: not an input.
    return args


def _package_version() -> str | None:
    """The installed ``mnist1d`` package's version (from its metadata: no import)."""
    try:
        return importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:
        return None


def _read_index(root: str) -> dict:
    """``index.json`` of ``root`` (``{}`` when missing or unreadable)."""
    try:
        with open(os.path.join(root, _INDEX), encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _indexed(root: str) -> str | None:
    """The cache file name ``index.json`` gives this package version, or ``None``."""
    version = _package_version()
    name = _read_index(root).get(version) if version else None
    ok = isinstance(name, str) and re.fullmatch(r"mnist1d-[0-9a-f]{12}\.npz", name)
    return name if ok else None


def _remember(path: str) -> None:
    """Records ``path``'s file name for this package version in ``index.json`` (best effort)."""
    root, name = os.path.split(path)
    version = _package_version()
    index = _read_index(root) if version else {}
    if version is None or index.get(version) == name:
        return
    index[version] = name
    try:
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".json.tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(index, f, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(root, _INDEX))
    except OSError:
        pass  # an unwritable data_dir: the next load finds the file name again


def cache_path(data_dir: str | os.PathLike | None = None) -> str:
    """Where the MNIST-1D cache for the default generation arguments lives."""
    root = os.path.join(resolve_data_dir(data_dir), "mnist1d")
    name = _indexed(root)
    if name is None:
        args = _dataset_args()
        digest = hashlib.sha256(
            json.dumps({"format": _CACHE_FORMAT, **args}, sort_keys=True).encode()
        ).hexdigest()[:12]
        name = f"mnist1d-{digest}.npz"
    return os.path.join(root, name)


def _generate() -> dict[str, np.ndarray]:
    """Runs ``make_dataset`` with the default arguments; restores global RNG state."""
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "train_x": np.asarray(raw["x"], dtype=np.float32),
        "train_y": np.asarray(raw["y"], dtype=np.int32),
        "test_x": np.asarray(raw["x_test"], dtype=np.float32),
        "test_y": np.asarray(raw["y_test"], dtype=np.int32),
        "t": np.asarray(raw["t"], dtype=np.float32),
    }


def _read_or_make(path: str) -> dict[str, np.ndarray]:
    if os.path.isfile(path):
        try:
            with np.load(path) as f:
                return {k: f[k] for k in _KEYS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            # Corrupt or from an older layout: regenerate below.
            warnings.warn(f"ignoring unreadable MNIST-1D cache {path}: {e}", stacklevel=3)
    arrays = _generate()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shareable.
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        warnings.warn(f"could not cache MNIST-1D at {path}: {e}", stacklevel=3)
    return arrays


def parse_split(split: str, sizes: dict[str, int]) -> tuple[str, slice]:
    """Parses ``"train"``, ``"test[:100]"``, ``"train[10%:50%]"`` into ``(name, slice)``.

    Bounds are example counts or percentages of the split (``k%`` means
    ``k * n // 100``); negative counts count from the end, as in Python.

    Example:
      >>> parse_split("train[:25%]", {"train": 4000, "test": 1000})
      ('train', slice(0, 1000, None))
    """
    m = _SPLIT_RE.match(split.replace(" ", "")) if isinstance(split, str) else None
    if m is None or m.group("name") not in sizes:
        raise ValueError(
            f"bad split {split!r}: expected one of {sorted(sizes)}, optionally sliced "
            "like 'train[:1000]' or 'test[50%:]'"
        )
    n = sizes[m.group("name")]

    def bound(text, default):
        if text is None:
            return default
        if text.endswith("%"):
            return int(text[:-1]) * n // 100
        return int(text)

    start, stop, _ = slice(bound(m.group("start"), 0), bound(m.group("stop"), n)).indices(n)
    return m.group("name"), slice(start, max(start, stop))


def load_mnist1d(
    split: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Loads a split of MNIST-1D, generating and caching it on first use.

    Args:
      split: ``"train"`` (4,000 examples) or ``"test"`` (1,000), optionally
        sliced (``"train[:1000]"``, ``"test[50%:]"``).
      data_dir: cache root (default :func:`~lth_jax.data.default_data_dir`); the
        cache file is :func:`cache_path`.

    Returns:
      ``(inputs, labels)``: float32 ``(N, 40)`` signals and int32 labels. The
      signals are as MNIST-1D makes them (the whole 5,000 centered, std 1).
    """
    path = cache_path(data_dir)
    arrays = _read_or_make(path)
    if os.path.isfile(path):
        _remember(path)
    sizes = {"train": len(arrays["train_y"]), "test": len(arrays["test_y"])}
    which, sl = parse_split(split, sizes)
    return arrays[f"{which}_x"][sl], arrays[f"{which}_y"][sl]
