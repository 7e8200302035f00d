"""The validation split every dataset has: the dataset's own where it has one, else carved from train.

The per-epoch evaluation and the choice of the **best** checkpoint run on validation data; the
report scores best and last on test (``--select-on test`` is the AdS paper's practice of choosing
on the scored split, kept available and labelled). ``sd.load_dataset`` calls :func:`with_validation`
on whatever a loader returns, so every dataset, a plugin's included, comes back with one:

- **official**: the loader filled ``x_val``/``y_val`` (``val``/``y_val`` when lazy) and
  ``validation`` itself: Speech Commands' ``validation_list.txt``, an UrbanSound8K fold other than
  the test fold (``val_fold``), spoken-digits' held-out voices are examples. ``val_fraction`` and
  ``val_seed`` do not apply and are refused (one clear error).
- **carved**: ``val_fraction`` of the training data (default 10 %), stratified by class and seeded
  with ``val_seed`` (default 0, fixed: the training seed does not move the split, so runs with
  different seeds train on the same data): ``ceil(fraction * n)`` samples in all, each class giving
  its share (:func:`carve_indices`) and keeping at least one training sample. A dataset whose
  training samples carry ``groups`` (a speaker, a voice, a recording) is carved by whole groups
  instead (scikit-learn's ``GroupShuffleSplit``), so no group is on both sides. The validation
  samples come in a shuffled order, so the first N of them (``--eval-samples``) are a random sample too.

``validation`` records what was done (``source``, sizes, fraction, seed, and a ``fingerprint`` of
the held-out indices), so a run's config.json says which split chose its best checkpoint and a
resumed run can check that it is the same. A dataset too small to carve from (more to hold out
than it has samples beyond one per class, a single group) raises one ``SSMDefenseError``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from ..errors import SSMDefenseError
from ..validation import integer
from .base import Dataset, LazyDataset, adopt

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_VAL_SEED = 0
PARAMS = ("val_fraction", "val_seed")  # the dataset parameters every dataset accepts (sd.load_dataset)


def check_fraction(value) -> float:
    """``val_fraction`` as a float in the open interval (0, 1), else one clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SSMDefenseError(f"val_fraction must be a number between 0 and 1 (exclusive); got {value!r}")
    if not (0.0 < float(value) < 1.0) or not math.isfinite(float(value)):
        raise SSMDefenseError(
            f"val_fraction must be between 0 and 1 (exclusive), the share of the training data held out "
            f"for validation; got {value!r}"
        )
    return float(value)


def fingerprint(indices: np.ndarray) -> str:
    """A short digest of held-out indices: equal digests, equal splits."""
    return hashlib.sha1(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def carve_indices(
    y: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices ascending, validation indices in shuffled order) holding out ``ceil(fraction * n)``
    of the ``n`` samples of ``y``, stratified by class, or whole ``groups`` when given.
    ``ValueError`` saying why when it cannot be done.

    Stratified: each class's samples are shuffled and ranked, sample r of a class of n_c getting the
    key (r + u) / n_c (u uniform in [0, 1)); the samples with the smallest keys are held out. Every
    class so gives its share up to one sample (a class of 40 gives 4 of 400 held out from 4,000,
    exactly), small data degrades gracefully (9 held out of 86 samples in 43 classes come from 9
    classes), and the last sample of each class is never held out, so every class keeps one to train
    on. (scikit-learn's stratified ``train_test_split`` refuses any split with fewer held-out samples
    than classes, which would turn away small real datasets that can still be validated on.)
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    n_val = math.ceil(fraction * n)
    if groups is not None:
        from sklearn.model_selection import GroupShuffleSplit

        groups = np.asarray(groups)
        if len(np.unique(groups)) < 2:
            raise ValueError("its training data is a single group, and holding it out would leave nothing to train on")
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        train, val = next(splitter.split(np.arange(n), y, groups))
        lost = np.setdiff1d(np.unique(y), np.unique(y[train]))
        if lost.size:
            raise ValueError(f"the held-out groups take every training sample of class(es) {lost.tolist()}")
        return np.sort(train), rng.permutation(val)
    key = np.full(n, np.inf)  # (n) inf: never held out (the last sample of its class)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))  # (n_c)
        ranks = np.arange(len(members))
        key[members[:-1]] = ((ranks + rng.random(len(members)))[:-1]) / len(members)
    eligible = int(np.isfinite(key).sum())
    if n_val > eligible:
        raise ValueError(
            f"{n_val} of its {n} training samples would be held out, but only {eligible} can be while each of "
            f"the {len(np.unique(y))} classes keeps one to train on"
        )
    val = np.argsort(key, kind="stable")[:n_val]  # mixed classes, in key order
    train = np.setdiff1d(np.arange(n), val)
    return train, val


def with_validation(
    data, name: str, *, val_fraction: float | None = None, val_seed: int | None = None
) -> Dataset | LazyDataset:
    """``data`` (what dataset ``name``'s loader returned) with its validation split: its own, or one
    carved from its training data (see the module docstring). Returns a new object; ``data`` is
    left as it was."""
    data = adopt(data, name)  # a plugin's object as our Dataset or LazyDataset
    if data.y_val is not None:  # its own validation split
        if val_fraction is not None or val_seed is not None:
            source = (getattr(data, "validation", None) or {}).get("description", "its own validation split")
            raise SSMDefenseError(
                f"dataset {name!r} has its own validation split ({source}); val_fraction and val_seed apply only "
                f"to datasets whose validation split is carved from the training data"
            )
        if data.validation is None:
            data.validation = {"source": "official", "description": "the dataset's own", "val": len(data.y_val)}
        return data
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else check_fraction(val_fraction)
    seed = DEFAULT_VAL_SEED if val_seed is None else integer("val_seed", val_seed, 0, error=SSMDefenseError)
    y = np.asarray(data.y_train)
    groups = data.groups
    try:
        train, val = carve_indices(y, fraction, seed, groups)
    except ValueError as exc:
        how = "by group" if groups is not None else "stratified by class"
        raise SSMDefenseError(
            f"dataset {name!r} is too small to carve a validation split from ({fraction:g} of {len(y)} training "
            f"samples, {how}): {' '.join(str(exc).split())}; use more data or another val_fraction"
        ) from None
    record = {
        "source": "carved",
        "description": f"{100 * fraction:g} % of the training data, "
        + ("by whole groups" if groups is not None else "stratified by class")
        + f", seed {seed}",
        "fraction": fraction,
        "seed": seed,
        "stratified_by": "group" if groups is not None else "class",
        "train": int(len(train)),
        "val": int(len(val)),
        "fingerprint": fingerprint(val),
    }
    if groups is not None:
        held_out = np.unique(np.asarray(groups)[val])
        record["held_out_groups"] = [g.item() if hasattr(g, "item") else g for g in held_out]
        groups = np.asarray(groups)[train]
    if isinstance(data, LazyDataset):
        import torch

        return dataclasses.replace(
            data,
            train=torch.utils.data.Subset(data.train, train.tolist()),
            y_train=y[train],
            val=torch.utils.data.Subset(data.train, val.tolist()),
            y_val=y[val],
            validation=record,
            groups=groups,
        )
    return dataclasses.replace(
        data,
        x_train=data.x_train[train],
        y_train=y[train],
        x_val=data.x_train[val],
        y_val=y[val],
        validation=record,
        groups=groups,
    )
