"""Checkpoints as safetensors (weights) + JSON (how to rebuild). Never pickle.

``save(clf, "run/best")`` writes ``run/best.safetensors`` and ``run/best.json``;
``load("run/best")`` (or the run directory, which means its ``best``) rebuilds the classifier.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .api import build_model
from .errors import CheckpointError, SSMDefenseError
from .estimators import SSMClassifier

FORMAT = "ssmdefense.checkpoint"
FORMAT_VERSION = 1


def _stem(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def save(clf: SSMClassifier, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``path.safetensors`` and ``path.json`` for an ``SSMClassifier``; returns the stem.

    ``extra`` (JSON values) is stored under "extra" (the run's dataset, epoch, metrics, ...).
    """
    from safetensors.torch import save as st_save

    body = clf.body
    config = getattr(body, "ssmdefense_config", None)
    if config is None:
        raise SSMDefenseError(
            "this model was not built by ssmdefense.build_model, so its checkpoint "
            "could not be rebuilt; build models by name to save them"
        )
    clip = getattr(clf, "natural_clip_values", clf.clip_values)
    stem = _stem(path)
    if not stem.parent.exists():
        raise SSMDefenseError(f"directory {stem.parent} does not exist")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config,
        "classifier": {  # natural input shape and range: the sequence mode rebuilds the rest
            "input_shape": list(getattr(clf, "natural_shape", clf.input_shape)),
            "nb_classes": int(clf.nb_classes),
            "sequence": clf.sequence,
            "sequence_params": dict(getattr(clf, "sequence_params", {})),
            "sample_rate": getattr(clf, "sample_rate", None),
            "clip_values": None if clip is None else [float(v) for v in clip],
        },
        # what kernel=auto resolved to on the device this was saved from (informative: loading
        # resolves again on the loading device)
        "kernels": {"device": clf.device.type, **clf.kernels},
        "extra": extra or {},
    }
    try:
        meta_bytes = json.dumps(meta, indent=2).encode()
    except TypeError as exc:
        raise SSMDefenseError(f"checkpoint metadata must be JSON values: {exc}") from None
    tensors = {k: v.detach().cpu().contiguous() for k, v in body.state_dict().items()}
    _atomic_write_bytes(stem.with_suffix(".safetensors"), st_save(tensors))
    _atomic_write_bytes(stem.with_suffix(".json"), meta_bytes)
    return stem


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON half of a checkpoint, validated."""
    stem = _stem(path)
    if stem.is_dir():
        stem = stem / "best"
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        raise CheckpointError(f"no checkpoint at {stem} (missing {meta_path.name})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint metadata {meta_path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not an ssmdefense checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path} has format version {meta.get('format_version')!r}; "
            f"this ssmdefense reads version {FORMAT_VERSION}"
        )
    for key in ("model", "classifier"):
        if not isinstance(meta.get(key), dict):
            raise CheckpointError(f"{meta_path} lacks its {key!r} section")
    meta["_stem"] = str(stem)
    return meta


def load(path: str | os.PathLike, device_type: str = "gpu") -> SSMClassifier:
    """Rebuild the ``SSMClassifier`` saved at ``path`` (a stem, either file, or a run directory)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_meta(path)
    stem = Path(meta["_stem"])
    weights = stem.with_suffix(".safetensors")
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint weights at {weights}")
    m, c = meta["model"], meta["classifier"]
    try:
        body = build_model(m["name"], m["d_input"], m["n_classes"], **m.get("params", {}))
        state = load_file(str(weights))
        body.load_state_dict(state, strict=True)
        clf = SSMClassifier(
            body,
            input_shape=tuple(c["input_shape"]),
            nb_classes=c["nb_classes"],
            sequence=c["sequence"],
            sequence_params=c.get("sequence_params") or {},
            sample_rate=c.get("sample_rate"),
            clip_values=None if c.get("clip_values") is None else tuple(c["clip_values"]),
            device_type=device_type,
        )
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {stem} has an invalid configuration: {exc}") from None
    except (SafetensorError, RuntimeError, OSError) as exc:
        # torch's state_dict error is a heading and one line per problem: keep the heading and the first
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        msg = " ".join(lines[:2]) if lines else type(exc).__name__
        raise CheckpointError(f"checkpoint {weights} does not match its configuration or is corrupt: {msg}") from None
    clf.checkpoint_meta = {k: v for k, v in meta.items() if k != "_stem"}
    return clf
