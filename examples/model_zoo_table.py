"""Measure every registered model on mnist-5k: standard training and PGD-AT, with and without AdS.

    .venv/bin/python examples/model_zoo_table.py                   # the table in docs/models.md
    .venv/bin/python examples/model_zoo_table.py --models s4d,lstm --epochs 1 --eval-samples 200

For each model (CLI-default sizes, ``sequence="rows"``, seed 0) and each setting it trains with the
shared loop (AdamW, ``--lr`` 3e-3 by default: the paper's 1e-3 barely trains in 3 epochs) and
records the parameter count, clean and PGD-10 accuracy (ART's PGD, eps 0.1) on the first
``--eval-samples`` test images at the best (highest PGD-10) and last epoch, and the mean training
seconds per epoch (one torch thread per run; ``--jobs`` runs in parallel). Settings:
``none`` (standard), ``none+ads`` (standard training of the model built with AdS relu),
``pgd-at`` and ``ads`` (AdS relu + PGD-AT). Models without AdS support get the first and third.
Writes JSON (``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

SSMS = ("s4", "s4d", "dss", "s5", "mega", "mamba")
SETTINGS = ("none", "none+ads", "pgd-at", "ads")


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    import ssmdefense as sd
    from ssmdefense.seeding import seed_everything

    data = sd.load_dataset("mnist-5k")
    seed_everything(0)
    model_params = {"ads": "relu"} if job["setting"] == "none+ads" else {}
    body = sd.build_model(job["model"], 28, 10, **model_params)
    clf = sd.SSMClassifier(
        body,
        input_shape=data.input_shape,
        nb_classes=10,
        sequence="rows",
        clip_values=data.clip_values,
        device_type="cpu",
    )
    defense = {"none+ads": "none"}.get(job["setting"], job["setting"])
    trainer = sd.get_defense(
        defense, clf, eps=job["eps"], lr=job["lr"], eval_samples=job["eval_samples"], verbose=False
    )
    start = time.perf_counter()
    history = trainer.fit(
        data.x_train, data.y_train, validation_data=(data.x_test, data.y_test), nb_epochs=job["epochs"]
    )
    best = max(history, key=lambda r: (r["robust_accuracy"]["pgd-10"], r["clean_accuracy"]))
    last = history[-1]
    return {
        **job,
        "parameters": sum(p.numel() for p in clf.model.parameters()),
        "best_epoch": best["epoch"],
        "ca_best": best["clean_accuracy"],
        "ra_best": best["robust_accuracy"]["pgd-10"],
        "ca_last": last["clean_accuracy"],
        "ra_last": last["robust_accuracy"]["pgd-10"],
        "epoch_seconds": sum(r["epoch_seconds"] for r in history) / len(history),
        "wall_seconds": time.perf_counter() - start,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | setting | parameters | CA best | PGD-10 best | best epoch | CA last | PGD-10 last | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['parameters']:,} | {r['ca_best']:.3f} | {r['ra_best']:.3f} "
            f"| {r['best_epoch']} | {r['ca_last']:.3f} | {r['ra_last']:.3f} | {r['epoch_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main():
    import ssmdefense as sd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(sd.list_models()))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (3e-3: a short budget)")
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/model_zoo_table.json"))
    args = parser.parse_args()
    jobs = [
        {
            "model": m,
            "setting": s,
            "epochs": args.epochs,
            "eps": args.eps,
            "lr": args.lr,
            "eval_samples": args.eval_samples,
        }
        for m in args.models.split(",")
        for s in args.settings.split(",")
        if m in SSMS or "ads" not in s
    ]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        rows = []
        for row in pool.imap(run_one, jobs):
            rows.append(row)
            print(
                f"{row['model']:6s} {row['setting']:9s} CA {row['ca_best']:.3f} RA {row['ra_best']:.3f} "
                f"({row['epoch_seconds']:.1f} s/epoch)",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
