"""The one training loop every defense plugs into.

A defense subclasses ``TrainingLoop`` and overrides ``training_step(model, x, y) -> (loss, logits)``
(the batch it trains on and the loss), or, to take several optimizer steps per batch (FreeAT) or
drive the backward pass itself (YOPO), ``train_batch`` with ``steps_per_batch`` and ``epoch_divisor``;
``on_fit_start`` trains anything first (distillation's teacher), ``extra_timing`` adds its cost.
Parameters are ART-style (``params.py``): ``defense_params``, ``_check_params()``, ``describe()``.

The defaults of those hooks are in ``hooks.py``. The loop owns the rest, once: seeded batches and
everything one process or a DDP rank does differently (``distributed.Strategy``);
``configure_optimizers()`` (AdamW, cosine schedule per batch); after every epoch (``epochs.EpochEnd``,
shared with the ART-trainer adapter) clean and PGD-10 accuracy on the validation data
(``evaluator.py``), best (PGD-10, ties to clean) and last checkpoints and ``metrics.jsonl``
(``checkpoints.py``) and the resume state (``resume.py``); progress bars; the overhead against
standard training (``cost.py``). Labels may be class indices or one-hot (ART's trainers take one-hot only).
"""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path

import numpy as np
import torch
from art.defences.trainer import Trainer

from .. import distributed, progress
from ..data.stream import as_torch_dataset, batches, materialise, training_data, validation_pair
from ..errors import SSMDefenseError
from ..labels import check_labels
from ..seeding import seed_everything
from ..validation import integer
from .checkpoints import finite_loss
from .cost import measure_overhead
from .epochs import EpochEnd
from .evaluator import evaluate_epoch
from .hooks import DefenseHooks
from .params import LOOP_PARAMS, check_loop_params, declare_params
from .resume import cpu_tensors, load_state, save_state


