"""The audio study of docs/results.md: S4D, Mamba and LSTM on spoken-digits under standard training,
PGD-AT and AdS, attacked on the waveform with PGD-10 (L-inf), the audio AutoAttack (L-inf and the
30 dB SNR ball), an independent margin PGD, snr-pgd at 40/30/20 dB, time shifts and speed changes.

Each row is a run (``ssmdefense.experiment.run``), an evaluation (``evaluate_checkpoints``) and the
independent check (``examples/independent_pgd.py``) per seed, all in this process, printed as the
equivalent commands so any run can be re-done alone:

    ssmdefense defend --defense NAME --model M --dataset spoken-digits --seed S -q --out DIR
    ssmdefense evaluate --checkpoint DIR --attacks pgd --snr 40,30,20 --samples N --seed S --aa-samples 0
    python examples/independent_pgd.py DIR [--which last]

with the dataset's defaults (eps 0.001, 8 epochs, the best checkpoint chosen by PGD-10 on the
validation split: 4 held-out training voices, 240 clips; S4D/Mamba d_model 64, 2 layers, LSTM
hidden 64 read through the mean of its states, ``-m pool=mean``; the row ``lstm-last`` is the LSTM
read at its last state, ``lstm`` without ``(pool=mean)`` in the table). The table is ``ssmdefense
compare``'s over the run directories (``study_common.summary_table``: also ``results.json`` and
``compare.html`` under --root), mean ± sample sd over the seeds: from the run's final evaluation on
the first 240 test clips, clean and PGD-10 accuracy of the best checkpoint, and on the first 100 the
audio AutoAttack (the worst case with the SNR ball; then its L-inf part alone); then the study's
columns: the validation PGD-10 that chose the checkpoint, the independent margin PGD on those 100
clips (L-inf, and either ball); from evaluate (on --samples test clips) snr-pgd at each SNR, the
worst case over time shifts (up to 100 ms) and speed changes (0.9x-1.1x); AutoAttack at the last
checkpoint, seconds, and the gradient-masking verdict of each seed ("not run" without the checks).
A second table lists each seed's audio AutoAttack component by component.

    python examples/audio_study.py                       # every row (about 1.5 h on 2 cores)
    python examples/audio_study.py --only s4d,lstm       # some models
    python examples/audio_study.py --checks              # also the gradient-masking checks
    python examples/audio_study.py --seeds 0,1,2         # mean ± sd over three seeds (study_common.py)
    python examples/audio_study.py --seeds 0,1,2 --checks --check-seeds 0   # the checks on seed 0 only
    python examples/audio_study.py -D 'accents=["en-us"]' --epochs 1       # a quick, smaller variant
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from independent_pgd import check as independent_check
from study_common import (
    AA_LAST,
    AA_LINF,
    BEST_EPOCH,
    MASKING,
    S_PER_EPOCH,
    add_seed_options,
    independent,
    log_command,
    read,
    row_line,
    seeds_from,
    summary_table,
)

from ssmdefense.cli.common import parse_params
from ssmdefense.evaluation.compare import Column
from ssmdefense.experiment import EvaluateConfig, RunConfig, evaluate_checkpoints, run

# row name -> (model, -m parameters). The LSTM reads the mean of its hidden states: with the last
# state (the thesis' model, row "lstm-last") it does not learn words followed by silence (results.md).
MODELS = {"s4d": ("s4d", []), "mamba": ("mamba", []), "lstm": ("lstm", ["pool=mean"]), "lstm-last": ("lstm", [])}
DEFAULT_MODELS = ["s4d", "mamba", "lstm"]
DEFENSES = ["none", "pgd-at", "ads"]  # ads needs SequenceClassifier blocks: not the LSTM


def _chosen_by(d: Path) -> float:
    """The validation PGD-10 of the best checkpoint's epoch: the figure that chose it."""
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    return next(m for m in metrics if m["epoch"] == read(d)["best"]["epoch"])["robust_accuracy"]["pgd-10"]


def _evaluated(d: Path) -> dict:
    return read(d, "evaluation/report.json")["best"]["audio"]


def snr_column(db: int) -> Column:
    return Column(
        f"snr-pgd {db} dB", lambda d: next(p["accuracy"] for p in _evaluated(d)["snr_curve"] if p["snr_db"] == db)
    )


# the study's figures after compare's (clean, PGD-10, AutoAttack at the best checkpoint, best − last, seconds)
COLUMNS = (
    BEST_EPOCH,
    Column("val PGD-10 at best", _chosen_by),
    AA_LINF,
    independent("margin PGD L-inf", key="independent_linf"),
    independent("margin PGD both"),
    *(snr_column(db) for db in (40, 30, 20)),
    Column("time-shift", lambda d: _evaluated(d)["search"]["time-shift"]["accuracy"]),
    Column("speed", lambda d: _evaluated(d)["search"]["speed"]["accuracy"]),
    AA_LAST,
    S_PER_EPOCH,
    Column("AA s", lambda d: read(d)["best"]["autoattack"]["seconds"], "seconds"),
    MASKING,
)


def row(name: str, defense: str, args, root: Path, log) -> list[Path]:
    """One row: a run and an evaluation for each of ``args.seeds``; their directories."""
    return [one_seed(name, defense, args, root, log, seed) for seed in args.seeds]


