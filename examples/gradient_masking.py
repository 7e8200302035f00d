"""Gradient masking, shown and caught: a trained model, and two copies of it whose gradients are
masked (predictions unchanged), through ssmdefense's gradient-masking checks.

- ``saturated-softmax``: logits x 1000. The softmax saturates, so the cross-entropy gradient of
  every confidently classified sample is exactly 0 in float32: what a defensively distilled model
  (trained at temperature T, deployed at T = 1) does to PGD.
- ``rounded-input``: inputs rounded to 4 grey levels before the model: a shattered gradient, zero
  almost everywhere (Athalye et al., 2018).

Both look far more robust to PGD than the model they wrap; the checks say why they are not.

    python examples/gradient_masking.py --checkpoint runs/ads    # a run of `ssmdefense defend` (best)
    python examples/gradient_masking.py --quick                  # trains a tiny digits model, ~15 s
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

import ssmdefense as sd
from ssmdefense.evaluation.sanity import gradient_masking_checks


class SaturatedSoftmax(nn.Module):
    """Logits scaled by 1000: same predictions, zero cross-entropy gradient when confident."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body, self.d_input = body, body.d_input

    def forward(self, x):  # x: (B L D)
        return 1000.0 * self.body(x)  # (B C)


class RoundedInput(nn.Module):
    """Inputs rounded to 4 levels (0, 1/3, 2/3, 1) before the model: zero gradient almost everywhere."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body, self.d_input = body, body.d_input

    def forward(self, x):  # x: (B L D)
        return self.body(torch.round(x * 3) / 3)  # (B C)


MASKS = {"saturated-softmax": SaturatedSoftmax, "rounded-input": RoundedInput}


def masked(clf, mask: str):
    """A copy of ``clf`` (sharing its weights) whose gradients ``mask`` hides."""
    return sd.SSMClassifier(
        MASKS[mask](clf.body),
        input_shape=clf.natural_shape,
        nb_classes=clf.nb_classes,
        sequence=clf.sequence,
        sequence_params=clf.sequence_params,
        sample_rate=clf.sample_rate,
        clip_values=clf.natural_clip_values,
        device_type="gpu" if clf.device.type == "cuda" else "cpu",
    )


def quick_model():
    torch.manual_seed(0)
    data = sd.load_dataset("digits")
    body = sd.build_model("s4d", d_input=8, n_classes=10, d_model=32, n_layers=1, d_state=16, dt_min=1e-2, dt_max=1.0)
    clf = sd.SSMClassifier(
        body, input_shape=data.input_shape, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )
    sd.get_defense("none", clf, lr=1e-2, verbose=False).fit(data.x_train, data.y_train, nb_epochs=10)
    return clf, data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a checkpoint or run directory (its best checkpoint)")
    parser.add_argument("--quick", action="store_true", help="train a tiny digits model instead (~15 s)")
    parser.add_argument("--samples", type=int, default=500, help="test samples (default: 500)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf budget (default: 0.1)")
    args = parser.parse_args(argv)
    if bool(args.checkpoint) == bool(args.quick):
        parser.error("give --checkpoint or --quick")
    torch.set_num_threads(1)
    if args.quick:
        clf, data = quick_model()
    else:
        from pathlib import Path

        path = Path(args.checkpoint)
        clf = sd.load(path / "best" if path.is_dir() else path, device_type="cpu")
        data = sd.load_dataset(clf.checkpoint_meta["extra"]["dataset"])
    x, y = data.x_test[: args.samples], data.y_test[: args.samples]

    print(f"{'model':<18} {'clean':>6} {'pgd-10':>7} {'square':>7}  {'verdict':<26} failed checks", flush=True)
    for name, model in [("honest", clf), *((m, masked(clf, m)) for m in MASKS)]:
        start = time.perf_counter()
        checks = gradient_masking_checks(model, x, y, eps=args.eps, square_max_iter=300)
        failed = [c["name"] for c in checks["checks"] if c["passed"] is False]
        verdict = "GRADIENT MASKING SUSPECTED" if checks["gradient_masking_suspected"] else "no sign of masking"
        # the checks ran PGD-10 and Square (300 queries) at this eps already: their figures, not a second run
        square = next(c["values"] for c in checks["checks"] if c["name"] == "black_box_not_stronger")
        print(
            f"{name:<18} {model.accuracy(x, y):>6.3f} {square['reference']:>7.3f} {square['accuracy']:>7.3f}  "
            f"{verdict:<26} {', '.join(failed) or '-'}  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
