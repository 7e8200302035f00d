"""Kernel benchmark: every Numba kernel against the torch path it replaces, side by side in one process.

    .venv/bin/python benchmarks/kernels.py [--threads 1,2] [--out benchmarks/kernels.json]
    .venv/bin/python benchmarks/kernels.py --device cuda --out benchmarks/kernels-cuda.json   # on a GPU

Writes JSON: for each figure, seconds (median of ``--repeats``) of the forward and of forward +
backward per implementation, their ratio (torch / numba: above 1 means Numba is faster), and the
torch thread count (Numba's parallel kernels are given the same count). Figures:

- ``diag_scan``: the diagonal SSM (S4D, DSS) at B 32, H 64, N 32 complex modes, L 784 / 4,096 / 16,000
  (and 28 and 101, the CLI's MNIST rows and the audio default's mel frames):
  the convolutional view (``vandermonde`` kernel + ``fft_conv``, what ``kernel=torch`` runs), the
  Numba recurrence ``diag_ssm_scan``, and at L 784 the torch step-by-step recurrence.
- ``s5_scan``: S5's complex diagonal scan at B 32, P/2 64, L 101 / 784 / 4,096: ``associative_scan`` (torch)
  against ``diagonal_scan`` (Numba).
- ``selective_scan``: B 32, D 128, N 16, L 101 / 784 / 4,096, float32, with D, softplus and delta_bias as
  Mamba calls it: ``selective_scan`` (torch, chunked) against ``selective_scan_fn`` (Numba).
- ``log_mel``: 64 clips of 1 s and 4 s at 16 kHz through the mel front end (40 mels, 25 ms / 10 ms):
  torchaudio ``MelSpectrogram`` + ``AmplitudeToDB`` against ``kernels.stft`` (``torch.stft``
  forward, hand-written backward) + the fused Numba kernel; ``stft_alone``: the STFT by itself,
  torch.stft's autograd against ``kernels.stft``.
- ``conv_parts``: where S4D's time went before this benchmark existed: the kernel's sum of powers
  (direct complex exps vs ``vandermonde``), the FFT convolution (autograd vs hand-written backward).
- ``models``: forward + backward of whole classifiers (batch 32, d_model 64, 2 layers, pixel
  sequences L 784, one cross-entropy step) per kernel choice, and an LSTM for scale.
- ``pgd_at``: PGD-AT training batches (PGD-10, eps 0.1, batch 64) of Mamba and S5 on ``mnist-5k``
  pixel sequences with ``kernel=numba`` against ``kernel=torch``; seconds per batch measured over
  ``--pgd-batches`` batches and projected to the epoch's 63 batches (the projection is labelled).
With ``--only``, the named figures replace those in an existing ``--out`` file (the rest are kept,
and the command is added to its ``updates``); without it the file is written afresh.

- ``compile``: first-call time of each Numba kernel in a fresh process with an empty Numba cache
  (JIT compilation), and in a second process with the cache written by the first (``cache=True``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEVICE = torch.device("cpu")


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()  # kernels run asynchronously: time until they finish


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fwd_bwd(fn, inputs, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of ``fn(*inputs)`` without grad, and of forward + backward (sum of the real output)."""

    def forward():
        with torch.no_grad():
            fn(*inputs)

    def both():
        out = fn(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        (out.real if out.is_complex() else out).sum().backward()
        for t in inputs:
            if isinstance(t, torch.Tensor):
                t.grad = None

    return {
        "forward": median_seconds(forward, repeats, warmup),
        "forward_backward": median_seconds(both, repeats, warmup),
    }


def ratios(rows: dict, baseline: str, fast: str) -> dict:
    return {k: rows[baseline][k] / rows[fast][k] for k in ("forward", "forward_backward")}


def leaf(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, dtype=dtype, device=DEVICE) * scale).requires_grad_()


