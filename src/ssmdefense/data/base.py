"""The dataset object every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from ..contracts import LazyData, protocol_of


class _Settings:
    """What ``Dataset`` and ``LazyDataset`` share besides their fields: the checks of ``defaults`` and
    ``classes``, ``is_audio`` and the one-line ``repr``."""

    DEFAULT_KEYS = ("epochs", "eval_samples", "aa_samples")

    @property
    def is_audio(self) -> bool:
        return self.sample_rate is not None

    def _check_settings(self) -> None:
        unknown = set(self.defaults) - set(self.DEFAULT_KEYS)
        if unknown:
            raise ValueError(f"{self.name}: unknown defaults {sorted(unknown)}; known: {', '.join(self.DEFAULT_KEYS)}")
        if self.classes is not None and len(self.classes) != self.nb_classes:
            raise ValueError(f"{self.name}: {len(self.classes)} class names for {self.nb_classes} classes")

    def __repr__(self) -> str:
        audio = f", sample_rate={self.sample_rate}" if self.is_audio else ""
        val = f", val={len(self.y_val)}" if self.y_val is not None else ""
        return (
            f"{type(self).__name__}({self.name!r}, train={len(self.y_train)}{val}, test={len(self.y_test)}, "
            f"input_shape={self.input_shape}, nb_classes={self.nb_classes}{audio})"
        )

    def _check_groups(self) -> None:
        if self.groups is not None:
            self.groups = np.asarray(self.groups)
            if len(self.groups) != len(self.y_train):
                raise ValueError(f"{self.name}: {len(self.groups)} groups for {len(self.y_train)} training samples")


@dataclass(repr=False)
class Dataset(_Settings):
    """Train/test arrays in natural shape, x float32 in ``clip_values``, y int64 class indices.

    Images are (N, C, H, W) in [0, 1]; audio is mono waveforms (N, 1, T) in [-1, 1] with
    ``sample_rate`` set. ``sequence`` is the default way a sequence model reads one input (a
    registered sequence mode: "rows", "pixels", "mel", "frames", "samples", ...) and ``eps`` the
    default L-inf budget of ``ssmdefense defend`` on this dataset (None: 0.1). ``defaults`` may name
    other settings the command line uses when they are not given (``epochs``, ``eval_samples``), so
    that the default command fits the dataset's cost.

    Validation (``ssmdefense.data.splits``): ``x_val``/``y_val`` hold the validation split that
    chooses the best checkpoint and ``validation`` says where it came from. A loader fills them
    when the dataset has its own split; otherwise ``sd.load_dataset`` carves one from train. A
    loader may give ``groups`` (per training sample: a speaker, a voice, a recording) so that a
    carved split holds whole groups.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    nb_classes: int
    clip_values: tuple[float, float] = (0.0, 1.0)
    sequence: str = "rows"  # default serialisation for sequence models
    info: dict = field(default_factory=dict)
    sample_rate: int | None = None  # audio only: samples per second
    eps: float | None = None  # default L-inf budget (None: the CLI's 0.1)
    classes: list[str] | None = None  # class names, index = label
    defaults: dict = field(default_factory=dict)  # run settings `defend`/`train` use unless given: epochs, eval_samples
    x_val: np.ndarray | None = None  # the validation split (ssmdefense.data.splits)
    y_val: np.ndarray | None = None
    validation: dict | None = None  # where it came from: {"source": "official" | "carved", ...}
    groups: np.ndarray | None = None  # per training sample, the group a carved split keeps whole

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __post_init__(self):
        self.x_train = np.ascontiguousarray(self.x_train, dtype=np.float32)
        self.x_test = np.ascontiguousarray(self.x_test, dtype=np.float32)
        self.y_train = np.asarray(self.y_train, dtype=np.int64)
        self.y_test = np.asarray(self.y_test, dtype=np.int64)
        if (self.x_val is None) != (self.y_val is None):
            raise ValueError(f"{self.name}: give both x_val and y_val, or neither")
        if self.x_val is not None:
            self.x_val = np.ascontiguousarray(self.x_val, dtype=np.float32)
            self.y_val = np.asarray(self.y_val, dtype=np.int64)
            if len(self.x_val) != len(self.y_val):
                raise ValueError(f"{self.name}: {len(self.x_val)} validation inputs but {len(self.y_val)} labels")
        self._check_groups()
        self._check_settings()


@dataclass(kw_only=True, repr=False)
class LazyDataset(_Settings):
    """A dataset too large to hold in memory: ``train`` and ``test`` are ``torch.utils.data.Dataset``s
    whose item ``i`` is ``(x, y)``, x a float32 tensor of ``input_shape`` (natural shape, inside
    ``clip_values``) decoded when asked for (so in ``DataLoader`` workers), y an int class index.
    Creating one decodes nothing; ``y_train`` / ``y_test`` are the labels, known from the file list.
    The other fields mean what they mean on :class:`Dataset`. The training loop, the per-epoch
    evaluation and ``evaluate`` stream it batch by batch (``ssmdefense.data.stream``).
    """

    name: str
    train: object  # torch.utils.data.Dataset: (x (*input_shape) float32 tensor, y int)
    test: object
    y_train: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    nb_classes: int
    clip_values: tuple[float, float] = (0.0, 1.0)
    sequence: str = "rows"
    info: dict = field(default_factory=dict)
    sample_rate: int | None = None
    eps: float | None = None
    classes: list[str] | None = None
    defaults: dict = field(default_factory=dict)
    val: object = None  # torch.utils.data.Dataset of the validation split, as train and test
    y_val: np.ndarray | None = None
    validation: dict | None = None
    groups: np.ndarray | None = None

    def __post_init__(self):
        self.y_train = np.asarray(self.y_train, dtype=np.int64)
        self.y_test = np.asarray(self.y_test, dtype=np.int64)
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if (self.val is None) != (self.y_val is None):
            raise ValueError(f"{self.name}: give both val and y_val, or neither")
        splits = [("train", self.train, self.y_train), ("test", self.test, self.y_test)]
        if self.val is not None:
            self.y_val = np.asarray(self.y_val, dtype=np.int64)
            splits.append(("val", self.val, self.y_val))
        for split, data, labels in splits:
            if len(data) != len(labels):
                raise ValueError(f"{self.name}: {len(data)} {split} items but {len(labels)} labels")
        self._check_groups()
        self._check_settings()


def adopt(product: object, name: str) -> Dataset | LazyDataset:
    """What a dataset loader returned, as this package's ``Dataset`` or ``LazyDataset``.

    A plugin's loader may return any object with the members of ``contracts.Dataset`` (arrays) or
    ``contracts.LazyData`` (``train`` and ``test`` item datasets and their labels). Dispatch goes by
    the protocol it satisfies, never by its class: its required members and the optional ones it has
    (``name``, ``info``, ``sample_rate``, ``eps``, ``classes``, ``defaults``, the validation split,
    ``groups``) are copied into the matching dataclass, which checks them, so the workflows read one
    kind of object. Ours pass through unchanged.
    """
    if isinstance(product, (Dataset, LazyDataset)):
        return product
    cls = LazyDataset if protocol_of("datasets", product) is LazyData else Dataset
    settable = [f.name for f in fields(cls) if f.init]
    values = {key: getattr(product, key) for key in settable if getattr(product, key, None) is not None}
    values.setdefault("name", name)
    return cls(**values)  # (Dataset derives input_shape from its arrays: not a field to copy)
