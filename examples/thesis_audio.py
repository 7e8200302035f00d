"""The master thesis' audio protocols ("Min-max optimization methods in adversarial learning",
tables 5.4-5.6), re-measured on spoken-digits (or Speech Commands, ``--dataset``) with this
toolkit's evaluation: S4, LSTM and GRU on
the raw waveform and on log-mel + dB, each under standard training, PGD-AT and the thesis' min-max
training (Algorithm 2: per-class targeted attacks plus the clean sample as one more candidate).

Each row is a run (``ssmdefense.experiment.run``: the best checkpoint chosen on the validation
split, the final evaluation with PGD-10 and the audio AutoAttack on the first 100 test clips) and
the independent check (``examples/independent_pgd.py``), printed as commands:

    ssmdefense defend --defense D --model M --dataset spoken-digits --sequence S [-m ...] [-p ...] --seed 0 --out DIR
    python examples/independent_pgd.py DIR

then, on the same 100 test clips of the best checkpoint, the ways of scoring an attack that can put
adversarial accuracy above clean accuracy (``protocols``). The table is ``ssmdefense compare``'s over
the run directories (``study_common.summary_table``: also ``results.json`` and ``compare.html`` under
--root; a row's front end shows as ``(sequence=frames|mel)`` when both are in it), with the thesis'
figures, the L-inf part of the audio AutoAttack, the independent margin PGD and the variants added:

- ``pgd_given_correct``: PGD-10 accuracy counted only over the clips classified correctly when
  clean (a success rate's complement; it can exceed the clean accuracy of a weak model);
- ``pgd_predicted_labels``, ``fgsm_true_labels``, ``fgsm_predicted_labels``: the attacks with the
  model's own predictions as labels instead of the true ones (ART's default when ``y`` is None):
  a model that learned the signature of training perturbations made from the true label (label
  leaking, Kurakin et al. 2017) scores higher under the true-label attack than when clean;
- ``pgd_detached_front_end``: PGD-10 through a front end that is not differentiated through (the
  features computed outside the graph: every input gradient is 0), so only PGD's random start in
  the eps-ball moves the clip; it equals ``noise`` (uniform noise in the ball), which a model
  trained only on perturbed inputs may classify better than clean clips.

Raw waveform means 10 ms frames of 160 samples as steps (``--sequence frames``: 100 steps of 160
values, no spectral front end; one sample per step, 16,000 steps, is out of reach for the LSTM and
GRU on CPU). The LSTM and GRU read the mean of their hidden states (``-m pool=mean``; at their last
state they do not learn words followed by silence, docs/results.md). Min-max attacks the ``--topk``
most likely wrong classes (default 3, ``-p classes=topk:3``) with ``-p include_clean=true``.

    python examples/thesis_audio.py                          # every row (hours on 2 cores)
    python examples/thesis_audio.py --only s4 --fronts mel   # some rows
    python examples/thesis_audio.py -D 'accents=["en-us"]' --epochs 1 --aa-samples 4   # a quick variant
    python examples/thesis_audio.py --dataset speech-commands --data-dir ~/data --root runs/study/thesis-sc
                                   # the thesis' own data: Speech Commands v0.02 digits, official split
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from independent_pgd import check as independent_check
from study_common import AA_LINF, OVERHEAD, S_PER_EPOCH, independent, log_command, read, row_line, summary_table

import ssmdefense as sd
from ssmdefense.cli.common import parse_params
from ssmdefense.evaluation.compare import Column
from ssmdefense.experiment import RunConfig, run
from ssmdefense.seeding import seeded
from ssmdefense.workflows import load_test_data

MODELS = {"s4": [], "lstm": ["pool=mean"], "gru": ["pool=mean"]}
FRONTS = {"wave": "frames", "mel": "mel"}
DEFENSES = ["none", "pgd-at", "minmax"]

# the thesis' figures (tables 5.4-5.6), as quoted in the issue that asked for this comparison
THESIS = {
    ("s4", "wave", "none"): (0.810, 0.000),
    ("s4", "mel", "none"): (0.931, 0.622),
    ("s4", "mel", "minmax"): (0.904, 0.883),
    ("gru", "mel", "minmax"): (0.212, 0.887),
    ("lstm", "mel", "minmax"): (0.256, 0.879),
}


class DetachedFrontEnd(torch.nn.Module):
    """The classifier with its front end outside the graph: the same outputs, a zero input gradient."""

    def __init__(self, clf):
        super().__init__()
        self.serialiser, self.body = clf.serialiser, clf.body

    def forward(self, x):  # (B 1 T) -> (B C)
        features = self.serialiser(x)  # (B L D)
        return self.body(features * 0 + features.detach())  # d features / d x = 0


def accuracy(clf, x, y) -> float:
    return float((clf.predict(x).argmax(1) == y).mean())


def attacked(clf, name: str, x, y, eps: float, seed: int, labels=True, **params) -> np.ndarray:
    """Per clip: classified correctly (as ``y``) after the attack, made with ``y`` or (labels=False)
    with the model's own predictions."""
    with seeded(seed):
        x_adv = sd.get_attack(name, clf, eps=eps, **params).generate(x, y if labels else None)
    return clf.predict(x_adv.astype(np.float32)).argmax(1) == y


