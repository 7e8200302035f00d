"""Where a Mamba classifier's time goes on the CPU: each part of one Mamba block, forward and
backward, timed side by side in one process (interleaved repetitions, medians), with the whole
classifier's forward + backward and S5's (the default ``s5``) beside them for scale.

    .venv/bin/python benchmarks/profile_mamba.py [--threads 1,2] [--lengths 784,4096] [--repeats 5]

Both classifiers are ``sd.build_model(name, d_input=1, n_classes=10)`` (default sizes: Mamba
d_model 64, 2 layers, N 16, expand 2; S5 d_model 64, 2 layers, P 32), batch 32, pixel sequences.
The parts are the block's own stages (``MambaMixer._in``, ``_conv``, ``_ssm_inputs``, ``_ssm``,
``out_proj``), each run on leaf tensors detached from a real forward pass (so they keep the
layouts the block gives them), backward with a random upstream gradient. "rest of the model"
is the classifier step minus n_layers times the parts: encoder, LayerNorms, residuals, pooling,
head, and the gradient sums where one tensor feeds two parts. Writes JSON (``--out``).

Two floors, in the same interleaved rounds: the Mamba classifier's step with its selective scan
removed (each block's ``_ssm`` replaced by ``x + z``, with dt, B and C kept in the graph, so
everything else runs as in the real step: what the step would cost with a free scan), and the
scan's own kernel exponential (``selective_scan_math._exp``, vectorised) timed on 1/16 of one
layer's B x L x E x N decays and scaled to the step's count (2 layers x forward and backward,
which recomputes them): what the exponentials alone cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ssmdefense as sd

BATCH = 32


def _leaves(tensors):
    return tuple(t.detach().requires_grad_() for t in tensors)  # detach keeps the strides


def block_parts(mixer, u, reference=False):
    """(name, fn, inputs) for each stage of ``mixer``'s forward, inputs captured from a real pass."""
    with torch.no_grad():
        x, z = mixer._in(u)  # (B L E) x2
        xc = mixer._conv(x)  # (B L E)
        dt, B, C = mixer._ssm_inputs(xc)  # (B L E), (B L N), (B L N)
        y = mixer._ssm(xc, dt, B, C, z)  # (B L E)
    return [
        ("in_proj", mixer._in, _leaves((u,))),
        ("causal conv1d + SiLU", mixer._conv, _leaves((x,))),
        ("x_proj, dt_proj", mixer._ssm_inputs, _leaves((xc,))),
        ("selective scan, D skip, gate", mixer._ssm, _leaves((xc, dt, B, C, z))),
        ("out_proj", mixer.out_proj, _leaves((y,))),
    ]


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _fwd_bwd(fn, inputs):
    def forward():
        with torch.no_grad():
            fn(*inputs)

    with torch.no_grad():
        out = fn(*inputs)
    grads = [torch.randn_like(o) for o in (out if isinstance(out, tuple) else (out,))]  # upstream, drawn once

    def both():
        out = fn(*inputs)
        torch.autograd.backward(out if isinstance(out, tuple) else (out,), grads)
        for t in inputs:
            t.grad = None

    return forward, both


def _model_step(model, x, y):
    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    return step


def _without_scan(model):
    """``model`` with each Mamba block's selective scan replaced by x + z (dt, B, C kept in the graph)."""

    def no_scan(x, dt, B, C, z, reference=False):  # x, dt, z (B L E), B, C (B L N)
        return x + z + 0 * (dt.sum() + B.sum() + C.sum())  # (B L E)

    for block in model.blocks:
        block.mixer._ssm = no_scan
    return model


