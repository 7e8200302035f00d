"""The one training loop every defense plugs into.

A defense subclasses ``TrainingLoop`` and overrides ``training_step(model, x, y) -> (loss, logits)``
(the batch it trains on and the loss), or, to take several optimizer steps per batch (FreeAT) or
drive the backward pass itself (YOPO), ``train_batch`` with ``steps_per_batch`` and ``epoch_divisor``;
``on_fit_start`` trains anything first (distillation's teacher), ``extra_timing`` adds its cost.
Parameters are ART-style (``params.py``): ``defense_params``, ``_check_params()``, ``describe()``.

The loop owns the rest, once: a seeded ``DataLoader``; ``configure_optimizers()`` (AdamW, cosine
schedule per batch); per-epoch clean and PGD-10 accuracy (``evaluator.py``); best (PGD-10, ties to
clean) and last checkpoints and ``metrics.jsonl`` (``checkpoints.py``); resume state after every
epoch (``resume.py``); progress bars; the overhead against standard training (``cost.py``).
Labels may be class indices or one-hot (ART's trainers take one-hot only).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from art.defences.trainer import Trainer
from tqdm.auto import tqdm

from .. import distributed
from ..data.stream import as_torch_dataset, batches, is_lazy, materialise
from ..errors import SSMDefenseError
from ..labels import as_training_data, check_labels
from ..optim import parameter_groups
from ..seeding import seed_everything
from ..validation import integer
from .checkpoints import epoch_summary, finite_loss, update_best, write_epoch
from .cost import measure_overhead
from .evaluator import evaluate_epoch
from .params import LOOP_PARAMS, check_loop_params, declare_params
from .resume import cpu_tensors, load_state, save_state


def _pair(validation_data) -> tuple:
    """(x, y) of ``validation_data``: a pair of arrays, or a lazy ``Dataset`` and None."""
    return (validation_data, None) if is_lazy(validation_data) else tuple(validation_data)


def training_data(x, y, clf) -> tuple:
    """Arrays checked and converted (``labels.as_training_data``), or a lazy ``Dataset`` (y None) whose
    first item is checked against the classifier's input shape."""
    if not is_lazy(x):
        return as_training_data(x, y, clf.input_shape, clf.nb_classes)
    if y is not None:
        raise SSMDefenseError("a lazily loaded dataset carries its labels: give y=None")
    if len(x) == 0:
        raise SSMDefenseError("the dataset is empty: there are no samples")
    shape = tuple(x[0][0].shape)
    if shape != tuple(clf.input_shape):
        expected = tuple(clf.input_shape)
        raise SSMDefenseError(f"the dataset's items have shape {shape}; the classifier expects {expected}")
    return x, None


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak memory so far in MiB: CUDA memory allocated by torch on a GPU, else the
    peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class TrainingLoop(Trainer):
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
        verbose (bool): progress bars and a line per epoch. Default: True.
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

    def on_fit_start(
        self, x: np.ndarray, y: np.ndarray, *, nb_epochs: int, batch_size: int, out: Path | None, resume: bool
    ) -> None:
        """Called by ``fit`` before the seed is set, with its data (y as class indices) and settings
        (``out``: None without ``out_dir``). Resets what a defense carries from batch to batch, so
        each ``fit`` starts afresh; a defense that trains something first does it here."""

    def extra_timing(self, timing: dict, nb_epochs: int) -> dict:
        """Entries a defense adds to (or replaces in) ``timing``, the loop's measured cost of a fit of
        ``nb_epochs`` (``measure_overhead``), to make ``self.timing``."""
        return {}

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors a defense carries from batch to batch (FreeAT's perturbation), saved for resume."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what ``extra_state`` returned."""

    def configure_optimizers(self, model: torch.nn.Module, total_steps: int):
        """(optimizer, per-step scheduler) of a fit of ``total_steps`` optimizer steps: AdamW (``lr``,
        ``weight_decay``, and ``ssm_weight_decay`` for the SSM parameters ``ssmdefense.optim`` names)
        and a cosine schedule. Override to train with others; resume saves and restores whatever
        their ``state_dict``s hold."""
        optimizer = torch.optim.AdamW(self.parameter_groups(model), lr=self.lr)
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)

    def parameter_groups(self, model: torch.nn.Module) -> list[dict]:
        """The optimizer's parameter groups: ``weight_decay``, but ``ssm_weight_decay`` on the
        parameters the model's SSM layers exempt (``ssmdefense.optim``)."""
        return parameter_groups(model, self.weight_decay, self.ssm_weight_decay)

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
        """
        if kwargs:
            raise SSMDefenseError(f"unknown fit() argument(s): {', '.join(sorted(kwargs))}")
        integer("nb_epochs", nb_epochs, 1, error=SSMDefenseError)
        clf = self._classifier
        x, y = training_data(x, y, clf)
        if validation_data is not None:
            x_val, y_val = training_data(*_pair(validation_data), clf)
        out = Path(out_dir) if out_dir is not None else None
        if resume and out is None:
            raise SSMDefenseError("resume=True needs the out_dir of the interrupted run")
        world = distributed.current()
        write = out is not None and world.main
        epochs = -(-nb_epochs // self.epoch_divisor)
        batch_size = batch_size or self.batch_size
        if batch_size < world.size:
            raise SSMDefenseError(f"batch size {batch_size} is smaller than the {world.size} processes sharing it")

        self.on_fit_start(x, y, nb_epochs=nb_epochs, batch_size=batch_size, out=out, resume=resume)
        seed_everything(self.seed)
        model, device = clf.model, clf.device
        generator = torch.Generator().manual_seed(self.seed)  # the shuffling, saved with the resume state
        # the global batches: the same shuffle as one process, each rank reading its share (distributed.py)
        index_loader = torch.utils.data.DataLoader(
            range(len(x)), batch_size=batch_size, shuffle=True, generator=generator
        )  # (B) index batches
        shares = distributed.RankBatches(index_loader, world, len(x), batch_size)
        loader = torch.utils.data.DataLoader(
            as_torch_dataset(x, y),
            batch_sampler=shares,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(self.seed + world.rank),  # worker seeds, not the global RNG
        )
        optimizer, scheduler = self.configure_optimizers(model, epochs * len(shares) * self.steps_per_batch)
        best_key, first, self.history = None, 1, []
        if resume:
            best_key, first = load_state(self, out, optimizer, scheduler, generator, epochs)
        trained, weight = model, None
        if world.distributed:  # DDP averages the gradients, weighted by each rank's share of the batch
            weight = distributed.GradientWeight()
            trained = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
            trained.register_comm_hook(weight, distributed.weighted_average_hook)
        for epoch in range(first, epochs + 1):
            if world.distributed:  # each rank its own attack randomness, repeatable and resumable
                seed_everything(distributed.rank_seed(self.seed, world.rank, epoch))
            # one draw from the shuffle generator per epoch, as tqdm.auto's extra iter(loader) made before
            # the loop read batch shares: the same seed gives the same batches as runs made before
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            model.train()
            start = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(
                batches(loader),
                total=len(shares),
                desc=f"{self.name} epoch {epoch}/{epochs}",
                disable=not (self.verbose and world.main),
                leave=False,
                unit="batch",
            )
            for batch, (xb, yb) in enumerate(bar, 1):
                xb, yb = xb.to(device), check_labels(yb, clf.nb_classes).to(device)  # (B ...), (B)
                if weight is not None:
                    weight.set(len(yb), shares.global_sizes[batch - 1], world)
                with (
                    distributed.peers_watched(),
                    torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"),
                ):
                    loss, logits = self.train_batch(trained, optimizer, scheduler, xb, yb)
                model.train()  # a training step may have switched to eval mode to attack
                batch_sums = distributed.all_sum([loss.item() * len(yb), int((logits.argmax(1) == yb).sum()), len(yb)])
                finite_loss(batch_sums[0], epoch, batch, out)  # the same on every rank: all stop together
                loss_sum += batch_sums[0]
                correct += int(batch_sums[1])
                seen += int(batch_sums[2])
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            lr, seconds = optimizer.param_groups[0]["lr"], time.perf_counter() - start
            distributed.check_in_sync(model, f"{self.name}, epoch {epoch}")
            row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen, "lr": lr}
            row["epoch_seconds"] = seconds
            row["peak_memory_mb"] = peak_memory_mb(device)
            if validation_data is not None:
                t_eval = time.perf_counter()
                row.update(self.evaluate(x_val, y_val))
                row["eval_seconds"] = time.perf_counter() - t_eval
            self.history.append(row)
            best_key, improved = update_best(self, row, epoch, best_key, validation_data is not None)
            # what every rank carries from batch to batch (FreeAT's perturbation), saved by rank 0 for resume
            carried = distributed.all_gather(cpu_tensors(self.extra_state())) if world.distributed else None
            if write:
                meta = {**(checkpoint_extra or {}), "epoch": epoch, "defense": self.name, "metrics": row}
                write_epoch(clf, out, meta, improved)
                self._save_state(out, epoch, best_key, optimizer, scheduler, generator, carried)
            if self.verbose and world.main:
                tqdm.write(epoch_summary(row, epochs, self.eval_max_iter, improved))
        self.timing = {}
        if world.main:  # the cost of a batch, timed on rank 0 alone
            x_cost, y_cost = materialise(x, y, limit=3 * batch_size, num_workers=num_workers)
            timing = self.measure_overhead(x_cost, y_cost, batch_size)
            self.timing = {**timing, **self.extra_timing(timing, nb_epochs)}
        distributed.barrier()
        return self.history

    def _save_state(self, out: Path, epoch: int, best_key, optimizer, scheduler, generator, carried=None) -> None:
        save_state(self, out, epoch, best_key, optimizer, scheduler, generator, carried)  # resume.py

    def measure_overhead(self, x: np.ndarray, y: np.ndarray, batch_size: int, batches: int = 3) -> dict:
        """This defense's seconds per batch against standard training's and the run's overhead ratio
        (``defenses.cost``); a defense whose batches are standard ones returns {}."""
        return measure_overhead(self, x, y, batch_size, batches)

    def restore_best(self) -> None:
        """Load the best epoch's weights into the classifier's model."""
        if self.best_state is None:
            raise SSMDefenseError("no best checkpoint yet: call fit() first")
        self._classifier.body.load_state_dict(self.best_state)
