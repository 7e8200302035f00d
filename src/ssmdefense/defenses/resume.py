"""The training loop's resume state: after every epoch, ``state.safetensors`` + ``state.json`` hold the
weights (current and best), the optimizer and schedule, every random generator, the history and the
defense's own carried tensors, so ``fit(..., resume=True)`` continues an interrupted run and ends
with the same numbers as an uninterrupted one. Safetensors and JSON only, never pickle.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError


def save_state(trainer, out: Path, epoch, best_key, optimizer, scheduler, generator) -> None:
    """Everything ``resume`` needs, as safetensors (tensors) + JSON (the rest); never pickle."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in trainer._classifier.body.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in trainer.best_state.items()})
    optim = optimizer.state_dict()
    for index, state in optim["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    np_state = np.random.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.loader"] = generator.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in trainer.extra_state().items()})
    meta = {
        "epoch": epoch,
        "best_key": list(best_key),
        "best_epoch": trainer.best_epoch,
        "history": trainer.history,
        "defense": trainer.name,
        "describe": trainer.describe(),
        "optim_param_groups": optim["param_groups"],
        "scheduler": scheduler.state_dict(),
        "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "rng_python": json.loads(json.dumps(random.getstate())),
    }
    tmp = out / f".state.partial-{epoch}"
    save_file(tensors, str(tmp.with_suffix(".safetensors")))
    tmp.with_suffix(".json").write_text(json.dumps(meta) + "\n")
    # The JSON names the epoch; replacing the tensors first and the JSON last keeps the pair
    # consistent up to the moment the JSON appears (resume checks the two agree).
    tensors_path = out / "state.safetensors"
    tmp.with_suffix(".safetensors").replace(tensors_path)
    tmp.with_suffix(".json").replace(out / "state.json")


def load_state(trainer, out: Path, optimizer, scheduler, generator, epochs: int):
    """Restore what ``save_state`` wrote into the trainer, its model, the optimizer, the schedule and
    the random generators, and ``metrics.jsonl`` to the saved history; returns (best_key, the first
    epoch still to run)."""
    try:
        meta = json.loads((out / "state.json").read_text())
        tensors = load_file(str(out / "state.safetensors"))
    except FileNotFoundError:
        raise CheckpointError(f"{out} has no state.json/state.safetensors to resume from") from None
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"corrupt resume state in {out}: {exc}") from None
    if meta.get("defense") != trainer.name:
        raise CheckpointError(f"{out} was trained by defense {meta.get('defense')!r}, not {trainer.name!r}")
    if meta["epoch"] >= epochs:
        raise CheckpointError(f"{out} already finished its {meta['epoch']} epochs; nothing to resume")
    body = trainer._classifier.body
    body.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    trainer.best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optim_param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    generator.set_state(tensors["rng.loader"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    name, pos, has_gauss, cached = meta["rng_numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["rng_python"]
    random.setstate((version, tuple(internal), gauss))
    device = trainer._classifier.device
    trainer.load_extra_state({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("extra.")})
    trainer.history, trainer.best_epoch = meta["history"], meta["best_epoch"]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trainer.history))
    return tuple(meta["best_key"]), meta["epoch"] + 1
