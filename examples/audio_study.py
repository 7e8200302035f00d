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
read at its last state). The table is built from their report.json files: from the run's final
evaluation on the first 240 test clips, CA and PGD-10 RA of the best checkpoint, and on the first
100 the audio AutoAttack (its L-inf part alone, and the worst case with the SNR ball); the
independent margin PGD on those 100 clips (L-inf, and either ball); and from evaluate (on --samples
test clips) snr-pgd at each SNR, the worst case over time shifts (up to 100 ms) and speed changes
(0.9x-1.1x), and the gradient-masking verdict when the checks ran.

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
import time
from pathlib import Path

from independent_pgd import check as independent_check
from study_common import add_seed_options, aggregate, fmt, log_command, save_rows, seeds_from

from ssmdefense.cli.common import parse_params
from ssmdefense.experiment import EvaluateConfig, RunConfig, evaluate_checkpoints, run

# row name -> (model, -m parameters). The LSTM reads the mean of its hidden states: with the last
# state (the thesis' model, row "lstm-last") it does not learn words followed by silence (results.md).
MODELS = {"s4d": ("s4d", []), "mamba": ("mamba", []), "lstm": ("lstm", ["pool=mean"]), "lstm-last": ("lstm", [])}
DEFAULT_MODELS = ["s4d", "mamba", "lstm"]
DEFENSES = ["none", "pgd-at", "ads"]  # ads needs SequenceClassifier blocks: not the LSTM


def row(name: str, defense: str, args, root: Path, log) -> dict:
    """One row: a run and an evaluation for each of ``args.seeds``, then their mean ± sd."""
    return aggregate([one_seed(name, defense, args, root, log, seed) for seed in args.seeds])


