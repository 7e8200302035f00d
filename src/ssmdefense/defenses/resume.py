"""The training loop's resume state: after every epoch, ``state.json`` and the tensors file it names
(``state-<epoch>.safetensors``) hold the weights (current and best), the optimizer and schedule,
every random generator, the history and the defense's own carried tensors, so
``fit(..., resume=True)`` continues an interrupted run and ends with the same numbers as an
uninterrupted one. Safetensors and JSON only, never pickle.

Under ``torchrun`` rank 0 writes the state. The ranks share the weights, the optimizer and the
shuffle, and reseed their attack randomness every epoch (``distributed.rank_seed``); what a rank
carries from batch to batch on its own (FreeAT's perturbation of its share) is gathered, and rank
``r``'s tensors are saved as ``rank<r>.extra.<name>`` beside rank 0's ``extra.<name>``. On resume
each rank takes its own; a rank the saved run did not have (more processes than before) takes
rank 0's.

One atomic step commits an epoch: the tensors are written in full under their own name first, then
``state.json`` is replaced (``os.replace``) by one that names them, then the previous epoch's tensors
are deleted. A process killed at any moment (SIGKILL included) leaves a ``state.json`` whose tensors
file is complete; the tensors also carry their epoch, and loading checks that it matches.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .. import distributed
from ..errors import CheckpointError


def cpu_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` detached, on the CPU and contiguous: what a state file holds."""
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def save_state(trainer, out: Path, epoch, best_key, optimizer, scheduler, generator, carried=None) -> None:
    """Everything ``resume`` needs, as safetensors (tensors) + JSON (the rest); never pickle.
    ``carried``: every rank's ``extra_state()`` in rank order, under torchrun (None in one process)."""
    tensors = {f"model.{k}": v for k, v in cpu_tensors(trainer._classifier.body.state_dict()).items()}
    tensors.update({f"best.{k}": v for k, v in cpu_tensors(trainer.best_state).items()})
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
    tensors.update({f"extra.{k}": v for k, v in cpu_tensors(trainer.extra_state()).items()})
    for rank, theirs in enumerate((carried or [])[1:], start=1):
        tensors.update({f"rank{rank}.extra.{k}": v for k, v in cpu_tensors(theirs).items()})
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
    tensors_name = f"state-{epoch}.safetensors"
    partial = out / f".{tensors_name}.partial"
    save_file(tensors, str(partial), metadata={"epoch": str(epoch)})
    partial.replace(out / tensors_name)
    meta["tensors"] = tensors_name
    tmp_json = out / ".state.json.partial"
    tmp_json.write_text(json.dumps(meta) + "\n")
    tmp_json.replace(out / "state.json")  # the commit point: the new epoch's state is now the state
    for old in out.glob("state*.safetensors"):  # older epochs' tensors (and the name before this scheme)
        if old.name != tensors_name:
            old.unlink(missing_ok=True)


def load_state(trainer, out: Path, optimizer, scheduler, generator, epochs: int):
    """Restore what ``save_state`` wrote into the trainer, its model, the optimizer, the schedule and
    the random generators, and ``metrics.jsonl`` to the saved history; returns (best_key, the first
    epoch still to run)."""
    try:
        meta = json.loads((out / "state.json").read_text())
        path = out / meta.get("tensors", "state.safetensors")  # runs saved before the epoch-named tensors
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            saved_epoch = (f.metadata() or {}).get("epoch", str(meta["epoch"]))
    except FileNotFoundError:
        raise CheckpointError(f"{out} has no state.json (and its tensors) to resume from") from None
    except (json.JSONDecodeError, SafetensorError, OSError, KeyError) as exc:
        raise CheckpointError(f"corrupt resume state in {out}: {exc}") from None
    if saved_epoch != str(meta["epoch"]):
        raise CheckpointError(
            f"corrupt resume state in {out}: state.json is epoch {meta['epoch']}, its tensors epoch {saved_epoch}"
        )
    if meta.get("defense") != trainer.name:
        raise CheckpointError(f"{out} was trained by defense {meta.get('defense')!r}, not {trainer.name!r}")
    if meta["epoch"] > epochs:
        raise CheckpointError(f"{out} ran {meta['epoch']} epochs, more than the {epochs} asked for")
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
    extras = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    own = f"rank{distributed.current().rank}.extra."
    extras = {k[len(own) :]: v for k, v in tensors.items() if k.startswith(own)} or extras
    trainer.load_extra_state({k: v.to(device) for k, v in extras.items()})
    trainer.history, trainer.best_epoch = meta["history"], meta["best_epoch"]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trainer.history))
    return tuple(meta["best_key"]), meta["epoch"] + 1
