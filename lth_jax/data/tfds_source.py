"""TFDS image datasets (mnist, fashion_mnist, cifar10, cifar100) as numpy arrays.

:func:`load_tfds` returns a whole split as ``(inputs, labels)``: inputs float32
in ``[0, 1]``, NHWC; labels int32. It needs TensorFlow (the optional extra
``pip install 'lth_jax[tf]'``; Colab ships it), because TFDS's built-in
datasets are prepared and read with it. On first use TensorFlow's view of GPUs
is emptied (``tf.config.set_visible_devices([], "GPU")``) so that it does not
reserve accelerator memory that JAX needs.

Where the data comes from, in this order (after the first read of a split from
a prepared copy, later reads take the same arrays from
``<data_dir>/lth_jax_arrays/`` without TensorFlow: :mod:`lth_jax.data.array_cache`):

1. **A prepared copy in ``data_dir``** (``<data_dir>/<name>/<version>/``), e.g.
   made by ``tfds build mnist --data_dir DIR`` on a machine with network and
   copied here. Nothing is downloaded.
2. **The original files in ``manual_dir``** (default
   ``<data_dir>/downloads/manual``, TFDS's own default), named like the
   basenames of the download URLs (``train-images-idx3-ubyte.gz``, ...,
   ``cifar-10-binary.tar.gz``). TFDS prepares the dataset from them into
   ``data_dir`` (checking them against its registered checksums) without any
   network access.
3. **A download**, when ``download`` is true, or when it is ``None`` ("auto")
   and the network is reachable (see :func:`network_available`).

If none applies, :class:`~lth_jax.data.DatasetUnavailableError` is raised at
once (no download is attempted, so there is no multi-minute retry loop); its
message says which files to put where and how to prepare the dataset elsewhere.

**Offline detection** (``download=None``): the environment variable
``LTH_JAX_OFFLINE`` decides when it is set (``1``/``true``/``yes``: offline,
never download; ``0``/``false``/``no``: online, download without probing).
Otherwise a TCP connection to the host of the dataset's first download URL (or
to the HTTPS proxy when one is configured) is attempted with a 2-second limit,
in a daemon thread so that a stalled DNS lookup cannot hang the caller; the
answer is remembered for the rest of the process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np

from lth_jax.data import array_cache
from lth_jax.data.registry import (
    DatasetUnavailableError,
    TensorFlowMissingError,
    get_spec,
    resolve_data_dir,
)

__all__ = ["load_tfds", "network_available", "expected_files"]

PROBE_TIMEOUT_S = 2.0
_READ_BATCH = 10_000
_OFFLINE_ENV = "LTH_JAX_OFFLINE"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_probe_cache: dict[tuple[str, int], bool] = {}

TF_MISSING_MSG = (
    "TFDS datasets ({name!r}) need TensorFlow to be prepared and read, and it is not "
    "installed. Install the optional extra: pip install 'lth_jax[tf]' "
    "(Colab ships TensorFlow already). MNIST-1D ('mnist1d') needs no TensorFlow."
)


class _DropAbslLine(logging.Filter):
    """Drops TFDS's warning about a dataset folder without its ``dataset_info.json`` (a
    dataset that is not prepared there, which the error raised here explains)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "has no dataset_info.json" not in record.getMessage()


def _require_tensorflow(name: str):
    """Imports TensorFlow, hides its GPUs from it (JAX owns them), returns it."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise TensorFlowMissingError(TF_MISSING_MSG.format(name=name)) from e
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # already initialized: leave it alone.
        pass
    return tf


def _env_offline() -> bool | None:
    value = os.environ.get(_OFFLINE_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def network_available(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``url``'s host (or the configured HTTPS proxy) accepts a TCP connection.

    Honors ``LTH_JAX_OFFLINE`` first (see the module docstring). The probe runs
    in a daemon thread and is abandoned after ``timeout`` seconds, DNS included.
    Results are cached per ``(host, port)`` for the life of the process.

    Args:
      url: a download URL, e.g. ``"https://storage.googleapis.com/x"``.
      timeout: seconds to wait for the connection.

    Returns:
      ``True`` if a download can be attempted.
    """
    env = _env_offline()
    if env is not None:
        return not env
    proxy = urllib.request.getproxies().get("https") or urllib.request.getproxies().get("http")
    parsed = urllib.parse.urlparse(proxy or url)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if (host, port) in _probe_cache:
        return _probe_cache[(host, port)]
    result: list[bool] = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="lth_jax-network-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    ok = bool(result and result[0])
    _probe_cache[(host, port)] = ok
    return ok


def expected_files(builder) -> dict[str, str]:
    """``{basename: url}`` of the original files a TFDS builder downloads.

    Read from the builder's registered checksums (``url_infos``), whose
    ``filename`` is what TFDS looks for in ``manual_dir``.
    """
    infos = builder.url_infos or {}
    files = {}
    for url, info in sorted(infos.items()):
        fname = info.filename or os.path.basename(urllib.parse.urlparse(url).path)
        files[fname] = url
    return files


