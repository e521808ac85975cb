"""Tests of lth_jax.data: loading (TFDS mocked or from local files, MNIST-1D), splits,
batching and augmentation. Nothing here touches the network: an autouse fixture makes
every socket connection fail and records the attempts."""

from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import lth_jax.data as D
from lth_jax.data import mnist1d as m1d
from lth_jax.data import tfds_source

CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuses every connection and DNS lookup; returns the list of attempts."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(tfds_source, "_probe_cache", {})
    monkeypatch.delenv("LTH_JAX_OFFLINE", raising=False)
    return attempts


@pytest.fixture(scope="session")
def mnist1d_dir(tmp_path_factory):
    """A data_dir whose MNIST-1D cache is generated once for the session."""
    d = tmp_path_factory.mktemp("mnist1d_data")
    D.load("mnist1d", "train", data_dir=d)
    return d


@pytest.fixture
def tfds():
    pytest.importorskip("tensorflow")
    return pytest.importorskip("tensorflow_datasets")


# ----------------------------------------------------------------------------- registry


def test_unknown_name_lists_valid_names(tmp_path):
    for fn in (lambda: D.load("imagenet", "train", data_dir=tmp_path), lambda: D.get_dataset("x")):
        with pytest.raises(ValueError) as e:
            fn()
        for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "mnist1d"):
            assert name in str(e.value)


def test_default_data_dir_precedence(monkeypatch):
    monkeypatch.delenv("LTH_JAX_DATA_DIR", raising=False)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    assert D.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", "/tfds/dir")
    assert D.default_data_dir() == "/tfds/dir"
    monkeypatch.setenv("LTH_JAX_DATA_DIR", "/lth/dir")
    assert D.default_data_dir() == "/lth/dir"


# ----------------------------------------------------------------------------- TFDS, mocked


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_load_tfds_mocked(tfds, tmp_path, no_network, name, shape):
    # mock_data makes download_and_prepare a no-op and as_dataset random: the rest of
    # lth_jax's path (builder, prepare decision, reading, conversion) is the real one.
    with tfds.testing.mock_data(num_examples=12):
        x, y = D.load(name, "train", data_dir=tmp_path, download=True)
        xt, yt = D.load(name, "test[:50%]", data_dir=tmp_path, download=True)
    assert x.shape == (12, *shape) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.0
    assert y.shape == (12,) and y.dtype == np.int32 and 0 <= y.min() and y.max() < 10
    assert xt.shape[1:] == shape and yt.dtype == np.int32
    assert no_network == []
    assert not (tmp_path / "lth_jax_arrays").exists()  # mock data is never kept


