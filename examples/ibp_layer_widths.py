"""How much each layer widens interval bounds: the mean radius of the box after every layer of an
S4/S4D/DSS checkpoint on its first test images, and the factor each layer multiplies it by; with
``--margins``, also how many of those images interval bounds and CROWN-IBP's bounds each certify.

    python examples/ibp_layer_widths.py runs/ads --samples 20 --eps 0.001,0.01
    python examples/ibp_layer_widths.py runs/ibp --samples 50 --eps 0.01,0.05,0.1 --margins
"""

from __future__ import annotations

import argparse

import torch

import ssmdefense as sd
from ssmdefense.certification import crown, ibp
from ssmdefense.workflows.checkpoints import load_test_data


def widths(clf: sd.SSMClassifier, x: torch.Tensor, eps: float) -> list[tuple[str, float]]:
    """(layer, mean radius) after each layer for the boxes of radius eps around x, clipped to [0, 1]."""
    model, body = clf.model, clf.model.body
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    box = ibp.Box.from_bounds(model.serialiser(lower), model.serialiser(upper))  # (N L D)
    rows = [("input", box.r.mean().item())]
    box = ibp.linear(box, body.encoder)  # (N L H)
    rows.append(("encoder", box.r.mean().item()))
    for i, b in enumerate(body.blocks):
        y = ibp.gelu(ibp.mixer_box(box, b, f"blocks.{i}"))  # (N L H)
        y = ibp.ads(y, b.ads) if isinstance(b.ads, sd.models.ads.AdaptiveScaling) else y
        rows.append((f"block {i}: mixer, GELU, AdS", y.r.mean().item()))
        y = ibp.linear(y, b.output_linear)
        rows.append((f"block {i}: output Linear", y.r.mean().item()))
        box = ibp.layer_norm(box + y, b.norm)
        rows.append((f"block {i}: residual, {type(b.norm).__name__}", box.r.mean().item()))
    logits = ibp.linear(ibp.Box(box.c.mean(1), box.r.mean(1)), body.head)  # (N C)
    return [*rows, ("head (logits)", logits.r.mean().item())]


def margins(clf: sd.SSMClassifier, x: torch.Tensor, y: torch.Tensor, eps: float) -> str:
    """The fraction of x certified by interval bounds and by CROWN-IBP's bounds at eps."""
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    boxed = ibp.margin_lower_bounds(clf.model, lower, upper, y).scatter(1, y[:, None], torch.inf).amin(1)  # (N)
    linear = crown.margin_bounds(clf.model, lower, upper, y, ibp_nodes=True).amin(1)  # (N)
    return f"certified: ibp {(boxed > 0).double().mean():.3f}, crown-ibp {(linear > 0).double().mean():.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--eps", default="0.001,0.01")
    parser.add_argument("--margins", action="store_true", help="also certify by ibp and crown-ibp")
    args = parser.parse_args(argv)
    stem = args.checkpoint if args.checkpoint.endswith(("best", "last")) else f"{args.checkpoint}/best"
    clf = sd.load(stem)
    _, natural_x, y, _ = load_test_data(clf, None, args.samples)
    x = torch.from_numpy(clf.prepare_inputs(natural_x)).double()  # (N ...)
    y = torch.from_numpy(y)
    with torch.no_grad():
        for eps in (float(e) for e in args.eps.split(",")):
            print(f"eps {eps:g}: layer, mean radius, factor")
            previous = None
            for name, radius in widths(clf, x, eps):
                factor = f"{radius / previous:.2f}" if previous else ""
                print(f"  {name:36s} {radius:12.4g} {factor:>8s}")
                previous = radius
            if args.margins:
                print(f"  {margins(clf, x, y, eps)}")


if __name__ == "__main__":
    main()
