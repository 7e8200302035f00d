"""S4: the structured state space sequence layer (Gu, Goel and Ré, ICLR 2022, "Efficiently Modeling
Long Sequences with Structured State Spaces"), after state-spaces/s4 ``models/s4/s4.py`` and the
Annotated S4.

Per channel h (H channels, each its own SSM) a continuous SSM with state size N,

    x'(t) = A x(t) + B u(t),        y(t) = C x(t) + D u(t),

with A initialised to HiPPO-LegS and kept in normal-plus-low-rank (NPLR) form, written in the basis
that diagonalises its normal part:

    A = V Λ V* - P Q*   ->   (in that basis)   A = Λ - P P*      (rank 1, Q tied to P)

HiPPO-LegS is ``A_nk = -sqrt(2n+1) sqrt(2k+1)`` (n > k), ``-(n+1)`` (n = k), 0 (n < k),
``B_n = sqrt(2n+1)``; with ``p_n = sqrt(n + 1/2)``, ``S = A + p p^T = -I/2 + skew`` is normal,
``S = V Λ V*``, and ``P = V* p``, ``B <- V* B``. The eigenvalues come in conjugate pairs, so only
the N/2 with positive imaginary part are stored (Λ, P, B, C̃ each complex (H, N/2)); the other
half is implied as their conjugates and summed explicitly wherever it enters.

Learned: Λ (real part as ``-exp(log_Lambda_re)``, imaginary part free), P, B, C̃ ("C tilde"),
D (H) and log dt (H). Bilinear discretisation:

    Ā = (I - dt/2 A)^{-1} (I + dt/2 A),        B̄ = (I - dt/2 A)^{-1} dt B.

Kernel ``K_l = C Ā^l B̄`` (l < L), computed from its generating function at the L roots of unity
ω_k = exp(-2πik/L) (the paper's Algorithm 1 and Appendix C): with the truncation correction
``C̃ = C (I - Ā^L)``,

    K̂(ω) = C̃ (I - Ā ω)^{-1} B̄ = c(ω) · C̃ (g(ω) - A)^{-1} B,
    g(ω) = (2/dt) (1 - ω)/(1 + ω),      c(ω) = 2/(1 + ω),

and, with the Woodbury identity for ``A = Λ - P P*`` and Cauchy sums
``k_ab(ω) = Σ_n a_n b_n / (g(ω) - λ_n)`` over all N modes (conjugate pairs explicit),

    K̂(ω) = c(ω) [k_{C̃B} - k_{C̃P} k_{P̄B} / (1 + k_{P̄P})],          K = irfft(K̂).

The Cauchy terms are formed as ``c(ω)/(g(ω) - λ) = 2/((2/dt)(1 - ω) - λ(1 + ω))``, which is the
same number but stays finite at ω = -1 (even L), where g and c alone are infinite; there the
rank-1 correction vanishes. The Cauchy sum is materialised as (H, N/2, L/2+1) (fine on CPU and for
paper sizes; the reference implementation's CUDA/KeOps Cauchy kernels only save memory).

C̃ belongs to a kernel length ``l_kernel`` (a buffer, saved with the weights). On the first call
the random initial C is converted, ``C̃ = C (I - Ā^L)``, for that call's L; a longer sequence later
doubles it (``C̃_{2L} = C̃_L (I + Ā^L)``, in place) and a shorter one truncates the longer kernel,
exactly as the reference implementation does. ``forward_recurrent`` is the plain reference: the
dense N x N discretised matrices and ``C = C̃ (I - Ā^{l_kernel})^{-1}``, one step at a time.

The layer returns ``y = K * u + D u`` (FFT convolution, or direct when short: ``kernels.long_conv.long_conv``). In the
shared classifier body (``models/body.py``) each block is
``LayerNorm(x + Linear(AdS(GELU(S4(x)))))``: Adaptive Scaling sits right after the SSM output
(after ``+ D u``, past the GELU) and before the block's output projection.

Defaults: ``d_state=64`` (the paper's N), ``dt`` log-uniform in [1e-3, 1e-1]. Paper scale in the
AdS study (Qi et al. 2024): ``d_model=128``, ``d_state=32`` (MNIST) or 64 (CIFAR-10), 784 or 1024
steps. Deviations from the ICLR paper's Algorithm 1, all as in the authors' reference
implementation: Q is tied to P (with Re Λ < 0, ``A + A* = 2 Re Λ - 2 P P*`` is negative definite,
so every eigenvalue of A stays in the left half-plane and the bilinear Ā stays stable), the real
part of Λ is parameterised through a log so it stays negative, and the H channels have independent
Λ, P, B (its ``n_ssm=None`` setting). As in the reference, Λ, P, B and dt get no weight decay
(``no_weight_decay``, ``ssmdefense.optim``); unlike it, they share the loop's learning rate (the
reference gives them lr 1e-3).
"""