def diag_scan(repeats: int, lengths) -> list[dict]:
    from ssmdefense.kernels.diag_ssm import diag_ssm_recurrence, diag_ssm_scan
    from ssmdefense.kernels.long_conv import fft_conv
    from ssmdefense.kernels.vandermonde import vandermonde

    B, H, N = 32, 64, 32
    torch.manual_seed(0)
    rows = []
    for L in lengths:
        u = leaf(B, H, L)  # (B H L)
        log_dt = torch.empty(H, device=DEVICE).uniform_(math.log(1e-3), math.log(1e-1))  # (H)
        A = torch.complex(-0.5 * torch.ones(H, N), math.pi * torch.arange(N).float().repeat(H, 1)).to(DEVICE)
        dtA = (A * log_dt.exp()[:, None]).requires_grad_()  # (H N)
        C = leaf(H, N, dtype=torch.cfloat)  # (H N)

        def conv(u, dtA, C):
            dB = (torch.exp(dtA) - 1.0) / A  # (H N)
            return fft_conv(u, 2 * vandermonde(C * dB, dtA, L).real)  # (B H L)

        def scan(u, dtA, C):
            dA = torch.exp(dtA)  # (H N)
            return diag_ssm_scan(u, dA, (dA - 1.0) / A, C)  # (B H L)

        row = {
            "B": B,
            "H": H,
            "N_complex": N,
            "L": L,
            "torch_fft_conv": fwd_bwd(conv, (u, dtA, C), repeats),
            "numba_scan": fwd_bwd(scan, (u, dtA, C), repeats),
        }
        row["fft_conv_over_numba"] = ratios(row, "torch_fft_conv", "numba_scan")
        if L <= 784:

            def recurrence(u, dtA, C):
                dA = torch.exp(dtA)
                return diag_ssm_recurrence(u, dA, (dA - 1.0) / A, C)

            row["torch_recurrence"] = fwd_bwd(recurrence, (u, dtA, C), max(1, repeats // 3), warmup=0)
            row["recurrence_over_numba"] = ratios(row, "torch_recurrence", "numba_scan")
        rows.append(row)
    return rows


def s5_scan(repeats: int, lengths) -> list[dict]:
    from ssmdefense.kernels.assoc_scan import associative_scan, diagonal_scan

    B, P2 = 32, 64
    torch.manual_seed(0)
    rows = []
    for L in lengths:
        a = torch.polar(torch.empty(P2).uniform_(0.9, 0.999), torch.rand(P2)).to(DEVICE).requires_grad_()  # (P/2)
        b = leaf(B, L, P2, dtype=torch.cfloat)  # (B L P/2)
        row = {
            "B": B,
            "P_half": P2,
            "L": L,
            "torch_associative_scan": fwd_bwd(lambda a, b: associative_scan(a, b, dim=1), (a, b), repeats),
            "numba_scan": fwd_bwd(diagonal_scan, (a, b), repeats),
        }
        row["torch_over_numba"] = ratios(row, "torch_associative_scan", "numba_scan")
        rows.append(row)
    return rows


def selective_scan(repeats: int, lengths) -> list[dict]:
    import torch.nn.functional as F

    from ssmdefense.kernels.selective_scan import selective_scan as torch_scan
    from ssmdefense.kernels.selective_scan import selective_scan_fn

    B, D, N = 32, 128, 16
    torch.manual_seed(0)
    rows = []
    for L in lengths:
        u, delta, z = leaf(B, D, L), leaf(B, D, L, scale=0.5), leaf(B, D, L)  # (B D L)
        A = (-torch.arange(1, N + 1, dtype=torch.float, device=DEVICE).repeat(D, 1)).requires_grad_()  # (D N)
        Bm, Cm = leaf(B, N, L), leaf(B, N, L)  # (B N L)
        Dv = leaf(D)  # (D)
        bias = (F.softplus(torch.empty(D, device=DEVICE).uniform_(-4, -2))).requires_grad_()  # (D)
        args = (u, delta, A, Bm, Cm, Dv, z, bias)

        def call(fn):
            return lambda u, delta, A, Bm, Cm, Dv, z, bias: fn(
                u, delta, A, Bm, Cm, D=Dv, z=z, delta_bias=bias, delta_softplus=True
            )

        row = {
            "B": B,
            "D": D,
            "N": N,
            "L": L,
            "torch_chunked": fwd_bwd(call(torch_scan), args, repeats),
            "numba": fwd_bwd(call(selective_scan_fn), args, repeats),
        }
        row["torch_over_numba"] = ratios(row, "torch_chunked", "numba")
        rows.append(row)
    return rows


def log_mel(repeats: int) -> list[dict]:
    from ssmdefense.kernels.stft import stft, stft_ref
    from ssmdefense.models.audio import MelSequence

    torch.manual_seed(0)
    rows = []
    for seconds in (1, 4):
        T = 16000 * seconds
        x = (0.1 * torch.randn(64, 1, T, device=DEVICE)).requires_grad_()  # (N 1 T)
        row = {"clips": 64, "seconds": seconds}
        for kernel in ("torch", "numba"):
            front = MelSequence((1, T), kernel=kernel).to(DEVICE).front_end
            row[f"{kernel}"] = fwd_bwd(front, (x,), repeats)
        row["torch_over_numba"] = ratios(row, "torch", "numba")
        clips, window = x.detach().view(64, T).requires_grad_(), torch.hann_window(400, device=DEVICE)  # (N T)
        stft_row = {
            "autograd": fwd_bwd(lambda c: stft_ref(c, 512, 160, window), (clips,), repeats),
            "hand_backward": fwd_bwd(lambda c: stft(c, 512, 160, window), (clips,), repeats),
        }
        stft_row["ratio"] = ratios(stft_row, "autograd", "hand_backward")
        row["stft_alone"] = stft_row
        rows.append(row)
    return rows


def conv_parts(repeats: int) -> dict:
    """The pieces of S4D's convolutional view, before and after (the references are what ran before)."""
    from ssmdefense.kernels.long_conv import fft_conv, fft_conv_ref
    from ssmdefense.kernels.vandermonde import vandermonde, vandermonde_ref

    H, N, L, B = 64, 16, 784, 32
    torch.manual_seed(0)
    log_z = torch.complex(-0.05 * torch.rand(H, N), torch.rand(H, N)).to(DEVICE).requires_grad_()  # (H N)
    W = leaf(H, N, dtype=torch.cfloat)  # (H N)
    u, K = leaf(B, H, L), leaf(H, L)  # (B H L), (H L)
    out = {
        "powers": {
            "H": H,
            "N_complex": N,
            "L": L,
            "direct_exp": fwd_bwd(lambda W, z: vandermonde_ref(W, z, L), (W, log_z), repeats),
            "vandermonde": fwd_bwd(lambda W, z: vandermonde(W, z, L), (W, log_z), repeats),
        },
        "fft_conv": {
            "B": B,
            "H": H,
            "L": L,
            "autograd": fwd_bwd(fft_conv_ref, (u, K), repeats),
            "hand_backward": fwd_bwd(fft_conv, (u, K), repeats),
        },
    }
    out["powers"]["ratio"] = ratios(out["powers"], "direct_exp", "vandermonde")
    out["fft_conv"]["ratio"] = ratios(out["fft_conv"], "autograd", "hand_backward")
    return out


MODEL_CHOICES = [
    ("s4d", "torch"),
    ("s4d", "numba"),
    ("dss", "torch"),
    ("dss", "numba"),
    ("s5", "torch"),
    ("s5", "numba"),
    ("mamba", "torch"),
    ("mamba", "numba"),
    ("lstm", None),
]


def models(repeats: int) -> dict:
    import ssmdefense as sd

    torch.manual_seed(0)
    x = torch.randn(32, 784, 1, device=DEVICE)  # (B L D) pixel sequences
    y = torch.randint(0, 10, (32,), device=DEVICE)
    out = {}
    for name, kernel in MODEL_CHOICES:
        torch.manual_seed(0)
        params = {} if kernel is None else {"kernel": kernel}
        model = sd.build_model(name, d_input=1, n_classes=10, **params).to(DEVICE)

        def step():
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()

        out[name if kernel is None else f"{name} kernel={kernel}"] = median_seconds(step, repeats)
    return {"batch": 32, "d_model": 64, "n_layers": 2, "L": 784, "forward_backward_seconds": out}


def pgd_at(batches: int) -> dict:
    import numpy as np

    import ssmdefense as sd

    data = sd.load_dataset("mnist-5k")
    batch = 64
    per_epoch = math.ceil(len(data.x_train) / batch)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.x_train))[: batch * (batches + 1)]
    out = {
        "batch": batch,
        "batches_timed": batches,
        "batches_per_epoch": per_epoch,
        "attack": "PGD-10, eps 0.1",
        "seconds_per_batch": {},
        "projected_epoch_seconds": {},
    }
    for name in ("mamba", "s5"):
        for kernel in ("torch", "numba"):
            torch.manual_seed(0)
            body = sd.build_model(name, d_input=1, n_classes=10, kernel=kernel)
            clf = sd.SSMClassifier(
                body,
                input_shape=(1, 28, 28),
                nb_classes=10,
                sequence="pixels",
                clip_values=(0.0, 1.0),
                device_type="gpu" if DEVICE.type == "cuda" else "cpu",
            )
            trainer = sd.get_defense("pgd-at", clf, eps=0.1, verbose=False)
            opt = torch.optim.AdamW(clf.model.parameters(), lr=1e-3)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
            clf.model.train()
            times = []
            for i in range(batches + 1):  # the first batch is a warm-up (JIT, allocator)
                idx = order[i * batch : (i + 1) * batch]
                xb = torch.from_numpy(data.x_train[idx]).to(DEVICE)
                yb = torch.from_numpy(data.y_train[idx]).long().to(DEVICE)
                _sync()
                start = time.perf_counter()
                trainer.train_batch(clf.model, opt, sched, xb, yb)
                _sync()
                if i:
                    times.append(time.perf_counter() - start)
            key = f"{name} kernel={kernel}"
            out["seconds_per_batch"][key] = statistics.median(times)
            out["projected_epoch_seconds"][key] = statistics.median(times) * per_epoch
        out[f"{name}_torch_over_numba"] = (
            out["seconds_per_batch"][f"{name} kernel=torch"] / out["seconds_per_batch"][f"{name} kernel=numba"]
        )
    return out


