"""``ssmdefense defend`` and ``ssmdefense train``: train a model and write a run directory.

A run directory holds config.json, metrics.jsonl, best.* and last.* checkpoints, report.json,
report.md and plots/. It is built under a temporary name and appears only when complete.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import click

from . import cli
from .common import THREADS_HELP, echo_json, parse_params, resolve_device, staged_directory

DEFAULT_EPS_FACTORS = (0.0, 0.5, 1.0, 1.5, 2.0)  # robust-accuracy curve at these multiples of --eps


def run_options(fn):
    options = [
        click.option("--model", default="s4d", show_default=True, help="Registered model name."),
        click.option("--dataset", default="mnist-5k", show_default=True, help="Registered dataset name."),
        click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Training epochs."),
        click.option("--eps", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
                     help="L-inf budget for training attacks and the PGD-10/FGSM evaluation."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed: same seed, same run."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help=THREADS_HELP),
        click.option("--out", type=click.Path(path_type=Path), default=None,
                     help="Run directory (default: runs/<defense>-<model>-<dataset>-<time>)."),
        click.option("--overwrite", is_flag=True, help="Replace --out if it exists."),
        click.option("--sequence", type=click.Choice(["pixels", "rows"]), default=None,
                     help="How images become sequences (default: the dataset's)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
        click.option("--eval-samples", type=click.IntRange(min=1), default=None,
                     help="Evaluate on the first N test samples (default: all)."),
        click.option("-m", "--model-param", "model_params", multiple=True, metavar="KEY=VALUE",
                     help="Model parameter, e.g. -m d_model=128 (repeatable)."),
        click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="Defense parameter, e.g. -p act=tanh (repeatable)."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON at the end."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_training(defense, model, dataset, epochs, eps, seed, device, threads, out, overwrite, sequence, batch_size,
                 eval_samples, model_params, params, as_json, quiet, command):
    """Validate everything, train, evaluate best and last checkpoints, write the run directory."""
    from ..api import build_model, get_defense, load_dataset
    from ..checkpoint import load as load_checkpoint
    from ..defenses.loop import seed_everything
    from ..errors import SSMDefenseError
    from ..estimators import SSMClassifier
    from ..evaluation.report import write_report
    from ..evaluation.robustness import best_last_gap, evaluate_robustness
    from ..models import sequence_dims
    from ..plugins import registry

    model_params = parse_params(model_params, "-m")
    params = parse_params(params, "-p")
    for key in ("eps", "seed", "batch_size", "eval_samples", "verbose"):
        if key in params:
            raise click.BadParameter(f"set {key} with its own option, not -p", param_hint="-p")
    for kind, name in (("datasets", dataset), ("models", model), ("defenses", defense)):
        registry(kind).get(name)  # unknown names fail here, before any work
    device_type = resolve_device(device, threads)
    if out is None:
        out = Path("runs") / f"{defense}-{model}-{dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and not overwrite:
        raise click.BadParameter(f"{out} already exists (use --overwrite to replace it)", param_hint="--out")

    data = load_dataset(dataset)
    sequence = sequence or data.sequence
    try:
        _, d_input = sequence_dims(data.input_shape, sequence)
    except ValueError as exc:
        raise SSMDefenseError(str(exc)) from None
    seed_everything(seed)  # the initial weights too: same seed, same run
    body = build_model(model, d_input, data.nb_classes, **model_params)
    clf = SSMClassifier(body, input_shape=data.input_shape, nb_classes=data.nb_classes, sequence=sequence,
                        clip_values=data.clip_values, device_type=device_type)
    trainer = get_defense(defense, clf, eps=eps, seed=seed, batch_size=batch_size, eval_samples=eval_samples,
                          verbose=not quiet, **params)
    config = {"command": command, "model": model, "model_params": body.ssmdefense_config["params"],
              "dataset": dataset, "sequence": sequence, "defense": defense, "defense_params": params,
              "eps": eps, "epochs": epochs, "seed": seed, "device": device_type, "batch_size": batch_size,
              "trainer": trainer.describe()}

    with staged_directory(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        start = time.perf_counter()
        history = trainer.fit(data.x_train, data.y_train, validation_data=(data.x_test, data.y_test),
                              nb_epochs=epochs, out_dir=tmp,
                              checkpoint_extra={"dataset": dataset, "eps": eps, "seed": seed})
        train_seconds = time.perf_counter() - start
        x_eval, y_eval = data.x_test, data.y_test
        if eval_samples is not None:
            x_eval, y_eval = x_eval[:eval_samples], y_eval[:eval_samples]
        report, by_epoch = {}, {}
        for which in ("best", "last"):
            ckpt = load_checkpoint(tmp / which, device_type=device_type)  # also checks the files load
            epoch = ckpt.checkpoint_meta["extra"]["epoch"]
            if epoch not in by_epoch:  # best and last are often the same epoch
                if not quiet:
                    click.echo(f"evaluating the {which} checkpoint (clean, FGSM, PGD-10 at eps={eps} and a curve)...",
                               err=True)
                by_epoch[epoch] = evaluate_robustness(ckpt, x_eval, y_eval, eps=eps, attacks=("fgsm", "pgd"),
                                                      eps_list=[round(f * eps, 10) for f in DEFAULT_EPS_FACTORS], seed=seed)
            report[which] = {"epoch": epoch, **by_epoch[epoch]}
        report["gap"] = best_last_gap(report["best"], report["last"])
        report["config"] = {"model": model, "dataset": dataset, "defense": defense, "eps": eps, "seed": seed,
                            "epochs": epochs, "sequence": sequence, "model_params": config["model_params"],
                            "defense_params": params}
        report["timing"] = {"epoch_seconds": [r["epoch_seconds"] for r in history],
                            "eval_seconds": [r.get("eval_seconds") for r in history],
                            "train_seconds": train_seconds,
                            "total_seconds": time.perf_counter() - start}
        title = f"ssmdefense {command}: {defense} on {model} / {dataset}"
        write_report(tmp, report, title, history=history)
    if as_json:
        echo_json(report)
    else:
        _print_summary(report, out)
    return report


def _print_summary(report, out):
    from rich.console import Console
    from rich.table import Table

    keys = list(report["best"]["robust_accuracy"])
    table = Table(title=f"Run {out}")
    for c in ["checkpoint", "epoch", "clean", *keys]:
        table.add_column(c)
    for which in ("best", "last"):
        r = report[which]
        table.add_row(which, str(r["epoch"]), f"{r['clean_accuracy']:.3f}",
                      *[f"{r['robust_accuracy'][k]:.3f}" for k in keys])
    Console().print(table)
    click.echo(f"report: {out / 'report.md'}")


@cli.command()
@click.option("--defense", required=True, help="Registered defense name (see `ssmdefense defenses`).")
@run_options
def defend(defense, **options):
    """Train with a defense and write a run directory with best/last checkpoints and a report.

    With no other option: S4D on mnist-5k (rows), eps 0.1, 10 epochs.
    `ssmdefense defend --defense ads` is AdS + PGD adversarial training.
    """
    run_training(defense=defense, command="defend", **options)


@cli.command()
@run_options
def train(**options):
    """Standard training (no defense), written like `defend`: the baseline to compare with."""
    run_training(defense="none", command="train", **options)
