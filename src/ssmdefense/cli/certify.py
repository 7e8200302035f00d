"""``ssmdefense certify``: certified robustness of a checkpoint (``ssmdefense.workflows.certify``)."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from .common import echo_json
from .evaluate import data_settings, with_common


@cli.command()
@with_common
@click.option(
    "--method", default="smoothing", show_default=True, help="Certification method: smoothing, ibp, crown-ibp or crown."
)
@click.option(
    "--eps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="ibp, crown-ibp, crown: the L-inf budget (default: the run's eps).",
)
@click.option(
    "--sigma",
    type=click.FloatRange(min=0, min_open=True),
    default=0.25,
    show_default=True,
    help="Smoothing: the std of the Gaussian noise (in the units of the model's inputs).",
)
@click.option("--n0", type=click.IntRange(min=1), default=100, show_default=True, help="Smoothing: selection samples.")
@click.option(
    "--n", "n", type=click.IntRange(min=1), default=10_000, show_default=True, help="Smoothing: estimation samples."
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, max=0.5, min_open=True, max_open=True),
    default=0.001,
    show_default=True,
    help="Smoothing: failure probability of each certificate.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=1000, show_default=True, help="Noisy copies per pass."
)
@click.option(
    "--attack-check/--no-attack-check",
    default=True,
    show_default=True,
    help="Attack the smoothed classifier (SmoothAdv) at sigma/2 and sigma: its accuracy beside the certified one.",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON file (default: <run>/certification/).")
def certify(checkpoint, dataset, samples, data_dir, dataset_params, device, threads, seed, as_json, out, **method):
    """Certified accuracy of a checkpoint on its first test samples (default 100): randomized
    smoothing certifies L2 radii of the smoothed classifier (Cohen et al. 2019)."""
    from ..workflows.certify import CertifyConfig, certify_checkpoint  # here, not at the top: --help stays fast

    config = CertifyConfig(
        checkpoint=checkpoint,
        **data_settings(dataset, data_dir, dataset_params, device, threads, seed),
        out=out,
        **method,
        **({} if samples is None else {"samples": samples}),
    )
    result = certify_checkpoint(config)
    if result.get("exceeds_autoattack"):
        click.echo(
            f"CERTIFICATE VIOLATED: certified accuracy {result['certified_accuracy']:.3f} is above the run's "
            f"AutoAttack accuracy {result['autoattack_accuracy']:.3f} on the same samples",
            err=True,
        )
    if result.get("violations"):
        click.echo(
            f"CERTIFICATE VIOLATED: the attack flipped samples {result['violations']} inside their certified radius",
            err=True,
        )
    if as_json:
        echo_json({k: v for k, v in result.items() if k not in ("predictions", "radii", "snr_db")})
        return
    if result["method"] == "smoothing":
        _print_smoothing(result)
    else:
        _print_bounds(result)

    click.echo(f"written: {result['out']}")


def _print_smoothing(result: dict) -> None:
    click.echo(
        f"randomized smoothing, sigma {result['sigma']:g}, n {result['n']}, alpha {result['alpha']:g}, on "
        f"{result['samples']} {result['dataset']} test samples ({result['checkpoint']}, {result['seconds']:.0f} s):"
    )
    click.echo(
        f"certified accuracy {result['certified_accuracy']:.3f} at radius 0, abstained {result['abstain_rate']:.3f}, "
        f"median radius {result['median_radius']:.3g} (the largest n can certify: {result['largest_radius']:.3g})"
    )
    if result.get("median_snr_db") is not None:
        click.echo(f"radii of the clips certified right, as SNR: median {result['median_snr_db']:.1f} dB")
    click.echo("L2 radius  " + "  ".join(f"{p['radius']:.3g}" for p in result["curve"]))
    click.echo("certified  " + "  ".join(f"{p['certified_accuracy']:.3f}" for p in result["curve"]))
    for check in result.get("attack_check", []):
        click.echo(
            f"L2 radius {check['radius']:.3g}: certified {check['certified_accuracy']:.3f}, the smoothed classifier "
            f"under SmoothAdv {check['attacked_accuracy']:.3f}"
        )


BOUNDS = {"ibp": "interval bounds", "crown": "CROWN's linear bounds", "crown-ibp": "CROWN-IBP's linear bounds"}


def _print_bounds(result: dict) -> None:
    click.echo(
        f"{BOUNDS.get(result['method'], result['method'])} in the L-inf ball on {result['samples']} "
        f"{result['dataset']} test samples ({result['checkpoint']}, {result['seconds']:.0f} s):"
    )
    click.echo("eps        " + "  ".join(f"{p['eps']:.3g}" for p in result["curve"]))
    click.echo("certified  " + "  ".join(f"{p['certified_accuracy']:.3f}" for p in result["curve"]))
    for check in result.get("attack_check", []):
        click.echo(f"{check['attack']} at eps {check['eps']:g} leaves {check['attacked_accuracy']:.3f}")
    if "autoattack_accuracy" in result:
        aa = result["autoattack_accuracy"]
        click.echo(f"the run's AutoAttack at eps {result['eps']:g} on the same samples leaves {aa:.3f}")