COMPILE_SCRIPT = r"""
import json, sys, time, torch
from ssmdefense.kernels.assoc_scan import diagonal_scan
from ssmdefense.kernels.causal_conv import causal_conv_silu
from ssmdefense.kernels.diag_ssm import diag_ssm_scan
from ssmdefense.kernels.selective_scan import selective_scan_fn
from ssmdefense.models.audio import MelSequence
torch.manual_seed(0)
def leaf(*s, dtype=torch.float32):
    return torch.randn(*s, dtype=dtype).requires_grad_()
calls = {
    "diag_ssm_scan": lambda: diag_ssm_scan(leaf(2, 3, 5), 0.5 * torch.randn(3, 4, dtype=torch.cfloat),
                                           leaf(3, 4, dtype=torch.cfloat), leaf(3, 4, dtype=torch.cfloat)),
    "diagonal_scan": lambda: diagonal_scan(0.5 * torch.randn(4, dtype=torch.cfloat).requires_grad_(),
                                           leaf(2, 5, 4, dtype=torch.cfloat)),
    "selective_scan_fn": lambda: selective_scan_fn(leaf(2, 3, 5), leaf(2, 3, 5), -torch.rand(3, 4).requires_grad_(),
                                                   leaf(2, 4, 5), leaf(2, 4, 5), D=leaf(3), z=leaf(2, 3, 5),
                                                   delta_bias=leaf(3), delta_softplus=True),
    "log_mel": lambda: MelSequence((1, 1600), kernel="numba").front_end(leaf(2, 1, 1600)),
    "causal_conv_silu": lambda: causal_conv_silu(leaf(2, 5, 3), leaf(3, 4), leaf(3)),
}
out = {}
for name, call in calls.items():
    for which in ("first_call", "second_call"):
        start = time.perf_counter()
        y = call()
        (y.real if y.is_complex() else y).sum().backward()
        out.setdefault(name, {})[which] = time.perf_counter() - start
print(json.dumps(out))
"""


