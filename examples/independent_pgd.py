"""An independent check of a run's reported robust accuracy: L-inf PGD on the Carlini-Wagner margin,
written here in plain torch (no ART, no ssmdefense attack code), 50 steps from 5 random starts, on
the test samples and at the eps of the run's report.

    python examples/independent_pgd.py runs/default-ads            # the best checkpoint
    python examples/independent_pgd.py runs/default-ads --which last --steps 100

It prints the accuracy the attack leaves, the lowest robust accuracy of any single attack in the
report, and the run's AutoAttack figure with the gap to it (measured on the AutoAttack's samples).
A report can be trusted when this attack, written independently of the toolkit, does not find more
than 2 points lower (issue 12). Only loading the checkpoint and the data uses ssmdefense.

A sample counts as broken when any iterate of any start is misclassified (the attack keeps its
best), each start begins at a uniform random point of the eps-ball, steps are 2.5 eps / steps
(Madry et al.), and every iterate is projected onto the eps-ball and the clip range.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import ssmdefense as sd
from ssmdefense.evaluate_api import load_test_data
from ssmdefense.modes import eval_mode


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample ``max_{j != y} z_j - z_y`` (> 0: misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)  # (B)
    others = logits.clone()
    others[torch.arange(len(y)), y] = float("-inf")
    return others.amax(1) - true  # (B)


def margin_pgd(
    model,
    x,
    y,
    *,
    eps: float,
    clip: tuple[float, float],
    steps: int = 50,
    restarts: int = 5,
    seed: int = 0,
    batch_size: int = 250,
) -> tuple[np.ndarray, float]:
    """(per-sample robustness (N,) bool, the largest |x_adv - x| seen) under the attack."""
    lo, hi = clip
    generator = torch.Generator().manual_seed(seed)
    robust, largest = [], 0.0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[start : start + batch_size], dtype=torch.float32)  # (B ...)
            yb = torch.as_tensor(y[start : start + batch_size], dtype=torch.long)  # (B)
            alive = torch.ones(len(yb), dtype=torch.bool)  # (B) not broken by any iterate yet
            with torch.no_grad():
                alive &= margin(model(xb), yb) <= 0
            for _ in range(restarts):
                noise = (torch.rand(xb.shape, generator=generator) * 2 - 1) * eps
                x_adv = (xb + noise).clamp(lo, hi)  # (B ...)
                for _ in range(steps):
                    x_adv.requires_grad_(True)
                    m = margin(model(x_adv), yb)  # (B)
                    alive &= (m <= 0).detach()
                    (grad,) = torch.autograd.grad(m.sum(), x_adv)
                    x_adv = x_adv.detach() + 2.5 * eps / steps * grad.sign()
                    x_adv = torch.minimum(torch.maximum(x_adv, xb - eps), xb + eps).clamp(lo, hi)
                with torch.no_grad():
                    alive &= margin(model(x_adv), yb) <= 0
                largest = max(largest, float((x_adv - xb).abs().max()))
            robust.append(alive.numpy())
    return np.concatenate(robust), largest


def reported_autoattack(run_dir: Path, which: str) -> dict | None:
    """The run's AutoAttack figure for ``which``: from ``defend``'s final evaluation (report.json), else
    from ``ssmdefense evaluate --attacks pgd,autoattack`` (evaluation/report.json): its worst case
    over the attacks on its samples, and how many samples (the first N of the test split)."""
    report = json.loads((run_dir / "report.json").read_text())
    aa = report[which].get("autoattack")
    if aa:
        return {"source": "report.json", "samples": aa["samples"], "aa": aa["worst_case"]}
    evaluation = run_dir / "evaluation" / "report.json"
    if evaluation.is_file():
        e = json.loads(evaluation.read_text())
        if "autoattack" in e[which]["robust_accuracy"]:
            worst = (e[which].get("worst_case") or {}).get("robust_accuracy", e[which]["robust_accuracy"]["autoattack"])
            return {"source": "evaluation/report.json", "samples": e["config"]["samples"], "aa": worst}
    return None


def check(run_dir: Path, which: str = "best", steps: int = 50, restarts: int = 5, seed: int = 0) -> dict:
    """The independent attack on ``run_dir``'s ``which`` checkpoint, beside the report's figures: on
    the samples of the run's AutoAttack when it has one (``gap_aa``: AutoAttack minus this attack),
    else on the run's evaluated samples (``gap``: the lowest single attack minus this attack)."""
    report = json.loads((run_dir / "report.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    clf = sd.load(run_dir / which, device_type="cpu")
    _, x, y, _ = load_test_data(clf)
    aa = reported_autoattack(run_dir, which)
    n = aa["samples"] if aa else config.get("eval_samples")
    if n:
        x, y = x[:n], y[:n]
    x = clf.prepare_inputs(x)
    eps = report["config"]["eps"]
    robust, largest = margin_pgd(
        clf.model, x, y, eps=eps, clip=clf.clip_values, steps=steps, restarts=restarts, seed=seed
    )
    reported = report[which]["robust_accuracy"]
    result = {
        "checkpoint": str(run_dir / which),
        "eps": eps,
        "samples": int(len(y)),
        "attack": f"margin PGD-{steps}, {restarts} restarts (independent)",
        "independent": float(robust.mean()),
        "largest_perturbation": largest,
        "report": reported,
        "report_min": min(reported.values()),
        "gap": min(reported.values()) - float(robust.mean()),
    }
    if aa:
        result.update(aa_source=aa["source"], aa=aa["aa"], gap_aa=aa["aa"] - float(robust.mean()))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--which", choices=("best", "last"), default="best")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = check(args.run_dir, args.which, args.steps, args.restarts, args.seed)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
