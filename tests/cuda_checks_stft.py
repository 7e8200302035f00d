"""The STFT backward's CUDA kernel under Numba's CUDA simulator, on numpy float64 arrays.

Run by ``tests/test_kernels_cudasim.py`` in a subprocess with ``NUMBA_ENABLE_CUDASIM=1``. The
launcher gets the frames' gradient the way ``STFTFunction.backward`` makes it and is compared with
``torch.stft``'s autograd gradient and with the CPU kernel. The simulator runs every thread in
Python, so the clips are short: N 2, L 23.
"""

import numpy as np
import pytest
import torch

from ssmdefense.kernels import stft_numba as K
from ssmdefense.kernels.backend import numba_cuda_problem
from ssmdefense.kernels.stft import padded_window, stft_ref

if numba_cuda_problem():  # pragma: no cover - the driver runs this file with the simulator on
    pytest.skip(f"no Numba CUDA target: {numba_cuda_problem()}", allow_module_level=True)


@pytest.mark.parametrize("n_fft,hop,wl", [(8, 3, 6), (7, 2, 7)])
def test_cuda_kernel_matches_torch_stft_gradient_and_the_cpu_kernel(n_fft, hop, wl):
    torch.manual_seed(0)
    N, L = 2, 23
    x = torch.randn(N, L, dtype=torch.float64, requires_grad=True)
    w = torch.hann_window(wl, dtype=torch.float64) + 0.1  # no zeros inside the window's span
    y = stft_ref(x, n_fft, hop, w)  # (N F T)
    g = torch.randn_like(y)
    (g_ref,) = torch.autograd.grad(y, x, g)
    scale = torch.full((y.shape[1], 1), 0.5, dtype=torch.float64)
    scale[0] = 1.0
    if n_fft % 2 == 0:
        scale[-1] = 1.0
    frames = torch.fft.irfft((g * scale).transpose(1, 2), n=n_fft, norm="forward").contiguous().numpy()
    window = padded_window(w, n_fft).numpy()
    g_gpu, g_cpu = np.full((N, L), np.nan), np.full((N, L), np.nan)
    K.backward_cuda(frames, window, hop, g_gpu)
    K.backward_cpu(frames, window, hop, g_cpu)
    np.testing.assert_allclose(g_gpu, g_ref.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-12, atol=1e-12)
