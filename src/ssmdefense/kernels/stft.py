"""A centred STFT whose backward is an inverse real FFT and a Numba gather, and its plain reference.

``stft_ref`` is ``torch.stft`` (centred frames, reflect padding, unnormalised, one-sided), with
autograd's backward: the gradient of ``fft_r2c`` (a full-length complex FFT of a zero-extended
spectrum) and the gradient of the overlapping ``as_strided`` framing (a generic scatter through a
storage-sized buffer), which together took 25 of the 29 ms of a forward + backward on 64 x 1 s clips
(one thread) and most of the log-mel front end's time after the fused ``log_mel`` kernel.

``stft`` keeps ``torch.stft`` for the forward and writes the backward by hand: for a real frame f
(n_fft,) and spectrum X_k = sum_j f_j exp(-2 pi i j k / n_fft), k = 0 .. n_fft // 2, the gradient
reaching f from torch's complex gradient g (d loss / d Re X + i d loss / d Im X) is

    d loss / d f_j = Re sum_k g_k exp(2 pi i j k / n_fft) = irfft(h, norm="forward")_j,

h_k = g_k at k = 0 and at the Nyquist bin, g_k / 2 between (``irfft`` counts each interior bin twice,
once for its conjugate). The frames' gradients are then windowed and gathered back onto the clip
through the reflect padding by ``stft_numba`` (see there).
"""

from __future__ import annotations

import torch

from .backend import cuda_arrays, resolve, sync_threads


def padded_window(window: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``window`` (win_length,) zero-padded on both sides to n_fft, as ``torch.stft`` centres it."""
    left = (n_fft - window.shape[0]) // 2
    return torch.nn.functional.pad(window, (left, n_fft - window.shape[0] - left))  # (n_fft)


def stft_ref(x: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Reference: ``torch.stft`` of clips x (N, L), centred with reflect padding, unnormalised,
    one-sided; ``window`` (win_length <= n_fft,). Returns the complex spectrum (N, n_fft // 2 + 1, T),
    T = 1 + L // hop_length."""
    return torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop_length,
        window=padded_window(window, n_fft),
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # (N F T)


class STFTFunction(torch.autograd.Function):
    """x (N, L) -> complex spectrum (N, F, T) by ``torch.stft``; the backward as the module says."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, window: torch.Tensor, n_fft: int, hop_length: int):
        with torch.no_grad():
            spec = stft_ref(x, n_fft, hop_length, window)  # (N F T)
        ctx.save_for_backward(padded_window(window.detach(), n_fft).to(x.dtype).contiguous())
        ctx.n_fft, ctx.hop, ctx.L = n_fft, hop_length, x.shape[-1]
        return spec

    @staticmethod
    def backward(ctx, g_spec: torch.Tensor):  # g_spec: (N F T) complex
        from . import stft_numba as kn

        (window,) = ctx.saved_tensors  # (n_fft)
        n_fft, F = ctx.n_fft, g_spec.shape[1]
        scale = torch.full((F, 1), 0.5, dtype=window.dtype, device=window.device)  # (F 1)
        scale[0] = 1.0
        if n_fft % 2 == 0:
            scale[-1] = 1.0  # the Nyquist bin, like DC, has no conjugate twin
        h = (g_spec * scale).transpose(1, 2)  # (N T F)
        frames = torch.fft.irfft(h, n=n_fft, norm="forward").contiguous()  # (N T n_fft)
        g_x = frames.new_empty(g_spec.shape[0], ctx.L)  # (N L)
        if frames.is_cuda:
            with torch.cuda.device(frames.device):
                arrays, stream = cuda_arrays(frames, window, g_x)
                kn.backward_cuda(arrays[0], arrays[1], ctx.hop, arrays[2], stream=stream)
        else:
            sync_threads()
            kn.backward_cpu(frames.numpy(), window.numpy(), ctx.hop, g_x.numpy())
        return g_x, None, None, None


def stft(x: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Fast-backward path of ``stft_ref`` (same arguments, values and gradient w.r.t. ``x``).

    The window is a constant (no gradient flows to it; one that requires grad is an error).

    Raises:
        KernelUnavailableError: Numba cannot run on ``x``'s device.
    """
    if x.ndim != 2 or not x.dtype.is_floating_point:
        raise ValueError(f"x must be real clips (N, L); got {x.dtype} of shape {tuple(x.shape)}")
    if window.ndim != 1 or not 0 < window.shape[0] <= n_fft:
        raise ValueError(f"window must be 1-D with at most n_fft={n_fft} samples; got shape {tuple(window.shape)}")
    if window.requires_grad:
        raise ValueError("stft treats the window as a constant; pass window.detach() (or use stft_ref)")
    if not 0 < hop_length or x.shape[-1] <= n_fft // 2:
        raise ValueError(
            f"need hop_length >= 1 and clips longer than n_fft // 2 = {n_fft // 2} samples "
            f"(reflect padding); got hop_length={hop_length}, L={x.shape[-1]}"
        )
    resolve("numba", x.device.type, {}, "log-mel")  # KernelUnavailableError where it cannot run
    return STFTFunction.apply(x, window, int(n_fft), int(hop_length))  # (N F T)
