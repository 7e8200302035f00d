"""What a Mamba classifier's step costs against S5's at other sizes than the default: planning's input
for issue 26's "Mamba at most 2x S5" (docs/performance.md), measured side by side in one process.

    .venv/bin/python benchmarks/mamba_sizes.py [--threads 1,2] [--length 784] [--repeats 5] [--out FILE]

One cross-entropy forward + backward of each classifier (``sd.build_model(name, d_input=1,
n_classes=10, **sizes)``, ``kernel=auto``), batch 32, pixel sequences of ``--length``, every model
interleaved repetition by repetition (medians, after a warm-up round), with its ratio to the
default S5's step and its parameter count: S5 and S4D at their defaults, the default Mamba (expand 2,
d_state 16), the default Mamba with its selective scan removed (``profile_mamba._without_scan``: the
floor a free scan would leave), and Mamba with expand 1 and/or smaller d_state; at each thread count
of ``--threads`` in turn.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import ssmdefense as sd

sys.path.insert(0, str(Path(__file__).parent))
from profile_mamba import _without_scan  # noqa: E402

MODELS = {
    "s5": ("s5", {}),
    "s4d": ("s4d", {}),
    "mamba (default: expand 2, d_state 16)": ("mamba", {}),
    "mamba default, scan removed": ("mamba", {}),
    "mamba expand 1, d_state 16": ("mamba", {"expand": 1}),
    "mamba expand 2, d_state 4": ("mamba", {"d_state": 4}),
    "mamba expand 1, d_state 8": ("mamba", {"expand": 1, "d_state": 8}),
    "mamba expand 1, d_state 4": ("mamba", {"expand": 1, "d_state": 4}),
}


def measure(threads: int, length: int, repeats: int) -> list[dict]:
    """Each model's row at ``threads`` threads: median seconds, over S5's, parameters."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(32, length, 1)  # (B L 1) pixel sequences
    y = torch.randint(0, 10, (32,))  # (B)
    models = {key: sd.build_model(name, d_input=1, n_classes=10, **sizes) for key, (name, sizes) in MODELS.items()}
    _without_scan(models["mamba default, scan removed"])
    times = {key: [] for key in models}
    for r in range(repeats + 1):  # round 0 is a warm-up (JIT cache load, allocator)
        for key, model in models.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if r:
                times[key].append(time.perf_counter() - start)
    med = {key: statistics.median(v) for key, v in times.items()}
    return [
        {
            "model": key,
            "seconds": med[key],
            "over_s5": med[key] / med["s5"],
            "parameters": sum(p.numel() for p in models[key].parameters()),
        }
        for key in models
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--length", type=int, default=784)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    result = {"L": args.length, "batch": 32, "repeats": args.repeats, "date": time.strftime("%Y-%m-%d"), "rows": []}
    for threads in (int(v) for v in args.threads.split(",")):
        print(f"{threads} thread(s), L {args.length}, batch 32:")
        for row in measure(threads, args.length, args.repeats):
            result["rows"].append({"threads": threads, **row})
            ms, ratio, n = row["seconds"] * 1e3, row["over_s5"], row["parameters"]
            print(f"  {row['model']:40s} {ms:8.1f} ms  {ratio:5.2f}x S5  {n:7d} parameters")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
