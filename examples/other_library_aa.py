"""Another library's AutoAttack components against a run's audio AutoAttack figure: torchattacks'
APGD (cross-entropy) and APGD-T (targeted DLR, n_classes - 1 targets), 100 steps each, L-inf on the
waveform at the run's eps, on the same first clips as the report's AutoAttack. Nothing of this
toolkit's attack code runs: only loading the checkpoint and the data uses ssmdefense.

torchattacks is not a dependency of ssmdefense (3.5.1 pins an old ``requests``); install it beside
it without its dependencies, which it does not need for these attacks:

    pip install --no-deps torchattacks==3.5.1
    python examples/other_library_aa.py runs/default-audio-ads [--which last]

torchattacks clamps every iterate to [0, 1] (image range), while waveforms lie in [-1, 1]: the model
is wrapped to read u in [0, 1] as x = 2u - 1, and the budget is halved (eps/2 in u is eps in x), so
the attack runs unchanged in the same threat model; and it takes 3-D input for one image, so clips
go in as (N, 1, 1, T). It prints the accuracy each attack leaves, a clip
counting as robust only if it survives both, beside the report's L-inf AutoAttack figure
(``linf_worst_case``) and its worst case with the SNR ball.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import ssmdefense as sd
from ssmdefense.workflows import load_test_data


class UnitRange(torch.nn.Module):
    """``model`` reading u (N, 1, 1, T) in [0, 1] as the waveform x = 2u - 1 (N, 1, T) in [-1, 1]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, u):
        return self.model(2 * u[:, :, 0] - 1)


def check(run_dir: Path, which: str = "best", steps: int = 100, seed: int = 0) -> dict:
    import torchattacks

    report = json.loads((run_dir / "report.json").read_text())
    aa = report[which]["autoattack"]
    clf = sd.load(run_dir / which, device_type="cpu")
    _, x, y, _ = load_test_data(clf, samples=aa["samples"])
    eps = report["config"]["eps"]
    model = UnitRange(clf.model).eval()
    u = torch.from_numpy((x + 1) / 2)[:, :, None]  # (N 1 1 T) in [0, 1]
    labels = torch.from_numpy(y)
    robust = {}
    attacks = {
        "apgd-ce": torchattacks.APGD(model, norm="Linf", eps=eps / 2, steps=steps, n_restarts=1, loss="ce", seed=seed),
        "apgd-t": torchattacks.APGDT(
            model, norm="Linf", eps=eps / 2, steps=steps, n_restarts=1, n_classes=clf.nb_classes, seed=seed
        ),
    }
    largest = 0.0
    for name, attack in attacks.items():
        u_adv = attack(u, labels)
        largest = max(largest, float((2 * (u_adv.detach() - u)).abs().max()))  # in x units
        with torch.no_grad():
            robust[name] = (model(u_adv).argmax(1) == labels).numpy()
    both = np.logical_and(*robust.values())
    return {
        "checkpoint": str(run_dir / which),
        "library": f"torchattacks {torchattacks.__version__}",
        "eps": eps,
        "samples": int(len(y)),
        "largest_perturbation": largest,
        **{name: float(r.mean()) for name, r in robust.items()},
        "other_library_linf": float(both.mean()),
        "report_aa_linf": aa.get("linf_worst_case"),
        "report_aa": aa["worst_case"],
        "gap_linf": (aa.get("linf_worst_case") or aa["worst_case"]) - float(both.mean()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--which", choices=("best", "last"), default="best")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(check(args.run_dir, args.which, args.steps, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
