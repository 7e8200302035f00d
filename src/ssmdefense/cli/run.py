"""``ssmdefense defend`` and ``ssmdefense train``: parse the options into a ``RunConfig`` and run it
(``ssmdefense.workflows.run``), which writes the run directory (config.json, metrics.jsonl, best.* and
last.* checkpoints, report.json, report.md, plots/), built under a temporary name that appears only
when complete.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from ..workflows.config import RunConfig
from . import cli
from .common import THREADS_HELP, echo_json, parse_params

# the options of `defend` and `train`, in the order --help lists them
RUN_OPTIONS = [
    click.option("--model", default="s4d", show_default=True, help="Registered model name."),
    click.option("--dataset", default="mnist-5k", show_default=True, help="Registered dataset name."),
    click.option(
        "--epochs",
        type=click.IntRange(min=1),
        default=None,
        help="Training epochs (default: 10, or the dataset's, e.g. 8 for spoken-digits).",
    ),
    click.option(
        "--eps",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="L-inf budget for training attacks and the PGD-10/FGSM evaluation "
        "(default: the dataset's, e.g. 0.1 for images; audio states it also as SNR in dB).",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed: same seed, same run."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    click.option("--threads", type=click.IntRange(min=1), default=None, help=THREADS_HELP),
    click.option(
        "--out",
        type=click.Path(path_type=Path),
        default=None,
        help="Run directory (default: runs/<defense>-<model>-<dataset>-<time>).",
    ),
    click.option("--overwrite", is_flag=True, help="Replace --out if it exists."),
    click.option(
        "--sequence",
        default=None,
        help="How inputs become sequences: pixels|rows for images, mel|frames|samples for audio, "
        "or a plugin's (default: the dataset's; see `ssmdefense sequences`).",
    ),
    click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Folder holding a real dataset in its official layout (passed as root=).",
    ),
    click.option(
        "-D",
        "--dataset-param",
        "dataset_params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Dataset parameter, e.g. -D subset=all -D test_fold=3 (repeatable).",
    ),
    click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
    click.option(
        "--eval-samples",
        type=click.IntRange(min=1),
        default=None,
        help="Evaluate on the first N test samples (default: all, or the dataset's).",
    ),
    click.option(
        "--aa-samples",
        type=click.IntRange(min=0),
        default=None,
        help="Run AutoAttack (standard; for waveforms the audio ensemble over the L-inf and the SNR ball) "
        "on the first N evaluated samples of best and last, beside FGSM and PGD-10 on the same samples; "
        "0 skips it (default: 100, or the dataset's).",
    ),
    click.option(
        "--aa-snr-db",
        type=float,
        default=30.0,
        show_default=True,
        help="Audio AutoAttack: the SNR ball (dB) of its L2 components, beside the L-inf ball of --eps.",
    ),
    click.option(
        "--select-on",
        type=click.Choice(["val", "test"]),
        default="val",
        show_default=True,
        help="The split whose per-epoch PGD-10 accuracy chooses the best checkpoint: the validation split "
        "(-D val_fraction=..., or the dataset's own), or test (the AdS paper's practice; the report "
        "says so). Best and last are scored on test either way.",
    ),
    click.option(
        "-m",
        "--model-param",
        "model_params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Model parameter, e.g. -m d_model=128, or a setting of the sequence mode, e.g. "
        "-m n_mels=64 -m attack_space=features (repeatable).",
    ),
    click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Defense parameter, e.g. -p act=tanh (repeatable).",
    ),
    click.option(
        "--preset",
        default=None,
        metavar="NAME|FILE.json",
        help="Paper-scale settings: ads-mnist, ads-cifar10, thesis-gtsrb, thesis-speech-commands (see "
        "`ssmdefense presets`), or a JSON file of the same form; options given explicitly win.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=None,
        help="DataLoader worker processes decoding a lazily loaded dataset, e.g. -D lazy=true "
        "(default: 2 for lazy data, 0 for data in memory).",
    ),
    click.option(
        "--log",
        default=None,
        metavar="tensorboard",
        help="Also log to TensorBoard: per-epoch scalars, the final figures as hparams, adversarial examples "
        "(needs `pip install 'ssmdefense[tensorboard]'`).",
    ),
    click.option(
        "--log-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Where --log writes (default: the run directory's tensorboard/).",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the report as JSON at the end."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bars: one line per phase instead (docs/cli.md)."),
    click.option(
        "--resume",
        type=click.Path(path_type=Path),
        default=None,
        help="Continue an interrupted run: give its --out directory. Its settings come from the "
        "run's config.json; the result equals an uninterrupted run.",
    ),
]


def run_options(fn):
    for option in reversed(RUN_OPTIONS):
        fn = option(fn)
    return fn


# the options a resumed run takes from its config.json (anything else may be given again), the options
# a preset may fill, and every option's RunConfig field: all read from the run schema
RESUMED = tuple(RunConfig.options("resumed"))
PRESET_OPTIONS = RunConfig.options("preset")
FIELDS = RunConfig.options()
PARSED = {"model_params": "-m", "params": "-p", "dataset_params": "-D"}  # KEY=VALUE options


def run_training(command: str, **options):
    """Parse the options into a ``RunConfig`` (``--resume``: the interrupted run's, ``--preset``: completed
    by the preset), run it (``ssmdefense.workflows.run``), print the report."""
    from .. import progress

    loading = progress.phase(f"ssmdefense {command}: loading torch, ART and the plugins", line=False)
    with progress.without_bars() if options["quiet"] else contextlib.nullcontext(), loading:  # -q: no bars
        from ..errors import RunInterrupted
        from ..workflows.presets import with_preset
        from ..workflows.resume import resume_config
        from ..workflows.train import run

    ctx = click.get_current_context()
    given = [name for name in ctx.params if ctx.get_parameter_source(name).name != "DEFAULT"]
    as_json, quiet, resume, preset = (options.pop(key) for key in ("as_json", "quiet", "resume", "preset"))
    if resume is not None:
        here = {"device": options["device"], "threads": options["threads"], "workers": options["workers"]}
        refused = tuple(name for name in given if name in (*RESUMED, "out"))
        config, partial = resume_config(resume, command, refused, **here, verbose=not quiet)
    else:
        fields = {FIELDS[k]: parse_params(v, PARSED[k]) if k in PARSED else v for k, v in options.items()}
        config, partial = RunConfig(**fields, command=command, verbose=not quiet), None
        if preset is not None:
            config = with_preset(config, preset, [PRESET_OPTIONS[name] for name in given if name in PRESET_OPTIONS])
    try:
        report = run(config, resume_dir=partial)
    except RunInterrupted as stopped:  # kept for --resume: say where it stopped and how to go on
        click.echo(str(stopped), err=True)
        raise SystemExit(stopped.exit_status) from None
    if report is None:  # a rank of a distributed run other than 0: rank 0 prints the report
        return None
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_summary(report.to_dict(), report.out)
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
        table.add_row(
            which, str(r["epoch"]), f"{r['clean_accuracy']:.3f}", *[f"{r['robust_accuracy'][k]:.3f}" for k in keys]
        )
    Console().print(table)
    aa = report["best"].get("autoattack")
    if aa:
        click.echo(
            f"{aa.get('attack', 'autoattack')} ({aa['version']}) on {aa['samples']} samples, best checkpoint: "
            f"{aa['worst_case']:.3f} (worst case with FGSM and PGD-10 on the same samples; {aa['seconds']:.0f} s)"
        )
    certified = report["best"].get("certified")
    if certified:
        click.echo(
            f"verified ({certified['method']}) at eps {certified['eps']:g} on {certified['samples']} samples, best "
            f"checkpoint: {certified['certified_accuracy']:.3f}"
        )
    chosen = {"val": "the validation split", "test": "the TEST split (--select-on test)"}
    click.echo(f"best checkpoint chosen on {chosen[report['config']['select_on']]}")
    click.echo(f"report: {out / 'report.md'}")


@cli.command()
@click.option(
    "--defense", default=None, help="Registered defense name (see `ssmdefense defenses`); required unless --resume."
)
@run_options
def defend(defense, **options):
    """Train with a defense and write a run directory with best/last checkpoints and a report.

    With no other option: S4D on mnist-5k (rows), eps 0.1, 10 epochs.
    `ssmdefense defend --defense ads` is AdS + PGD adversarial training.
    """
    if defense is None and options["resume"] is None:
        raise click.BadParameter(
            "give a defense, e.g. --defense ads (see `ssmdefense defenses`)", param_hint="--defense"
        )
    run_training(defense=defense, command="defend", **options)


@cli.command()
@run_options
def train(**options):
    """Standard training (no defense), written like `defend`: the baseline to compare with."""
    run_training(defense="none", command="train", **options)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def presets(as_json):
    """List the paper-scale presets of `defend --preset NAME` and what each sets."""
    from ..workflows.presets import PRESETS

    if as_json:
        echo_json([{"name": name, **preset} for name, preset in PRESETS.items()])
        return
    for name, preset in PRESETS.items():
        click.echo(f"{name:24s} {preset['summary']}")