import math

import torch
from torch import nn

from .checks import check_mixer_args
from .conv_ssm import ConvolutionalSSM


def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS ``(A, B)``, float64 (N, N) and (N)."""
    n = torch.arange(N, dtype=torch.float64)  # (N)
    r = torch.sqrt(2 * n + 1)  # (N)
    A = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(n + 1)  # (N N)
    return A, r.clone()


def hippo_legs_nplr(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in NPLR form ``A = V Λ V* - P P*`` (rank 1), keeping one of each conjugate pair.

    Returns complex128 ``(Lambda, P, B, V)`` of shapes (N/2), (N/2), (N/2), (N, N/2): the eigenvalues
    of the normal part with positive imaginary part (largest first), ``P = V* p``, ``B = V* B`` and
    the eigenvectors. With ``V_full = [V, conj(V)]`` (unitary) and the conjugate halves appended,
    ``V_full diag(Λ) V_full* - p p^T`` is HiPPO-LegS's A and ``V_full (V_full* B) = B``.
    """
    if N < 2 or N % 2:
        raise ValueError(f"N must be an even integer >= 2; got {N!r}")
    A, B = hippo_legs(N)  # (N N), (N)
    p = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)  # (N) rank-1 correction
    S = A + p[:, None] * p[None, :]  # (N N) normal: -I/2 + skew-symmetric
    skew = S + 0.5 * torch.eye(N, dtype=torch.float64)  # (N N)
    theta, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # (N), (N N): skew v = i θ v
    order = torch.argsort(theta, descending=True)[: N // 2]  # the positive half, largest first
    theta, V = theta[order], V[:, order]  # (N/2), (N N/2)
    if not bool((theta > 0).all()):
        raise ArithmeticError("HiPPO-LegS normal part has a zero eigenvalue; cannot split conjugate pairs")
    Lambda = torch.complex(torch.full_like(theta, -0.5), theta)  # (N/2) -1/2 + iθ
    Vh = V.conj().T  # (N/2 N)
    return Lambda, Vh @ p.to(Vh.dtype), Vh @ B.to(Vh.dtype), V


def _full(x: torch.Tensor) -> torch.Tensor:
    """Append the implied conjugate half: (..., N/2) -> (..., N)."""
    return torch.cat([x, x.conj()], dim=-1)


class S4(ConvolutionalSSM):
    """S4 mixer: (B, L, H) -> (B, L, H).

    Args:
        d_model: H, number of channels (independent SSMs).
        d_state: N, state size per channel (even; N/2 conjugate pairs are stored). Default: 64.
        dt_min, dt_max: range of the log-uniform initial step size. Default: 1e-3, 1e-1.

    Shape:
        u: (B, L, H) float -> y: (B, L, H).

    Examples::

        >>> layer = S4(d_model=16, d_state=32)
        >>> layer(torch.randn(4, 100, 16)).shape
        torch.Size([4, 100, 16])
    """

    no_weight_decay = ("log_dt", "log_Lambda_re", "Lambda_im", "P", "B")  # ssmdefense.optim

    def __init__(self, d_model: int, d_state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        check_mixer_args(d_model, d_state, dt_min, dt_max)
        H, N = d_model, d_state
        Lambda, P, B, _ = hippo_legs_nplr(N)  # (N/2) each, complex128
        dtype = torch.get_default_dtype()
        log_dt = torch.rand(H, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H)
        C = torch.randn(H, N // 2, dtype=torch.complex128)  # (H N/2) initial C; becomes C̃ on first use

        def per_channel(x):  # (N/2) -> (H N/2)
            return x.repeat(H, 1)

        self.H, self.N = H, N
        self.log_dt = nn.Parameter(log_dt.to(dtype))  # (H)
        self.log_Lambda_re = nn.Parameter(per_channel(torch.log(-Lambda.real)).to(dtype))  # (H N/2)
        self.Lambda_im = nn.Parameter(per_channel(Lambda.imag).to(dtype))  # (H N/2)
        # complex parameters are stored as (..., 2) real views so .double()/.float() and AdamW treat them
        self.P = nn.Parameter(torch.view_as_real(per_channel(P)).to(dtype))  # (H N/2 2)
        self.B = nn.Parameter(torch.view_as_real(per_channel(B)).to(dtype))  # (H N/2 2)
        self.C_tilde = nn.Parameter(torch.view_as_real(C).to(dtype))  # (H N/2 2)
        self.D = nn.Parameter(torch.randn(H, dtype=torch.float64).to(dtype))  # (H)
        # the kernel length C̃ refers to (0: not yet fixed; the first call sets it)
        self.register_buffer("l_kernel", torch.tensor(0, dtype=torch.long))

    # ---- parameters --------------------------------------------------------------------------
    def _ssm(self):
        """Continuous parameters: dt (H) real; Λ, P, B, C̃ complex (H, N/2)."""
        dt = torch.exp(self.log_dt)  # (H)
        Lambda = torch.complex(-torch.exp(self.log_Lambda_re), self.Lambda_im)  # (H N/2)
        P, B, C_tilde = (torch.view_as_complex(t) for t in (self.P, self.B, self.C_tilde))  # (H N/2)
        return dt, Lambda, P, B, C_tilde

    def dense(self):
        """Dense bilinear discretisation over all N modes (conjugate halves included).

        Returns ``(dA, dB)``: complex (H, N, N) and (H, N), in the basis where A = Λ - P P*.
        """
        dt, Lambda, P, B, _ = self._ssm()
        Lambda, P, B = _full(Lambda), _full(P), _full(B)  # (H N)
        A = torch.diag_embed(Lambda) - P[:, :, None] * P.conj()[:, None, :]  # (H N N)
        eye = torch.eye(self.N, dtype=A.dtype, device=A.device)  # (N N)
        half_dtA = (dt / 2)[:, None, None] * A  # (H N N)
        dA = torch.linalg.solve(eye - half_dtA, eye + half_dtA)  # (H N N)
        dB = torch.linalg.solve(eye - half_dtA, (dt[:, None] * B)[..., None])[..., 0]  # (H N)
        return dA, dB

    @torch.no_grad()
    def _setup_length(self, L: int) -> None:
        """Make ``l_kernel >= L``: fix C̃ for L on first use, else double its length until it covers L."""
        if L <= int(self.l_kernel):
            return
        C = _full(torch.view_as_complex(self.C_tilde))  # (H N) conjugate halves included
        dA, _ = self.dense()  # (H N N)
        if int(self.l_kernel) == 0:  # C̃ = C (I - Ā^L)
            C = C - torch.einsum("hm,hmn->hn", C, torch.linalg.matrix_power(dA, L))  # (H N)
            length = L
        else:  # C̃_{2l} = C̃_l (I + Ā^l), repeatedly
            length = int(self.l_kernel)
            while length < L:
                C = C + torch.einsum("hm,hmn->hn", C, torch.linalg.matrix_power(dA, length))  # (H N)
                length *= 2
        self.C_tilde.copy_(torch.view_as_real(C[:, : self.N // 2].contiguous()))
        self.l_kernel.fill_(length)

    def discretize(self):
        """Reference matrices ``(dA, dB, C)``: complex (H, N, N), (H, N), (H, N); C = C̃ (I - Ā^l_kernel)^{-1}."""
        if int(self.l_kernel) == 0:
            raise RuntimeError("S4 has no kernel length yet; call the layer (or kernel(L)) first")
        dA, dB = self.dense()
        C_tilde = _full(torch.view_as_complex(self.C_tilde))  # (H N)
        eye = torch.eye(self.N, dtype=dA.dtype, device=dA.device)  # (N N)
        M = eye - torch.linalg.matrix_power(dA, int(self.l_kernel))  # (H N N)
        C = torch.linalg.solve(M.transpose(-1, -2), C_tilde[..., None])[..., 0]  # (H N): C M = C̃
        return dA, dB, C

    # ---- convolution view --------------------------------------------------------------------
    def kernel(self, L: int) -> torch.Tensor:
        """Convolution kernel K (H, L), real: K_l = C Ā^l B̄."""
        self._setup_length(L)
        L_k = int(self.l_kernel)  # C̃ refers to this length; the kernel is truncated to L afterwards
        dt, Lambda, P, B, C_tilde = self._ssm()
        k = torch.arange(L_k // 2 + 1, device=dt.device, dtype=dt.dtype)  # (L_k/2+1)
        omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / L_k)  # (L_k/2+1) roots of unity
        # Cauchy terms c(ω)/(g(ω) - λ) = 2/((2/dt)(1 - ω) - λ(1 + ω)), for λ and its conjugate
        two_over_dt = (2 / dt)[:, None, None]  # (H 1 1)
        r = 2 / (two_over_dt * (1 - omega) - Lambda[..., None] * (1 + omega))  # (H N/2 L_k/2+1)
        r_conj = 2 / (two_over_dt * (1 - omega) - Lambda.conj()[..., None] * (1 + omega))  # (H N/2 L_k/2+1)
        v = torch.stack([C_tilde * B, C_tilde * P, P.conj() * B, P.conj() * P])  # (4 H N/2)
        kk = torch.einsum("vhn,hnl->vhl", v, r) + torch.einsum("vhn,hnl->vhl", v.conj(), r_conj)  # (4 H L_k/2+1)
        k00, k01, k10, k11 = kk  # (H L_k/2+1) each, already multiplied by c(ω)
        # Woodbury: c [k00 - k01 k10 / (1 + k11)] written with the c-scaled sums (finite at ω = -1)
        K_hat = k00 - (1 + omega) * k01 * k10 / (2 + (1 + omega) * k11)  # (H L_k/2+1)
        K = torch.fft.irfft(K_hat, n=L_k)  # (H L_k)
        return K[:, :L]  # (H L)

    # ---- recurrent view (reference) ----------------------------------------------------------
    def forward_recurrent(self, u: torch.Tensor) -> torch.Tensor:
        """Reference: ``x_k = Ā x_{k-1} + B̄ u_k``, ``y_k = C x_k + D u_k`` with the dense N x N
        matrices, one step at a time. (B, L, H) -> (B, L, H)."""
        u = u.transpose(1, 2)  # (B H L)
        self._setup_length(u.shape[-1])
        dA, dB, C = self.discretize()  # (H N N), (H N), (H N)
        x = torch.zeros(u.shape[0], self.H, self.N, dtype=dA.dtype, device=u.device)  # (B H N)
        ys = []
        for k in range(u.shape[-1]):
            x = torch.einsum("hmn,bhn->bhm", dA, x) + dB * u[..., k, None]  # (B H N)
            ys.append(torch.einsum("hn,bhn->bh", C, x).real)  # (B H) real: conjugate halves pair up
        y = torch.stack(ys, dim=-1) + self.D[:, None] * u  # (B H L)
        return y.transpose(1, 2)  # (B L H)

    def extra_repr(self) -> str:
        return f"d_model={self.H}, d_state={self.N}, l_kernel={int(self.l_kernel)}"
