"""An independent check of a run's reported robust accuracy: L-inf PGD on the Carlini-Wagner margin,
written here in plain torch (no ART, no ssmdefense attack code), 50 steps from 5 random starts, on
the test samples and at the eps of the run's report; for audio (waveform) runs also in each clip's
SNR ball (L2, radius ||x|| 10^(-snr/20) at the audio AutoAttack's SNR, 30 dB by default), the two
threat models of the audio AutoAttack.

    python examples/independent_pgd.py runs/default-ads            # the best checkpoint
    python examples/independent_pgd.py runs/default-ads --which last --steps 100

It prints the accuracy the attack leaves, the lowest robust accuracy of any single attack in the
report, and the run's AutoAttack figure with the gap to it (measured on the AutoAttack's samples).
A report can be trusted when this attack, written independently of the toolkit, does not find more
than 2 points lower (issue 12). Only loading the checkpoint and the data uses ssmdefense.

A sample counts as broken when any iterate of any start is misclassified (the attack keeps its
best), each start begins at a uniform random point of the ball, steps are 2.5 eps / steps (Madry et
al.; signed gradients in L-inf, normalised gradients of 2.5 r / steps in the SNR ball), and every
iterate is projected onto the ball and the clip range. For audio the report's AutoAttack figure is
the worst case over both balls and is compared with a clip broken in either ball here; its L-inf
part is compared with the L-inf attack alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import ssmdefense as sd
from ssmdefense.modes import eval_mode
from ssmdefense.workflows import load_test_data


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
    snr_db: float | None = None,
) -> tuple[np.ndarray, float]:
    """(per-sample robustness (N,) bool, the largest perturbation seen) under the attack: L-inf ``eps``
    (the largest |x_adv - x|), or, with ``snr_db``, each sample's L2 ball of radius
    ||x|| 10^(-snr_db/20) (the largest ||x_adv - x|| / radius, at most 1)."""
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
            ball = LinfBall(xb, eps) if snr_db is None else SNRBall(xb, snr_db)
            for _ in range(restarts):
                x_adv = ball.project(ball.random_start(generator), lo, hi)  # (B ...)
                for _ in range(steps):
                    x_adv.requires_grad_(True)
                    m = margin(model(x_adv), yb)  # (B)
                    alive &= (m <= 0).detach()
                    (grad,) = torch.autograd.grad(m.sum(), x_adv)
                    x_adv = ball.project(x_adv.detach() + ball.step(grad, steps), lo, hi)
                with torch.no_grad():
                    alive &= margin(model(x_adv), yb) <= 0
                largest = max(largest, ball.size(x_adv))
            robust.append(alive.numpy())
    return np.concatenate(robust), largest


class LinfBall:
    """|x' - x|_inf <= eps: uniform random starts, signed-gradient steps of 2.5 eps / steps (Madry et al.)."""

    def __init__(self, x: torch.Tensor, eps: float):
        self.x, self.eps = x, eps

    def random_start(self, generator) -> torch.Tensor:
        return self.x + (torch.rand(self.x.shape, generator=generator) * 2 - 1) * self.eps

    def step(self, grad: torch.Tensor, steps: int) -> torch.Tensor:
        return 2.5 * self.eps / steps * grad.sign()

    def project(self, x_adv: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.minimum(torch.maximum(x_adv, self.x - self.eps), self.x + self.eps).clamp(lo, hi)

    def size(self, x_adv: torch.Tensor) -> float:
        return float((x_adv - self.x).abs().max())


class SNRBall:
    """||x' - x||_2 <= r = ||x||_2 10^(-snr_db/20) per sample: uniform random starts in the ball,
    normalised-gradient steps of 2.5 r / steps, projection by rescaling (then the clip range)."""

    def __init__(self, x: torch.Tensor, snr_db: float):
        self.x = x
        shape = (len(x), *([1] * (x.dim() - 1)))
        self.r = x.flatten(1).double().norm(dim=1).mul(10.0 ** (-snr_db / 20)).float().view(shape)  # (B 1 ...)
        self.d = x[0].numel()

    @staticmethod
    def _norm(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).norm(dim=1).view(len(t), *([1] * (t.dim() - 1)))  # (B 1 ...)

    def random_start(self, generator) -> torch.Tensor:
        u = torch.randn(self.x.shape, generator=generator)
        scale = torch.rand(self.r.shape, generator=generator) ** (1.0 / self.d)  # uniform in the ball
        return self.x + u / self._norm(u).clamp_min(1e-12) * self.r * scale

    def step(self, grad: torch.Tensor, steps: int) -> torch.Tensor:
        return 2.5 * self.r / steps * grad / self._norm(grad).clamp_min(1e-30)

    def project(self, x_adv: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        delta = x_adv - self.x
        delta = delta * torch.clamp(self.r * (1 - 1e-6) / self._norm(delta).clamp_min(1e-30), max=1.0)
        return (self.x + delta).clamp(lo, hi)  # clipping moves towards x: stays in the ball

    def size(self, x_adv: torch.Tensor) -> float:
        ratio = self._norm(x_adv - self.x) / self.r.clamp_min(1e-30)
        return float(ratio.max())


def reported_autoattack(run_dir: Path, which: str) -> dict | None:
    """The run's AutoAttack figure for ``which``: from the final evaluation of ``defend`` (report.json)
    or of ``evaluate`` (evaluation/report.json, its ``--aa-samples`` section, else ``--attacks
    autoattack``): the worst case over the attacks on its samples, how many samples (the first N of
    the test split) and, for audio, the SNR ball and the L-inf ball's own worst case."""
    report = json.loads((run_dir / "report.json").read_text())
    evaluation = run_dir / "evaluation" / "report.json"
    e = json.loads(evaluation.read_text()) if evaluation.is_file() else None
    for source, section in (("report.json", report[which]), ("evaluation/report.json", (e or {}).get(which, {}))):
        aa = section.get("autoattack")
        if aa:
            found = {"source": source, "samples": aa["samples"], "aa": aa["worst_case"]}
            if aa.get("snr_db") is not None:
                found.update(snr_db=aa["snr_db"], aa_linf=aa["linf_worst_case"])
            return found
    if e is not None and "autoattack" in e[which]["robust_accuracy"]:
        worst = (e[which].get("worst_case") or {}).get("robust_accuracy", e[which]["robust_accuracy"]["autoattack"])
        return {"source": "evaluation/report.json", "samples": e["config"]["samples"], "aa": worst}
    return None


def check(run_dir: Path, which: str = "best", steps: int = 50, restarts: int = 5, seed: int = 0) -> dict:
    """The independent attack on ``run_dir``'s ``which`` checkpoint, beside the report's figures: on
    the samples of the run's AutoAttack when it has one (``gap_aa``: AutoAttack minus this attack),
    else on the run's evaluated samples (``gap``: the lowest single attack minus this attack).

    Audio (waveform) runs are attacked in the L-inf ball of the run's eps and in each clip's SNR ball
    of the audio AutoAttack's ``snr_db``; a clip is robust only if it survives both (``independent``),
    and ``independent_linf`` is the L-inf ball alone, set against the AutoAttack's own L-inf figure
    (``gap_aa_linf``)."""
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
    attack = dict(eps=eps, clip=clf.clip_values, steps=steps, restarts=restarts, seed=seed)
    robust, largest = margin_pgd(clf.model, x, y, **attack)
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
    }
    waveform = clf.is_audio and tuple(clf.input_shape) == tuple(clf.natural_shape)
    if waveform:
        snr_db = aa.get("snr_db", 30.0) if aa else 30.0
        in_snr, ratio = margin_pgd(clf.model, x, y, **attack, snr_db=snr_db)
        result.update(
            snr_db=snr_db,
            independent_linf=float(robust.mean()),
            independent_snr=float(in_snr.mean()),
            independent=float((robust & in_snr).mean()),
            largest_snr_ratio=ratio,  # the largest ||delta|| / radius: at most 1
        )
    result["gap"] = result["report_min"] - result["independent"]
    if aa:
        result.update(aa_source=aa["source"], aa=aa["aa"], gap_aa=aa["aa"] - result["independent"])
        if "aa_linf" in aa and waveform:
            result.update(aa_linf=aa["aa_linf"], gap_aa_linf=aa["aa_linf"] - result["independent_linf"])
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
