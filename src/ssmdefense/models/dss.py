"""DSS: diagonal state spaces (Gupta, Gu and Berant, NeurIPS 2022, "Diagonal State Spaces are as
Effective as Structured State Spaces"), after the authors' ag1988/dss ``DSSKernel``.

A diagonal continuous SSM ``A = Λ`` (complex, shared by the H channels), zero-order hold with a
per-channel step ``Δ = exp(log_dt)`` (H), and complex output weights ``W`` (H, N/2). Proposition 1
of the paper writes the length-L kernel of any diagonalisable SSM in one of two forms, and the
layer learns (Λ, W, log Δ) directly in that form:

    DSS-exp:      K = Re( W · Λ^{-1} (e^{ΛΔ} - I) · elementwise-exp(P) )
    DSS-softmax:  K = Re( W · Λ^{-1} · row-softmax(P) ),          P_{i,k} = λ_i k Δ  (k < L)

i.e. ``K_k = Re Σ_i W_i (e^{λ_iΔ} - 1)/λ_i e^{kλ_iΔ}`` (exp) and
``K_k = Re Σ_i W_i/λ_i · e^{kλ_iΔ} / Σ_{r<L} e^{rλ_iΔ}`` (softmax). The softmax row sum is the
closed form ``(e^{LλΔ} - 1)/(e^{λΔ} - 1)``; for a mode with Re(λ) > 0 (DSS-softmax leaves Re(λ)
free) it is evaluated as the authors do, shifting by the row maximum at k = L-1:
``e^{(k-L+1)λΔ} (e^{-λΔ} - 1)/(e^{-LλΔ} - 1)``, so nothing overflows. DSS-exp keeps Re(λ) < 0
through ``λ = -exp(log_Lambda_re) + i Lambda_im``. The kernel is the real part (no factor 2): the
N/2 modes with positive imaginary part stand for a real state of size N.

Recurrent view (``forward_recurrent``): both kernels are the diagonal recurrence
``x_k = e^{ΛΔ} x_{k-1} + u_k``, ``y_k = Re(Σ_i C_i x_{k,i}) + D u_k`` with output weights
``C = W (e^{ΛΔ} - 1)/Λ`` (exp) or ``C = W / (Λ Σ_{r<L} e^{rΛΔ})`` (softmax, normalised per mode
over the sequence length L, so the softmax layer's weights depend on L).

Initialisation (as in the paper): Λ = the eigenvalues of the normal part of HiPPO-LegS,
``-1/2 + i θ`` with ``iθ`` the eigenvalues of its skew-symmetric part, keeping the N/2 with θ > 0;
``W ~ N(0, 1)`` per real and imaginary part; log Δ uniform in [log dt_min, log dt_max]; D ~ N(0, 1).

The layer returns ``y = K * u + D u`` (FFT convolution, or direct when short: ``kernels.long_conv.long_conv``). In the
shared classifier body (``models/body.py``) each block is
``LayerNorm(x + Linear(AdS(GELU(DSS(x)))))``: Adaptive Scaling sits right after the SSM output
(after ``+ D u``, past the GELU) and before the block's output projection.

Defaults: ``d_state=64`` (N/2 = 32 complex modes), ``variant="exp"``, dt in [1e-3, 1e-1]. The DSS
paper's N counts complex modes, so its N = 64 is ``d_state=128`` here. Paper scale in the AdS study
(Qi et al. 2024): ``d_model=128``, ``d_state=32`` (MNIST) or 64 (CIFAR-10).
Deviations from the reference code (not from the paper): one Δ per channel as in the paper (the
code's default learns separate Δ for the real and imaginary parts), plain division where the code
adds a 1e-7 guard (Proposition 1 assumes λ ≠ 0 and e^{LλΔ} ≠ 1), and the row-max shift of the
softmax keeps its gradient (the code detaches it, which changes the gradient of a shifted mode).

``kernel`` (``auto|torch|numba``) picks the implementation, as for S4D: ``torch`` is the FFT
convolution, ``numba`` the recurrent view on the Numba diagonal-scan kernel, ``auto`` the FFT
(faster at every length measured, docs/performance.md). The DSS variant is ``variant``; checkpoints
written before it existed say ``kernel="exp"`` or ``"softmax"``, which is still read as the variant.
"""

import math

import torch
from torch import nn

from ..kernels.backend import KernelChoice, check_kernel
from ..kernels.diag_ssm import diag_ssm_recurrence, diag_ssm_scan
from ..kernels.vandermonde import vandermonde
from .checks import check_mixer_args
from .conv_ssm import ConvolutionalSSM
from .s4 import hippo_legs_nplr

DSS_VARIANTS = ("exp", "softmax")