class TrainingLoop(DefenseHooks, Trainer):
    """Base ART ``Trainer`` for ssmdefense defenses (standard training as it stands). A defense stores
    its own parameters, then calls ``super().__init__``, which stores these and calls ``_check_params()``.

    Args:
        classifier: an ``SSMClassifier`` (any ART ``PyTorchClassifier`` works).
        eps (float): L-inf budget of the per-epoch PGD-10 evaluation (and of the training attack in
            adversarial defenses). Default: 0.1.
        batch_size (int): Default: 64.
        lr, weight_decay (float): AdamW's learning rate and weight decay. Defaults: 1e-3, 2e-4.
        ssm_weight_decay (float): weight decay of the SSM parameters that the reference
            implementations exempt (``ssmdefense.optim``: Λ, Δ, Mamba's A_log and D, ...). Default: 0.0.
        eval_max_iter (int): PGD steps of the evaluation. Default: 10.
        eval_samples (int | None): evaluate on the first N validation samples (None: all).
        seed (int): seeds shuffling, initial perturbations and evaluation. Default: 0.
        precision (str): "fp32", or "bf16" to run the training steps (the training attack included)
            under ``torch.autocast`` in bfloat16; evaluation stays in float32. Default: "fp32".
        verbose (bool): progress bars (``ssmdefense.progress``; False: its lines alone). Default: True.
    """

    name = "none"
    #: the keyword parameters a defense accepts, ART-style (an attack's ``attack_params``), the registry's
    #: ``-p`` keys: ``TrainingLoop.defense_params + ("beta", ...)``, or, undeclared, the parent's plus the
    #: keyword-only parameters of the subclass's ``__init__`` (``__init_subclass__``).
    defense_params: tuple[str, ...] = LOOP_PARAMS
    #: defense_params that ``describe()`` leaves out: the run's settings (report.json has eval_samples)
    undescribed_params: tuple[str, ...] = ("eval_samples", "verbose")
    #: whether ``ads`` and ``augment`` may train through its ``train_batch``: no if it trains more (distillation)
    batch_by_batch = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declare_params(cls)  # params.py

    def __init__(
        self,
        classifier,
        *,
        eps: float = 0.1,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 2e-4,
        ssm_weight_decay: float = 0.0,
        eval_max_iter: int = 10,
        eval_samples: int | None = None,
        seed: int = 0,
        precision: str = "fp32",
        verbose: bool = True,
    ):
        super().__init__(classifier)
        self.eps, self.batch_size, self.lr, self.weight_decay = eps, batch_size, lr, weight_decay
        self.ssm_weight_decay = ssm_weight_decay
        self.eval_max_iter, self.eval_samples, self.seed, self.verbose = eval_max_iter, eval_samples, seed, verbose
        self.precision = precision
        self.history: list[dict] = []
        self.best_epoch, self.best_state = None, None  # the best epoch's number and weights, after fit
        self.timing: dict = {}
        self._check_params()

    def _check_params(self) -> None:
        """Raise a ``ValueError`` for a bad parameter; a defense extends it (``super()._check_params()``)."""
        check_loop_params(self)  # params.py

    def describe(self) -> dict:
        """The defense's parameters, as recorded in reports: its ``defense_params`` (but the
        ``undescribed_params``) with the values it holds, defaults resolved (e.g. ``eps_step``)."""
        return {key: getattr(self, key) for key in self.defense_params if key not in self.undescribed_params}

    # ---- the loop --------------------------------------------------------------------------------
    @property
    def clip(self) -> tuple[float, float]:
        lo, hi = self._classifier.clip_values
        return float(lo), float(hi)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict:
        """Clean and PGD-``eval_max_iter`` accuracy of the current weights on (x, y) (``evaluator.py``)."""
        return evaluate_epoch(
            self._classifier, x, y, eps=self.eps, max_iter=self.eval_max_iter, seed=self.seed, samples=self.eval_samples
        )

    def fit(
        self,
        x,
        y=None,
        validation_data=None,
        nb_epochs: int = 10,
        batch_size: int | None = None,
        out_dir=None,
        checkpoint_extra: dict | None = None,
        resume: bool = False,
        num_workers: int = 0,
        callbacks=(),
        **kwargs,
    ):
        """Train the classifier's model in place; returns ``self.history``, one dict per epoch.

        Args:
            x, y: training data (natural shape) and labels (indices or one-hot); or ``x`` a lazily
                loaded ``torch.utils.data.Dataset`` of (x, label) items (``LazyDataset.train``) and
                ``y`` None, read batch by batch (``num_workers`` DataLoader workers decode it).
            validation_data: (x_val, y_val), or a lazy ``Dataset``, evaluated after every epoch; picks
                the best checkpoint.
            nb_epochs: number of epochs (divided by ``epoch_divisor``, rounded up).
            batch_size: overrides the constructor's. Under ``torchrun`` it is the global batch, shared
                out over the ranks (``ssmdefense.distributed``).
            out_dir: if given, writes ``metrics.jsonl``, ``best.*``, ``last.*`` and ``state.*`` there
                (rank 0 only, under torchrun).
            checkpoint_extra: JSON values stored in every checkpoint (dataset name, ...).
            resume: continue from ``out_dir/state.*`` (an interrupted ``fit`` with the same
                arguments); the result is the same as one uninterrupted ``fit``.
            callbacks: objects whose ``on_epoch_end(row)`` gets each finished epoch's row, e.g.
                ``tensorboard.TensorBoardLogger`` (``epochs.EpochEnd``; rank 0 only, under torchrun).
        """
        if kwargs:
            raise SSMDefenseError(f"unknown fit() argument(s): {', '.join(sorted(kwargs))}")
        integer("nb_epochs", nb_epochs, 1, error=SSMDefenseError)
        clf = self._classifier
        x, y = training_data(x, y, clf)
        validation = training_data(*validation_pair(validation_data), clf) if validation_data is not None else None
        out = Path(out_dir) if out_dir is not None else None
        if resume and out is None:
            raise SSMDefenseError("resume=True needs the out_dir of the interrupted run")
        strategy = distributed.Strategy()
        epochs, batch_size = -(-nb_epochs // self.epoch_divisor), batch_size or self.batch_size
        strategy.check_batch_size(batch_size)

        self.on_fit_start(x, y, nb_epochs=nb_epochs, batch_size=batch_size, out=out, resume=resume)
        seed_everything(self.seed)
        generator, loader = strategy.data(as_torch_dataset(x, y), batch_size, self.seed, num_workers)
        optimizer, scheduler = self.configure_optimizers(clf.model, epochs * len(loader) * self.steps_per_batch)
        self.history = []
        writes = out if strategy.main else None  # rank 0 alone writes (and runs the callbacks), under torchrun
        end = EpochEnd(self, clf, validation, out=writes, checkpoint_extra=checkpoint_extra, epochs=epochs,
                       verbose=strategy.main,
                       callbacks=callbacks if strategy.main else ())  # fmt: skip
        first = 1
        if resume:
            end.best_key, first = load_state(self, out, optimizer, scheduler, generator, epochs)
        trained = strategy.wrap(clf.model, clf.device)
        for epoch in range(first, epochs + 1):
            strategy.start_epoch(self.seed, epoch)
            # one draw from the shuffle generator per epoch, as tqdm.auto's extra iter(loader) made before
            # the loop read batch shares: the same seed gives the same batches as runs made before
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            row = self._train_epoch(trained, optimizer, scheduler, loader, strategy, epoch, epochs, out)
            strategy.in_sync(clf.model, f"{self.name}, epoch {epoch}")
            # what every rank carries from batch to batch (FreeAT's perturbation), saved by rank 0 for resume
            carried = strategy.gather(cpu_tensors(self.extra_state()))
            state = dict(optimizer=optimizer, scheduler=scheduler, generator=generator, carried=carried)
            end(row, functools.partial(save_state, self, out, epoch, **state))  # resume.py, after the checkpoints
        self.timing = self._cost(x, y, batch_size, nb_epochs, num_workers) if strategy.main else {}  # rank 0 alone
        strategy.barrier()
        return self.history

    def _cost(self, x, y, batch_size: int, nb_epochs: int, num_workers: int) -> dict:
        """``timing``: the cost of a batch against standard training's, measured on a few batches
        (``measure_overhead``), and what the defense adds (``extra_timing``)."""
        with progress.phase(f"{self.name}: timing a few batches against standard training") as shown:
            x_cost, y_cost = materialise(x, y, limit=3 * batch_size, num_workers=num_workers)
            timing = self.measure_overhead(x_cost, y_cost, batch_size)
            timing = {**timing, **self.extra_timing(timing, nb_epochs)}
            if timing.get("overhead_ratio") is not None:
                shown.done(f"overhead ratio {timing['overhead_ratio']:.2f}")
        return timing

    def _train_epoch(self, trained, optimizer, scheduler, loader, strategy, epoch: int, epochs: int, out) -> dict:
        """One epoch over ``loader`` (this rank's batches); its row: the loss and training accuracy
        summed over the ranks, the learning rate and the seconds it took."""
        self._classifier.model.train()
        start = time.perf_counter()
        shown = progress.phase(f"{self.name} epoch {epoch}/{epochs}", len(loader), "batches", line=False)
        no_bars = contextlib.nullcontext() if self.verbose else progress.without_bars()
        with no_bars, shown if strategy.main else contextlib.nullcontext() as bar:  # EpochEnd prints its line
            row = self._train_batches(trained, optimizer, scheduler, loader, strategy, epoch, out, bar)
        lr, seconds = optimizer.param_groups[0]["lr"], time.perf_counter() - start
        return {"epoch": epoch, **row, "lr": lr, "epoch_seconds": seconds}

    def _train_batches(self, trained, optimizer, scheduler, loader, strategy, epoch: int, out, bar) -> dict:
        """The batches of one epoch; ``bar`` (a ``progress.Phase`` on rank 0, else None) counts them."""
        clf = self._classifier
        loss_sum, correct, seen = 0.0, 0, 0
        for batch, (xb, yb) in enumerate(batches(loader), 1):
            xb, yb = xb.to(clf.device), check_labels(yb, clf.nb_classes).to(clf.device)  # (B ...), (B)
            strategy.start_batch(batch, len(yb))
            with (
                distributed.peers_watched(),
                torch.autocast(clf.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"),
            ):
                loss, logits = self.train_batch(trained, optimizer, scheduler, xb, yb)
            clf.model.train()  # a training step may have switched to eval mode to attack
            sums = strategy.sum([loss.item() * len(yb), int((logits.argmax(1) == yb).sum()), len(yb)])
            loss_sum += finite_loss(sums[0], epoch, batch, out)  # the same on every rank: all stop together
            correct, seen = correct + int(sums[1]), seen + int(sums[2])
            if bar is not None:
                bar.update()
                bar.status(f"loss {loss_sum / seen:.3f}, acc {correct / seen:.3f}")
        return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen}

    def measure_overhead(self, x: np.ndarray, y: np.ndarray, batch_size: int, batches: int = 3) -> dict:
        """This defense's seconds per batch against standard training's and the run's overhead ratio
        (``defenses.cost``); a defense whose batches are standard ones returns {}."""
        return measure_overhead(self, x, y, batch_size, batches)

    def restore_best(self) -> None:
        """Load the best epoch's weights into the classifier's model."""
        if self.best_state is None:
            raise SSMDefenseError("no best checkpoint yet: call fit() first")
        self._classifier.body.load_state_dict(self.best_state)
