"""Compile the CPU kernels ahead of use: ``python -m ssmdefense.kernels.warm [--part I/N] [-v]``.

Every Numba kernel (``cache=True``) is compiled on its first call and written to Numba's on-disk
cache; later processes load it in well under a second. On a fresh install the first call costs
seconds per kernel and dtype (the selective scan's forward and backward together about 40 s per
dtype on one core). This runs each kernel's forward and backward once, on tiny inputs, in float32
and float64 (the models, and float64 checks), so that the cache is filled once: after installing,
or when building an image, before the first run (``--part I/N`` splits the work over N processes;
``make warm`` runs two). It also imports the parts of librosa that the audio datasets call
(resampling, trimming): librosa compiles its own Numba functions when those modules are first
imported, about 30 s of one core on a fresh install.

The test suite does not call it itself: compiling up front in two processes from its conftest made
a fresh-cache run slower, as the compiles were already spread over both workers (docs/performance.md,
"Compiling the kernels"). CI runs ``make warm`` as a setup step, beside installing the browser,
before ``make test``.

It writes nothing but Numba's cache. Where Numba cannot run, it does nothing (the models then use
their torch paths, ``kernels.backend``).
"""

from __future__ import annotations

import argparse
import time

import torch

DTYPES = (torch.float32, torch.float64)


def _selective_scan(dtype: torch.dtype) -> None:
    from .selective_scan import selective_scan_fn

    batch, dim, n, length = 2, 4, 3, 5
    u = torch.randn(batch, length, dim, dtype=dtype).transpose(1, 2).requires_grad_()  # (batch D L), channels-last
    delta = torch.rand(batch, dim, length, dtype=dtype, requires_grad=True)  # (batch D L)
    A = -torch.rand(dim, n, dtype=dtype, requires_grad=True)  # (D N)
    B, C = (torch.randn(batch, n, length, dtype=dtype, requires_grad=True) for _ in range(2))  # (batch N L)
    D, bias = (torch.randn(dim, dtype=dtype, requires_grad=True) for _ in range(2))  # (D)
    z = torch.randn(batch, dim, length, dtype=dtype, requires_grad=True)  # (batch D L)
    selective_scan_fn(u, delta, A, B, C, D, z, bias, delta_softplus=True).sum().backward()


def _diag_ssm(dtype: torch.dtype) -> None:
    from .diag_ssm import diag_ssm_scan

    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    u = torch.randn(2, 3, 5, dtype=dtype, requires_grad=True)  # (B H L)
    dA = (0.5 * torch.randn(3, 2, dtype=cdtype)).requires_grad_()  # (H N)
    dB, C = (torch.randn(3, 2, dtype=cdtype, requires_grad=True) for _ in range(2))  # (H N)
    diag_ssm_scan(u, dA, dB, C).sum().backward()


def _diagonal_scan(dtype: torch.dtype) -> None:
    from .assoc_scan import diagonal_scan

    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    a = (0.5 * torch.randn(4, dtype=cdtype)).requires_grad_()  # (P)
    b = torch.randn(2, 5, 4, dtype=cdtype, requires_grad=True)  # (B L P)
    diagonal_scan(a, b).abs().sum().backward()


def _log_mel(dtype: torch.dtype) -> None:
    from .logmel import log_mel

    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    spec = torch.randn(2, 1, 9, 4, dtype=cdtype, requires_grad=True)  # (B C freq frames)
    fb = torch.rand(9, 3, dtype=dtype)  # (freq mels)
    log_mel(spec, fb).sum().backward()


def _stft(dtype: torch.dtype) -> None:
    from .stft import stft

    x = torch.randn(2, 32, dtype=dtype, requires_grad=True)  # (B T)
    stft(x, 8, 4, torch.hann_window(8, dtype=dtype)).abs().sum().backward()


def _causal_conv(dtype: torch.dtype) -> None:
    from .causal_conv import causal_conv_silu

    x = torch.randn(2, 5, 3, dtype=dtype, requires_grad=True)  # (B L E)
    w = torch.randn(3, 4, dtype=dtype, requires_grad=True)  # (E K)
    bias = torch.randn(3, dtype=dtype, requires_grad=True)  # (E)
    causal_conv_silu(x, w, bias).sum().backward()


def _librosa(dtype: torch.dtype) -> None:
    """librosa's Numba functions (zero crossings, peak picking, pitch interpolation) compile when
    ``librosa.core`` and ``librosa.util`` are imported; resampling and trimming import them, as the
    spoken-digits synthesis and the audio file loader do. ``dtype`` is unused: one job."""
    import librosa
    import numpy as np

    wave = np.random.default_rng(0).standard_normal(2205).astype(np.float32)  # (T)
    wave = librosa.resample(wave, orig_sr=22050, target_sr=16000, res_type="soxr_hq")  # (T')
    librosa.effects.trim(wave, top_db=40)


KERNELS = {  # name: runs the kernel's forward and backward once for one real dtype
    "selective-scan": _selective_scan,
    "diag-ssm": _diag_ssm,
    "diagonal-scan": _diagonal_scan,
    "log-mel": _log_mel,
    "stft": _stft,
    "causal-conv": _causal_conv,
}


OTHERS = {"librosa": _librosa}  # compiled once, not per dtype


def jobs(part: int = 1, parts: int = 1) -> list[tuple[str, torch.dtype | None]]:
    """The (kernel, dtype) pairs of part ``part`` of ``parts``, then librosa's job (dtype None): each
    job in exactly one part, dealt out in turn (with two parts: float32 and librosa in one, float64
    in the other)."""
    pairs = [(name, dtype) for name in KERNELS for dtype in DTYPES] + [(name, None) for name in OTHERS]
    return pairs[part - 1 :: parts]


def warm(part: int = 1, parts: int = 1, verbose: bool = False) -> None:
    """Run part ``part`` of ``parts`` of the kernels once each, compiling them into Numba's cache."""
    from .backend import numba_cpu_problem

    if numba_cpu_problem() is not None:
        return
    for name, dtype in jobs(part, parts):
        start = time.perf_counter()
        {**KERNELS, **OTHERS}[name](dtype)
        if verbose:
            what = name if dtype is None else f"{name} {str(dtype).removeprefix('torch.')}"
            print(f"{what}: {time.perf_counter() - start:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ssmdefense.kernels.warm", description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="1/1", help="I/N: the I-th of N parts (default 1/1: every kernel)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each kernel's seconds")
    args = parser.parse_args(argv)
    try:
        part, parts = (int(v) for v in args.part.split("/"))
        if not 1 <= part <= parts:
            raise ValueError
    except ValueError:
        parser.error(f"--part must be I/N with 1 <= I <= N, e.g. 1/2; got {args.part!r}")
    warm(part, parts, args.verbose)


if __name__ == "__main__":
    main()