def test_get_dataset_mocked_images_per_channel_normalization(tfds, tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        ds = D.get_dataset("cifar10", data_dir=tmp_path, val_size=8, download=True)
    assert ds.train_x.shape == (32, 32, 32, 3) and ds.val_x.shape == (8, 32, 32, 3)
    assert ds.mean.shape == (3,) and ds.std.shape == (3,)
    np.testing.assert_allclose(ds.train_x.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.train_x.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    assert 0.0 < ds.mean.min() and ds.mean.max() < 1.0  # stats of [0, 1] pixels


# ----------------------------------------------------------------------------- offline errors


def test_the_cli_says_what_is_missing_and_how_to_supply_it(tfds, tmp_path):
    from cli_runs import LTH_JAX, cli_env

    env = {**cli_env(str(tmp_path / "cache")), "LTH_JAX_OFFLINE": "1"}
    data_dir = tmp_path / "data"
    argv = ["run", "--config", "preset:lenet300_100_mnist", "--workdir", str(tmp_path / "wd")]
    argv.append(f"--config.dataset.data_dir={data_dir}")
    r = subprocess.run([*LTH_JAX, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("lth-jax: error:"))
    assert lines[at].startswith("lth-jax: error: Dataset 'mnist' is not available:"), lines[at]
    assert "LTH_JAX_OFFLINE is set" in lines[at]
    lines = lines[at:]  # (TensorFlow's own start-up lines may come first)
    # Then the steps that fix it, one per line as the library words them.
    assert (
        "Fix it in one of these ways:" in lines and "tfds build mnist --data_dir <DIR>" in r.stderr
    )
    for f in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert any(line.strip().startswith(f) for line in lines), f
    assert f"Put the original files in {data_dir / 'downloads' / 'manual'}:" in r.stderr
    for noise in ("Variant folder", "Traceback"):  # TFDS's warning: the error explains it
        assert noise not in r.stderr, noise


def test_a_run_on_a_missing_dataset_raises_its_line_with_the_steps_as_detail_and_cause(
    tfds, tmp_path, monkeypatch
):
    from lth_jax import config as config_lib
    from lth_jax import lottery

    monkeypatch.setenv("LTH_JAX_OFFLINE", "1")
    c = config_lib.base_config()
    c.dataset.name, c.dataset.data_dir = "mnist", str(tmp_path)
    with pytest.raises(config_lib.ConfigError) as e:
        lottery.Experiment(c)
    assert str(e.value).startswith("Dataset 'mnist' is not available") and "\n" not in str(e.value)
    assert "tfds build mnist" in e.value.detail  # the CLI prints it under the error's line
    assert isinstance(e.value.__cause__, D.DatasetUnavailableError)  # a traceback shows it all


def test_offline_error_is_fast_and_says_what_to_do(tfds, tmp_path, no_network):
    start = time.perf_counter()
    with pytest.raises(D.DatasetUnavailableError) as e:
        D.load("mnist", "train", data_dir=tmp_path, download=False)
    assert time.perf_counter() - start < 10
    msg = str(e.value)
    assert isinstance(e.value, RuntimeError)
    assert "'mnist'" in msg and str(tmp_path) in msg
    assert os.path.join(str(tmp_path), "downloads", "manual") in msg
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        assert f in msg
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert f in msg
    assert "tfds build mnist --data_dir" in msg
    # With some of the files in manual_dir, the message says which are missing.
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train-labels-idx1-ubyte.gz").write_bytes(b"")
    with pytest.raises(D.DatasetUnavailableError, match="Missing there: t10k-images"):
        D.load("mnist", "train", data_dir=tmp_path, manual_dir=manual, download=False)
    assert no_network == []


def test_offline_env_var_decides_without_probing(tfds, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("LTH_JAX_OFFLINE", "1")
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"")  # not this dataset's file
    start = time.perf_counter()
    with pytest.raises(D.DatasetUnavailableError) as e:
        D.load("cifar100", "test", data_dir=tmp_path, manual_dir=manual)  # download=None
    assert time.perf_counter() - start < 10
    msg = str(e.value)
    assert "'cifar100'" in msg and "cifar-100-binary.tar.gz" in msg and str(manual) in msg
    assert "LTH_JAX_OFFLINE" in msg
    assert no_network == []


def test_auto_download_probes_and_fails_fast_offline(tfds, tmp_path, no_network):
    start = time.perf_counter()
    with pytest.raises(D.DatasetUnavailableError, match="network is unreachable"):
        D.load("fashion_mnist", "train", data_dir=tmp_path)
    assert time.perf_counter() - start < 10
    assert len(no_network) == 1  # the one refused probe, nothing else


def test_network_available(monkeypatch):
    assert not tfds_source.network_available("https://example.org/f.gz")

    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(tfds_source, "_probe_cache", {})
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Conn())
    assert tfds_source.network_available("https://example.org/f.gz")
    monkeypatch.setenv("LTH_JAX_OFFLINE", "true")
    assert not tfds_source.network_available("https://example.org/f.gz")
    monkeypatch.setenv("LTH_JAX_OFFLINE", "0")
    monkeypatch.setattr(tfds_source, "_probe_cache", {})
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: 1 / 0)
    assert tfds_source.network_available("https://example.org/f.gz")  # env says online


def test_missing_tensorflow_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` fail
    with pytest.raises(ImportError, match=r"pip install 'lth_jax\[tf\]'"):
        D.load("mnist", "train", data_dir=tmp_path, download=False)


# ----------------------------------------------------------------------------- TFDS, local files


def _register_local_checksums(monkeypatch, tfds, name, manual_dir):
    """Registers the checksums of our synthetic originals for builder ``name``.

    TFDS checks files found in manual_dir against the checksums registered for the
    builder (the class property ``url_infos``, read from TFDS's url_checksums/*.txt),
    so synthetic files need their own entries. TFDS's mechanism for new checksums,
    ``DownloadConfig(register_checksums=True)``, writes them into the installed
    package's url_checksums file; instead we give the builder class, for this test
    only, a ``url_infos`` with the same URLs and the checksums of our files
    (``checksums.compute_url_info``, which is what register_checksums records).
    Everything else (manual_dir lookup, extraction, _generate_examples, writing
    and reading the prepared dataset) is TFDS's real code.
    """
    from tensorflow_datasets.core.download import checksums

    cls = tfds.builder_cls(name)
    infos = {
        url: checksums.compute_url_info(os.path.join(manual_dir, info.filename))
        for url, info in cls.url_infos.items()
    }
    monkeypatch.setattr(cls, "url_infos", infos)


def _write_cifar10_binary(path, per_batch, n_test, rng):
    """A tiny cifar-10-binary.tar.gz in the original format; returns its images/labels."""

    def batch(n, first):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(first, first + n)  # a unique id per image
        labels = rng.integers(0, 10, n).astype(np.uint8)
        records = b"".join(
            bytes([lab]) + img.transpose(2, 0, 1).tobytes() for img, lab in zip(images, labels)
        )
        return images, labels, records

    members, train = {}, []
    for i in range(1, 6):
        images, labels, records = batch(per_batch, (i - 1) * per_batch)
        members[f"data_batch_{i}.bin"] = records
        train.append((images, labels))
    test_images, test_labels, members["test_batch.bin"] = batch(n_test, 200)
    members["batches.meta.txt"] = ("\n".join(CIFAR10_NAMES) + "\n").encode()
    with tarfile.open(path, "w:gz") as tar:
        for fname, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{fname}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    train_images = np.concatenate([t[0] for t in train])
    train_labels = np.concatenate([t[1] for t in train])
    return (train_images, train_labels), (test_images, test_labels)


def _by_id(x, y):
    """Sorts loaded examples by the id in pixel (0, 0, 0) (TFDS shuffles on write)."""
    order = np.argsort(np.rint(x[:, 0, 0, 0] * 255))
    return x[order], y[order]


def test_prepare_from_manual_dir_then_read_from_data_dir(tfds, tmp_path, monkeypatch, no_network):
    manual, data = tmp_path / "manual", tmp_path / "data"
    manual.mkdir()
    rng = np.random.default_rng(0)
    (tr_x, tr_y), (te_x, te_y) = _write_cifar10_binary(manual / "cifar-10-binary.tar.gz", 3, 4, rng)
    _register_local_checksums(monkeypatch, tfds, "cifar10", manual)

    x, y = D.load("cifar10", "train", data_dir=data, manual_dir=manual, download=False)
    assert x.shape == (15, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    x, y = _by_id(x, y)
    np.testing.assert_allclose(x, tr_x / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, tr_y)
    assert (data / "cifar10").is_dir()

    # The prepared copy in data_dir is now read without the original files.
    shutil.rmtree(manual)
    xt, yt = D.load("cifar10", "test", data_dir=data, download=False)
    xt, yt = _by_id(xt, yt)
    np.testing.assert_allclose(xt, te_x / 255.0, atol=1e-7)
    np.testing.assert_array_equal(yt, te_y)
    assert no_network == []

    # Both reads left their arrays in lth_jax_arrays/: the next read takes them, without TFDS.
    (version,) = os.listdir(data / "cifar10")
    saved = sorted(os.listdir(data / "lth_jax_arrays" / "cifar10" / version))
    assert saved == ["test.npz", "train.npz"]
    via_tfds = D.load("cifar10", "train", data_dir=data, download=False)

    def no_tensorflow(name):
        raise AssertionError("TensorFlow was needed")

    monkeypatch.setattr(tfds_source, "_require_tensorflow", no_tensorflow)
    cached = D.load("cifar10", "train", data_dir=data, download=False)
    for a, b in zip(via_tfds, cached):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # bit for bit
    # A prepared copy that changed, or the cache switched off, goes through TFDS again.
    info = data / "cifar10" / version / "dataset_info.json"
    os.utime(info, ns=(info.stat().st_atime_ns, info.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="TensorFlow was needed"):
        D.load("cifar10", "test", data_dir=data, download=False)
    monkeypatch.setenv("LTH_JAX_ARRAY_CACHE", "0")
    with pytest.raises(AssertionError, match="TensorFlow was needed"):
        D.load("cifar10", "train", data_dir=data, download=False)


def _write_idx(path, array, magic):
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.tobytes())


@pytest.mark.slow
def test_prepare_mnist_from_idx_files(tfds, tmp_path, monkeypatch, no_network):
    # TFDS's MNIST builder reads exactly 60,000 + 10,000 images whatever the IDX header
    # says, so the files have full size (zeros compress to ~100 KB) and preparing takes
    # ~15 s: hence `slow`. test_prepare_from_manual_dir_then_read_from_data_dir covers
    # the same path with a tiny CIFAR-10.
    manual = tmp_path / "manual"
    manual.mkdir()
    rng = np.random.default_rng(0)
    splits = {}
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 0] = np.arange(n) % 251
        images[:, 0, 1] = np.arange(n) // 251
        images[:, 5:20, 5:20] = rng.integers(0, 256, (n, 1, 1), dtype=np.uint8)
        labels = (np.arange(n) * 7 % 10).astype(np.uint8)
        _write_idx(manual / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(manual / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
        splits[prefix] = images, labels
    _register_local_checksums(monkeypatch, tfds, "mnist", manual)
    x, y = D.load("mnist", "test", data_dir=tmp_path / "data", manual_dir=manual, download=False)
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.float32
    ids = np.rint(x[:, 0, 0, 0] * 255).astype(int) + 251 * np.rint(x[:, 0, 1, 0] * 255).astype(int)
    order = np.argsort(ids)
    np.testing.assert_allclose(x[order, ..., 0], splits["t10k"][0] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y[order], splits["t10k"][1])
    assert no_network == []


# ----------------------------------------------------------------------------- MNIST-1D


def test_mnist1d_splits_shapes(mnist1d_dir, no_network):
    x, y = D.load("mnist1d", "train", data_dir=mnist1d_dir)
    xt, yt = D.load("mnist1d", "test", data_dir=mnist1d_dir)
    assert x.shape == (4000, 40) and xt.shape == (1000, 40)
    assert x.dtype == xt.dtype == np.float32 and y.dtype == yt.dtype == np.int32
    assert set(np.unique(y)) == set(range(10)) and set(np.unique(yt)) <= set(range(10))
    assert np.isfinite(x).all()
    assert D.load("mnist1d", "train[:100]", data_dir=mnist1d_dir)[0].shape == (100, 40)
    xs, _ = D.load("mnist1d", "test[50%:]", data_dir=mnist1d_dir)
    np.testing.assert_array_equal(xs, xt[500:])
    assert no_network == []


def test_mnist1d_deterministic_and_cached(mnist1d_dir, tmp_path, monkeypatch):
    x1, y1 = D.load("mnist1d", "train", data_dir=mnist1d_dir)
    random.seed(7)
    np.random.seed(7)
    py_state, np_state = random.getstate(), np.random.get_state()

    # A fresh directory generates again, identically, and leaves global RNGs alone.
    fresh = tmp_path / "other"
    x2, y2 = D.load("mnist1d", "train", data_dir=fresh)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    path = m1d.cache_path(fresh)
    assert os.path.isfile(path) and os.path.dirname(path) == os.path.join(fresh, "mnist1d")

    # The second load reads the cache: the generator is never called.
    def boom():
        raise AssertionError("MNIST-1D regenerated instead of read from the cache")

    monkeypatch.setattr(m1d, "_generate", boom)
    x3, y3 = D.load("mnist1d", "train", data_dir=fresh)
    xt, _ = D.load("mnist1d", "test", data_dir=fresh)
    np.testing.assert_array_equal(x1, x3)
    np.testing.assert_array_equal(y1, y3)
    assert xt.shape == (1000, 40)


def test_mnist1d_default_dir_from_env(mnist1d_dir, monkeypatch):
    monkeypatch.setenv("LTH_JAX_DATA_DIR", str(mnist1d_dir))
    monkeypatch.setattr(m1d, "_generate", lambda: 1 / 0)
    assert D.load("mnist1d", "test")[0].shape == (1000, 40)


@pytest.mark.parametrize("split", ["valid", "train[1:2:3]", "train[a:]", ""])
def test_mnist1d_bad_split(split):
    with pytest.raises(ValueError, match="split"):
        m1d.parse_split(split, {"train": 10, "test": 5})


# ----------------------------------------------------------------------------- get_dataset


def test_get_dataset_splits(mnist1d_dir):
    raw_x, raw_y = D.load("mnist1d", "train", data_dir=mnist1d_dir)
    raw_xt, raw_yt = D.load("mnist1d", "test", data_dir=mnist1d_dir)
    ds = D.get_dataset("mnist1d", data_dir=mnist1d_dir)
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (3500, 500, 1000)
    assert ds.num_classes == 10 and ds.name == "mnist1d"
    assert ds.train_x.shape == (3500, 40) and ds.train_x.dtype == np.float32
    assert ds.train_y.dtype == np.int32
    # Disjoint, covering the training split, and the recorded indices are right.
    assert len(np.intersect1d(ds.train_idx, ds.val_idx)) == 0
    np.testing.assert_array_equal(np.union1d(ds.train_idx, ds.val_idx), np.arange(4000))
    np.testing.assert_array_equal(ds.train_y, raw_y[ds.train_idx])
    np.testing.assert_array_equal(ds.val_y, raw_y[ds.val_idx])
    # Normalized with the training statistics, applied to val and test alike.
    assert abs(float(ds.train_x.mean())) < 1e-4 and abs(float(ds.train_x.std()) - 1) < 1e-4
    assert ds.mean.shape == () and ds.std.shape == ()
    np.testing.assert_allclose(ds.val_x, (raw_x[ds.val_idx] - ds.mean) / ds.std, atol=1e-5)
    np.testing.assert_allclose(ds.test_x, (raw_xt - ds.mean) / ds.std, atol=1e-5)
    np.testing.assert_array_equal(ds.test_y, raw_yt)
    # Deterministic given the seed; another seed chooses another validation set.
    again = D.get_dataset("mnist1d", data_dir=mnist1d_dir)
    np.testing.assert_array_equal(again.val_idx, ds.val_idx)
    other = D.get_dataset("mnist1d", data_dir=mnist1d_dir, seed=1)
    assert not np.array_equal(other.val_idx, ds.val_idx)
    plain = D.get_dataset("mnist1d", data_dir=mnist1d_dir, normalize=False)
    np.testing.assert_array_equal(plain.train_x, raw_x[plain.train_idx])


def test_get_dataset_train_size(mnist1d_dir):
    full = D.get_dataset("mnist1d", data_dir=mnist1d_dir, val_size=1000)
    small = D.get_dataset("mnist1d", data_dir=mnist1d_dir, val_size=1000, train_size=300)
    frac = D.get_dataset("mnist1d", data_dir=mnist1d_dir, val_size=0.25, train_size=0.1)
    assert len(full.train_y) == 3000 and len(small.train_y) == 300 and len(frac.train_y) == 300
    np.testing.assert_array_equal(small.val_idx, full.val_idx)
    np.testing.assert_array_equal(frac.train_idx, small.train_idx)
    assert np.isin(small.train_idx, full.train_idx).all()  # subsets are nested
    assert abs(float(small.train_x.mean())) < 1e-4  # stats of the subsample


def test_get_dataset_classes_relabel(mnist1d_dir):
    raw_y = D.load("mnist1d", "train", data_dir=mnist1d_dir)[1]
    raw_yt = D.load("mnist1d", "test", data_dir=mnist1d_dir)[1]
    ds = D.get_dataset("mnist1d", data_dir=mnist1d_dir, classes=(5, 6, 7, 8, 9), val_size=100)
    assert ds.num_classes == 5
    assert set(np.unique(ds.train_y)) == set(range(5)) and set(np.unique(ds.test_y)) <= set(
        range(5)
    )
    np.testing.assert_array_equal(ds.train_y, raw_y[ds.train_idx] - 5)
    np.testing.assert_array_equal(ds.val_y, raw_y[ds.val_idx] - 5)
    assert len(ds.test_y) == int((raw_yt >= 5).sum())
    assert len(ds.train_y) + len(ds.val_y) == int((raw_y >= 5).sum())
    swapped = D.get_dataset("mnist1d", data_dir=mnist1d_dir, classes=[3, 1], val_size=10)
    np.testing.assert_array_equal(raw_y[swapped.train_idx], np.array([3, 1])[swapped.train_y])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(val_size=4000),
        dict(val_size=5000),
        dict(val_size=-1),
        dict(val_size=1.5),
        dict(val_size="10"),
        dict(train_size=3501),
        dict(train_size=0),
        dict(train_size=1.5),
        dict(classes=[]),
        dict(classes=[1, 1]),
        dict(classes=[10]),
        dict(classes=[0.5]),
        dict(seed="0"),
    ],
)
def test_get_dataset_rejects_bad_arguments(mnist1d_dir, kwargs):
    with pytest.raises(ValueError):
        D.get_dataset("mnist1d", data_dir=mnist1d_dir, **kwargs)


# ----------------------------------------------------------------------------- batching


def test_epoch_permutation_covers_each_index_once():
    key = jax.random.PRNGKey(3)
    p0, p1 = D.epoch_permutation(key, 0, 103), D.epoch_permutation(key, 1, 103)
    np.testing.assert_array_equal(np.sort(np.asarray(p0)), np.arange(103))
    np.testing.assert_array_equal(np.sort(np.asarray(p1)), np.arange(103))
    assert not np.array_equal(p0, p1)
    np.testing.assert_array_equal(p0, D.epoch_permutation(key, 0, 103))


def test_batches_partition_an_epoch():
    n, bs = 50, 8
    spe = D.steps_per_epoch(n, bs)
    assert spe == 6
    perm = D.epoch_permutation(jax.random.PRNGKey(0), 2, n)
    idx = np.concatenate([np.asarray(D.batch_indices(perm, s, bs)) for s in range(spe)])
    np.testing.assert_array_equal(idx, np.asarray(perm)[: spe * bs])
    assert len(np.unique(idx)) == spe * bs


def test_batching_under_jit_and_scan():
    n, bs, epochs = 37, 5, 3
    spe = D.steps_per_epoch(n, bs)
    key = jax.random.PRNGKey(1)
    data = jnp.arange(n) * 10

    @jax.jit
    def run(key):
        def epoch(carry, e):
            perm = D.epoch_permutation(key, e, n)

            def step(c, s):
                return c, data[D.batch_indices(perm, s, bs)]

            return carry, lax.scan(step, None, jnp.arange(spe))[1]

        return lax.scan(epoch, None, jnp.arange(epochs))[1]

    batches = np.asarray(run(key))  # (epochs, spe, bs)
    assert batches.shape == (epochs, spe, bs)
    for e in range(epochs):
        expected = np.asarray(D.epoch_permutation(key, e, n))[: spe * bs] * 10
        np.testing.assert_array_equal(batches[e].reshape(-1), expected)
        assert len(np.unique(batches[e])) == spe * bs
    assert not np.array_equal(batches[0], batches[1])
    # Global-step form gives the same batches, also jitted and vmapped over keys.
    step_fn = jax.jit(lambda k, t: D.step_indices(k, t, n, bs))
    for t in (0, spe - 1, spe, 2 * spe + 3):
        np.testing.assert_array_equal(data[step_fn(key, t)], batches[t // spe, t % spe])
    keys = jax.random.split(key, 4)
    perms = jax.vmap(lambda k: D.epoch_permutation(k, 0, n))(keys)
    assert perms.shape == (4, n) and not np.array_equal(perms[0], perms[1])


@pytest.mark.parametrize("n,bs", [(10, 0), (10, 11), (10, -1)])
def test_steps_per_epoch_rejects(n, bs):
    with pytest.raises(ValueError):
        D.steps_per_epoch(n, bs)


# ----------------------------------------------------------------------------- augmentation


def _unique_images(n, h, w, c):
    """Images whose pixels are all distinct and nonzero (so windows identify offsets)."""
    return (jnp.arange(n * h * w * c, dtype=jnp.float32) + 1).reshape(n, h, w, c)


def _candidates(img, pad):
    """All (dy, dx, flip) windows of the zero-padded ``img``: array (K, H, W, C) and labels."""
    h, w, _ = img.shape
    padded = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)))
    wins, labels = [], []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[dy : dy + h, dx : dx + w]
            wins += [win, win[:, ::-1]]
            labels += [(dy, dx, False), (dy, dx, True)]
    return np.stack(wins), labels


def test_crop_flip_known_offsets():
    x = _unique_images(3, 6, 5, 2)
    same = D.crop_flip(x, jnp.array([[2, 2]] * 3), jnp.zeros(3, bool), pad=2)
    np.testing.assert_array_equal(same, x)
    mirror = D.crop_flip(x, jnp.array([[2, 2]] * 3), jnp.ones(3, bool), pad=2)
    np.testing.assert_array_equal(mirror, np.asarray(x)[:, :, ::-1, :])
    shifted = D.crop_flip(x, jnp.array([[0, 4], [3, 1], [4, 0]]), jnp.zeros(3, bool), pad=2)
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i, (dy, dx) in enumerate([(0, 4), (3, 1), (4, 0)]):
        np.testing.assert_array_equal(shifted[i], padded[i, dy : dy + 6, dx : dx + 5])
    assert float(shifted[0, 0, -1, 0]) == 0.0  # zero padding, not reflection


def test_random_crop_flip_is_a_padded_window_and_covers_all():
    pad, n = 1, 512
    x = jnp.broadcast_to(_unique_images(1, 4, 4, 1), (n, 4, 4, 1))
    out = np.asarray(D.random_crop_flip(jax.random.PRNGKey(0), x, pad=pad))
    jitted = jax.jit(D.random_crop_flip, static_argnames="pad")
    np.testing.assert_array_equal(jitted(jax.random.PRNGKey(0), x, pad=pad), out)
    cands, labels = _candidates(x[0], pad)
    match = (out[:, None] == cands[None]).all(axis=(2, 3, 4))  # (n, K)
    assert (match.sum(axis=1) == 1).all()  # each output is exactly one window
    seen = {labels[k] for k in match.argmax(axis=1)}
    assert len(seen) == len(labels)  # every offset and both flips occur


def test_random_crop_flip_cifar_shapes_keys_jit_vmap():
    # Jitted throughout: eager dispatch compiles every primitive separately (slow here);
    # eager and jitted agree in test_random_crop_flip_is_a_padded_window_and_covers_all.
    x = _unique_images(6, 32, 32, 3)
    key = jax.random.PRNGKey(42)
    aug = jax.jit(D.random_crop_flip, static_argnames="pad")
    out = aug(key, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, aug(key, x))
    assert not np.array_equal(out, aug(jax.random.PRNGKey(43), x))
    for i in range(len(x)):
        cands, _ = _candidates(x[i], 4)
        assert (np.asarray(out[i])[None] == cands).all(axis=(1, 2, 3)).sum() == 1
    keys = jax.random.split(key, 3)
    trials = jax.jit(jax.vmap(D.random_crop_flip, in_axes=(0, None)))(keys, x)
    assert trials.shape == (3, *x.shape)
    np.testing.assert_array_equal(trials[1], aug(keys[1], x))
    single = aug(key, x[0])
    assert single.shape == x[0].shape
    with pytest.raises(ValueError):
        D.random_crop_flip(key, x[0, 0])
