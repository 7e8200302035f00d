"""The template of the file-based datasets (``ssmdefense.data.files``): a selection of (path, label)
per split, one decoder, eager and lazy loading from the same code; ``gtsrb`` read through it as the
audio datasets are. The datasets' own behaviour is tested in ``test_data_images.py`` (gtsrb),
``test_data_audio_files.py`` and ``test_data_lazy.py``; the files are written by the tests."""

from __future__ import annotations

import ast
import pickle
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ssmdefense.data import files, gtsrb, image_io
from test_data_images import one_line_error, write_gtsrb_tree


def test_choose_per_class_keeps_the_given_order():
    items = [(0, "a"), (0, "b"), (1, "c"), (0, "d"), (1, "e")]
    label, name = itemgetter(0), itemgetter(1)
    assert files.choose_per_class(items, None, label=label) is items
    assert files.choose_per_class(items, 1, label=label) == [(0, "a"), (1, "c")]  # the first of each class
    chosen = files.choose_per_class(items, 2, label=label, spread_by=name)
    smallest = {
        c: sorted((i for i in items if i[0] == c), key=lambda i: files.stable_order_key(i[1]))[:2] for c in (0, 1)
    }
    assert chosen == [i for i in items if i in smallest[0] + smallest[1]]  # smallest SHA-1 per class, in item order


@dataclass(frozen=True)
class Halves(files.FileDecoder):
    """A toy decoder: a text file holding an integer n -> float32 (2,) [n / 2, n / 2]."""

    name: str
    clip_values = (0.0, 100.0)
    sequence = "samples"
    sample_rate = None
    shape = (2,)

    def __call__(self, path) -> np.ndarray:
        text = Path(path).read_text().strip()
        if not text.isdigit():
            raise files.UnusableFile(path, f"{self.name}: {path} holds {text!r}, not a number")
        return np.full(2, int(text) / 2, dtype=np.float32)  # (2,)

    def load(self, paths, num_workers):
        decoded, kept = [], []
        for i, path in enumerate(paths):
            try:
                decoded.append(self(path))
                kept.append(i)
            except files.UnusableFile:
                pass
        return SimpleNamespace(x=np.asarray(decoded, np.float32).reshape(-1, 2), kept=np.asarray(kept, np.int64))

    def why_none(self, loaded, total, root) -> str:
        return f"{total} not numbers"


def test_eager_and_lazy_come_from_one_selection_and_decoder(tmp_path):
    paths = []
    for i, text in enumerate(["4", "x", "6", "8"]):
        paths.append(tmp_path / f"{i}.txt")
        paths[-1].write_text(text)
    selection = {"train": (paths[:3], np.array([0, 1, 0])), "test": (paths[3:], np.array([1]))}
    decoder = Halves("toy")
    arrays, loaded = files.decode_splits("toy", selection, decoder, num_workers=1, root=tmp_path)
    eager = files.file_dataset("toy", arrays, ["a", "b"], decoder, lazy=False, eps=None, info={})
    np.testing.assert_array_equal(eager.x_train, [[2, 2], [3, 3]])  # (2 2): the "x" file skipped
    np.testing.assert_array_equal(eager.y_train, [0, 0])
    assert eager.sequence == "samples" and eager.clip_values == (0.0, 100.0) and eager.validation is None
    lazy = files.file_dataset("toy", selection, ["a", "b"], decoder, lazy=True, eps=None, info={})
    assert isinstance(lazy.train, files.LazyFiles) and lazy.input_shape == (2,) and lazy.val is None
    x, y = pickle.loads(pickle.dumps(lazy.train))[2]  # picklable: fit for DataLoader workers
    assert torch.equal(x, torch.tensor([3.0, 3.0])) and y == 0
    with one_line_error(r"toy: .*1.txt holds 'x', not a number; remove the file, or load .* without -D lazy=true"):
        lazy.train[1]
    with one_line_error(r"toy: none of the 1 test files in .* could be decoded \(1 not numbers\)"):
        files.decode_splits("toy", {"test": (paths[1:2], np.array([0]))}, decoder, num_workers=1, root=tmp_path)


def test_gtsrb_reads_through_the_template(tmp_path):
    base = write_gtsrb_tree(tmp_path, per_class=1, n_test=3)
    eager = gtsrb.gtsrb(root=tmp_path, size=8, num_workers=1)
    lazy = gtsrb.gtsrb(root=tmp_path, size=8, lazy=True)
    assert type(lazy.train) is files.LazyFiles and lazy.train.decode == image_io.ImageDecoder("gtsrb", 8)
    assert lazy.train.path(0) == str(base / "GTSRB" / "Training" / "00000" / "00000_00000.ppm")
    np.testing.assert_array_equal(lazy.train.decode(lazy.train.path(5)), eager.x_train[5])  # (3 8 8)
    for image in (base / "GTSRB" / "Final_Test" / "Images").iterdir():
        image.write_bytes(b"not an image")
    with one_line_error(r"gtsrb: none of the 3 test images in .*gtsrb could be decoded \(first: .*00000.ppm: "):
        gtsrb.gtsrb(root=tmp_path, size=8, num_workers=1)


@pytest.mark.parametrize("module", ["files", "image_io", "mnist", "cifar10", "gtsrb"])
def test_no_image_loader_imports_audio_io(module):
    source = (Path(files.__file__).parent / f"{module}.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [getattr(node, "module", None) or ""] + [alias.name for alias in node.names]
            assert not any("audio_io" in n for n in names), (module, ast.unparse(node))