def _unavailable_message(name, builder, data_dir, manual_dir, files, missing, reason) -> str:
    width = max((len(f) for f in files), default=0)
    listing = "\n".join(f"       {f:<{width}}  (from {u})" for f, u in files.items())
    lines = [
        f"Dataset {name!r} is not available: {reason}.",
        f"  Looked for a prepared copy in: {builder.data_dir}  (data_dir={data_dir})",
        f"  Looked for the original files in: {manual_dir}  (manual_dir)",
    ]
    if missing and len(missing) < len(files):
        lines.append(f"  Missing there: {', '.join(missing)}")
    lines += [
        "Fix it in one of these ways:",
        f"  1. Put the original files in {manual_dir}:",
        listing,
        "     and run again; TFDS prepares the dataset from them without network"
        " (they must match TFDS's registered checksums).",
        "  2. On a machine with network run",
        f"       tfds build {builder.name} --data_dir <DIR>",
        f"     then copy <DIR>/{builder.name} to {os.path.join(data_dir, builder.name)}",
        "  3. Where the network is reachable, load it again: it is downloaded when a probe"
        f" connection to its host succeeds ({_OFFLINE_ENV}=0 skips the probe;"
        " load_tfds(download=True) forces the download).",
    ]
    return "\n".join(lines)


def load_tfds(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of a TFDS image dataset as numpy arrays.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` or ``"cifar100"``.
      split: ``"train"``, ``"test"``, or a TFDS slicing string such as
        ``"train[:1000]"`` or ``"test[50%:]"``.
      data_dir: where prepared datasets live (default
        :func:`~lth_jax.data.default_data_dir`).
      manual_dir: where original files may have been put by hand (default
        ``<data_dir>/downloads/manual``).
      download: ``True`` download if needed; ``False`` never; ``None`` download
        only when :func:`network_available`.

    Returns:
      ``(inputs, labels)``: float32 NHWC images in ``[0, 1]``, int32 labels.

    Raises:
      TensorFlowMissingError: TensorFlow is not installed (both an
        ``ImportError`` and a ``DatasetUnavailableError``).
      DatasetUnavailableError: offline and no local copy or original files.
    """
    spec = get_spec(name)
    if spec.source != "tfds":
        raise ValueError(f"{name!r} is not a TFDS dataset")
    data_dir = resolve_data_dir(data_dir)
    cached = array_cache.lookup(data_dir, spec.tfds_name, split)  # read before, no TensorFlow
    if cached is not None:
        return _as_inputs(cached[0]), cached[1].astype(np.int32)
    _require_tensorflow(name)
    import tensorflow_datasets as tfds

    absl_log, quiet = logging.getLogger("absl"), _DropAbslLine()
    absl_log.addFilter(quiet)
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
        if not builder.is_prepared():
            _prepare(builder, name, data_dir, manual_dir, download)
    finally:
        absl_log.removeFilter(quiet)
    # Read in chunks rather than with batch_size=-1: that one needs the split sizes
    # in the dataset info, which mocked or partially described datasets lack.
    ds = builder.as_dataset(
        split=split, batch_size=_READ_BATCH, as_supervised=True, shuffle_files=False
    )
    images, labels = [], []
    for x, y in tfds.as_numpy(ds):  # uint8 chunks: convert once, at the end.
        images.append(x)
        labels.append(y)
    if not images:
        return np.zeros((0, *spec.input_shape), np.float32), np.zeros((0,), np.int32)
    images, labels = np.concatenate(images), np.concatenate(labels)
    if tfds.core.DatasetBuilder.as_dataset.__name__ == "as_dataset":  # not TFDS's mock data
        array_cache.store(data_dir, spec.tfds_name, split, builder.data_dir, images, labels)
    return _as_inputs(images), labels.astype(np.int32)


def _as_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 images as float32 in ``[0, 1]``."""
    return np.divide(images, np.float32(255.0), dtype=np.float32)


def _prepare(builder, name, data_dir, manual_dir, download) -> None:
    import tensorflow_datasets as tfds

    manual_dir = (
        os.path.join(data_dir, "downloads", "manual")
        if manual_dir is None
        else os.path.expanduser(os.fspath(manual_dir))
    )
    files = expected_files(builder)
    missing = [f for f in files if not os.path.isfile(os.path.join(manual_dir, f))]
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    if files and not missing:
        builder.download_and_prepare(download_config=config)
        return
    if download is None:
        first_url = next(iter(files.values()), "https://storage.googleapis.com/")
        download = network_available(first_url)
        why = f"{_OFFLINE_ENV} is set" if _env_offline() else "the network is unreachable"
    else:
        why = "download=False"
    if not download:
        reason = (
            f"it is not prepared in data_dir, its original files are not all in manual_dir, "
            f"and {why}"
        )
        raise DatasetUnavailableError(
            _unavailable_message(name, builder, data_dir, manual_dir, files, missing, reason)
        )
    builder.download_and_prepare(download_config=config)
