"""Loaders of real image datasets from their official files: ``mnist`` (idx files, read by
torchvision), ``cifar10`` (python batches, read with a restricted unpickler) and ``gtsrb`` (class
folders of .ppm images listed by torchvision, and the test CSV), and their shared helpers
(``ssmdefense.data.image_io``).

The tests write small files in the official formats (class-dependent pixel patterns, so labels can
be checked against pixels) and never download: ``urllib.request.urlopen``, which torchvision's
downloader calls, is replaced by a function that fails or serves files the test made (or, for GTSRB,
whose MD5s are fixed inside torchvision's ``GTSRB.download``, torchvision's
``download_and_extract_archive`` by one that unpacks a zip the test made). ``write_mnist_tree``,
``write_cifar10_tree`` and ``write_gtsrb_tree`` are plain functions other test files may import.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
import torchvision.datasets.gtsrb
from click.testing import CliRunner

import ssmdefense as sd
from ssmdefense.cli import cli
from ssmdefense.data import LazyDataset, cifar10, gtsrb
from ssmdefense.data import mnist as mnist_module

MAGIC = {"images": 2051, "labels": 2049}  # idx: 0x0803 unsigned bytes, 3 dims; 0x0801 one dim

# ---------------------------------------------------------------------------------------------
# Writers (importable by other test files)
# ---------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> None:
    """``array`` (uint8, 1 or 3 dims) as an idx file: magic 2049 / 2051, big-endian int32 dims, bytes."""
    kind = "images" if array.ndim == 3 else "labels"
    header = MAGIC[kind].to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def digit_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (n, 28, 28): noise below 100, and row 2 * label all 255."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 100, size=(len(labels), 28, 28), dtype=np.uint8)
    images[np.arange(len(labels)), 2 * labels] = 255
    return images


def write_mnist_tree(root, n_train: int = 60, n_test: int = 20, *, gz: bool = False) -> dict:
    """``root/MNIST/raw/`` with the four idx files (``.gz`` when ``gz``): labels cycle 0..9 in a fixed
    shuffle, images by ``digit_images``. Returns {"train"/"test": (images uint8, labels)}."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n, seed in (("train", "train", n_train, 0), ("test", "t10k", n_test, 1)):
        labels = np.random.default_rng(seed).permutation(np.arange(n) % 10).astype(np.uint8)
        images = digit_images(labels, seed)
        suffix = ".gz" if gz else ""
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
        out[split] = (images, labels.astype(np.int64))
    return out


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_batch(images: np.ndarray, labels, *, str_keys: bool = False) -> dict:
    """The dict of an official batch for uint8 images (n, 3, 32, 32): data rows are the red plane,
    then green, then blue, each 32x32 row-major. ``str_keys`` gives the keys Python 2 wrote."""
    n = len(images)
    data = np.concatenate([images[:, c].reshape(n, 1024) for c in range(3)], axis=1)  # (n 3072)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    return {k.decode(): v for k, v in batch.items()} if str_keys else batch


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` in a pickle: SHORT_BINSTRING, or BINSTRING when long."""
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def _int(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)  # BININT


def py2_pickle(data: np.ndarray, labels) -> bytes:
    """The bytes Python 2's ``cPickle.dump(batch, f, 2)`` writes for ``{'data': data, 'labels': labels}``
    (as in the official batches: str keys, ``numpy.core.multiarray._reconstruct``, the pixels one str)."""
    out = b"\x80\x02}q\x00(" + _py2_str(b"data")  # PROTO 2, EMPTY_DICT, BINPUT, MARK
    out += (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + _int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"
    )
    out += b"(" + _int(1) + _int(data.shape[0]) + _int(data.shape[1]) + b"\x86"
    out += b"cnumpy\ndtype\n" + _py2_str(b"u1") + _int(0) + _int(1) + b"\x87R"
    out += b"(" + _int(3) + _py2_str(b"|") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb"  # dtype state
    out += b"\x89" + _py2_str(np.ascontiguousarray(data).tobytes()) + b"tb"  # ndarray state
    out += _py2_str(b"labels") + b"](" + b"".join(_int(int(v)) for v in labels) + b"e"
    return out + b"u."


def write_cifar10_tree(root, per_batch: int = 10, n_test: int = 20) -> dict:
    """``root/cifar-10-batches-py/`` with five train batches of ``per_batch`` images, a test batch
    and batches.meta, pickled with protocols 2, 4 and 5 (str keys in one), data_batch_5 as Python 2
    wrote the official files (``py2_pickle``).
    Image i of class c has its red plane filled with 20 * c and pixel (5, 7) of its blue plane 255.
    Returns {"train"/"test": (images uint8 (n, 3, 32, 32), labels)}."""
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)

    def images_for(labels):
        images = rng.integers(0, 200, size=(len(labels), 3, 32, 32), dtype=np.uint8)
        images[:, 0] = (20 * labels)[:, None, None]
        images[:, 2, 5, 7] = 255
        return images

    out = {"train": ([], [])}
    for k in range(5):
        labels = (np.arange(per_batch) + k) % 10
        images = images_for(labels)
        batch = cifar_batch(images, labels, str_keys=k == 1)
        if k == 4:  # as Python 2 wrote the official files
            raw = py2_pickle(batch[b"data"], labels)
        else:
            raw = pickle.dumps(batch, protocol=(2, 4, 5)[k % 3])
        (base / f"data_batch_{k + 1}").write_bytes(raw)
        out["train"][0].append(images)
        out["train"][1].append(labels)
    out["train"] = (np.concatenate(out["train"][0]), np.concatenate(out["train"][1]))
    labels = np.arange(n_test) % 10
    images = images_for(labels)
    (base / "test_batch").write_bytes(pickle.dumps(cifar_batch(images, labels), protocol=2))
    out["test"] = (images, labels)
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    (base / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


GT_HEADER = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]


def sign_colour(label: int) -> tuple[int, int, int]:
    """The solid colour of every test image of class ``label``: red 5 * label, green 255 - 5 * label."""
    return (5 * label, 255 - 5 * label, 100)


def write_gtsrb_tree(root, per_class: int = 2, n_test: int = 50) -> Path:
    """``root/gtsrb/`` as torchvision lays it out: ``GTSRB/Training/000NN/*.ppm`` (``per_class``
    images of each of the 43 classes, named like the real ones, with GT-000NN.csv),
    ``GTSRB/Final_Test/Images/NNNNN.ppm`` (``n_test``, classes 7 * i mod 43) and
    ``GT-final_test.csv``. Images are solid ``sign_colour(label)`` with sizes from 15x17 to 60x48.
    Returns ``root/gtsrb``."""
    from PIL import Image

    base = Path(root) / "gtsrb"
    train = base / "GTSRB" / "Training"
    for c in range(43):
        folder = train / f"{c:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for j in range(per_class):
            w, h = 15 + (c * 7 + j * 11) % 46, 17 + (c * 5 + j * 3) % 32
            name = f"{j // 3:05d}_{j % 3:05d}.ppm"
            Image.new("RGB", (w, h), sign_colour(c)).save(folder / name)
            rows.append([name, w, h, 1, 1, w - 2, h - 2, c])
        with open(folder / f"GT-{c:05d}.csv", "w", newline="") as f:
            csv.writer(f, delimiter=";").writerows([GT_HEADER, *rows])
    images = base / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_test):
        c, w, h = (7 * i) % 43, 20 + (i * 13) % 41, 20 + (i * 7) % 29
        name = f"{i:05d}.ppm"
        Image.new("RGB", (w, h), sign_colour(c)).save(images / name)
        rows.append([name, w, h, 2, 2, w - 3, h - 3, c])
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        csv.writer(f, delimiter=";").writerows([GT_HEADER, *rows])
    return base


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@contextmanager
def one_line_error(match):
    """pytest.raises for an SSMDefenseError whose message matches ``match`` and is one line."""
    with pytest.raises(sd.SSMDefenseError, match=match) as info:
        yield info
    assert "\n" not in str(info.value), str(info.value)


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "ssmdefense" and r.levelno >= logging.WARNING]


def assert_images(data, n_train, n_test, shape, nb_classes):
    """``n_train``: the training images on disk, of which sd.load_dataset carves 10 % for validation."""
    assert isinstance(data, sd.Dataset)
    n_val = -(-n_train // 10)
    assert data.x_train.shape == (n_train - n_val, *shape) and data.x_test.shape == (n_test, *shape)
    assert data.x_val.shape == (n_val, *shape) and data.validation["source"] == "carved"
    assert data.x_train.dtype == data.x_val.dtype == data.x_test.dtype == np.float32
    assert data.y_train.dtype == data.y_val.dtype == data.y_test.dtype == np.int64
    for x in (data.x_train, data.x_val, data.x_test):
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert data.nb_classes == nb_classes and len(data.classes) == nb_classes
    assert data.clip_values == (0.0, 1.0) and data.sequence == "rows" and data.input_shape == shape


def offline(request, *args, **kwargs):
    """``urllib.request.urlopen`` without a network."""
    raise urllib.error.URLError("no network in tests")


def serving(payloads: dict, served: list):
    """A ``urllib.request.urlopen`` that answers each URL of ``payloads`` with its bytes (no
    redirect) and records every URL asked for in ``served``; other URLs fail."""

    def urlopen(request, *args, **kwargs):
        url = getattr(request, "full_url", request)
        served.append(url)
        if url not in payloads:
            raise urllib.error.URLError(f"{url} not served in tests")
        response = io.BytesIO(payloads[url])
        response.url, response.length = url, len(payloads[url])
        return response

    return urlopen


# ---------------------------------------------------------------------------------------------
# mnist
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    return root, write_mnist_tree(root)


def test_mnist_reads_the_official_idx_files(mnist_tree):
    root, written = mnist_tree
    assert_images(sd.load_dataset("mnist", root=root), 60, 20, (1, 28, 28), 10)
    data = mnist_module.mnist(root=root)  # the loader alone: the files' order, before a validation split is carved
    for x, y, (images, labels) in (
        (data.x_train, data.y_train, written["train"]),
        (data.x_test, data.y_test, written["test"]),
    ):
        np.testing.assert_array_equal(y, labels)  # file order
        np.testing.assert_array_equal(x[:, 0], images.astype(np.float32) / 255.0)
        assert (x[np.arange(len(y)), 0, 2 * y] == 1.0).all()  # the labelled row is the bright one
    assert data.eps is None  # the CLI's 0.1; the AdS paper's 0.3 / pixels is asked for explicitly
    assert data.classes == [str(d) for d in range(10)]
    assert data.info["counts"] == {"train": 60, "test": 20} and data.info["per_class"]["train"] == [6] * 10
    assert "--sequence pixels --eps 0.3" in data.info["paper_setting"]


def test_mnist_root_variants_gzip_and_max_per_class(mnist_tree, tmp_path):
    root, _ = mnist_tree
    reference = sd.load_dataset("mnist", root=root)
    for variant in (root / "MNIST", root / "MNIST" / "raw", str(root / "MNIST" / "raw")):
        np.testing.assert_array_equal(sd.load_dataset("mnist", root=variant).x_test, reference.x_test)
    gz = write_mnist_tree(tmp_path, gz=True)
    data = sd.load_dataset("mnist", root=tmp_path)  # torchvision reads plain files: each .gz is decompressed
    np.testing.assert_array_equal(data.x_train, reference.x_train)
    assert data.info["files"]["train"] == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    assert sorted(data.info["decompressed"]) == sorted(f"{s}.gz" for pair in data.info["files"].values() for s in pair)
    assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    np.testing.assert_array_equal(mnist_module.mnist(root=tmp_path).y_train, gz["train"][1])  # file order
    assert sd.load_dataset("mnist", root=tmp_path).info["decompressed"] == []  # once
    small = mnist_module.mnist(root=root, max_per_class=2)
    reference = mnist_module.mnist(root=root)
    assert small.info["per_class"] == {"train": [2] * 10, "test": [2] * 10}
    kept = np.sort(np.concatenate([np.flatnonzero(reference.y_train == c)[:2] for c in range(10)]))
    np.testing.assert_array_equal(small.x_train, reference.x_train[kept])  # the first two of each digit


def test_mnist_missing_and_damaged_files(tmp_path):
    with one_line_error(r"--data-dir DIR \(root=DIR in Python\)"):
        sd.load_dataset("mnist")
    with one_line_error(r"does not exist; expected <root>/MNIST/raw/.*-D download=true"):
        sd.load_dataset("mnist", root=tmp_path / "nowhere")
    with one_line_error("no MNIST idx files found"):
        sd.load_dataset("mnist", root=tmp_path)
    loose = tmp_path / "loose"
    write_mnist_tree(loose)
    os.rename(loose / "MNIST" / "raw", loose / "idx")
    with one_line_error(r"loose/idx holds MNIST idx files, but torchvision reads them from <root>/MNIST/raw/"):
        sd.load_dataset("mnist", root=loose / "idx")
    write_mnist_tree(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with one_line_error(r"lacks t10k-labels-idx1-ubyte \(nor their .gz\)"):
        sd.load_dataset("mnist", root=tmp_path)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(19, np.uint8))
    with one_line_error("t10k-images-idx3-ubyte has 20 images but t10k-labels-idx1-ubyte has 19 labels"):
        sd.load_dataset("mnist", root=tmp_path)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.full(20, 10, np.uint8))
    with one_line_error("has label 10; MNIST's are 0..9"):
        sd.load_dataset("mnist", root=tmp_path)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(20, np.uint8))
    sd.load_dataset("mnist", root=tmp_path)  # whole again
    images = raw / "train-images-idx3-ubyte"
    whole = images.read_bytes()
    images.write_bytes(whole[:5000])
    with one_line_error(
        r"train-images-idx3-ubyte is not a readable MNIST images idx file \(RuntimeError: shape '\[60, 28, 28\]' "
        r"is invalid for input of size 4984\); a damaged or truncated download\? delete it"
    ):
        sd.load_dataset("mnist", root=tmp_path)
    images.write_bytes(b"\x00\x00\x08\x01" + whole[4:])  # a labels magic number
    with one_line_error(
        r"train-images-idx3-ubyte is not a readable MNIST images idx file \(RuntimeError: shape '\[60\]'"
    ):
        sd.load_dataset("mnist", root=tmp_path)
    images.write_bytes(b"not an idx file at all")
    with one_line_error(r"train-images-idx3-ubyte is not a readable MNIST images idx file \(AssertionError\)"):
        sd.load_dataset("mnist", root=tmp_path)
    write_idx(images, np.zeros((60, 32, 32), np.uint8))
    with one_line_error("holds 32x32 images; MNIST's are 28x28"):
        sd.load_dataset("mnist", root=tmp_path)
    images.unlink()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(whole)[:3000])  # a cut download
    with one_line_error(r"cannot read .*train-images-idx3-ubyte.gz: EOFError: .*delete it and download it again"):
        sd.load_dataset("mnist", root=tmp_path)
    assert not images.exists()  # no half-decompressed file left to be read next time
    for params, match in (
        ({"max_per_class": 0}, "max_per_class must be a positive integer or None"),
        ({"download": "yes"}, "download must be true or false"),
        ({"split": "train"}, "unknown parameter.*accepted:.*max_per_class"),
    ):
        with one_line_error(match):
            sd.load_dataset("mnist", root=tmp_path, **params)


def test_mnist_download_failure_names_the_urls(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with one_line_error(
        r"mnist: downloading https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz, .* "
        r"into .*MNIST/raw failed \(RuntimeError: Error downloading train-images-idx3-ubyte.gz: "
        r"Tried https://ossci-datasets.s3.amazonaws.com/mnist/, got: <urlopen error no network in tests> "
        r"Tried http://yann.lecun.com/exdb/mnist/, got: .*\); check the network"
    ):
        sd.load_dataset("mnist", root=tmp_path, download=True)
    assert not list((tmp_path / "MNIST" / "raw").iterdir())  # no partial file left


def test_mnist_download_is_torchvisions(tmp_path, monkeypatch):
    source = tmp_path / "source"
    written = write_mnist_tree(source, gz=True)
    payloads = {name: (source / "MNIST" / "raw" / name).read_bytes() for name in os.listdir(source / "MNIST" / "raw")}
    # torchvision checks each file against its table of official MD5s: give it these files' MD5s
    resources = [(name, hashlib.md5(payloads[name]).hexdigest()) for name, _ in torchvision.datasets.MNIST.resources]
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    mirror = torchvision.datasets.MNIST.mirrors[0]
    served = []
    monkeypatch.setattr(urllib.request, "urlopen", serving({mirror + k: v for k, v in payloads.items()}, served))
    data = sd.load_dataset("mnist", root=tmp_path / "fresh" / "MNIST", download=True)  # into fresh/MNIST/raw
    np.testing.assert_array_equal(data.y_test, written["test"][1])
    assert {url.rsplit("/", 1)[-1] for url in served} == set(payloads)
    assert (tmp_path / "fresh" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    count = len(served)
    sd.load_dataset("mnist", root=tmp_path / "fresh", download=True)  # complete: nothing fetched again
    assert len(served) == count


# ---------------------------------------------------------------------------------------------
# cifar10
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar10_tree(root)


def test_cifar10_reads_the_official_batches(cifar_tree):
    root, written = cifar_tree
    assert_images(sd.load_dataset("cifar10", root=root), 50, 20, (3, 32, 32), 10)
    data = cifar10.cifar10(root=root)  # the loader alone: the files' order
    for x, y, (images, labels) in (
        (data.x_train, data.y_train, written["train"]),
        (data.x_test, data.y_test, written["test"]),
    ):
        np.testing.assert_array_equal(y, labels)
        np.testing.assert_array_equal(x, images.astype(np.float32) / 255.0)
        np.testing.assert_array_equal(x[:, 0, 3, 3], (20 * y).astype(np.float32) / 255.0)  # red plane first
        assert (x[:, 2, 5, 7] == 1.0).all()  # blue plane, row 5, column 7
    assert data.classes == CIFAR_NAMES
    assert data.eps == pytest.approx(8 / 255)
    assert data.info["md5"].startswith("differs from the official files: data_batch_1")  # informational only
    small = cifar10.cifar10(root=root / "cifar-10-batches-py", max_per_class=1)
    assert small.info["counts"] == {"train": 10, "test": 10}
    np.testing.assert_array_equal(small.y_test, np.arange(10))


class WritesAFile:
    """A pickle payload: unpickling it calls ``open(path, "w")``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    write_cifar10_tree(tmp_path)
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": WritesAFile(marker), b"labels": [0]})
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(WritesAFile(probe))).close()  # the payload is live with plain pickle
    assert probe.exists()
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(evil)
    with one_line_error(r"data_batch_3 is not a CIFAR-10 batch: it asks to load io.open, .*nothing was run"):
        sd.load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps({b"label_names": Path("x")}))
    with one_line_error(r"batches.meta is not a CIFAR-10 batch: it asks to load pathlib.PosixPath"):
        sd.load_dataset("cifar10", root=tmp_path)


def test_cifar10_missing_and_damaged_files(tmp_path):
    with one_line_error(r"--data-dir DIR \(root=DIR in Python\)"):
        sd.load_dataset("cifar10")
    with one_line_error(r"no CIFAR-10 batches found in .*; expected <root>/cifar-10-batches-py/.*-D download=true"):
        sd.load_dataset("cifar10", root=tmp_path)
    written = write_cifar10_tree(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    (base / "data_batch_4").unlink()
    with one_line_error(r"lacks data_batch_4; expected"):
        sd.load_dataset("cifar10", root=tmp_path)
    whole = pickle.dumps(cifar_batch(*[a[:10] for a in written["train"]]))
    (base / "data_batch_4").write_bytes(whole[: len(whole) // 2])
    with one_line_error(r"data_batch_4 is not a readable CIFAR-10 batch \(.*\); a damaged or truncated download"):
        sd.load_dataset("cifar10", root=tmp_path)
    for batch, match in (
        ({b"data": np.zeros((2, 3072), np.uint8)}, "no labels entry"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"data must be a uint8 array \(n, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"data must be a uint8 array"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "labels must be 2 integers"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, "has label 12; CIFAR-10's are 0..9"),
        ([1, 2, 3], "it holds a list, not a dict"),
    ):
        (base / "data_batch_4").write_bytes(pickle.dumps(batch))
        with one_line_error(match):
            sd.load_dataset("cifar10", root=tmp_path)
    (base / "data_batch_4").write_bytes(whole)
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}))
    with one_line_error("label_names must be ten names"):
        sd.load_dataset("cifar10", root=tmp_path)
    for params, match in (
        ({"max_per_class": -1}, "max_per_class must be a positive integer or None"),
        ({"download": 1}, "download must be true or false"),
    ):
        with one_line_error(match):
            sd.load_dataset("cifar10", root=tmp_path, **params)


def test_cifar10_download_failure_and_a_served_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with one_line_error(
        r"cifar10: downloading https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into .*offline failed "
        r"\(URLError: <urlopen error no network in tests>\); check the network, or download it by hand so that"
    ):
        sd.load_dataset("cifar10", root=tmp_path / "offline", download=True)

    source = tmp_path / "source"
    write_cifar10_tree(source)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    payload = archive.getvalue()
    served, payloads = [], {cifar10.URL: payload}
    monkeypatch.setattr(urllib.request, "urlopen", serving(payloads, served))  # torchvision's downloader calls it
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(payload).hexdigest())
    data = sd.load_dataset("cifar10", root=tmp_path / "fresh", download=True)
    assert set(served) == {cifar10.URL} and data.info["counts"] == {"train": 50, "test": 20}
    assert (tmp_path / "fresh" / "cifar-10-python.tar.gz").is_file()
    count = len(served)
    sd.load_dataset("cifar10", root=tmp_path / "fresh", download=True)  # complete: nothing fetched again
    assert len(served) == count

    evil = io.BytesIO()  # an archive whose member would land outside the folder
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    payload = payloads[cifar10.URL] = evil.getvalue()
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(payload).hexdigest())
    with one_line_error(r"cifar10: unpacking .*cifar-10-python.tar.gz .* failed \(OutsideDestinationError"):
        sd.load_dataset("cifar10", root=tmp_path / "evil", download=True)
    assert not (tmp_path / "escaped.txt").exists()

    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", "0" * 32)  # a download that does not match the official MD5
    with one_line_error(r"\(ValueError: MD5 [0-9a-f]{32}, expected 0{32}: an incomplete or altered download\)"):
        sd.load_dataset("cifar10", root=tmp_path / "altered", download=True)
    assert not list((tmp_path / "altered").iterdir())  # the altered archive is deleted


# ---------------------------------------------------------------------------------------------
# gtsrb
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gtsrb_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("gtsrb")
    write_gtsrb_tree(root)
    return root


def assert_colours(x, y):
    expected = np.stack([np.asarray(sign_colour(int(c)), np.float32) / 255.0 for c in y])  # (n 3)
    np.testing.assert_allclose(x.mean(axis=(2, 3)), expected, atol=1.5 / 255)
    assert np.ptp(x, axis=(2, 3)).max() <= 1.5 / 255  # solid images stay solid when resized


def test_gtsrb_reads_the_official_layout_resized(gtsrb_tree):
    assert_images(sd.load_dataset("gtsrb", root=gtsrb_tree, num_workers=2), 86, 50, (3, 32, 32), 43)
    data = gtsrb.gtsrb(root=gtsrb_tree, num_workers=2)  # the loader alone: before a validation split is carved
    np.testing.assert_array_equal(data.y_train, np.repeat(np.arange(43), 2))  # ordered by (class, file)
    np.testing.assert_array_equal(data.y_test, (7 * np.arange(50)) % 43)  # CSV order
    assert_colours(data.x_train, data.y_train)
    assert_colours(data.x_test, data.y_test)
    assert data.classes[14] == "stop" and data.eps == pytest.approx(8 / 255)
    assert data.info["resize"] == "whole image -> RGB 32x32, PIL bilinear"
    assert data.info["skipped"] == {"missing_test_images": 0, "undecodable_images": 0}
    small = gtsrb.gtsrb(root=gtsrb_tree / "gtsrb", size=12, max_per_class=1, num_workers=1)
    assert small.x_train.shape == (43, 3, 12, 12) and small.input_shape == (3, 12, 12)
    assert small.info["per_class"]["test"] == [1 if c in set(data.y_test) else 0 for c in range(43)]
    np.testing.assert_array_equal(small.y_train, np.arange(43))


def test_gtsrb_lazy_decodes_nothing_until_asked(gtsrb_tree, monkeypatch):
    from PIL import Image

    eager = gtsrb.gtsrb(root=gtsrb_tree, size=16)
    opened = []
    real_open = Image.open

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    # the loader itself: sd.load_dataset checks its product against contracts.Dataset, which asks for x_train
    lazy = gtsrb.gtsrb(root=gtsrb_tree, size=16, lazy=True)
    assert opened == []
    assert isinstance(lazy, LazyDataset) and lazy.input_shape == (3, 16, 16) and lazy.nb_classes == 43
    assert isinstance(lazy.train, torch.utils.data.Dataset)
    assert (len(lazy.train), len(lazy.test)) == (86, 50)
    np.testing.assert_array_equal(lazy.y_train, eager.y_train)
    np.testing.assert_array_equal(lazy.y_test, eager.y_test)
    for part, x_eager, y_eager in ((lazy.train, eager.x_train, eager.y_train), (lazy.test, eager.x_test, eager.y_test)):
        for i in (0, 5, len(part) - 1):
            x, y = part[i]
            assert x.dtype == torch.float32 and tuple(x.shape) == (3, 16, 16)
            np.testing.assert_array_equal(x.numpy(), x_eager[i])
            assert y == y_eager[i]
    assert len(opened) == 6  # one file per item
    x, y = next(iter(torch.utils.data.DataLoader(pickle.loads(pickle.dumps(lazy.test)), batch_size=8)))
    np.testing.assert_array_equal(x.numpy(), eager.x_test[:8])  # picklable: fit for DataLoader workers
    np.testing.assert_array_equal(y.numpy(), eager.y_test[:8])


def test_gtsrb_bad_files_are_skipped_or_named(tmp_path, caplog):
    base = write_gtsrb_tree(tmp_path, per_class=2, n_test=10)
    (base / "GTSRB" / "Training" / "00003" / "00000_00001.ppm").write_bytes(b"P6 not really")
    truncated = base / "GTSRB" / "Training" / "00005" / "00000_00000.ppm"
    truncated.write_bytes(truncated.read_bytes()[:-40])  # a cut download: header intact, pixels short
    (base / "GTSRB" / "Final_Test" / "Images" / "00004.ppm").unlink()
    with caplog.at_level(logging.WARNING, logger="ssmdefense"):
        data = gtsrb.gtsrb(root=tmp_path)
    assert (len(data.y_train), len(data.y_test)) == (84, 9)
    assert data.info["skipped"] == {"missing_test_images": 1, "undecodable_images": 2}
    assert data.info["skipped_files"] == [
        "GTSRB/Training/00003/00000_00001.ppm",
        "GTSRB/Training/00005/00000_00000.ppm",
    ]
    (message,) = warnings_of(caplog)
    assert "skipped 2 of 95 images that could not be decoded: GTSRB/Training/00003/00000_00001.ppm (" in message
    assert "GTSRB/Training/00005/00000_00000.ppm (OSError: image file is truncated" in message
    assert "skipped 1 rows of GT-final_test.csv whose image does not exist (00004.ppm)" in message
    lazy = gtsrb.gtsrb(root=tmp_path, lazy=True)
    bad = int(np.flatnonzero(lazy.y_train == 3)[1])
    with one_line_error(r"gtsrb: cannot decode .*00003/00000_00001.ppm: .*; remove the file, or load .* lazy"):
        lazy.train[bad]
    x, y = lazy.train[bad - 1]  # the others still read
    assert y == 3 and tuple(x.shape) == (3, 32, 32)


def test_gtsrb_layout_csv_and_parameter_errors(tmp_path, gtsrb_tree):
    with one_line_error(r"--data-dir DIR \(root=DIR in Python\)"):
        sd.load_dataset("gtsrb")
    with one_line_error(
        r"no GTSRB found in .*; expected <root>/gtsrb/GTSRB/Training/<class 00000..00042>.*-D download"
    ):
        sd.load_dataset("gtsrb", root=tmp_path)
    base = write_gtsrb_tree(tmp_path, per_class=1, n_test=3)
    csv_path = base / "GT-final_test.csv"
    good = csv_path.read_text()
    for text, match in (
        (
            "Filename,ClassId\n00000.ppm,1\n",
            "its first line must name the semicolon-separated columns Filename and ClassId",
        ),
        (good.replace(";0\n", ";43\n", 1), r"line 2: ClassId must be an integer 0..42; got '43'"),
        (good.replace("00001.ppm", "../00001.ppm"), r"line 3: Filename must be a file name; got '../00001.ppm'"),
        (good + "00009.ppm;1\n", r"line 5 has 2 fields; expected 8"),
    ):
        csv_path.write_text(text)
        with one_line_error(match):
            sd.load_dataset("gtsrb", root=tmp_path)
    csv_path.unlink()
    with one_line_error(r"GT-final_test.csv is missing: the test labels \(from GTSRB_Final_Test_GT.zip\)"):
        sd.load_dataset("gtsrb", root=tmp_path)
    csv_path.write_text(good)
    (base / "GTSRB" / "Training" / "00042" / "00000_00000.ppm").unlink()
    (base / "GTSRB" / "Training" / "00042" / "GT-00042.csv").unlink()
    (base / "GTSRB" / "Training" / "00042").rmdir()
    with one_line_error(r"Training: Found no valid file for the classes 00042\. Supported extensions are: \.ppm"):
        sd.load_dataset("gtsrb", root=tmp_path)
    (base / "GTSRB" / "Training" / "00042").mkdir()  # there, but empty
    with one_line_error(r"Training: Found no valid file for the classes 00042\."):
        sd.load_dataset("gtsrb", root=tmp_path)
    for params, match in (
        ({"size": 0}, "size must be a positive integer"),
        ({"lazy": "yes"}, "lazy must be true or false"),
        ({"download": "no"}, "download must be true or false"),
        ({"num_workers": 0}, "num_workers must be a positive integer or None"),
    ):
        with one_line_error(match):
            sd.load_dataset("gtsrb", root=gtsrb_tree, **params)


def test_gtsrb_labels_are_the_folder_numbers(tmp_path):
    base = write_gtsrb_tree(tmp_path, per_class=1, n_test=3)
    training = base / "GTSRB" / "Training"
    (training / "0000_extra").mkdir()  # a stray folder sorting first: numbering folders in order would shift labels
    (training / "0000_extra" / "x.ppm").write_bytes((training / "00005" / "00000_00000.ppm").read_bytes())
    data = gtsrb.gtsrb(root=tmp_path, size=8)  # one image per class: too few to carve a validation split from
    np.testing.assert_array_equal(data.y_train, np.arange(43))  # the stray folder is not read
    with one_line_error("dataset 'gtsrb' is too small to carve a validation split from .*each of the 43 classes"):
        sd.load_dataset("gtsrb", root=tmp_path, size=8)
    assert_colours(data.x_train, data.y_train)


def test_gtsrb_download_failure_names_the_url(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with one_line_error(
        r"gtsrb: downloading https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
        r"GTSRB-Training_fixed.zip into .*gtsrb failed \(URLError: <urlopen error no network in tests>\)"
    ):
        sd.load_dataset("gtsrb", root=tmp_path, download=True)
    served = []
    bad = {gtsrb.BASE_URL + "GTSRB-Training_fixed.zip": b"not the official zip"}
    monkeypatch.setattr(urllib.request, "urlopen", serving(bad, served))
    with one_line_error(r"GTSRB-Training_fixed.zip into .* failed \(RuntimeError: File not found or corrupted.\)"):
        sd.load_dataset("gtsrb", root=tmp_path, download=True)  # torchvision checks the official MD5


def test_gtsrb_download_is_torchvisions(tmp_path, monkeypatch):
    source = write_gtsrb_tree(tmp_path / "source", per_class=1, n_test=10)
    members = {  # what each official zip unpacks into <root>/gtsrb
        "GTSRB-Training_fixed.zip": ["GTSRB/Training"],
        "GTSRB_Final_Test_Images.zip": ["GTSRB/Final_Test"],
        "GTSRB_Final_Test_GT.zip": ["GT-final_test.csv"],
    }
    served = []

    def unpack_a_local_zip(url, download_root, md5=None, **kwargs):  # as torchvision's, from the test's files
        name = url.rsplit("/", 1)[-1]
        served.append(url)
        Path(download_root).mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(Path(download_root) / name, "w") as z:
            for top in members[name]:
                for path in [source / top, *sorted((source / top).rglob("*"))]:
                    if path.is_file():
                        z.write(path, path.relative_to(source).as_posix())
        with zipfile.ZipFile(Path(download_root) / name) as z:
            z.extractall(download_root)

    monkeypatch.setattr(torchvision.datasets.gtsrb, "download_and_extract_archive", unpack_a_local_zip)
    data = gtsrb.gtsrb(root=tmp_path / "fresh", size=8, download=True)
    assert served == [gtsrb.BASE_URL + name for name in members]
    assert (len(data.y_train), len(data.y_test)) == (43, 10)
    assert (tmp_path / "fresh" / "gtsrb" / "GT-final_test.csv").is_file()
    gtsrb.gtsrb(root=tmp_path / "fresh" / "gtsrb", size=8, download=True)  # complete
    assert len(served) == 3


# ---------------------------------------------------------------------------------------------
# Registry and command line
# ---------------------------------------------------------------------------------------------


def test_registered_and_listed_by_the_cli():
    from ssmdefense.plugins import registry

    reg = registry("datasets")
    for name in ("mnist", "cifar10", "gtsrb"):
        entry = reg.get(name)
        assert entry.summary and "\n" not in entry.summary
        assert {"root", "download", "max_per_class"} <= set(reg.accepted_params(name))
    assert {"size", "lazy"} <= set(reg.accepted_params("gtsrb"))
    result = CliRunner().invoke(cli, ["datasets", "--json"])
    assert result.exit_code == 0, result.output
    listed = {row["name"]: row["summary"] for row in json.loads(result.output)}
    assert {"mnist", "cifar10", "gtsrb"} <= set(listed) and "43 classes" in listed["gtsrb"]


@pytest.mark.parametrize(
    "name, write, params, eps",
    [
        ("mnist", write_mnist_tree, [], 0.1),
        ("cifar10", write_cifar10_tree, [], 8 / 255),
        ("gtsrb", lambda root: write_gtsrb_tree(root, per_class=2, n_test=20), ["-D", "size=16"], 8 / 255),
    ],
)
def test_one_epoch_through_the_cli(tmp_path, name, write, params, eps):
    write(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--dataset", name, "--data-dir", tmp_path / "data", *params, "--epochs", "1"]
    args += ["--aa-samples", "0", "--eval-samples", "20", "-q", "--threads", "1", "--out", out]
    args += ["-m", "d_model=8", "-m", "n_layers=1", "-m", "d_state=8", "-p", "lr=0.01"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert (out / "report.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == name and config["data_dir"] == str(tmp_path / "data")
    assert config["eps"] == pytest.approx(eps) and config["sequence"] == "rows"


def test_lazy_gtsrb_trains_and_evaluates_like_the_eager_one(tmp_path):
    """`-D lazy=true`: the loop, the per-epoch evaluation and `evaluate` read the images through
    DataLoader workers, and the run's numbers are the in-memory run's."""
    write_gtsrb_tree(tmp_path / "data", per_class=2, n_test=20)
    reports = {}
    for lazy in ("false", "true"):
        out = tmp_path / f"run-{lazy}"
        args = ["train", "--dataset", "gtsrb", "--data-dir", tmp_path / "data", "-D", "size=16", "-D", f"lazy={lazy}"]
        args += ["--epochs", "2", "--aa-samples", "0", "--eval-samples", "20", "-q", "--threads", "1"]
        args += ["--workers", "1", "--out", out, "-m", "d_model=8", "-m", "n_layers=1", "-m", "d_state=8"]
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        reports[lazy] = json.loads((out / "report.json").read_text())
    for which in ("best", "last"):
        for key in ("epoch", "clean_accuracy", "robust_accuracy"):
            assert reports["true"][which][key] == reports["false"][which][key], (which, key)
    result = CliRunner().invoke(
        cli,
        ["evaluate", "--checkpoint", str(tmp_path / "run-true"), "--attacks", "fgsm", "--samples", "10", "--no-checks"],
    )
    assert result.exit_code == 0, result.output
    evaluation = json.loads((tmp_path / "run-true" / "evaluation" / "report.json").read_text())
    assert evaluation["config"]["samples"] == 10
