"""The one training loop every defense plugs into.

A defense subclasses ``TrainingLoop`` and overrides ``training_step(model, x, y) -> (loss,
logits)``: how to make the batch it trains on (adversarial or not) and the loss on it. A defense
that takes several optimizer steps per batch (FreeAT) or drives the backward pass itself (YOPO)
overrides ``train_batch(model, optimizer, scheduler, x, y)`` instead and says how many optimizer
steps a batch takes (``steps_per_batch``) and by how much it divides the epochs
(``epoch_divisor``). The loop owns everything else, once:

- a torch ``DataLoader`` (seeded shuffling), AdamW (lr 1e-3, weight decay 2e-4) and a cosine
  learning-rate schedule stepped per batch;
- per-epoch evaluation on ``validation_data``: clean accuracy and PGD-10 robust accuracy through
  ART's ``ProjectedGradientDescent`` (the ``pgd`` attack plugin), at ``eps``;
- the best checkpoint (highest PGD-10 robust accuracy, ties to higher clean accuracy) and the last;
- ``metrics.jsonl`` (one line per epoch) when ``out_dir`` is given, a progress bar, a fixed seed;
- ``state.safetensors`` + ``state.json`` after every epoch (weights, optimizer, schedule, random
  generators, history), so ``fit(..., resume=True)`` continues an interrupted run and ends with
  the same numbers as an uninterrupted one;
- the overhead against standard training, timed side by side in the same process after training.

It avoids three traps of ART's own trainers: it takes class-index or one-hot labels, uses any
per-step scheduler, and keeps the best checkpoint, not only the last.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from art.defences.trainer import Trainer

from ..errors import CheckpointError, SSMDefenseError
from ..seeding import seed_everything, seeded

LOOP_PARAMS = ("eps", "batch_size", "lr", "weight_decay", "eval_max_iter", "eval_samples", "seed", "verbose")


def to_indices(y: np.ndarray, nb_classes: int) -> np.ndarray:
    """Class indices (N,) int64 from indices or one-hot / probability rows (N, C)."""
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] != nb_classes:
            raise SSMDefenseError(f"one-hot labels have {y.shape[1]} columns; expected {nb_classes}")
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise SSMDefenseError(f"labels must be class indices (N,) or one-hot (N, C); got shape {y.shape}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= nb_classes):
        raise SSMDefenseError(f"labels must lie in 0..{nb_classes - 1}; got {y.min()}..{y.max()}")
    return y


class TrainingLoop(Trainer):
    """Base ART ``Trainer`` for ssmdefense defenses (standard training as it stands).

    Args:
        classifier: an ``SSMClassifier`` (any ART ``PyTorchClassifier`` works).
        eps (float): L-inf budget of the per-epoch PGD-10 evaluation (and of the training attack in
            adversarial defenses). Default: 0.1.
        batch_size (int): Default: 64.
        lr (float): AdamW learning rate. Default: 1e-3.
        weight_decay (float): AdamW weight decay. Default: 2e-4.
        eval_max_iter (int): PGD steps of the evaluation. Default: 10.
        eval_samples (int | None): evaluate on the first N validation samples (None: all).
        seed (int): seeds shuffling, initial perturbations and evaluation. Default: 0.
        verbose (bool): progress bars and a line per epoch. Default: True.
    """

    name = "none"

    def __init__(self, classifier, *, eps: float = 0.1, batch_size: int = 64, lr: float = 1e-3,
                 weight_decay: float = 2e-4, eval_max_iter: int = 10, eval_samples: int | None = None,
                 seed: int = 0, verbose: bool = True):
        super().__init__(classifier)
        self.eps = eps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.eval_max_iter = eval_max_iter
        self.eval_samples = eval_samples
        self.seed = seed
        self.verbose = verbose
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.best_state: dict | None = None
        self.timing: dict = {}
        self._check_params()

    def _check_params(self) -> None:
        def positive(key, value, kind=(int, float)):
            if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
                raise ValueError(f"{key} must be a positive {'integer' if kind is int else 'number'}; got {value!r}")

        positive("eps", self.eps)
        positive("batch_size", self.batch_size, int)
        positive("lr", self.lr)
        positive("eval_max_iter", self.eval_max_iter, int)
        if self.eval_samples is not None:
            positive("eval_samples", self.eval_samples, int)
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")
        clip = self._classifier.clip_values
        if clip is None:
            raise ValueError("the classifier needs clip_values (e.g. (0.0, 1.0)) to keep perturbations valid")

    # ---- what a defense overrides ------------------------------------------------------------
    def training_step(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Loss to minimise on batch ``x`` (B, ...natural shape), ``y`` (B,) and the logits it used."""
        logits = model(x)  # (B C)
        return torch.nn.functional.cross_entropy(logits, y), logits

    #: optimizer (and schedule) steps one ``train_batch`` takes
    steps_per_batch = 1
    #: fit(nb_epochs) runs ceil(nb_epochs / epoch_divisor) epochs (FreeAT's replays keep the budget)
    epoch_divisor = 1

    def train_batch(self, model: torch.nn.Module, optimizer, scheduler, x: torch.Tensor, y: torch.Tensor):
        """Train on one batch: loss, backward, optimizer and schedule steps. Returns the detached
        (loss, logits) the progress bar and the training accuracy use."""
        loss, logits = self.training_step(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.detach(), logits.detach()

    def on_fit_start(self) -> None:
        """Reset what a defense carries from batch to batch, so each ``fit`` starts afresh."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors a defense carries from batch to batch (FreeAT's perturbation), saved for resume."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what ``extra_state`` returned."""

    def describe(self) -> dict:
        """The defense's parameters, as recorded in reports."""
        return {"eps": self.eps, "batch_size": self.batch_size, "lr": self.lr,
                "weight_decay": self.weight_decay, "eval_max_iter": self.eval_max_iter, "seed": self.seed}

    # ---- the loop --------------------------------------------------------------------------------
    @property
    def clip(self) -> tuple[float, float]:
        lo, hi = self._classifier.clip_values
        return float(lo), float(hi)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict:
        """Clean and PGD-``eval_max_iter`` accuracy of the current weights on (x, y)."""
        from ..api import get_attack

        clf = self._classifier
        if self.eval_samples is not None:
            x, y = x[: self.eval_samples], y[: self.eval_samples]
        attack = get_attack("pgd", clf, eps=self.eps, max_iter=self.eval_max_iter, batch_size=256)
        with seeded(self.seed):  # the same random starts every epoch: comparable numbers
            x_adv = attack.generate(x.astype(np.float32), y)
        return {"clean_accuracy": clf.accuracy(x, y),
                "robust_accuracy": {f"pgd-{self.eval_max_iter}": clf.accuracy(x_adv, y)}}

    def fit(self, x: np.ndarray, y: np.ndarray, validation_data=None, nb_epochs: int = 10,
            batch_size: int | None = None, out_dir=None, checkpoint_extra: dict | None = None,
            resume: bool = False, **kwargs):
        """Train the classifier's model in place.

        Args:
            x, y: training data (natural shape) and labels (indices or one-hot).
            validation_data: (x_val, y_val) evaluated after every epoch; picks the best checkpoint.
            nb_epochs: number of epochs (divided by ``epoch_divisor``, rounded up).
            batch_size: overrides the constructor's.
            out_dir: if given, writes ``metrics.jsonl``, ``best.*``, ``last.*`` and ``state.*`` there.
            checkpoint_extra: JSON values stored in every checkpoint (dataset name, ...).
            resume: continue from ``out_dir/state.*`` (an interrupted ``fit`` with the same
                arguments); the result is the same as one uninterrupted ``fit``.
        Returns:
            ``self.history``: one dict per epoch.
        """
        from tqdm.auto import tqdm

        from ..checkpoint import save

        if kwargs:
            raise SSMDefenseError(f"unknown fit() argument(s): {', '.join(sorted(kwargs))}")
        if not isinstance(nb_epochs, int) or nb_epochs < 1:
            raise SSMDefenseError(f"nb_epochs must be an integer >= 1; got {nb_epochs!r}")
        clf = self._classifier
        x = np.asarray(x, dtype=np.float32)
        if tuple(x.shape[1:]) != tuple(clf.input_shape):
            raise SSMDefenseError(f"x has shape {x.shape[1:]} per sample; the classifier expects {clf.input_shape}")
        y = to_indices(y, clf.nb_classes)
        if len(x) != len(y):
            raise SSMDefenseError(f"x has {len(x)} samples but y has {len(y)}")
        if validation_data is not None:
            x_val, y_val = validation_data
            x_val = np.asarray(x_val, dtype=np.float32)
            y_val = to_indices(y_val, clf.nb_classes)
        out = Path(out_dir) if out_dir is not None else None
        if resume and out is None:
            raise SSMDefenseError("resume=True needs the out_dir of the interrupted run")
        extra = dict(checkpoint_extra or {})
        epochs = -(-nb_epochs // self.epoch_divisor)

        seed_everything(self.seed)
        self.on_fit_start()
        model, device = clf.model, clf.device
        batch_size = batch_size or self.batch_size
        generator = torch.Generator().manual_seed(self.seed)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
            batch_size=batch_size, shuffle=True, generator=generator)
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs * len(loader) * self.steps_per_batch)
        best_key = None
        self.history = []
        first = 1
        if resume:
            best_key, first = self._load_state(out, optimizer, scheduler, generator, epochs)
            (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
        for epoch in range(first, epochs + 1):
            model.train()
            start = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(loader, desc=f"{self.name} epoch {epoch}/{epochs}", disable=not self.verbose,
                       leave=False, unit="batch")
            for xb, yb in bar:
                xb, yb = xb.to(device), yb.to(device)  # (B ...), (B)
                loss, logits = self.train_batch(model, optimizer, scheduler, xb, yb)
                model.train()  # a training step may have switched to eval mode to attack
                loss_sum += loss.item() * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(yb)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                   "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - start}
            if validation_data is not None:
                t_eval = time.perf_counter()
                row.update(self.evaluate(x_val, y_val))
                row["eval_seconds"] = time.perf_counter() - t_eval
            self.history.append(row)
            key = (row["robust_accuracy"][f"pgd-{self.eval_max_iter}"], row["clean_accuracy"]) \
                if validation_data is not None else (epoch,)
            improved = best_key is None or tuple(key) > tuple(best_key)
            if improved:
                best_key, self.best_epoch = key, epoch
                self.best_state = copy.deepcopy(clf.body.state_dict())
            if out is not None:
                meta = {**extra, "epoch": epoch, "defense": self.name, "metrics": row}
                save(clf, out / "last", extra=meta)
                if improved:
                    save(clf, out / "best", extra=meta)
                with open(out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                self._save_state(out, epoch, best_key, optimizer, scheduler, generator)
            if self.verbose:
                msg = f"epoch {epoch}/{epochs}  loss {row['train_loss']:.4f}  train acc {row['train_accuracy']:.3f}"
                if validation_data is not None:
                    ra = row["robust_accuracy"][f"pgd-{self.eval_max_iter}"]
                    msg += f"  clean {row['clean_accuracy']:.3f}  pgd-{self.eval_max_iter} {ra:.3f}"
                tqdm.write(msg + f"  ({row['epoch_seconds']:.1f}s)" + ("  *best" if improved else ""))
        self.timing = self.measure_overhead(x, y, batch_size)
        return self.history

    # ---- resume --------------------------------------------------------------------------------
    def _save_state(self, out: Path, epoch, best_key, optimizer, scheduler, generator) -> None:
        """Everything ``resume`` needs, as safetensors (tensors) + JSON (the rest); never pickle."""
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self._classifier.body.state_dict().items()}
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in self.best_state.items()})
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
        tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in self.extra_state().items()})
        meta = {"epoch": epoch, "best_key": list(best_key), "best_epoch": self.best_epoch, "history": self.history,
                "defense": self.name, "describe": self.describe(),
                "optim_param_groups": optim["param_groups"], "scheduler": scheduler.state_dict(),
                "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                "rng_python": json.loads(json.dumps(random.getstate()))}
        tmp = out / f".state.partial-{epoch}"
        save_file(tensors, str(tmp.with_suffix(".safetensors")))
        tmp.with_suffix(".json").write_text(json.dumps(meta) + "\n")
        # The JSON names the epoch; replacing the tensors first and the JSON last keeps the pair
        # consistent up to the moment the JSON appears (resume checks the two agree).
        tensors_path = out / "state.safetensors"
        tmp.with_suffix(".safetensors").replace(tensors_path)
        tmp.with_suffix(".json").replace(out / "state.json")

    def _load_state(self, out: Path, optimizer, scheduler, generator, epochs: int):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            meta = json.loads((out / "state.json").read_text())
            tensors = load_file(str(out / "state.safetensors"))
        except FileNotFoundError:
            raise CheckpointError(f"{out} has no state.json/state.safetensors to resume from") from None
        except (json.JSONDecodeError, SafetensorError, OSError) as exc:
            raise CheckpointError(f"corrupt resume state in {out}: {exc}") from None
        if meta.get("defense") != self.name:
            raise CheckpointError(f"{out} was trained by defense {meta.get('defense')!r}, not {self.name!r}")
        if meta["epoch"] >= epochs:
            raise CheckpointError(f"{out} already finished its {meta['epoch']} epochs; nothing to resume")
        body = self._classifier.body
        body.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
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
        device = self._classifier.device
        self.load_extra_state({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("extra.")})
        self.history, self.best_epoch = meta["history"], meta["best_epoch"]
        return tuple(meta["best_key"]), meta["epoch"] + 1

    # ---- cost ----------------------------------------------------------------------------------
    def measure_overhead(self, x: np.ndarray, y: np.ndarray, batch_size: int, batches: int = 3) -> dict:
        """Seconds per batch of this defense and of standard training, timed side by side on copies
        of the model (the trained one is untouched, random generators restored), and the overhead
        ratio of a whole run: (defense seconds per batch / standard) / ``epoch_divisor``."""
        clf = self._classifier
        n = min(len(x), batches * batch_size)
        xb = torch.from_numpy(x[:n]).to(clf.device).split(batch_size)  # batches x (B ...)
        yb = torch.from_numpy(y[:n]).to(clf.device).split(batch_size)  # batches x (B)

        def timed(step) -> float:
            model = copy.deepcopy(clf.model).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
            start = time.perf_counter()
            for xi, yi in zip(xb, yb):
                step(model, optimizer, scheduler, xi, yi)
            return (time.perf_counter() - start) / len(xb)

        with seeded(self.seed):
            extra = {k: v.clone() for k, v in self.extra_state().items()}
            defense = timed(self.train_batch)
            standard = timed(_standard_batch)
            self.load_extra_state(extra)
        return {"defense_batch_seconds": defense, "standard_batch_seconds": standard,
                "overhead_ratio": defense / standard / self.epoch_divisor}

    def restore_best(self) -> None:
        """Load the best epoch's weights into the classifier's model."""
        if self.best_state is None:
            raise SSMDefenseError("no best checkpoint yet: call fit() first")
        self._classifier.body.load_state_dict(self.best_state)



def _standard_batch(model, optimizer, scheduler, x, y):
    """One step of standard training (cross-entropy on the clean batch): the overhead reference."""
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


class WithBase(TrainingLoop):
    """A defense that changes the model or the training data and leaves the training itself to a
    base defense: ``base`` names any registered defense built on this loop (``pgd-at``, ``trades``,
    ``free-at``, ``yopo``, ``minmax``, ...). The loop's parameters are shared; every other
    parameter goes to the base, which checks it. Subclasses override ``transform(x)``."""

    #: the registry passes parameters it cannot list on to this factory (the base's)
    accepts_unlisted_params = True

    def __init__(self, classifier, *, base: str = "pgd-at", **params):
        from ..api import get_defense
        from ..plugins import registry

        loop = {k: params.pop(k) for k in LOOP_PARAMS if k in params}
        super().__init__(classifier, **loop)
        factory = registry("defenses").get(base).factory
        if not (isinstance(factory, type) and issubclass(factory, TrainingLoop)) or issubclass(factory, WithBase) \
                or factory.fit is not TrainingLoop.fit:
            raise ValueError(f"base must be a defense that trains batch by batch on the shared loop "
                             f"(pgd-at, trades, free-at, yopo, minmax, fbf, none, ...); got {base!r}")
        self.base = get_defense(base, classifier, eps=self.eps, seed=self.seed, verbose=False, **params)
        self.steps_per_batch, self.epoch_divisor = self.base.steps_per_batch, self.base.epoch_divisor

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The batch the base defense trains on (identity here)."""
        return x

    def train_batch(self, model, optimizer, scheduler, x, y):
        return self.base.train_batch(model, optimizer, scheduler, self.transform(x), y)

    def on_fit_start(self):
        self.base.on_fit_start()

    def extra_state(self):
        return self.base.extra_state()

    def load_extra_state(self, tensors):
        self.base.load_extra_state(tensors)

    def describe(self) -> dict:
        own = super().describe()
        return {**own, "base": self.base.name,
                "base_params": {k: v for k, v in self.base.describe().items() if k not in own}}
