"""What a defense overrides in the shared training loop (``loop.TrainingLoop`` inherits these
defaults): the loss of a batch, how a batch is trained, what is trained before the batches, what is
carried from batch to batch for resume, the optimizer, and the cost it adds to the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..optim import parameter_groups


class DefenseHooks:
    """The defaults of standard training; a defense overrides what it changes. ``self`` is a
    ``TrainingLoop``, with its parameters (``lr``, ``weight_decay``, ...)."""

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
