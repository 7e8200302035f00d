"""``ssmdefense attack`` and ``ssmdefense evaluate`` on saved checkpoints: parse the options into an
``AttackConfig`` / ``EvaluateConfig``, call ``ssmdefense.workflows.attack_checkpoint`` /
``evaluate_checkpoints`` (which check everything before any work and write the files), print the result.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from .common import THREADS_HELP, echo_json, parse_float_list, parse_params

common_options = [
    click.option(
        "--checkpoint",
        required=True,
        type=click.Path(path_type=Path),
        help="A run directory (its best checkpoint) or a checkpoint path like run/last.",
    ),
    click.option("--dataset", default=None, help="Dataset to use (default: the one recorded in the checkpoint)."),
    click.option("--samples", type=click.IntRange(min=1), default=None, help="Use the first N test samples."),
    click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Folder of a real dataset (default: the one the run used).",
    ),
    click.option(
        "-D",
        "--dataset-param",
        "dataset_params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Dataset parameter (default: the run's), e.g. -D test_fold=3 (repeatable).",
    ),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    click.option("--threads", type=click.IntRange(min=1), default=None, help=THREADS_HELP),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
]


def data_settings(dataset, data_dir, dataset_params, device, threads, seed) -> dict:
    """The ``common_options`` as the fields of a ``CheckpointWork`` config."""
    params = parse_params(dataset_params, "-D")
    return {
        "dataset": dataset,
        "data_dir": data_dir,
        "dataset_params": params,
        "device": device,
        "threads": threads,
        "seed": seed,
    }


def with_common(fn):
    for option in reversed(common_options):
        fn = option(fn)
    return fn


@cli.command()
@with_common
@click.option("--attack", "attack_name", required=True, help="Registered attack name (see `ssmdefense attacks`).")
@click.option(
    "--eps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Attack budget (default: the run's eps, else the attack's default).",
)
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Attack parameter (repeatable).")
@click.option(
    "--save-examples",
    type=click.Path(path_type=Path),
    default=None,
    help="Write x, x_adv, y and predictions to this .npz file.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a report folder: report.json/report.md/report.html, plots, audio examples (replaced if present).",
)
def attack(
    checkpoint,
    dataset,
    samples,
    data_dir,
    dataset_params,
    device,
    threads,
    seed,
    as_json,
    attack_name,
    eps,
    params,
    save_examples,
    out,
):
    """Run one attack on a checkpoint's test data; report clean and adversarial accuracy (and, for audio,
    the SNR of the perturbations)."""
    from ..workflows.attack import AttackConfig, attack_checkpoint  # here, not at the top: --help stays fast

    config = AttackConfig(
        checkpoint=checkpoint,
        attack=attack_name,
        eps=eps,
        params=parse_params(params, "-p"),
        samples=samples,
        **data_settings(dataset, data_dir, dataset_params, device, threads, seed),
        save_examples=save_examples,
        out=out,
    )
    result = attack_checkpoint(config).to_dict()
    if as_json:
        echo_json(result)
    else:
        snr = (
            ""
            if result.get("min_snr_db") is None
            else f", SNR min {result['min_snr_db']:.1f} dB mean {result['mean_snr_db']:.1f} dB"
        )
        click.echo(
            f"{attack_name} on {result['samples']} {result['dataset']} test samples ({result['checkpoint']}): "
            f"clean {result['clean_accuracy']:.3f} -> adversarial {result['adversarial_accuracy']:.3f} "
            f"(max L-inf {result['max_linf']:.4f}, mean L2 {result['mean_l2']:.4f}{snr})"
        )
        if out is not None:
            click.echo(f"report: {out / 'report.html'}")


@cli.command()
@with_common
@click.option(
    "--attacks",
    "attack_list",
    default="fgsm,pgd",
    show_default=True,
    help="Comma-separated attack names (pgd runs 10 steps: pgd-10).",
)
@click.option(
    "--eps",
    "eps_text",
    default=None,
    help="Comma-separated eps values; the first is the headline eps "
    "(default: the run's eps, then 0.5x, 1.5x, 2x of it).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write report.json/report.md/plots (default: <run>/evaluation).",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="ATTACK.KEY=VALUE",
    help="Attack parameter, e.g. -p autoattack.max_iter=20 -p pgd.max_iter=20 (repeatable).",
)
@click.option(
    "--checks/--no-checks",
    default=True,
    show_default=True,
    help="Run the gradient-masking sanity checks (docs/evaluation.md); they cost about 25 PGD-10 runs.",
)
@click.option(
    "--analysis",
    multiple=True,
    type=click.Choice(["components"]),
    help="Extra analyses: 'components' measures how each block component changes the gap between "
    "clean and PGD hidden states (AdS paper), on train and test data.",
)
@click.option(
    "--analysis-samples",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Train and test samples used by --analysis.",
)
@click.option(
    "--snr",
    "snr_text",
    default="40,30,20",
    show_default=True,
    help="Audio runs: SNRs (dB) of the snr-pgd accuracy curve; the time-shift and speed attacks run "
    "too ('none' skips all three).",
)
@click.option(
    "--aa-samples",
    type=click.IntRange(min=0),
    default=None,
    help="AutoAttack (standard; the audio ensemble for waveforms) on the first N samples beside FGSM and "
    "PGD-10 on the same ones, with its breakdown and worst case (default: 100 for waveform checkpoints, "
    "0 for others; 0 skips it).",
)
@click.option(
    "--aa-snr-db",
    type=float,
    default=30.0,
    show_default=True,
    help="Audio AutoAttack: the SNR ball (dB) of its L2 components.",
)
@click.option(
    "--certify",
    "certify_text",
    default="",
    help="Comma-separated certification methods (see `ssmdefense certify`: ibp, smoothing, ...) on the "
    "AutoAttack samples (without AutoAttack: the first 100), beside the empirical accuracy on them; "
    "bound methods at eps, eps/2 and eps/4.",
)
@click.option(
    "--certify-sigma",
    type=click.FloatRange(min=0, min_open=True),
    default=0.25,
    show_default=True,
    help="--certify smoothing: the noise's standard deviation.",
)
@click.option(
    "--certify-n",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="--certify smoothing: noisy copies voting for each sample.",
)
def evaluate(
    checkpoint,
    dataset,
    samples,
    data_dir,
    dataset_params,
    device,
    threads,
    seed,
    as_json,
    attack_list,
    eps_text,
    out,
    params,
    checks,
    analysis,
    analysis_samples,
    snr_text,
    aa_samples,
    aa_snr_db,
    certify_text,
    certify_sigma,
    certify_n,
):
    """Clean, per-attack, per-class and per-eps accuracy with gradient-masking checks; best and last side by side."""
    from ..workflows.evaluate import AUDIO_ATTACKS, EvaluateConfig, evaluate_checkpoints  # here: --help stays fast

    attacks = [a.strip() for a in attack_list.split(",") if a.strip()]
    if not attacks:
        raise click.BadParameter("give at least one attack", param_hint="--attacks")
    config = EvaluateConfig(
        checkpoint=checkpoint,
        attacks=attacks,
        eps=parse_float_list(eps_text, "--eps"),
        samples=samples,
        attack_params=_attack_params(params, [*attacks, *AUDIO_ATTACKS]),
        checks=checks,
        analysis=list(analysis),
        analysis_samples=analysis_samples,
        snr_db=[] if snr_text.strip().lower() == "none" else parse_float_list(snr_text, "--snr"),
        aa_samples=aa_samples,
        aa_snr_db=aa_snr_db,
        certify=[m.strip() for m in certify_text.split(",") if m.strip()],
        certify_sigma=certify_sigma,
        certify_n=certify_n,
        **data_settings(dataset, data_dir, dataset_params, device, threads, seed),
        out=out,
    )
    report = evaluate_checkpoints(config)
    if as_json:
        echo_json({k: v for k, v in report.to_dict().items() if k != "plots"})  # the measurements, as before
    else:
        _print_evaluation(report, checks)


def _print_evaluation(report, checks: bool) -> None:
    """The evaluation as a few lines: accuracies per checkpoint, audio attacks, AutoAttack, checks."""
    results = report.results
    keys = list(next(iter(results.values()))["robust_accuracy"])
    click.echo(f"eps={report.config['eps']} on {report.config['samples']} {report.config['dataset']} test samples")
    click.echo("checkpoint  epoch  clean  " + "  ".join(keys))
    for which, r in results.items():
        click.echo(
            f"{which:<10}  {r['epoch']!s:>5}  {r['clean_accuracy']:.3f}  "
            + "  ".join(f"{r['robust_accuracy'][k]:.3f}" for k in keys)
        )
    for which, r in results.items():
        if r.get("audio"):
            a = r["audio"]
            click.echo(
                f"{which:<10}  "
                + "  ".join(f"snr-pgd {p['snr_db']:g} dB {p['accuracy']:.3f}" for p in a["snr_curve"])
                + "".join(f"  {k} {v['accuracy']:.3f}" for k, v in a["search"].items())
            )
    for which, r in results.items():
        if r.get("autoattack"):
            aa = r["autoattack"]
            click.echo(
                f"{which:<10}  {aa['attack']} ({aa['version']}) on {aa['samples']} samples: worst case "
                f"{aa['worst_case']:.3f} ({aa['seconds']:.0f} s)"
            )
    _print_certified(report)
    if checks:
        failed = {k: [c["name"] for c in r["sanity"]["checks"] if c["passed"] is False] for k, r in results.items()}
        click.echo(
            "GRADIENT MASKING SUSPECTED: " + "; ".join(f"{k} fails {', '.join(v)}" for k, v in failed.items() if v)
            if report.gradient_masking_suspected
            else "gradient-masking checks: all passed"
        )
    click.echo(f"report: {report.out / 'report.md'}")


def _print_certified(report) -> None:
    """--certify: each method's certified accuracy beside the empirical one, and any violation (stderr)."""
    from ..evaluation.certified import certified_sections, violation_lines

    report_dict, results = report.to_dict(), report.results
    distinct = [k for k in results if not (k == "last" and results[k] is results.get("best"))]
    for which in distinct:
        for m, s in certified_sections(report_dict, which).items():
            if m == "smoothing":
                points = [
                    (f"L2 {c['radius']:.3g}", c["certified_accuracy"], c["attacked_accuracy"])
                    for c in s["attack_check"]
                ]
            else:
                points = [(f"eps {p['eps']:g}", p["certified_accuracy"], p["empirical_accuracy"]) for p in s["curve"]]
            cells = "  ".join(f"{ball} {cert:.3f} (attacked {emp:.3f})" for ball, cert, emp in points)
            click.echo(f"{which:<10}  certified by {m} on {s['samples']} samples: {cells}")
    for line in violation_lines(report_dict, distinct):
        click.echo(line, err=True)


def _attack_params(items, attacks) -> dict:
    """-p ATTACK.KEY=VALUE items -> {attack: {key: value}}; ATTACK must be one of ``attacks``."""
    out = {}
    for item in items:
        name, dot, rest = item.partition(".")
        if not dot or name not in attacks:
            raise click.BadParameter(
                f"expected ATTACK.KEY=VALUE with ATTACK one of {', '.join(attacks)}; got {item!r}", param_hint="-p"
            )
        out.setdefault(name, {}).update(parse_params([rest], "-p"))
    return out