def _exp_job(L: int, N: int, E: int):
    """Times the kernel exp on 1/16 of one layer's B L E N decays (values as the scan sees them)."""
    from ssmdefense.kernels.selective_scan_math import apply_elementwise

    rng = np.random.default_rng(0)
    a = -rng.uniform(0, 2, BATCH * L * E * N // 16).astype(np.float32)  # delta * A <= 0
    out = np.empty_like(a)
    apply_elementwise(a[:16], out[:16], 0)  # compile
    return lambda: apply_elementwise(a, out, 0)


def profile(L: int, repeats: int) -> dict:
    torch.manual_seed(0)
    mamba = sd.build_model("mamba", d_input=1, n_classes=10)
    s5 = sd.build_model("s5", d_input=1, n_classes=10)
    free = _without_scan(sd.build_model("mamba", d_input=1, n_classes=10))
    x, y = torch.randn(BATCH, L, 1), torch.randint(0, 10, (BATCH,))  # (B L 1), (B)
    mixer = mamba.blocks[0].mixer
    u = torch.randn(BATCH, L, mixer.H)  # (B L H)
    jobs = {
        "mamba classifier": (None, _model_step(mamba, x, y)),
        "s5 classifier": (None, _model_step(s5, x, y)),
        "mamba classifier, scan removed": (None, _model_step(free, x, y)),
        "exp on 1/16 of a layer's decays": (None, _exp_job(L, mixer.N, mixer.E)),
    }
    for name, fn, inputs in block_parts(mixer, u):
        jobs[name] = _fwd_bwd(fn, inputs)
    times = {k: {"forward": [], "forward_backward": []} for k in jobs}
    for r in range(repeats + 1):  # round 0 is a warm-up (JIT, allocator)
        for name, (forward, both) in jobs.items():
            if forward is not None:
                t = _timed(forward)
                if r:
                    times[name]["forward"].append(t)
            t = _timed(both)
            if r:
                times[name]["forward_backward"].append(t)
    med = {k: {p: statistics.median(v) for p, v in d.items() if v} for k, d in times.items()}
    n_layers = len(mamba.blocks)
    exp_seconds = med.pop("exp on 1/16 of a layer's decays")["forward_backward"] * 16 * n_layers * 2
    floors = {"scan_removed_step": med.pop("mamba classifier, scan removed")["forward_backward"]}
    floors["scan_exponentials"] = exp_seconds  # 2 layers x (forward + backward's recompute) x B L E N
    parts = [k for k in med if not k.endswith("classifier")]
    rest = med["mamba classifier"]["forward_backward"] - n_layers * sum(med[k]["forward_backward"] for k in parts)
    return {
        "L": L,
        "batch": BATCH,
        "n_layers": n_layers,
        "seconds": med,
        "rest_of_model_seconds": rest,
        "floor_seconds": floors,
    }


def table(result: dict) -> str:
    """Markdown: per part, ms of one block's forward and forward + backward, and the share of the step."""
    med = result["seconds"]
    step = med["mamba classifier"]["forward_backward"]
    lines = [
        "| part (one block) | forward ms | forward + backward ms | share of the step (x n_layers) |",
        "|---|---|---|---|",
    ]
    for name, d in med.items():
        if not name.endswith("classifier"):
            fb = d["forward_backward"]
            share = result["n_layers"] * fb / step
            lines.append(f"| {name} | {1e3 * d['forward']:.1f} | {1e3 * fb:.1f} | {100 * share:.0f}% |")
    lines.append(
        f"| rest of the model | | {1e3 * result['rest_of_model_seconds']:.1f} | "
        f"{100 * result['rest_of_model_seconds'] / step:.0f}% |"
    )
    for name in ("mamba classifier", "s5 classifier"):
        lines.append(f"| **{name}** step | | {1e3 * med[name]['forward_backward']:.1f} | |")
    s5 = med["s5 classifier"]["forward_backward"]
    free, exps = result["floor_seconds"]["scan_removed_step"], result["floor_seconds"]["scan_exponentials"]
    lines.append(
        f"\nMamba step / S5 step: {step / s5:.2f}x. Floors, over S5's step: the Mamba step with its scan removed "
        f"{1e3 * free:.1f} ms ({free / s5:.2f}x); the scan's exponentials alone {1e3 * exps:.1f} ms ({exps / s5:.2f}x)."
    )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--lengths", default="784,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/profile_mamba.json"))
    args = parser.parse_args()
    result = {"command": " ".join(sys.argv), "by_threads": {}}
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for L in (int(v) for v in args.lengths.split(",")):
            row = profile(L, args.repeats)
            result["by_threads"].setdefault(str(threads), []).append(row)
            print(f"\n{threads} thread(s), L {L}\n\n{table(row)}", flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
