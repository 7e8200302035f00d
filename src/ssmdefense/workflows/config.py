"""The one schema of a run's settings: ``RunConfig``. Each field says, once, where it goes:

- ``record``: into ``config.json`` (the value the run resolved: the dataset's eps when none was
  given, the model's full parameters, ...), which a resumed run reads back;
- ``report``: into ``report.json``'s ``config`` too;
- ``checkpoint``: into every checkpoint's JSON (``evaluate`` and ``attack`` read them back);
- ``resumed``: ``--resume`` takes it from ``config.json`` (the command line may not give it again);
- ``preset``: a preset may set it (``ssmdefense.workflows.presets``);
- ``option``: its command-line option's name, where that is not the field's name.

``config.json``, the report's config, the checkpoint extras, the preset keys, the resume rules and
the CLI's lists of them are all derived from these flags, so a new setting is one field here.
Nothing heavy is imported: the CLI reads the schema to build its help.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SSMDefenseError

DEFAULT_AA_SNR_DB = 30.0  # the SNR ball of the audio AutoAttack (evaluation.robustness uses it too)
PATHS = ("out", "data_dir", "log_dir")  # fields held as Path, recorded as strings


def with_paths(obj: Any, paths: tuple[str, ...]) -> None:
    """The ``paths`` fields of the dataclass ``obj`` as ``Path`` (a caller may give strings)."""
    for key in paths:
        if getattr(obj, key) is not None:
            setattr(obj, key, Path(getattr(obj, key)))


def paths_to_json(obj: Any, paths: tuple[str, ...]) -> dict:
    """Every field of the dataclass ``obj`` as JSON values (its ``paths`` as strings)."""
    d = dataclasses.asdict(obj)
    for key in paths:
        d[key] = None if d[key] is None else str(d[key])
    return d


def from_json(cls: type, d: dict) -> Any:
    """The dataclass ``cls`` from ``paths_to_json``'s dict; an unknown key is a clear error."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise SSMDefenseError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    return cls(**d)  # __post_init__ turns the path strings back into Paths


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    record: bool = True,
    report: bool = False,
    checkpoint: bool = False,
    resumed: bool = False,
    preset: bool = False,
    option: str | None = None,
    old_runs: Any = dataclasses.MISSING,
) -> Any:
    """A ``RunConfig`` field and where it goes (module docstring). ``old_runs``: the value a resumed run
    whose config.json predates the field takes (default: the field's default)."""
    meta = {"record": record, "report": report, "checkpoint": checkpoint, "resumed": resumed, "preset": preset}
    meta.update(option=option, old_runs=old_runs)
    return field(default=default, default_factory=factory, metadata=meta)


@dataclass
class RunConfig:
    """Every setting of a run, as the user gives it (None: the dataset's or the toolkit's default).

    ``model_params`` are the ``-m`` settings: keys the sequence mode accepts go to it (``n_mels``,
    ``attack_space``, ...), a key both accept (``kernel``) to both, the rest to the model.
    ``defense_params`` are the ``-p`` settings. ``command`` ("defend" or "train") is recorded in
    ``config.json`` and names the command that ``--resume`` must match. ``workers``: DataLoader
    worker processes that decode a lazily loaded dataset (None: 2 for lazy data, 0 for arrays).
    Under ``torchrun`` ``batch_size`` is the global batch (``ssmdefense.distributed``).
    ``select_on``: the split of the per-epoch evaluation that chooses the best checkpoint, "val" (the
    dataset's validation split, ``ssmdefense.data.splits``) or "test" (the AdS paper's practice:
    selection on the split the report scores, labelled as such). ``aa_snr_db``: the SNR ball of the
    audio AutoAttack. ``log``: "tensorboard" also writes TensorBoard event files
    (``ssmdefense.defenses.tensorboard``) in ``log_dir`` (None: the run directory's ``tensorboard/``).
    """

    command: str = setting("defend")
    model: str = setting("s4d", report=True, resumed=True, preset=True)
    model_params: dict = setting(factory=dict, report=True, resumed=True, preset=True)
    dataset: str = setting("mnist-5k", report=True, checkpoint=True, resumed=True, preset=True)
    dataset_params: dict = setting(factory=dict, report=True, checkpoint=True, resumed=True, preset=True)
    data_dir: Path | None = setting(None, checkpoint=True, resumed=True)
    sequence: str | None = setting(None, report=True, resumed=True, preset=True)
    defense: str = setting("none", report=True, resumed=True)
    defense_params: dict = setting(factory=dict, report=True, resumed=True, preset=True, option="params")
    eps: float | None = setting(None, report=True, checkpoint=True, resumed=True, preset=True)
    epochs: int | None = setting(None, report=True, resumed=True, preset=True)
    seed: int = setting(0, report=True, checkpoint=True, resumed=True)
    device: str = setting("auto")
    threads: int | None = setting(None)
    batch_size: int = setting(64, resumed=True, preset=True)
    eval_samples: int | None = setting(None, resumed=True, preset=True)
    aa_samples: int | None = setting(None, resumed=True, preset=True)
    aa_snr_db: float = setting(DEFAULT_AA_SNR_DB, resumed=True)
    # runs from before the validation split chose their best checkpoint on test
    select_on: str = setting("val", report=True, checkpoint=True, resumed=True, old_runs="test")
    workers: int | None = setting(None)
    preset: str | None = setting(None, resumed=True)
    log: str | None = setting(None, resumed=True)
    log_dir: Path | None = setting(None, resumed=True)
    out: Path | None = setting(None, record=False)
    overwrite: bool = setting(False, record=False)
    verbose: bool = setting(True, record=False)

    def __post_init__(self) -> None:
        with_paths(self, PATHS)

    @classmethod
    def names(cls, flag: str | None = None) -> tuple[str, ...]:
        """The fields marked ``flag`` ("record", "report", "checkpoint", "resumed", "preset"), in order;
        every field when ``flag`` is None."""
        return tuple(f.name for f in dataclasses.fields(cls) if flag is None or f.metadata.get(flag))

    @classmethod
    def options(cls, flag: str | None = None) -> dict[str, str]:
        """{command-line option: field} of the fields marked ``flag`` (every field when None)."""
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        return {(by_name[n].metadata.get("option") or n): n for n in cls.names(flag)}

    def to_dict(self) -> dict:
        """Every field as JSON values (paths as strings)."""
        return paths_to_json(self, PATHS)

    def record(self) -> dict:
        """The recorded fields as JSON values: what config.json starts with."""
        d = self.to_dict()
        return {key: d[key] for key in self.names("record")}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return from_json(cls, d)

    @classmethod
    def from_record(cls, record: dict, **given: Any) -> RunConfig:
        """The config of a run to resume: its ``resumed`` fields from its config.json ``record`` (a field
        the record predates takes its ``old_runs`` value, else its default), the rest from ``given``.
        The record holds the model's and the sequence mode's parameters apart; the config, as the
        ``-m`` settings, holds both."""
        values = dict(given)
        for f in dataclasses.fields(cls):
            if not f.metadata.get("resumed"):
                continue
            if f.name in record:
                values[f.name] = record[f.name]
            elif f.metadata["old_runs"] is not dataclasses.MISSING:
                values[f.name] = f.metadata["old_runs"]
        if "model_params" in record:
            values["model_params"] = {**record["model_params"], **record.get("sequence_params", {})}
        return cls(**values)
