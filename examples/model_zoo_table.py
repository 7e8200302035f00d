"""Measure every registered model on mnist-5k: standard training and PGD-AT, with and without AdS.

    .venv/bin/python examples/model_zoo_table.py                   # the table in docs/models.md
    .venv/bin/python examples/model_zoo_table.py --models s4d,lstm --epochs 1 --eval-samples 200

For each model (CLI-default sizes, ``sequence="rows"``, seed 0) and each setting it runs
``ssmdefense defend`` (``ssmdefense.experiment.run``: AdamW, ``--lr`` 3e-3 by default: the paper's
1e-3 barely trains in 3 epochs; the best epoch chosen by PGD-10 on the validation split; no
AutoAttack) into ``--root/MODEL-SETTING``, one torch thread per run, ``--jobs`` runs in parallel.
Settings: ``none`` (standard), ``none+ads`` (standard training of the model built with AdS relu,
``-m ads=relu``), ``pgd-at`` and ``ads`` (AdS relu + PGD-AT). Models without AdS support get the
first and third. The table is ``ssmdefense compare``'s over the run directories (clean and PGD-10
accuracy, ART's PGD at eps 0.1, on the first ``--eval-samples`` test images at the best checkpoint,
best − last, seconds; the row's ``-m ads=relu`` in its model cell), with the parameter count, the
best epoch, clean and PGD-10 accuracy at the last checkpoint and the training seconds per epoch
added; ``--root`` also gets ``results.json`` and ``compare.html``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from pathlib import Path

from study_common import BEST_EPOCH, CA_LAST, S_PER_EPOCH, read, summary_table

from ssmdefense.evaluation.compare import Column

SSMS = ("s4", "s4d", "dss", "s5", "mega", "mamba")
SETTINGS = ("none", "none+ads", "pgd-at", "ads")


def run_one(job: dict) -> Path:
    """One model and setting trained into its run directory (kept if it is already there)."""
    from ssmdefense.experiment import RunConfig, run

    out = Path(job["root"]) / f"{job['model']}-{job['setting']}"
    if not (out / "report.json").is_file():
        run(
            RunConfig(
                model=job["model"],
                model_params={"ads": "relu"} if job["setting"] == "none+ads" else {},
                dataset="mnist-5k",
                sequence="rows",
                defense={"none+ads": "none"}.get(job["setting"], job["setting"]),
                defense_params={"lr": job["lr"]},
                eps=job["eps"],
                epochs=job["epochs"],
                eval_samples=job["eval_samples"],
                aa_samples=0,
                threads=1,
                device="cpu",
                overwrite=True,
                verbose=False,
                out=out,
            )
        )
    return out


def parameters(d: Path) -> int:
    """The model's parameter count, from its best checkpoint."""
    import ssmdefense as sd

    return sum(p.numel() for p in sd.load(d / "best", device_type="cpu").model.parameters())


# the figures added after compare's (clean, PGD-10 at the best checkpoint, best − last, seconds)
COLUMNS = (
    Column("parameters", lambda d: f"{parameters(d):,}", "text"),
    BEST_EPOCH,
    CA_LAST,
    Column("PGD-10 last", lambda d: read(d)["last"]["robust_accuracy"]["pgd-10"]),
    S_PER_EPOCH,
)


def main(argv=None) -> int:
    import ssmdefense as sd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(sd.list_models()))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (3e-3: a short budget)")
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("runs/model_zoo"))
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    jobs = [
        {
            "model": m,
            "setting": s,
            "epochs": args.epochs,
            "eps": args.eps,
            "lr": args.lr,
            "eval_samples": args.eval_samples,
            "root": str(args.root),
        }
        for m in args.models.split(",")
        for s in args.settings.split(",")
        if m in SSMS or "ads" not in s
    ]
    directories = []
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        for out in pool.imap(run_one, jobs):
            directories.append(out)
            print(f"{out.name}: done", flush=True)
    print(summary_table(args.root, directories, COLUMNS), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