def one_seed(name: str, defense: str, args, root: Path, log, seed: int) -> Path:
    """The run of ``seed``, its evaluation and the independent check, skipping what its directory
    already holds; its directory."""
    model, model_params = MODELS[name]
    checks = args.checks and seed in args.check_seeds
    out = root / (f"{name}-{defense}" if seed == 0 else f"{name}-{defense}-seed{seed}")
    if not (out / "report.json").is_file():
        log_command(
            [
                "defend",
                "--defense",
                defense,
                "--model",
                model,
                "--dataset",
                "spoken-digits",
                "--seed",
                str(seed),
                *[a for p in model_params for a in ("-m", p)],
                *[a for p in args.dataset_param for a in ("-D", p)],
                *([] if args.epochs is None else ["--epochs", str(args.epochs)]),
                *([] if args.eval_samples is None else ["--eval-samples", str(args.eval_samples)]),
                "--overwrite",
                "-q",
                "--out",
                str(out),
            ],
            log,
        )
        run(
            RunConfig(
                defense=defense,
                model=model,
                dataset="spoken-digits",
                seed=seed,
                model_params=parse_params(model_params, "-m"),
                dataset_params=parse_params(args.dataset_param, "-D"),
                epochs=args.epochs,
                eval_samples=args.eval_samples,
                threads=args.threads,
                overwrite=True,
                verbose=False,
                out=out,
            )
        )
    if not (out / "evaluation" / "report.json").is_file():
        log_command(
            [
                "evaluate",
                "--checkpoint",
                str(out),
                "--attacks",
                "pgd",
                "--snr",
                "40,30,20",
                "--samples",
                str(args.samples),
                "--seed",
                str(seed),
                "--aa-samples",
                "0",  # the run's final evaluation has it, on the same first 100 clips
                *([] if checks else ["--no-checks"]),
            ],
            log,
        )
        evaluate_checkpoints(
            EvaluateConfig(
                checkpoint=out,
                attacks=["pgd"],
                snr_db=[40.0, 30.0, 20.0],
                samples=args.samples,
                seed=seed,
                checks=checks,
                aa_samples=0,
                threads=args.threads,
            )
        )
    saved = out / "evaluation" / "independent-best.json"  # kept beside the evaluation, as for images
    if not saved.is_file():
        print(f"$ python examples/independent_pgd.py {out}", flush=True)
        saved.write_text(json.dumps(independent_check(out, "best", seed=seed), indent=2) + "\n")
    return out


COMPONENTS = ("apgd-ce", "apgd-t", "square-1d", "snr-apgd-ce", "snr-apgd-t")  # the audio AutoAttack's order


def seed_table(directories: list[Path]) -> str:
    """The audio AutoAttack of each run's best checkpoint, component by component (accuracy after
    each on the first 100 test clips), beside PGD-10 on them and the independent margin PGD."""
    lines = [
        "| run | seed | clean (100) | APGD-CE | APGD-T | Square-1D | SNR APGD-CE | SNR APGD-T "
        "| PGD-10 (100) | AA L-inf | AA worst | margin L-inf | margin both | AA − margin (L-inf) "
        "| AA − margin (both) | AA s |",
        "|---" * 16 + "|",
    ]
    for d in directories:
        aa, found = read(d)["best"]["autoattack"], read(d, "evaluation/independent-best.json")
        b = {x["component"]: x["robust_accuracy"] for x in aa["breakdown"]}
        steps = " | ".join(f"{b[k]:.2f}" for k in ("clean", *COMPONENTS))
        margin_linf, margin = found["independent_linf"], found["independent"]
        lines.append(
            f"| {d.name} | {read(d, 'config.json')['seed']} | {steps} | {aa['robust_accuracy']['pgd-10']:.2f} | "
            f"{aa['linf_worst_case']:.2f} | {aa['worst_case']:.2f} | {margin_linf:.2f} | {margin:.2f} | "
            f"{aa['linf_worst_case'] - margin_linf:+.2f} | {aa['worst_case'] - margin:+.2f} | {aa['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", help=f"comma-separated rows ({', '.join(MODELS)}; default: {','.join(DEFAULT_MODELS)})"
    )
    parser.add_argument("--defenses", default=",".join(DEFENSES), help="comma-separated defenses")
    add_seed_options(parser)
    parser.add_argument(
        "-D",
        "--dataset-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="spoken-digits parameter (repeatable), as in ssmdefense defend -D",
    )
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the dataset's, 8)")
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="clips of the per-epoch PGD-10 (validation) and the final evaluation (test); default: 240",
    )
    parser.add_argument("--samples", type=int, default=240, help="test clips of evaluate's attacks")
    parser.add_argument("--checks", action="store_true", help="run evaluate's gradient-masking checks too")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the audio default)")
    parser.add_argument("--root", type=Path, default=Path("runs/study/audio"))
    args = parser.parse_args(argv)
    seeds_from(args)
    models = args.only.split(",") if args.only else DEFAULT_MODELS
    args.root.mkdir(parents=True, exist_ok=True)
    directories = []
    with open(args.root / "commands.txt", "a") as log:
        for model in models:
            for defense in args.defenses.split(","):
                if defense == "ads" and MODELS[model][0] == "lstm":
                    continue  # AdS sits after an SSM mixer inside SequenceClassifier blocks; the LSTM has none
                directories += (done := row(model, defense, args, args.root, log))
                print(row_line(done, COLUMNS), flush=True)
    print(seed_table(directories) + "\n")
    print(summary_table(args.root, directories, COLUMNS), end="")  # this call's rows (all: results.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
