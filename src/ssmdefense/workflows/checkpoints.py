"""What ``evaluate`` and ``attack`` share: the settings of work on a saved checkpoint, finding a run's
checkpoints, and loading the test data a checkpoint was trained for (its dataset, folder and parameters
as recorded, unless the caller says otherwise)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..data.base import LazyDataset
from ..data.stream import materialise
from ..errors import CheckpointError, OptionError, SSMDefenseError
from .common import load_data
from .config import from_json, paths_to_json, with_paths

if TYPE_CHECKING:
    from ..data.base import Dataset
    from ..estimators import SSMClassifier


def config_of(cls: type, config: Any, settings: dict) -> Any:
    """``config``, or a ``cls`` built from the keyword ``settings`` (not both)."""
    if config is not None and settings:
        raise TypeError("give a config or its fields as keywords, not both")
    return config if config is not None else cls(**settings)


@dataclass(kw_only=True)
class CheckpointWork:
    """The settings ``evaluate`` and ``attack`` share: the test data (default: the run's, with its
    folder and parameters), the seed, and where the work runs. ``PATHS``: the fields that are paths
    (strings become ``Path``s, and back in ``to_dict``)."""

    PATHS: ClassVar[tuple[str, ...]] = ("checkpoint", "data_dir")
    dataset: str | None = None
    data_dir: Path | None = None
    dataset_params: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        with_paths(self, self.PATHS)

    def to_dict(self) -> dict:
        """JSON values (paths as strings)."""
        return paths_to_json(self, self.PATHS)

    @classmethod
    def from_dict(cls, d: dict) -> Any:
        return from_json(cls, d)

    def check(self) -> None:
        """Values the command line's option types check; from Python they are checked here."""
        if self.device not in ("auto", "cpu", "cuda"):
            raise OptionError("device", "--device", f"expected auto, cpu or cuda; got {self.device!r}")
        for key in ("samples", "threads"):
            if getattr(self, key, None) is not None and getattr(self, key) < 1:
                raise OptionError(key, f"--{key}", "must be at least 1")


def find_checkpoints(path: str | os.PathLike) -> dict[str, Path]:
    """{"best": stem, "last": stem} for a run directory, {"checkpoint": stem} for one checkpoint."""
    path = Path(path)
    if path.is_dir():
        found = {k: path / k for k in ("best", "last") if (path / f"{k}.json").is_file()}
        if not found:
            raise CheckpointError(f"{path} holds no best.json or last.json checkpoint")
        return found
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    if not stem.with_suffix(".json").is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return {"checkpoint": stem}


def load_test_data(
    clf: SSMClassifier,
    dataset: str | None = None,
    samples: int | None = None,
    data_dir: Path | None = None,
    dataset_params: dict | None = None,
) -> tuple[str, np.ndarray, np.ndarray, Dataset]:
    """(name, natural x, y, dataset) of the test split: the checkpoint's dataset with its recorded
    parameters and folder, unless ``dataset``, ``data_dir`` or ``dataset_params`` say otherwise."""
    extra = clf.checkpoint_meta.get("extra", {})
    name = dataset or extra.get("dataset")
    if name is None:
        raise SSMDefenseError("this checkpoint does not record its dataset; pass --dataset")
    params = dict(dataset_params or {})
    if dataset is None or dataset == extra.get("dataset"):  # the run's own dataset: start from its settings
        params = {**extra.get("dataset_params", {}), **params}
        if data_dir is None and "root" not in params and extra.get("data_dir"):
            data_dir = Path(extra["data_dir"])
    data = load_data(name, data_dir, params)
    natural = tuple(getattr(clf, "natural_shape", clf.input_shape))
    if tuple(data.input_shape) != natural:
        raise SSMDefenseError(
            f"dataset {name!r} has inputs of shape {data.input_shape}; the checkpoint expects {natural}"
        )
    if isinstance(data, LazyDataset):  # read the first `samples` through a DataLoader, never the whole split
        x, y = materialise(data.test, None, samples)
        return name, x, y, data
    x, y = data.x_test, data.y_test
    if samples is not None:
        x, y = x[:samples], y[:samples]
    return name, x, y, data
