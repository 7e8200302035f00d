"""Data-parallel scaling: the same ``ssmdefense defend`` run on one process and under ``torchrun`` with
N processes, side by side in one invocation, and what each costs per epoch (never a test).

    .venv/bin/python benchmarks/scale.py [--out benchmarks/scale.json] [--processes 2] [--epochs 2]
        [--defense pgd-at] [--dataset mnist-5k] [--device cpu] [-- extra defend options]

Runs, each with the same global batch and seed:
- ``one-process``: one process, ``--threads 1``;
- ``one-process-N-threads``: one process, ``--threads N`` (the same cores as N processes);
- ``torchrun-N``: ``torchrun --standalone --nproc-per-node N`` (one thread each on CPU).
For each: seconds per epoch (training only; the per-epoch evaluation is timed apart), the per-epoch
evaluation's seconds, peak memory of rank 0, and the final clean / PGD-10 accuracy of the last
checkpoint; plus the speed-up of each against ``one-process`` and the largest metric difference
between ``torchrun-N`` and ``one-process`` (docs/scale.md states the tolerance).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def defend(out: Path, args, launcher: list[str], threads: int | None) -> dict:
    command = [*launcher, "defend", "--defense", args.defense, "--dataset", args.dataset]
    command += ["--epochs", str(args.epochs), "--device", args.device, "--aa-samples", "0", "-q"]
    command += ["--eval-samples", str(args.eval_samples), "--batch-size", str(args.batch_size), "--out", str(out)]
    if threads is not None:
        command += ["--threads", str(threads)]
    command += args.extra
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "command": " ".join(command),
        "wall_seconds": wall,
        "epoch_seconds": [r["epoch_seconds"] for r in rows],
        "eval_seconds": [r["eval_seconds"] for r in rows],
        "peak_memory_mb": max(r["peak_memory_mb"] for r in rows),
        "train_loss": [r["train_loss"] for r in rows],
        "clean_accuracy": [r["clean_accuracy"] for r in rows],
        "pgd10_accuracy": [r["robust_accuracy"]["pgd-10"] for r in rows],
        "last": {"clean": report["last"]["clean_accuracy"], "pgd-10": report["last"]["robust_accuracy"]["pgd-10"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/scale.json"))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--defense", default="pgd-at")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("extra", nargs="*", help="more `defend` options, after --")
    args = parser.parse_args()
    n = args.processes
    python = [sys.executable, "-m", "ssmdefense"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]
    torchrun += ["-m", "ssmdefense"]
    cpu = args.device == "cpu"
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs["one-process"] = defend(Path(tmp) / "one", args, python, 1 if cpu else None)
        if cpu:
            runs[f"one-process-{n}-threads"] = defend(Path(tmp) / "threads", args, python, n)
        runs[f"torchrun-{n}"] = defend(Path(tmp) / "ddp", args, torchrun, 1 if cpu else None)

    def per_epoch(run: dict) -> float:
        return sum(run["epoch_seconds"]) / len(run["epoch_seconds"])

    base = per_epoch(runs["one-process"])
    for run in runs.values():
        run["epoch_seconds_mean"] = per_epoch(run)
        run["speedup_vs_one_process"] = base / run["epoch_seconds_mean"]
    one, ddp = runs["one-process"], runs[f"torchrun-{n}"]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": runs,
        "difference_torchrun_vs_one_process": {
            "train_loss_relative_max": max(abs(a - b) / a for a, b in zip(one["train_loss"], ddp["train_loss"])),
            "clean_accuracy_max": max(abs(a - b) for a, b in zip(one["clean_accuracy"], ddp["clean_accuracy"])),
            "pgd10_accuracy_max": max(abs(a - b) for a, b in zip(one["pgd10_accuracy"], ddp["pgd10_accuracy"])),
        },
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, run in runs.items():
        print(
            f"{name:24s} {run['epoch_seconds_mean']:7.1f} s/epoch  x{run['speedup_vs_one_process']:.2f}  "
            f"eval {sum(run['eval_seconds']) / len(run['eval_seconds']):.1f} s  peak {run['peak_memory_mb']:.0f} MiB  "
            f"last clean {run['last']['clean']:.3f} pgd-10 {run['last']['pgd-10']:.3f}"
        )
    print(json.dumps(result["difference_torchrun_vs_one_process"]))


if __name__ == "__main__":
    main()