def compile_times() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = {}
        for which in ("empty_cache", "warm_cache"):
            proc = subprocess.run(
                [sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True, check=True
            )
            runs[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "note": "seconds of the first and second forward+backward call on tiny inputs in a fresh process; "
        "empty_cache: JIT compilation included; warm_cache: a second process loading the cached code",
        **runs,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/kernels.json"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch (and Numba) thread counts")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--pgd-batches", type=int, default=2, help="PGD-AT batches timed per model and kernel")
    parser.add_argument("--only", help="comma-separated figures (default: all)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    figures = {
        "diag_scan": lambda r: diag_scan(r, (28, 101, 784, 4096, 16000)),
        "s5_scan": lambda r: s5_scan(r, (101, 784, 4096)),
        "selective_scan": lambda r: selective_scan(r, (101, 784, 4096)),
        "log_mel": log_mel,
        "conv_parts": conv_parts,
        "models": models,
        "pgd_at": lambda r: pgd_at(args.pgd_batches),
    }
    only = args.only.split(",") if args.only else list(figures) + ["compile"]
    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
    }
    command = " ".join(sys.argv)
    if args.only and args.out.exists():  # update the named figures, keep the others
        result = json.loads(args.out.read_text())
        result.setdefault("updates", []).append({"command": command, "figures": only, "machine": machine})
    else:
        result = {"machine": machine, "command": command, "by_threads": {}}
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        figs = {}
        for name, fn in figures.items():
            if name in only:
                print(f"[{threads} thread(s)] {name} ...", file=sys.stderr, flush=True)
                start = time.perf_counter()
                figs[name] = fn(args.repeats)
                print(f"    {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        result["by_threads"].setdefault(str(threads), {}).update(figs)
    if "compile" in only:
        result["compile"] = compile_times()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