class DSS(KernelChoice, ConvolutionalSSM):
    """DSS mixer: (B, L, H) -> (B, L, H).

    Args:
        d_model: H, number of channels.
        d_state: N, real state size (even; N/2 complex modes are stored). Default: 64.
        variant: "exp" (DSS-exp, Re(Λ) < 0) or "softmax" (DSS-softmax, Re(Λ) free). Default: "exp".
        dt_min, dt_max: range of the log-uniform initial step size. Default: 1e-3, 1e-1.

    Shape:
        u: (B, L, H) float -> y: (B, L, H).

    Examples::

        >>> layer = DSS(d_model=16, d_state=32, variant="softmax")
        >>> layer(torch.randn(4, 100, 16)).shape
        torch.Size([4, 100, 16])
    """

    no_weight_decay = ("log_dt", "log_Lambda_re", "Lambda_re", "Lambda_im")  # ssmdefense.optim

    KERNEL_AUTO = {"cpu": "torch", "cuda": "torch"}
    KERNEL_WHAT = "dss"

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        variant: str = "exp",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        kernel: str = "auto",
    ):
        super().__init__()
        if kernel in DSS_VARIANTS:  # checkpoints from before ``variant``: kernel named the variant
            variant, kernel = kernel, "auto"
        if variant not in DSS_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(DSS_VARIANTS)}; got {variant!r}")
        self.kernel_choice = check_kernel(kernel)
        check_mixer_args(d_model, d_state, dt_min, dt_max)
        H, N = d_model, d_state
        dtype = torch.get_default_dtype()
        Lambda = hippo_legs_nplr(N)[0]  # (N/2) -1/2 + iθ, θ > 0
        log_dt = torch.rand(H, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H)
        self.H, self.N, self.variant = H, N, variant
        self.log_dt = nn.Parameter(log_dt.to(dtype))  # (H)
        if variant == "exp":
            self.log_Lambda_re = nn.Parameter(torch.log(-Lambda.real).to(dtype))  # (N/2)
        else:
            self.Lambda_re = nn.Parameter(Lambda.real.to(dtype))  # (N/2)
        self.Lambda_im = nn.Parameter(Lambda.imag.to(dtype))  # (N/2)
        self.W = nn.Parameter(torch.randn(H, N // 2, 2, dtype=torch.float64).to(dtype))  # (H N/2 2) complex
        self.D = nn.Parameter(torch.randn(H, dtype=torch.float64).to(dtype))  # (H)

    def _ssm(self):
        """Λ (N/2), dtΛ (H, N/2) and W (H, N/2), complex."""
        Lambda_re = -torch.exp(self.log_Lambda_re) if self.variant == "exp" else self.Lambda_re  # (N/2)
        Lambda = torch.complex(Lambda_re, self.Lambda_im)  # (N/2)
        dtLambda = torch.exp(self.log_dt)[:, None] * Lambda  # (H N/2)
        return Lambda, dtLambda, torch.view_as_complex(self.W)  # (N/2), (H N/2), (H N/2)

    def kernel(self, L: int) -> torch.Tensor:
        """Convolution kernel K (H, L), real."""
        Lambda, dtLambda, W = self._ssm()
        if self.variant == "exp":
            W = W * (torch.exp(dtLambda) - 1) / Lambda  # (H N/2) W Λ^{-1} (e^{ΛΔ} - 1)
            return vandermonde(W, dtLambda, L).real  # (H L) Σ_n W_n e^{λ_n k Δ}
        # row-softmax(P), P_{n,k} = λ_n k Δ: exp(P - P_max) / Σ_r exp(P_r - P_max), where P_max is
        # P_{L-1} for rows with Re λ > 0 (shift by L - 1) and P_0 = 0 otherwise
        grows = (Lambda.real > 0)[None, :]  # (1 N/2)
        shift = torch.where(grows, L - 1.0, 0.0).to(dtLambda.real.dtype).expand_as(dtLambda)  # (H N/2)
        dtLambda_s = torch.where(grows, -dtLambda, dtLambda)  # (H N/2) the series' ratio after the shift
        row_sum = (torch.exp(L * dtLambda_s) - 1) / (torch.exp(dtLambda_s) - 1)  # (H N/2) Σ_r exp(P_r - P_max)
        W = W / (Lambda * row_sum)  # (H N/2) W Λ^{-1} / row sum
        return vandermonde(W, dtLambda, L, shift).real  # (H L)

    def discretize(self, L: int):
        """Recurrence ``(dA, dB, C)``, complex (H, N/2): ``x_k = dA x_{k-1} + dB u_k``,
        ``y_k = Re(Σ C x_k)``. For DSS-softmax, C depends on the sequence length L."""
        Lambda, dtLambda, W = self._ssm()
        dA = torch.exp(dtLambda)  # (H N/2) e^{ΛΔ}
        if self.variant == "exp":
            C = W * (dA - 1) / Lambda  # (H N/2)
        else:  # per-mode normalisation by the plain geometric sum Σ_{r<L} e^{rλΔ}
            powers = dA[..., None] ** torch.arange(L, device=dA.device, dtype=Lambda.real.dtype)  # (H N/2 L)
            C = W / (Lambda * powers.sum(-1))  # (H N/2)
        return dA, torch.ones_like(dA), C

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: (B L H)
        if self.resolved_kernel(u.device.type) == "torch":
            return super().forward(u)  # the FFT convolution

        u_t = u.transpose(1, 2).contiguous()  # (B H L)
        dA, dB, C = self.discretize(u_t.shape[-1])  # (H N/2) each
        y = diag_ssm_scan(u_t, dA, dB, C / 2) + self.D[:, None] * u_t  # (B H L); 2 Re(Σ C/2 x) = Re(Σ C x)
        return y.transpose(1, 2).contiguous()  # (B L H)

    def forward_recurrent(self, u: torch.Tensor) -> torch.Tensor:
        """Reference: the same layer as a step-by-step diagonal recurrence. (B, L, H) -> (B, L, H)."""
        u = u.transpose(1, 2)  # (B H L)
        dA, dB, C = self.discretize(u.shape[-1])
        # diag_ssm_recurrence returns 2 Re(Σ C' x); C' = C/2 gives the kernel's Re(Σ C x)
        y = diag_ssm_recurrence(u, dA, dB, C / 2) + self.D[:, None] * u  # (B H L)
        return y.transpose(1, 2)  # (B L H)

    def extra_repr(self) -> str:
        return f"d_model={self.H}, d_state={self.N}, variant={self.variant}, kernel={self.kernel_choice}"