def one_seed(name: str, defense: str, args, root: Path, log, seed: int) -> dict:
    model, model_params = MODELS[name]
    checks = args.checks and seed in args.check_seeds
    out = root / (f"{name}-{defense}" if seed == 0 else f"{name}-{defense}-seed{seed}")
    start = time.perf_counter()
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
    report = json.loads((out / "report.json").read_text())
    evaluation = json.loads((out / "evaluation" / "report.json").read_text())
    best = evaluation["best"]
    timing = report["timing"]
    saved = out / "evaluation" / "independent-best.json"  # kept beside the evaluation, as for images
    if not saved.is_file():
        print(f"$ python examples/independent_pgd.py {out}", flush=True)
        saved.write_text(json.dumps(independent_check(out, "best", seed=seed), indent=2) + "\n")
    independent = json.loads(saved.read_text())
    aa = report["best"]["autoattack"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    chosen = next(m for m in metrics if m["epoch"] == report["best"]["epoch"])
    return {
        "model": name,
        "seed": seed,
        "defense": defense,
        "dir": str(out),
        "seconds": time.perf_counter() - start,
        "epoch_seconds": sum(timing["epoch_seconds"]) / len(timing["epoch_seconds"]),
        "overhead_ratio": timing.get("overhead_ratio"),
        "epoch": report["best"]["epoch"],
        "ca": report["best"]["clean_accuracy"],
        "ra": report["best"]["robust_accuracy"]["pgd-10"],
        "val_ra": chosen["robust_accuracy"]["pgd-10"],  # the figure that chose it, on validation
        "aa_linf": aa["linf_worst_case"],
        "aa": aa["worst_case"],
        "aa_seconds": aa["seconds"],
        "breakdown": {b["component"]: b["robust_accuracy"] for b in aa["breakdown"]},  # on the first 100 clips
        "pgd_aa_samples": aa["robust_accuracy"]["pgd-10"],  # PGD-10 on those clips
        "ra_last": report["last"]["robust_accuracy"]["pgd-10"],
        "aa_last": report["last"]["autoattack"]["worst_case"],
        "independent_linf": independent["independent_linf"],
        "independent": independent["independent"],
        "gap_aa": independent["gap_aa"],
        "eval_ca": best["clean_accuracy"],
        "eval_ra": best["robust_accuracy"]["pgd-10"],
        "snr": {f"{p['snr_db']:g}": p["accuracy"] for p in best["audio"]["snr_curve"]},
        "time_shift": best["audio"]["search"]["time-shift"]["accuracy"],
        "speed": best["audio"]["search"]["speed"]["accuracy"],
        "masking_suspected": evaluation.get("gradient_masking_suspected"),
        "budget": report["budget"],
    }


def cell(r: dict, key: str) -> str:
    return fmt(r[key], r.get(f"{key}_sd"))


def snr(r: dict, db: str) -> str:
    return fmt(r["snr"][db], (r.get("snr_sd") or {}).get(db))


def table(results: list[dict]) -> str:
    """The rows (mean ± sd over seeds), as docs/results.md shows them."""
    lines = [
        "| model | defense | seeds | best epochs | CA | val PGD-10 at best | PGD-10 RA | AA L-inf "
        "| AA L-inf + SNR 30 dB | margin PGD L-inf | margin PGD both | snr-pgd 40 dB | 30 dB | 20 dB | time-shift "
        "| speed | PGD-10 RA last | AA last | s/epoch | AA s | masking? |",
        "|---" * 21 + "|",
    ]
    for r in results:
        masking = {None: "not run", True: "yes", False: "no"}[r["masking_suspected"]]
        runs = r.get("runs", [r])
        lines.append(
            f"| {r['model']} | {r['defense']} | {','.join(str(x['seed']) for x in runs)} | "
            f"{', '.join(str(x['epoch']) for x in runs)} | {cell(r, 'ca')} | {cell(r, 'val_ra')} | {cell(r, 'ra')} | "
            f"{cell(r, 'aa_linf')} | **{cell(r, 'aa')}** | {cell(r, 'independent_linf')} | {cell(r, 'independent')} | "
            f"{snr(r, '40')} | {snr(r, '30')} | {snr(r, '20')} | {cell(r, 'time_shift')} | {cell(r, 'speed')} | "
            f"{cell(r, 'ra_last')} | {cell(r, 'aa_last')} | {r['epoch_seconds']:.1f} | {r['aa_seconds']:.0f} | "
            f"{masking} |"
        )
    return "\n".join(lines)


COMPONENTS = ("apgd-ce", "apgd-t", "square-1d", "snr-apgd-ce", "snr-apgd-t")  # the audio AutoAttack's order


def seed_table(results: list[dict]) -> str:
    """The audio AutoAttack of each seed's best checkpoint, component by component (accuracy after
    each on the first 100 test clips), beside PGD-10 on them and the independent margin PGD."""
    lines = [
        "| model | defense | seed | clean (100) | APGD-CE | APGD-T | Square-1D | SNR APGD-CE | SNR APGD-T "
        "| PGD-10 (100) | AA L-inf | AA worst | margin L-inf | margin both | AA − margin (L-inf) "
        "| AA − margin (both) | AA s |",
        "|---" * 17 + "|",
    ]
    for r in results:
        for x in r.get("runs", [r]):
            b = x["breakdown"]
            steps = " | ".join(f"{b[k]:.2f}" for k in ("clean", *COMPONENTS))
            lines.append(
                f"| {r['model']} | {r['defense']} | {x['seed']} | {steps} | {x['pgd_aa_samples']:.2f} | "
                f"{x['aa_linf']:.2f} | {x['aa']:.2f} | {x['independent_linf']:.2f} | {x['independent']:.2f} | "
                f"{x['aa_linf'] - x['independent_linf']:+.2f} | {x['aa'] - x['independent']:+.2f} | "
                f"{x['aa_seconds']:.0f} |"
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
    results = []
    with open(args.root / "commands.txt", "a") as log:
        for model in models:
            for defense in args.defenses.split(","):
                if defense == "ads" and MODELS[model][0] == "lstm":
                    continue  # AdS sits after an SSM mixer inside SequenceClassifier blocks; the LSTM has none
                results.append(row(model, defense, args, args.root, log))
                print(table(results[-1:]).splitlines()[-1], flush=True)
    save_rows(args.root / "results.json", results, ("model", "defense"))  # this call's rows (all: the file)
    print(seed_table(results) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