def protocols(out: Path, eps: float, samples: int, seed: int) -> dict:
    """The scoring variants on the first ``samples`` test clips of ``out``'s best checkpoint."""
    clf = sd.load(out / "best", device_type="cpu")
    _, x, y, _ = load_test_data(clf, samples=samples)
    clean = clf.predict(x).argmax(1) == y  # (N)
    pgd = attacked(clf, "pgd", x, y, eps, seed, max_iter=10)
    detached = PyTorchClassifier(
        DetachedFrontEnd(clf),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=clf.input_shape,
        nb_classes=clf.nb_classes,
        clip_values=clf.clip_values,
        device_type="cpu",
    )
    return {
        "clean": float(clean.mean()),
        "pgd": float(pgd.mean()),
        "pgd_given_correct": float(pgd[clean].mean()) if clean.any() else None,
        "pgd_predicted_labels": float(attacked(clf, "pgd", x, y, eps, seed, labels=False, max_iter=10).mean()),
        "fgsm_true_labels": float(attacked(clf, "fgsm", x, y, eps, seed).mean()),
        "fgsm_predicted_labels": float(attacked(clf, "fgsm", x, y, eps, seed, labels=False).mean()),
        "pgd_detached_front_end": float(attacked(detached, "pgd", x, y, eps, seed, max_iter=10).mean()),
        "noise": float(attacked(clf, "noise", x, y, eps, seed).mean()),
    }


def _thesis(d: Path) -> str | None:
    """The thesis' clean / PGD figures (in %) of the run's model, front end and defense, if it has them."""
    config = read(d, "config.json")
    front = {sequence: front for front, sequence in FRONTS.items()}[config["sequence"]]
    found = THESIS.get((config["model"], front, config["defense"]))
    return None if found is None else f"{100 * found[0]:.1f} / {100 * found[1]:.1f}"


def protocol(header: str, key: str) -> Column:
    """A scoring variant's accuracy (``protocols``, kept beside the evaluation)."""
    return Column(header, lambda d: read(d, "evaluation/protocols-best.json")[key])


# the study's figures after compare's (clean, PGD-10, AutoAttack = L-inf + SNR 30 dB, best − last, seconds)
COLUMNS = (
    Column("thesis clean / PGD", _thesis, "text"),
    AA_LINF,
    independent("margin PGD"),
    protocol("PGD-10 given correct", "pgd_given_correct"),
    protocol("PGD-10, predicted labels", "pgd_predicted_labels"),
    protocol("FGSM true labels", "fgsm_true_labels"),
    protocol("FGSM predicted labels", "fgsm_predicted_labels"),
    protocol("PGD-10, front end detached", "pgd_detached_front_end"),
    protocol("noise", "noise"),
    S_PER_EPOCH,
    OVERHEAD,
)


def one_row(model: str, front: str, defense: str, args, log) -> Path:
    """The run, the independent check and the scoring variants, skipping what the directory already
    holds; its directory."""
    out = args.root / f"{model}-{front}-{defense}"
    params = [f"classes=topk:{args.topk}", "include_clean=true"] if defense == "minmax" else []
    command = [
        "defend",
        "--defense",
        defense,
        "--model",
        model,
        "--dataset",
        args.dataset,
        *([] if args.data_dir is None else ["--data-dir", str(args.data_dir)]),
        "--sequence",
        FRONTS[front],
        *[a for m in MODELS[model] for a in ("-m", m)],
        *[a for p in params for a in ("-p", p)],
        *[a for d in args.dataset_param for a in ("-D", d)],
        *([] if args.epochs is None else ["--epochs", str(args.epochs)]),
        "--aa-samples",
        str(args.aa_samples),
        "--seed",
        str(args.seed),
        "-q",
        "--out",
        str(out),
    ]
    if not (out / "report.json").is_file():
        log_command(command, log)
        run(
            RunConfig(
                defense=defense,
                model=model,
                dataset=args.dataset,
                data_dir=args.data_dir,
                sequence=FRONTS[front],
                model_params=parse_params(MODELS[model], "-m"),
                defense_params=parse_params(params, "-p"),
                dataset_params=parse_params(args.dataset_param, "-D"),
                epochs=args.epochs,
                aa_samples=args.aa_samples,
                seed=args.seed,
                threads=args.threads,
                overwrite=True,
                verbose=False,
                out=out,
            )
        )
    report = json.loads((out / "report.json").read_text())
    saved = out / "evaluation" / "independent-best.json"
    if not saved.is_file():
        print(f"$ python examples/independent_pgd.py {out}", flush=True)
        saved.parent.mkdir(exist_ok=True)
        saved.write_text(json.dumps(independent_check(out, "best", seed=args.seed), indent=2) + "\n")
    variants = out / "evaluation" / "protocols-best.json"
    if not variants.is_file():
        found = protocols(out, report["config"]["eps"], report["best"]["autoattack"]["samples"], args.seed)
        variants.write_text(json.dumps(found, indent=2) + "\n")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated models ({', '.join(MODELS)})")
    parser.add_argument("--fronts", default=",".join(FRONTS), help="comma-separated front ends (wave, mel)")
    parser.add_argument("--defenses", default=",".join(DEFENSES), help="comma-separated defenses")
    parser.add_argument("--topk", type=int, default=3, help="min-max: wrong classes attacked per sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the audio default)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the dataset's, 8)")
    parser.add_argument("--aa-samples", type=int, default=100, help="test clips of AutoAttack and the protocols")
    parser.add_argument("--dataset", default="spoken-digits", help="spoken-digits, or speech-commands (the thesis')")
    parser.add_argument("--data-dir", type=Path, default=None, help="the folder of a real dataset (speech-commands)")
    parser.add_argument("-D", "--dataset-param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--root", type=Path, default=Path("runs/study/thesis"))
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    models = args.only.split(",") if args.only else list(MODELS)
    directories = []
    with open(args.root / "commands.txt", "a") as log:
        for model in models:
            for front in args.fronts.split(","):
                for defense in args.defenses.split(","):
                    directories.append(one_row(model, front, defense, args, log))
                    print(row_line(directories[-1:], COLUMNS), flush=True)
    print(summary_table(args.root, directories, COLUMNS), end="")  # this call's rows (all: results.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
