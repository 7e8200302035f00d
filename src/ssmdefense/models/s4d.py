"""S4D: diagonal structured state space layer (Gu et al., 2022, "On the Parameterization and
Initialization of Diagonal State Space Models"), after state-spaces/s4 ``models/s4/s4d.py``.

Per channel h, a diagonal continuous SSM with N/2 complex modes (conjugate pairs are implicit):
A = -exp(log_A_real) + i A_imag, B = 1, C learned, step dt = exp(log_dt). Zero-order hold gives
dA = exp(dt A), dB = (exp(dt A) - 1) / A, and the convolution kernel
K_l = 2 Re(sum_n C_n dB_n dA_n^l). The layer returns y = K * u + D u.

``kernel`` picks how: ``"torch"`` is the convolutional view (kernel K by ``kernels.vandermonde``, then
``kernels.long_conv``: by FFT, or directly for short sequences); ``"numba"`` the recurrent view run by
the Numba diagonal-scan kernel (``kernels.diag_ssm.diag_ssm_scan``, CPU or CUDA); ``"auto"`` takes
what ``benchmarks/kernels.py`` measured faster per device (``KERNEL_AUTO``): the convolution, which
beats the recurrence's O(L N) at every length measured (docs/performance.md).
"""

import math

import torch
from torch import nn

from ..kernels import diag_ssm_recurrence
from ..kernels.backend import KernelChoice, check_kernel
from ..kernels.diag_ssm import diag_ssm_scan
from ..kernels.vandermonde import vandermonde
from .checks import check_mixer_args
from .conv_ssm import ConvolutionalSSM

S4D_INITS = ("lin", "inv")


class S4D(KernelChoice, ConvolutionalSSM):
    """S4D mixer: (B, L, H) -> (B, L, H).

    Args:
        d_model: H, number of independent channels.
        d_state: N, state size per channel (N/2 complex modes are stored).
        dt_min, dt_max: range of the log-uniform initial step size.
        init: "lin" (S4D-Lin, A_imag = pi n) or "inv" (S4D-Inv, A_imag = N/pi (N/(2n+1) - 1)).
        kernel: "auto", "torch" (FFT convolution) or "numba" (recurrence kernel); see the module docstring.
    """

    no_weight_decay = ("log_dt", "log_A_real", "A_imag")  # ssmdefense.optim

    KERNEL_AUTO = {"cpu": "torch", "cuda": "torch"}
    KERNEL_WHAT = "s4d"

    def __init__(
        self,
        d_model: int,
        d_state: int = 32,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        init: str = "lin",
        kernel: str = "auto",
    ):
        super().__init__()
        self.kernel_choice = check_kernel(kernel)
        check_mixer_args(d_model, d_state, dt_min, dt_max)
        if init not in S4D_INITS:
            raise ValueError(f"init must be one of {', '.join(S4D_INITS)}; got {init!r}")
        H, N2 = d_model, d_state // 2
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H)
        C = torch.randn(H, N2, dtype=torch.cfloat) * math.sqrt(0.5)  # (H N/2)
        n = torch.arange(N2, dtype=torch.float)  # (N/2)
        if init == "lin":
            A_imag = math.pi * n  # (N/2)
        else:
            A_imag = d_state / math.pi * (d_state / (2 * n + 1) - 1)  # (N/2)
        self.H, self.N = H, d_state
        self.log_dt = nn.Parameter(log_dt)
        self.C = nn.Parameter(torch.view_as_real(C))  # (H N/2 2)
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(H, N2)))  # (H N/2)
        self.A_imag = nn.Parameter(A_imag.repeat(H, 1))  # (H N/2)
        self.D = nn.Parameter(torch.randn(H))  # (H)

    def _continuous(self):
        """(dt*A, A, C), complex (H, N/2) each."""
        dt = torch.exp(self.log_dt)  # (H)
        C = torch.view_as_complex(self.C)  # (H N/2)
        A = -torch.exp(self.log_A_real) + 1j * self.A_imag  # (H N/2)
        return A * dt[:, None], A, C

    def discretize(self):
        """ZOH-discretised (dA, dB, C), complex (H, N/2) each."""
        dtA, A, C = self._continuous()
        dA = torch.exp(dtA)  # (H N/2)
        dB = (dA - 1.0) / A  # (H N/2)
        return dA, dB, C

    def kernel(self, L: int) -> torch.Tensor:
        """Convolution kernel K (H, L)."""
        dtA, A, C = self._continuous()
        dB = (torch.exp(dtA) - 1.0) / A  # (H N/2)
        return 2 * vandermonde(C * dB, dtA, L).real  # (H L) = 2 Re(Σ_n C_n dB_n dA_n^l)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: (B L H)
        if self.resolved_kernel(u.device.type) == "torch":
            return super().forward(u)  # the FFT convolution

        u_t = u.transpose(1, 2).contiguous()  # (B H L)
        dA, dB, C = self.discretize()  # (H N/2) each
        y = diag_ssm_scan(u_t, dA, dB, C) + self.D[:, None] * u_t  # (B H L)
        return y.transpose(1, 2).contiguous()  # (B L H)

    def forward_recurrent(self, u: torch.Tensor) -> torch.Tensor:
        """Reference: the same layer as a step-by-step recurrence. (B, L, H) -> (B, L, H)."""
        u = u.transpose(1, 2)  # (B H L)
        dA, dB, C = self.discretize()
        y = diag_ssm_recurrence(u, dA, dB, C) + self.D[:, None] * u  # (B H L)
        return y.transpose(1, 2)  # (B L H)
