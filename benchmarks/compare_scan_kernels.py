"""This tree's CPU selective scan kernels against another tree's, side by side in one process: the
kernels alone on the default Mamba classifier's own scan inputs, and the whole classifier step with
either kernel module (S5's step in the same rounds for scale). Repetitions interleaved, medians.

    git archive <commit> src | tar -x -C /tmp/before
    .venv/bin/python benchmarks/compare_scan_kernels.py --baseline /tmp/before/src [--threads 1,2]
        [--lengths 784] [--repeats 7]

Only a comparison inside one process means anything on a shared machine: two separate runs of
``run.py`` can differ by more than a kernel change, S5's own step included. The baseline's
``kernels/selective_scan_math.py`` and ``selective_scan_cpu.py`` are imported as a package of their
own (``baseline_kernels``); for its whole-step rounds the module ``SelectiveScanFn`` imports at
call time (``ssmdefense.kernels.selective_scan_cpu``) is swapped for the baseline's and back.
Both models are ``sd.build_model(name, d_input=1, n_classes=10)``, batch 32, pixel sequences.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import ssmdefense as sd
import ssmdefense.kernels as kernels_pkg
from ssmdefense.kernels import selective_scan_cpu as current

BATCH = 32


def load_baseline(src: Path):
    """The baseline tree's ``selective_scan_cpu`` module (with its own ``selective_scan_math``)."""
    pkg = types.ModuleType("baseline_kernels")
    pkg.__path__ = [str(src / "ssmdefense" / "kernels")]
    sys.modules["baseline_kernels"] = pkg
    return importlib.import_module("baseline_kernels.selective_scan_cpu")


def use(module):
    """Make ``SelectiveScanFn`` (which imports ``selective_scan_cpu`` at call time) run ``module``."""
    kernels_pkg.selective_scan_cpu = module
    sys.modules["ssmdefense.kernels.selective_scan_cpu"] = module


def capture_scan_inputs(model, x, y):
    """The arguments of the first layer's ``forward_cpu`` and ``backward_cpu`` in one real step."""
    calls = {}
    fwd, bwd = current.forward_cpu, current.backward_cpu

    def keep(name, fn):
        def wrapped(*args, **kw):
            calls.setdefault(name, (tuple(a.copy(order="K") if isinstance(a, np.ndarray) else a for a in args), kw))
            return fn(*args, **kw)

        return wrapped

    current.forward_cpu, current.backward_cpu = keep("forward", fwd), keep("backward", bwd)
    try:
        F.cross_entropy(model(x), y).backward()
    finally:
        current.forward_cpu, current.backward_cpu = fwd, bwd
    return calls


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(baseline, threads: int, L: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y = torch.randn(BATCH, L, 1), torch.randint(0, 10, (BATCH,))  # (B L 1), (B)
    mamba = sd.build_model("mamba", d_input=1, n_classes=10)
    s5 = sd.build_model("s5", d_input=1, n_classes=10)
    use(current)
    calls = capture_scan_inputs(mamba, x, y)
    (fa, fk), (ba, bk) = calls["forward"], calls["backward"]

    def step(model, module=None):
        if module is not None:
            use(module)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    jobs = {}
    for name, module in (("this tree", current), ("baseline", baseline)):
        jobs[f"scan forward, {name}"] = lambda m=module: m.forward_cpu(*fa, **fk)
        jobs[f"scan backward, {name}"] = lambda m=module: m.backward_cpu(*ba, **bk)
        jobs[f"mamba step, {name}"] = lambda m=module: step(mamba, m)
    jobs["s5 step"] = lambda: step(s5)
    times = {k: [] for k in jobs}
    try:
        for r in range(repeats + 1):  # round 0 is a warm-up (JIT, allocator)
            for name, fn in jobs.items():
                t = _timed(fn)
                if r:
                    times[name].append(t)
    finally:
        use(current)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"threads": threads, "L": L, "batch": BATCH, "repeats": repeats, "seconds": med}


def table(row: dict) -> str:
    med = row["seconds"]
    lines = ["| | this tree, ms | baseline, ms | baseline / this tree |", "|---|---|---|---|"]
    for part in ("scan forward", "scan backward", "mamba step"):
        new, old = med[f"{part}, this tree"], med[f"{part}, baseline"]
        lines.append(f"| {part} | {1e3 * new:.1f} | {1e3 * old:.1f} | {old / new:.2f}x |")
    s5 = med["s5 step"]
    new, old = med["mamba step, this tree"] / s5, med["mamba step, baseline"] / s5
    lines.append(f"| mamba step / s5 step ({1e3 * s5:.1f} ms) | {new:.2f}x | {old:.2f}x | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="the other tree's src/ directory")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--lengths", default="784")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    baseline = load_baseline(args.baseline)
    for threads in (int(t) for t in args.threads.split(",")):
        for L in (int(v) for v in args.lengths.split(",")):
            row = compare(baseline, threads, L, args.repeats)
            print(f"\n{threads} thread(s), L {L}, medians of {args.repeats}\n\n{table(row)}", flush=True)


if __name__ == "__main__":
    main()
