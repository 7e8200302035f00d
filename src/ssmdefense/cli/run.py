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
from .common import (THREADS_HELP, echo_json, interrupted_run, load_data, parse_params, resolve_device,
                     split_sequence_params, staged_directory, use_threads)

DEFAULT_EPS_FACTORS = (0.0, 0.5, 1.0, 1.5, 2.0)  # robust-accuracy curve at these multiples of --eps


def run_options(fn):
    options = [
        click.option("--model", default="s4d", show_default=True, help="Registered model name."),
        click.option("--dataset", default="mnist-5k", show_default=True, help="Registered dataset name."),
        click.option("--epochs", type=click.IntRange(min=1), default=None,
                     help="Training epochs (default: 10, or the dataset's, e.g. 8 for spoken-digits)."),
        click.option("--eps", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="L-inf budget for training attacks and the PGD-10/FGSM evaluation "
                          "(default: the dataset's, e.g. 0.1 for images; audio states it also as SNR in dB)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed: same seed, same run."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=None, help=THREADS_HELP),
        click.option("--out", type=click.Path(path_type=Path), default=None,
                     help="Run directory (default: runs/<defense>-<model>-<dataset>-<time>)."),
        click.option("--overwrite", is_flag=True, help="Replace --out if it exists."),
        click.option("--sequence", default=None,
                     help="How inputs become sequences: pixels|rows for images, mel|frames|samples for audio, "
                          "or a plugin's (default: the dataset's; see `ssmdefense sequences`)."),
        click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                     help="Folder holding a real dataset in its official layout (passed as root=)."),
        click.option("-D", "--dataset-param", "dataset_params", multiple=True, metavar="KEY=VALUE",
                     help="Dataset parameter, e.g. -D subset=all -D test_fold=3 (repeatable)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
        click.option("--eval-samples", type=click.IntRange(min=1), default=None,
                     help="Evaluate on the first N test samples (default: all, or the dataset's)."),
        click.option("-m", "--model-param", "model_params", multiple=True, metavar="KEY=VALUE",
                     help="Model parameter, e.g. -m d_model=128, or a setting of the sequence mode, e.g. "
                          "-m n_mels=64 -m attack_space=features (repeatable)."),
        click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="Defense parameter, e.g. -p act=tanh (repeatable)."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON at the end."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
        click.option("--resume", type=click.Path(path_type=Path), default=None,
                     help="Continue an interrupted run: give its --out directory. Its settings come from the "
                          "run's config.json; the result equals an uninterrupted run."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


# options a resumed run takes from its config.json (anything else may be given again)
RESUMED = ("model", "dataset", "epochs", "eps", "seed", "sequence", "batch_size", "eval_samples", "model_params",
           "params", "defense", "data_dir", "dataset_params")


def resume_options(options: dict, command: str) -> tuple[dict, Path]:
    """The options of the interrupted run ``options["resume"]`` and the directory to continue in."""
    ctx = click.get_current_context()
    given = [k for k in RESUMED if k in ctx.params and ctx.get_parameter_source(k).name != "DEFAULT"]
    if given or options.get("out") is not None:
        raise click.BadParameter(f"--resume takes the run's settings from its config.json; drop "
                                 f"{', '.join('--' + k.replace('_', '-') for k in given) or '--out'}",
                                 param_hint="--resume")
    out = options["resume"]
    partial = interrupted_run(out)
    if partial is None:
        what = "it finished" if out.exists() else "no interrupted run was found"
        raise click.BadParameter(f"nothing to resume for {out}: {what}", param_hint="--resume")
    config = json.loads((partial / "config.json").read_text())
    if config["command"] != command:
        raise click.BadParameter(f"{out} was started by `ssmdefense {config['command']}`", param_hint="--resume")
    options = {**options, "out": out, "overwrite": False, "model": config["model"], "dataset": config["dataset"],
               "epochs": config["epochs"], "eps": config["eps"], "seed": config["seed"],
               "sequence": config["sequence"], "batch_size": config["batch_size"],
               "eval_samples": config.get("eval_samples"),
               "model_params": {**config["model_params"], **config.get("sequence_params", {})},
               "params": config["defense_params"], "defense": config["defense"],
               "data_dir": None if config.get("data_dir") is None else Path(config["data_dir"]),
               "dataset_params": config.get("dataset_params", {})}
    return options, partial


def run_training(defense, model, dataset, epochs, eps, seed, device, threads, out, overwrite, sequence, batch_size,
                 eval_samples, model_params, params, as_json, quiet, command, data_dir=None, dataset_params=(),
                 resume=None):
    """Validate everything, train, evaluate best and last checkpoints, write the run directory."""
    from ..api import build_model, build_serialiser, get_defense
    from ..checkpoint import load as load_checkpoint
    from ..seeding import seed_everything
    from ..estimators import SSMClassifier
    from ..evaluation.report import write_report
    from ..evaluation.robustness import best_last_gap, evaluate_robustness
    from ..evaluation.audio import audio_budget, write_audio_examples
    from ..plugins import registry

    partial = None
    if resume is not None:
        options, partial = resume_options(dict(locals()), command)
        defense, model, dataset, epochs, eps, seed = (options[k] for k in ("defense", "model", "dataset", "epochs",
                                                                           "eps", "seed"))
        out, overwrite, sequence, batch_size, eval_samples = (options[k] for k in ("out", "overwrite", "sequence",
                                                                                   "batch_size", "eval_samples"))
        model_params, params = dict(options["model_params"]), dict(options["params"])
        data_dir, dataset_params = options["data_dir"], dict(options["dataset_params"])
    else:
        model_params = parse_params(model_params, "-m")
        params = parse_params(params, "-p")
        dataset_params = parse_params(dataset_params, "-D")
    for key in ("eps", "seed", "batch_size", "eval_samples", "verbose"):
        if key in params:
            raise click.BadParameter(f"set {key} with its own option, not -p", param_hint="-p")
    for kind, name in (("datasets", dataset), ("models", model), ("defenses", defense)):
        registry(kind).get(name)  # unknown names fail here, before any work
    if sequence is not None:
        registry("sequences").get(sequence)
    device_type = resolve_device(device, threads)
    if out is None:
        out = Path("runs") / f"{defense}-{model}-{dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    if partial is None and out.exists() and not overwrite:
        raise click.BadParameter(f"{out} already exists (use --overwrite to replace it)", param_hint="--out")

    data = load_data(dataset, data_dir, dataset_params)
    threads = use_threads(threads, getattr(data, "sample_rate", None) is not None)
    sequence = sequence or data.sequence
    if eps is None:
        eps = data.eps if getattr(data, "eps", None) is not None else 0.1
    recommended = getattr(data, "defaults", {}) or {}
    epochs = epochs or recommended.get("epochs", 10)
    eval_samples = eval_samples or recommended.get("eval_samples")
    sequence_params, model_params = split_sequence_params(sequence, model_params, model)
    serialiser = build_serialiser(sequence, data.input_shape, **sequence_params)
    seed_everything(seed)  # the initial weights too: same seed, same run
    body = build_model(model, serialiser.D, data.nb_classes, **model_params)
    clf = SSMClassifier(body, input_shape=data.input_shape, nb_classes=data.nb_classes, sequence=sequence,
                        sequence_params=serialiser.params, sample_rate=getattr(data, "sample_rate", None),
                        clip_values=data.clip_values, device_type=device_type)
    trainer = get_defense(defense, clf, eps=eps, seed=seed, batch_size=batch_size, eval_samples=eval_samples,
                          verbose=not quiet, **params)
    config = {"command": command, "model": model, "model_params": body.ssmdefense_config["params"],
              "dataset": dataset, "dataset_params": dataset_params,
              "data_dir": None if data_dir is None else str(data_dir), "sequence": sequence,
              "sequence_params": clf.sequence_params, "sample_rate": clf.sample_rate, "defense": defense,
              "defense_params": params, "eps": eps, "epochs": epochs, "seed": seed, "device": device_type,
              "threads": threads, "kernels": clf.kernels, "batch_size": batch_size, "eval_samples": eval_samples,
              "trainer": trainer.describe()}
    x_train, x_test = clf.prepare_inputs(data.x_train), clf.prepare_inputs(data.x_test)

    with staged_directory(out, overwrite, keep_interrupted=True, reuse=partial) as tmp:
        if partial is None:
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        start = time.perf_counter()
        try:
            history = trainer.fit(x_train, data.y_train, validation_data=(x_test, data.y_test),
                                  nb_epochs=epochs, out_dir=tmp, resume=partial is not None,
                                  checkpoint_extra={"dataset": dataset, "dataset_params": dataset_params,
                                                    "data_dir": config["data_dir"], "eps": eps, "seed": seed})
        except (KeyboardInterrupt, SystemExit):
            if (tmp / "state.json").is_file():
                done = json.loads((tmp / "state.json").read_text())["epoch"]
                click.echo(f"interrupted after epoch {done}; continue with: ssmdefense {command} --resume {out}",
                           err=True)
            raise
        train_seconds = time.perf_counter() - start
        x_eval, y_eval = x_test, data.y_test
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
                            "sequence_params": clf.sequence_params, "dataset_params": dataset_params,
                            "defense_params": params, "kernels": clf.kernels}
        if getattr(data, "classes", None):
            report["classes"] = list(data.classes)
        if clf.is_audio:
            report["budget"] = audio_budget(clf, data.x_test[:len(y_eval)], eps)
            best = load_checkpoint(tmp / "best", device_type=device_type)
            report["examples"] = write_audio_examples(tmp / "examples", best, data.x_test[:len(y_eval)], y_eval,
                                                      eps=eps, seed=seed, classes=getattr(data, "classes", None))
        report["timing"] = {"epoch_seconds": [r["epoch_seconds"] for r in history],
                            "eval_seconds": [r.get("eval_seconds") for r in history],
                            "train_seconds": train_seconds,
                            "resumed": partial is not None,
                            **trainer.timing,
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
@click.option("--defense", default=None, help="Registered defense name (see `ssmdefense defenses`); required "
              "unless --resume.")
@run_options
def defend(defense, **options):
    """Train with a defense and write a run directory with best/last checkpoints and a report.

    With no other option: S4D on mnist-5k (rows), eps 0.1, 10 epochs.
    `ssmdefense defend --defense ads` is AdS + PGD adversarial training.
    """
    if defense is None and options["resume"] is None:
        raise click.BadParameter("give a defense, e.g. --defense ads (see `ssmdefense defenses`)",
                                 param_hint="--defense")
    run_training(defense=defense, command="defend", **options)


@cli.command()
@run_options
def train(**options):
    """Standard training (no defense), written like `defend`: the baseline to compare with."""
    run_training(defense="none", command="train", **options)
