"""Performance harness: measures side by side in one process and writes JSON (never a test).

    .venv/bin/python benchmarks/run.py [--out benchmarks/results.json] [--repeats 5] [--threads 1]
    .venv/bin/python benchmarks/run.py --only model_forward_backward   # just that figure, others kept
    python benchmarks/run.py --device cuda --out benchmarks/results-cuda.json   # on a GPU machine

Figures:
- s4d_conv_vs_recurrence: forward time of the S4D layer's FFT convolution against its
  step-by-step recurrence reference at several sequence lengths, and their ratio.
- model_forward_backward: seconds of one cross-entropy forward + backward of whole default
  classifiers (``sd.build_model(name, d_input=1, n_classes=10)``, ``kernel=auto``), batch 32, pixel
  sequences at L 784 and 4,096, at 1 and 2 threads (``--model-threads``), the models interleaved
  repetition by repetition in one process (medians), and the ratio of each to S5 (``over_s5``;
  the Mamba target is at most 2). ``--only model_forward_backward`` updates just this figure.
- pgd_wrapper_vs_torch: seconds of PGD-10 through ``SSMClassifier`` (ART's attack) against the same
  attack written as a plain torch loop, on the default S4D and 256 mnist-5k images, and their ratio
  (``wrapper_over_plain``; the target is at most 1.10).
- default_run_phases: the default run (``ssmdefense defend --defense ads``, every default; ``--dataset
  spoken-digits`` with ``--default-dataset spoken-digits``) in this process, each phase timed:
  process start (a fresh interpreter importing the workflows), data, building, training
  (and in it the per-epoch validation and the overhead timing), the final evaluation's wall time and,
  for the checkpoints this process evaluated (the last one may run in a second process beside it),
  clean/FGSM/PGD-10/curve and AutoAttack (the best checkpoint's components: seconds and seconds per
  sample attacked), the audio examples and the report, and the total. ``make bench`` runs it.
- square_1d_step: seconds of a Square-1D search (``square-1d``, the audio AutoAttack's gradient-free
  component) on the default audio S4D (untrained, mel front end) and 25 spoken-digits test clips of
  1 s, every query run (eps 1e-6: nothing is fooled), with the segment-only candidate step
  (``segment_candidate``) against its full-waveform reference (``segment_candidate_ref``),
  interleaved (medians), the same x_adv from each, and the ratio (``ref_over_segment``).
- apgd_one_forward: seconds of APGD-CE (100 iterations, L-inf 1e-3) on the default audio S4D
  (untrained, mel front end) and 50 spoken-digits clips: ART's ``AutoProjectedGradientDescent``
  against ``OneForwardAPGD`` (``attacks/_apgd.py``, what the ensembles run: ART's algorithm with one
  forward pass per iteration instead of two), interleaved (medians), the same x_adv from each, and the
  ratio (``art_over_one_forward``).
- defense_step_overhead: seconds per training batch (``train_batch``: attack, backward, optimizer
  step) of every batch-by-batch defense against standard training (none) on one mnist-5k batch, and
  the ratios. Distillation is left out: its batch needs a trained teacher.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEVICE = torch.device("cpu")


def interleaved(variants, repeats):
    """Each of ``variants`` (name -> callable) run once per round, round by round, NumPy's global seed
    set to the round before each (round 0 is a warm-up): (median seconds, the last round's results),
    each by name."""
    times, results = {name: [] for name in variants}, {}
    for r in range(repeats + 1):
        for name, fn in variants.items():
            np.random.seed(r)
            start = time.perf_counter()
            results[name] = fn()
            if r:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}, results


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: time until they finish
        times.append(time.perf_counter() - start)
    return min(times)


def s4d_conv_vs_recurrence(repeats):
    from ssmdefense.models import S4D

    torch.manual_seed(0)
    layer = S4D(d_model=64, d_state=32).to(DEVICE)
    rows = []
    with torch.no_grad():
        for L in (28, 128, 784):
            u = torch.randn(16, L, 64, device=DEVICE)  # (B L H)
            conv = best_of(lambda: layer(u), repeats)
            rec = best_of(lambda: layer.forward_recurrent(u), max(1, repeats // 2))
            rows.append(
                {
                    "L": L,
                    "batch": 16,
                    "d_model": 64,
                    "conv_seconds": conv,
                    "recurrence_seconds": rec,
                    "speedup": rec / conv,
                }
            )
    return rows


FWD_BWD_MODELS = ("mamba", "s5", "s4d")


def model_forward_backward(repeats, lengths=(784, 4096), threads=(1, 2)):

    import ssmdefense as sd

    rows = []
    for n in threads:
        torch.set_num_threads(n)
        for L in lengths:
            torch.manual_seed(0)
            x = torch.randn(32, L, 1, device=DEVICE)  # (B L 1) pixel sequences
            y = torch.randint(0, 10, (32,), device=DEVICE)
            models = {name: sd.build_model(name, d_input=1, n_classes=10).to(DEVICE) for name in FWD_BWD_MODELS}
            times = {name: [] for name in models}
            for r in range(repeats + 1):  # round 0 is a warm-up (JIT cache load, allocator)
                for name, model in models.items():
                    model.zero_grad(set_to_none=True)
                    t = best_of(lambda: torch.nn.functional.cross_entropy(model(x), y).backward(), 1)
                    if r:
                        times[name].append(t)
            med = {name: statistics.median(v) for name, v in times.items()}
            rows.append(
                {
                    "threads": n,
                    "L": L,
                    "batch": 32,
                    "seconds": med,
                    "over_s5": {name: med[name] / med["s5"] for name in med if name != "s5"},
                }
            )
            print(f"{n} thread(s) L {L}: " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in med.items()), flush=True)
    return {"note": "default sizes, kernel=auto, one cross-entropy step, median of --repeats", "rows": rows}


def default_s4d():
    """The default S4D classifier on mnist-5k rows (seed 0), on DEVICE."""
    import ssmdefense as sd

    torch.manual_seed(0)
    return sd.SSMClassifier(
        sd.build_model("s4d", d_input=28, n_classes=10),
        input_shape=(1, 28, 28),
        nb_classes=10,
        sequence="rows",
        clip_values=(0.0, 1.0),
        device_type="gpu" if DEVICE.type == "cuda" else "cpu",
    )


DEFENSES = [
    ("none", {}),
    ("pgd-at", {}),
    ("trades", {}),
    ("free-at", {}),
    ("yopo", {}),
    ("fbf", {}),
    ("minmax", {"classes": "topk:2"}),
    ("minmax", {"classes": "all"}),
    ("augment", {"base": "pgd-at"}),
    ("ads", {}),
]


def defense_step_overhead(repeats):
    import ssmdefense as sd

    data = sd.load_dataset("mnist-5k")
    x = torch.from_numpy(data.x_train[:64]).to(DEVICE)
    y = torch.from_numpy(data.y_train[:64]).to(DEVICE)
    out = {}
    for name, params in DEFENSES:
        clf = default_s4d()
        trainer = sd.get_defense(name, clf, eps=0.1, verbose=False, **params)
        opt = torch.optim.AdamW(clf.model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        clf.model.train()
        trainer.train_batch(clf.model, opt, sched, x, y)  # warm-up
        key = name + "".join(f" {k}={v}" for k, v in params.items())
        out[key] = best_of(lambda: trainer.train_batch(clf.model, opt, sched, x, y), repeats)
    return {
        "batch": 64,
        "batch_seconds": out,
        "over_none": {k: v / out["none"] for k, v in out.items() if k != "none"},
        "note": "per batch; free-at's batch is 4 replays and it runs 1/4 of the epochs",
    }


def pgd_wrapper_vs_torch(repeats, samples=256):
    """PGD-10 (eps 0.1, random start) on the default S4D classifier and ``samples`` mnist-5k test
    images: ``sd.get_attack("pgd", clf)`` (ART's PGD through ``SSMClassifier``) against the same
    attack as a plain torch loop on the same model and batch, interleaved (medians)."""

    import ssmdefense as sd

    data = sd.load_dataset("mnist-5k")
    clf = default_s4d()
    x, y = data.x_test[:samples], data.y_test[:samples]
    model, eps, steps = clf.model.eval(), 0.1, 10
    step = 2.5 * eps / steps  # the wrapper's default eps_step

    def plain():
        x0, yt = torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).long().to(DEVICE)  # (N 1 28 28), (N)
        xa = (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp(0, 1)  # (N 1 28 28)
        for _ in range(steps):
            xa.requires_grad_(True)
            (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xa), yt), xa)  # (N 1 28 28)
            xa = torch.min(torch.max(xa.detach() + step * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
        return xa.cpu().numpy()

    def wrapper():
        return sd.get_attack("pgd", clf, eps=eps, max_iter=steps, batch_size=samples).generate(x, y)

    med, x_adv = interleaved({"wrapper": wrapper, "plain_torch": plain}, repeats)
    accuracy = {name: clf.accuracy(x_adv[name], y) for name in x_adv}
    print(f"PGD-10 on {samples}: " + ", ".join(f"{k} {v:.3f} s" for k, v in med.items()), flush=True)
    return {
        "samples": samples,
        "seconds": med,
        "robust_accuracy": accuracy,
        "wrapper_over_plain": med["wrapper"] / med["plain_torch"],
        "note": "default s4d, rows, eps 0.1, 10 steps of 2.5 eps / 10, one batch; target wrapper_over_plain <= 1.10",
    }


def default_audio_s4d():
    """spoken-digits and the default audio S4D classifier on it (mel front end, untrained, seed 0), on DEVICE."""
    import ssmdefense as sd

    data = sd.load_dataset("spoken-digits")
    torch.manual_seed(0)
    clf = sd.SSMClassifier(
        sd.build_model("s4d", 40, 10),  # the mel front end's 40 bands per step
        input_shape=data.input_shape,
        nb_classes=10,
        sequence="mel",
        sample_rate=data.sample_rate,
        clip_values=data.clip_values,
        device_type="gpu" if DEVICE.type == "cuda" else "cpu",
    )
    return data, clf


def square_1d_step(repeats, clips=25, queries=300):

    import ssmdefense as sd
    from ssmdefense.attacks import square_1d as sq

    data, clf = default_audio_s4d()
    x, y = data.x_test[:clips], clf.predict(data.x_test[:clips]).argmax(1)  # its own predictions: all correct
    fast = sq.segment_candidate
    steps = {"segment": fast, "reference": sq.segment_candidate_ref}

    def search(step):
        sq.segment_candidate = step  # what Square1DAttack._run calls
        return sd.get_attack("square-1d", clf, eps=1e-6, max_iter=queries).generate(x, y)

    try:
        med, x_adv = interleaved({name: lambda step=step: search(step) for name, step in steps.items()}, repeats)
    finally:
        sq.segment_candidate = fast
    print(f"square-1d, {queries} queries on {clips} clips: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
    return {
        "clips": clips,
        "queries": queries,
        "seconds": med,
        "seconds_per_iteration": {k: v / queries for k, v in med.items()},
        "same_x_adv": bool(np.array_equal(x_adv["segment"], x_adv["reference"])),
        "ref_over_segment": med["reference"] / med["segment"],
        "note": "s4d body on the mel front end (40 bands), untrained, 1 s spoken-digits clips, eps 1e-6 "
        "so every query runs; an iteration queries each clip once",
    }


def apgd_one_forward(repeats, clips=50, iterations=100):
    """ART's APGD-CE against ``OneForwardAPGD`` (the ensembles' APGD: ART's algorithm, one forward pass
    per iteration) on the default audio S4D and ``clips`` spoken-digits test clips, L-inf eps 1e-3
    (the audio default's), weights frozen as the ensembles run it, interleaved (medians)."""

    from art.attacks.evasion import AutoProjectedGradientDescent

    from ssmdefense.attacks._apgd import OneForwardAPGD
    from ssmdefense.modes import weights_frozen

    data, clf = default_audio_s4d()
    x = data.x_test[:clips]
    y = np.eye(10, dtype=np.float32)[clf.predict(x).argmax(1)]  # its own predictions: all correct
    attacks = {"art": AutoProjectedGradientDescent, "one_forward": OneForwardAPGD}

    def run(cls):
        attack = cls(clf, norm=np.inf, eps=1e-3, eps_step=2e-3, max_iter=iterations, nb_random_init=1,
                     batch_size=clips, loss_type="cross_entropy", verbose=False)  # fmt: skip
        with weights_frozen(clf.model):
            return attack.generate(x, y)

    med, x_adv = interleaved({name: lambda cls=cls: run(cls) for name, cls in attacks.items()}, repeats)
    print(f"apgd-ce, {iterations} iterations on {clips} clips: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
    return {
        "clips": clips,
        "iterations": iterations,
        "seconds": med,
        "same_x_adv": bool(np.array_equal(x_adv["art"], x_adv["one_forward"])),
        "art_over_one_forward": med["art"] / med["one_forward"],
        "robust_accuracy": clf.accuracy(x_adv["one_forward"], y),
        "note": "s4d body on the mel front end (40 bands), untrained, 1 s spoken-digits clips, one batch",
    }


def default_run_phases(dataset="mnist-5k"):
    """One default run (``RunConfig(defense="ads")``, as ``ssmdefense defend --defense ads -q``), its
    phases timed by wrapping the functions ``workflows.train`` calls for them; seconds per phase."""
    import collections
    import subprocess
    import tempfile

    import ssmdefense.workflows.train as train
    from ssmdefense.defenses.loop import TrainingLoop
    from ssmdefense.workflows import RunConfig, run

    start = time.perf_counter()  # a fresh interpreter importing what a run imports (torch, ART, the workflows)
    subprocess.run([sys.executable, "-c", "import ssmdefense.workflows.train"], check=True, capture_output=True)
    seconds = collections.Counter({"process start (interpreter and imports)": time.perf_counter() - start})

    def timed(owner, name, label):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - begin

        setattr(owner, name, wrapper)
        return lambda: setattr(owner, name, original)

    phases = [
        (train, "_load_data", "data"),
        (train, "_build", "building the classifier and the defense"),
        (train, "_fit", "training, with the per-epoch validation and the overhead timing"),
        (TrainingLoop, "measure_overhead", "overhead timing (a few batches against standard training)"),
        (train, "_evaluate_best_and_last", "final evaluation of best and last (wall)"),
        (train, "evaluate_robustness", "final: clean, FGSM, PGD-10 and the curve (this process's checkpoints)"),
        (train, "autoattack_check", "final: AutoAttack (this process's checkpoints)"),
        (train, "write_audio_examples", "audio examples"),
        (train, "write_report", "report.json, report.md, report.html, plots"),
    ]
    restore = [timed(*phase) for phase in phases]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            begin = time.perf_counter()
            report = run(RunConfig(defense="ads", dataset=dataset, out=Path(tmp) / "run", verbose=False))
            total = time.perf_counter() - begin
    finally:
        for undo in restore:
            undo()
    validation = sum(v or 0 for v in report.timing["eval_seconds"])
    seconds["per-epoch validation (in training)"] = validation
    aa = report.best.get("autoattack", {})
    n, components, before = aa.get("samples", 0), [], 1.0
    for row in aa.get("breakdown", []):
        attacked = round(before * n) if row["component"] != "clean" else n
        components.append(
            {
                **row,
                "samples_attacked": attacked,
                "seconds_per_attacked_sample": row["seconds"] / attacked if attacked else None,
            }
        )
        before = row["robust_accuracy"]
    for label, value in seconds.items():
        print(f"{value:8.1f} s  {label}", flush=True)
    print(f"{total:8.1f} s  the run (RunConfig -> report)", flush=True)
    return {
        "dataset": dataset,
        "seconds": dict(seconds),
        "run_seconds": total,
        "total_with_process_start": total + seconds["process start (interpreter and imports)"],
        "best_epoch": report.best["epoch"],
        "last_epoch": report.last["epoch"],
        "autoattack": {
            "samples": n,
            "seconds": aa.get("seconds"),
            "seconds_per_sample": aa["seconds"] / n if n else None,
            "robust_samples": round(aa["worst_case"] * n) if n else None,
            "seconds_per_robust_sample": aa["seconds"] / max(1, round(aa["worst_case"] * n)) if n else None,
            "components": components,
        },
        "accuracy": {"clean": report.best["clean_accuracy"], "worst_case": aa.get("worst_case")},
        "note": "one run, every default, in this process; training includes the validation and the overhead timing",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the CLI's default is 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model-threads", default="1,2", help="thread counts of model_forward_backward")
    parser.add_argument("--model-lengths", default="784,4096", help="sequence lengths of model_forward_backward")
    parser.add_argument("--only", help="comma-separated figures to measure; the others are kept from --out")
    parser.add_argument("--default-dataset", default="mnist-5k", help="dataset of default_run_phases")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    figures = {
        "s4d_conv_vs_recurrence": lambda: s4d_conv_vs_recurrence(args.repeats),
        "defense_step_overhead": lambda: defense_step_overhead(args.repeats),
        "pgd_wrapper_vs_torch": lambda: pgd_wrapper_vs_torch(args.repeats),
        "default_run_phases": lambda: default_run_phases(args.default_dataset),
        "square_1d_step": lambda: square_1d_step(args.repeats),
        "apgd_one_forward": lambda: apgd_one_forward(args.repeats),
        "model_forward_backward": lambda: model_forward_backward(
            args.repeats,
            tuple(int(v) for v in args.model_lengths.split(",")),
            tuple(int(v) for v in args.model_threads.split(",")),
        ),
    }
    only = args.only.split(",") if args.only else list(figures)
    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
        "date": time.strftime("%Y-%m-%d"),
    }
    result = json.loads(args.out.read_text()) if args.only and args.out.exists() else {"machine": machine}
    if args.only:
        result.setdefault("updates", []).append({"command": " ".join(sys.argv), "figures": only, "machine": machine})
    for name in only:
        torch.set_num_threads(args.threads)
        result[name] = figures[name]()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in only}, indent=2))


if __name__ == "__main__":
    np.random.seed(0)
    main()
