"""Log-mel spectrogram in dB from a complex STFT: a fused Numba kernel and its plain reference.

From the one-sided STFT ``spec`` (N, C, F, T) (``torch.stft``) and a mel filterbank ``fb`` (F, M)
(torchaudio's ``MelScale.fb``):

    power = |spec|^2                                         (N C F T)
    mel   = fb^T power                                       (N C M T)
    dB    = 10 log10(max(mel, amin))                         (N C M T)
    dB    = max(dB, max over (C, M, T) of dB - top_db)       per example n, when top_db is given

which is torchaudio's ``MelScale`` on a power spectrogram followed by
``AmplitudeToDB(stype="power", top_db)`` on a 4-D input, values and gradients: the clamp at
``amin`` passes the gradient where mel >= amin, and the top_db clamp is torch's
``max(dB, amax(dB) - top_db)``, so the gradient of a clamped entry flows to the example's maximum
(split between tied maxima, and halved on an exact tie with the floor, as torch's ``maximum`` and
``amax`` backwards do).

``log_mel_ref`` is that in plain torch ops (what torchaudio does). ``log_mel`` is the fast path, one
autograd Function: a Numba kernel goes from the complex STFT to dB without the power and mel
intermediates of the unfused ops, reading the filterbank as per-band bin ranges (a mel band spans a
few bins, a bin sits in at most two bands) instead of a dense (F, M) matmul; the top_db clamp's
per-example maximum is a torch reduction; the backward is a small per-example reduction kernel (the
gradient the clamp sends to each example's maximum) and one kernel from the gradient of dB to the
gradient of the STFT, routing the clamp and the log on the way. The STFT before it is
``kernels/stft.py`` in the mel front end (``torch.stft`` with a hand-written backward).

Numba is imported on the first call of ``log_mel`` (``import ssmdefense`` does not pay for it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .backend import cuda_arrays, resolve, sync_threads

COMPLEX_DTYPES = (torch.complex64, torch.complex128)


def log_mel_ref(spec: torch.Tensor, fb: torch.Tensor, amin: float = 1e-10, top_db: float | None = 80.0) -> torch.Tensor:
    """Reference: torchaudio's ``MelScale`` + ``AmplitudeToDB(stype="power")`` as plain torch ops.

    Args:
        spec: complex one-sided STFT (N, C, F, T).
        fb: mel filterbank (F, M).
        amin: floor on the mel power before the log.
        top_db: clamp each example at its maximum minus ``top_db`` dB; None for no clamp.
    Returns:
        dB (N, C, M, T), real.
    """
    power = spec.abs().pow(2.0)  # (N C F T)
    mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)  # (N C M T)
    db = 10.0 * torch.log10(torch.clamp(mel, min=amin))  # (N C M T)
    if top_db is not None:
        db = torch.max(db, (db.amax(dim=(-3, -2, -1)) - top_db).view(-1, 1, 1, 1))  # (N C M T)
    return db


def mel_bands(fb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the filterbank ``fb`` (F, M) is non-zero, as ranges (int64, on fb's device).

    Returns:
        band_lo, band_hi (M,): band m is zero outside bins [band_lo, band_hi) (0, 0 for an all-zero
        band); bin_lo, bin_hi (F,): bin f is zero outside bands [bin_lo, bin_hi). Entries inside a
        range may be zero too (the kernels multiply by them), so the ranges are exact for any fb.
    """
    nz = (fb != 0).to(torch.uint8)  # (F M)

    def ranges(mask: torch.Tensor):  # mask (K R): the [lo, hi) of non-zeros of each row
        R = mask.shape[1]
        has = mask.any(1).bool()  # (K)
        lo = mask.argmax(1)  # (K) first non-zero (argmax gives the first maximum)
        hi = R - mask.flip(1).argmax(1)  # (K) one past the last non-zero
        zero = torch.zeros_like(lo)
        return torch.where(has, lo, zero), torch.where(has, hi, zero)

    band_lo, band_hi = ranges(nz.t())
    bin_lo, bin_hi = ranges(nz)
    return band_lo, band_hi, bin_lo, bin_hi


