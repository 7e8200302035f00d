"""The measured study of docs/results.md: every defense on one model and budget, and the AdS study
(models under PGD-AT with and without AdS).

Each row is a run and an evaluation per seed, both in this process (``ssmdefense.experiment.run``
and ``evaluate_checkpoints``), printed as the two equivalent commands so any run can be re-done on
its own:

    ssmdefense defend --defense NAME --model s4d --dataset mnist-5k --epochs E --seed 0 ... --out DIR
    ssmdefense evaluate --checkpoint DIR --attacks pgd,autoattack --samples N ...

and the table is ``ssmdefense compare``'s over the run directories (``study_common.summary_table``:
also ``results.json`` and ``compare.html`` in the part's folder): clean and PGD-10 accuracy at the
best checkpoint (from the run, on --eval-samples test samples), AutoAttack: standard AutoAttack from
evaluate on the first --aa-samples test samples (the per-sample worst case with PGD-10 on the same
samples), the best − last PGD-10 gap and the seconds; then the study's columns: the accuracy an
independent 50-step, 5-restart margin PGD leaves on those samples (examples/independent_pgd.py),
clean accuracy and AutoAttack at the last checkpoint, the best epoch, seconds per epoch, the overhead
against standard training (timed side by side inside each run), and whether the gradient-masking
checks flag the model (each seed's verdict). With several ``--seeds`` (each seed: the weights, the
shuffling, the attacks' random starts) every figure is the mean ± the sample standard deviation over
the seeds. Rows are named by what differs between them: ``ads (base=trades, beta=1.0)``.

    python examples/defense_study.py --part defenses      # docs/results.md, "Every defense"
    python examples/defense_study.py --part ads           # docs/results.md, "The AdS study"
    python examples/defense_study.py --part defenses --only trades,minmax   # some rows
    python examples/defense_study.py --part ads --seeds 0,1,2                # mean ± sd of three seeds
    python examples/defense_study.py --part ads --seeds 1 --train-only       # runs only; evaluate later
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from independent_pgd import check as independent_check
from study_common import (
    AA_LAST,
    BEST_EPOCH,
    CA_LAST,
    MASKING,
    OVERHEAD,
    S_PER_EPOCH,
    add_seed_options,
    independent,
    log_command,
    row_line,
    seeds_from,
    summary_table,
)

from ssmdefense.cli.common import parse_params
from ssmdefense.experiment import EvaluateConfig, RunConfig, evaluate_checkpoints, run

# (row name, defense, defense parameters); the AdS paper's MNIST settings scaled to eps 0.1
DEFENSES = [
    ("none", "none", []),
    ("pgd-at", "pgd-at", []),
    ("trades", "trades", ["beta=1.0"]),
    ("free-at", "free-at", ["replays=4"]),
    ("yopo", "yopo", ["m=5", "n=3"]),
    ("fbf", "fbf", []),
    ("minmax topk:2", "minmax", ["classes=topk:2"]),
    ("minmax all", "minmax", ["classes=all"]),
    ("distillation", "distillation", []),
    ("distillation T=20", "distillation", ["temperature=20"]),
    ("distillation lr 3e-2", "distillation", ["lr=0.03"]),  # T = 100 needs logits 100x larger: a faster lr
    ("augment + pgd-at", "augment", ["base=pgd-at"]),
    ("ads (pgd-at)", "ads", []),
    ("ads + trades", "ads", ["base=trades", "beta=1.0"]),
]
ADS_MODELS = ["s4d", "dss", "s5", "mega", "mamba"]


# the study's figures after compare's (clean, PGD-10, AutoAttack at the best checkpoint, best − last, seconds)
COLUMNS = (
    independent("margin PGD"),
    CA_LAST,
    AA_LAST,
    independent("margin PGD last", "last"),
    BEST_EPOCH,
    S_PER_EPOCH,
    OVERHEAD,
    MASKING,
)


def row(name: str, defense: str, params: list[str], model: str, args, root: Path, log) -> list[Path]:
    """One row: a run and an evaluation for each of ``args.seeds``; their directories."""
    return [one_seed(name, defense, params, model, args, root, log, seed) for seed in args.seeds]


def one_seed(name: str, defense: str, params: list[str], model: str, args, root: Path, log, seed: int) -> Path:
    """The run of ``seed`` (trained, then evaluated and checked by the independent margin PGD, unless
    ``--train-only``), skipping what its directory already holds; its directory."""
    out = root / name.replace(" ", "_").replace(":", "").replace("(", "").replace(")", "").replace("+", "plus")
    out = out if seed == 0 else out.with_name(f"{out.name}-seed{seed}")  # seed 0 keeps the single-seed layout
    if not (out / "report.json").is_file():
        defense_params = {"lr": args.lr, **parse_params(params)}  # a row's own -p lr= wins
        log_command(
            [
                "defend",
                "--defense",
                defense,
                "--model",
                model,
                "--dataset",
                args.dataset,
                "--epochs",
                str(args.epochs),
                "--seed",
                str(seed),
                "--eval-samples",
                str(args.eval_samples),
                "--aa-samples",
                "0",
                "--overwrite",
                "-q",
                "--out",
                str(out),
                "-p",
                f"lr={args.lr}",
                *[a for p in params for a in ("-p", p)],
            ],
            log,
        )
        run(
            RunConfig(
                defense=defense,
                model=model,
                dataset=args.dataset,
                epochs=args.epochs,
                seed=seed,
                eval_samples=args.eval_samples,
                aa_samples=0,  # AutoAttack runs in the evaluation below, beside the masking checks
                overwrite=True,
                verbose=False,
                out=out,
                defense_params=defense_params,
            )
        )
    if args.train_only:
        return out
    checks = seed in args.check_seeds
    if not (out / "evaluation" / "report.json").is_file():
        evaluate = [
            "evaluate",
            "--checkpoint",
            str(out),
            "--attacks",
            "pgd,autoattack",
            "--samples",
            str(args.aa_samples),
            "--eps",
            str(report_eps := json.loads((out / "report.json").read_text())["config"]["eps"]),
            *([] if checks else ["--no-checks"]),
            *[a for kv in args.autoattack for a in ("-p", f"autoattack.{kv}")],
            "--seed",
            str(seed),
        ]
        log_command(evaluate, log)
        evaluate_checkpoints(
            EvaluateConfig(
                checkpoint=out,
                attacks=["pgd", "autoattack"],
                samples=args.aa_samples,
                eps=[report_eps],  # AutoAttack at the run's eps only (a curve would repeat it per eps)
                checks=checks,
                attack_params={"autoattack": parse_params(args.autoattack)} if args.autoattack else {},
                seed=seed,
            )
        )
    report = json.loads((out / "report.json").read_text())
    done = {}  # best and last are often the same epoch: one check, kept under both names
    for which in ("best", "last"):
        saved = out / "evaluation" / f"independent-{which}.json"
        epoch = report[which]["epoch"]
        if not saved.is_file():
            found = done[epoch] if epoch in done else independent_check(out, which, seed=seed)
            saved.write_text(json.dumps(found, indent=2) + "\n")
        done[epoch] = json.loads(saved.read_text())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("defenses", "ads"), required=True)
    parser.add_argument("--only", help="comma-separated row names (defenses) or models (ads)")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--epochs", type=int, default=5)
    add_seed_options(parser)
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (3e-3: a short budget)")
    parser.add_argument("--eval-samples", type=int, default=500, help="test samples of the per-epoch PGD-10")
    parser.add_argument(
        "--aa-samples", type=int, default=100, help="test samples of standard AutoAttack, the checks and the margin PGD"
    )
    parser.add_argument(
        "--autoattack",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="AutoAttack parameter (repeatable; default: the standard version), e.g. --autoattack n_queries=100",
    )
    parser.add_argument("--root", type=Path, default=Path("runs/study"))
    parser.add_argument(
        "--train-only", action="store_true", help="only the runs (a later call evaluates them and builds the table)"
    )
    args = parser.parse_args(argv)
    seeds_from(args)
    only = set(args.only.split(",")) if args.only else None
    root = args.root / args.part
    root.mkdir(parents=True, exist_ok=True)
    if args.part == "defenses":
        rows = [(name, defense, params, "s4d") for name, defense, params in DEFENSES if only is None or name in only]
    else:
        rows = [
            (f"{model} {defense}", defense, [], model)
            for model in ADS_MODELS
            if only is None or model in only
            for defense in ("pgd-at", "ads")
        ]
    directories = []
    with open(root / "commands.txt", "a") as log:
        for name, defense, params, model in rows:
            directories += (done := row(name, defense, params, model, args, root, log))
            print(name if args.train_only else row_line(done, COLUMNS), flush=True)
    if not args.train_only:
        print(summary_table(root, directories, COLUMNS), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