class LogMelFunction(torch.autograd.Function):
    """complex STFT (N, C, F, T) -> log-mel in dB (N, C, M, T), fused in Numba (see the module
    docstring). Saves the STFT (a view, no copy), the band ranges, dB before the top_db clamp and
    d dB / d mel (N*C*T, M), and each example's maximum and floor."""

    @staticmethod
    def forward(ctx, spec: torch.Tensor, fb: torch.Tensor, amin: float, top_db: float | None):
        from . import logmel_numba as kn

        N, C, F, T = spec.shape
        M = fb.shape[1]
        # frames-major, as torch.stft lays out its output: the transpose is then a view, not a copy
        ri = torch.view_as_real(spec.detach().resolve_conj().transpose(-1, -2).contiguous())  # (N C T F 2)
        ri = ri.view(N * C * T, F, 2)  # (R F 2)
        real = ri.dtype
        fb = fb.detach().to(real).contiguous()  # (F M)
        fbT = fb.t().contiguous()  # (M F)
        band_lo, band_hi, bin_lo, bin_hi = mel_bands(fb)
        db = ri.new_empty(N * C * T, M)  # (R M), before the top_db clamp
        dfac = ri.new_empty(N * C * T, M)  # (R M)
        if ri.is_cuda:
            with torch.cuda.device(ri.device):
                arrays, stream = cuda_arrays(ri, fbT, band_lo, band_hi, db, dfac)
                kn.forward_cuda(*arrays[:4], _scalar(amin, real), *arrays[4:], stream=stream)
        else:
            sync_threads()
            kn.forward_cpu(
                ri.numpy(), fbT.numpy(), band_lo.numpy(), band_hi.numpy(), _scalar(amin, real), db.numpy(), dfac.numpy()
            )
        per_example = db.view(N, C * T * M)  # (N C*T*M)
        if top_db is None:  # no clamp: a floor and a maximum that no entry equals
            amax = ri.new_full((N,), float("inf"))  # (N)
            floor = ri.new_full((N,), float("-inf"))  # (N)
            out = db
        else:  # the per-example reduction, as torchaudio: max(db, amax - top_db)
            amax = per_example.amax(1)  # (N)
            floor = amax - top_db  # (N)
            out = torch.maximum(per_example, floor[:, None]).view(N * C * T, M)  # (R M)
        ctx.save_for_backward(ri, fb, fbT, band_lo, band_hi, bin_lo, bin_hi, db, dfac, amax, floor)
        ctx.shape, ctx.clamped = (N, C, F, T), top_db is not None
        return out.view(N, C, T, M).transpose(-1, -2)  # (N C M T)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out: torch.Tensor):  # g_out: (N C M T)
        from . import logmel_numba as kn

        ri, fb, fbT, band_lo, band_hi, bin_lo, bin_hi, db, dfac, amax, floor = ctx.saved_tensors
        N, C, F, T = ctx.shape
        M = fb.shape[1]
        g = g_out.to(ri.dtype).transpose(-1, -2).contiguous().view(N * C * T, M)  # (R M)
        g_max = torch.zeros(N, dtype=ri.dtype, device=ri.device)  # (N) gradient to each maximum
        g_ri = torch.empty_like(ri)  # (R F 2)
        if ctx.clamped:  # the gradient the floor got, summed per example, split between the maxima
            below = torch.zeros(N, dtype=torch.float64, device=ri.device)  # (N)
            count = torch.zeros(N, dtype=torch.int32, device=ri.device)  # (N) >= 1: amax is an entry
        if ri.is_cuda:
            with torch.cuda.device(ri.device):
                if ctx.clamped:
                    arrays, stream = cuda_arrays(db.view(N, -1), g.view(N, -1), floor, amax, below, count)
                    kn.top_db_grad_cuda(*arrays, stream=stream)
                    g_max = (below / count).to(ri.dtype)  # (N) on torch's stream, after the kernel
                arrays, stream = cuda_arrays(ri, fb, bin_lo, bin_hi, db, dfac, g, floor, amax, g_max, g_ri)
                kn.backward_cuda(*arrays[:10], C * T, arrays[10], stream=stream)
        else:
            sync_threads()
            if ctx.clamped:
                kn.top_db_grad_cpu(
                    db.view(N, -1).numpy(),
                    g.view(N, -1).numpy(),
                    floor.numpy(),
                    amax.numpy(),
                    below.numpy(),
                    count.numpy(),
                )
                g_max = (below / count).to(ri.dtype)  # (N)
            kn.backward_cpu(
                ri.numpy(),
                fbT.numpy(),
                band_lo.numpy(),
                band_hi.numpy(),
                db.numpy(),
                dfac.numpy(),
                g.numpy(),
                floor.numpy(),
                amax.numpy(),
                g_max.numpy(),
                C * T,
                g_ri.numpy(),
            )
        g_spec = torch.view_as_complex(g_ri).view(N, C, T, F).transpose(-1, -2)  # (N C F T), stft's layout
        return g_spec, None, None, None


def _scalar(value: float, dtype: torch.dtype):
    """``value`` as a numpy scalar of ``dtype``, so the kernels compare in the arrays' dtype."""
    return np.dtype(str(dtype).removeprefix("torch.")).type(value)


def log_mel(spec: torch.Tensor, fb: torch.Tensor, amin: float = 1e-10, top_db: float | None = 80.0) -> torch.Tensor:
    """Fast path of ``log_mel_ref`` (same arguments, values and gradient w.r.t. ``spec``).

    The filterbank is a constant (no gradient flows to it; one that requires grad is an error).

    Raises:
        KernelUnavailableError: Numba cannot run on ``spec``'s device.
    """
    if spec.dtype not in COMPLEX_DTYPES or spec.ndim != 4:
        raise ValueError(
            f"spec must be a complex64/complex128 STFT (N, C, F, T); got {spec.dtype} of shape {tuple(spec.shape)}"
        )
    if fb.ndim != 2 or fb.shape[0] != spec.shape[2]:
        raise ValueError(f"fb must be (F={spec.shape[2]}, n_mels); got shape {tuple(fb.shape)}")
    if fb.requires_grad:
        raise ValueError(
            "log_mel treats the filterbank as a constant; pass fb.detach() (or use log_mel_ref for its gradient)"
        )
    if fb.device != spec.device:
        raise ValueError(f"spec and fb must be on one device; got {spec.device} and {fb.device}")
    if not amin > 0:
        raise ValueError(f"amin must be positive; got {amin!r}")
    if top_db is not None and not top_db >= 0:
        raise ValueError(f"top_db must be a non-negative number or None; got {top_db!r}")
    resolve("numba", spec.device.type, {}, "log-mel")  # KernelUnavailableError where it cannot run
    return LogMelFunction.apply(spec, fb, float(amin), None if top_db is None else float(top_db))  # (N C M T)
