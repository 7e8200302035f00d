"""S5: simplified state space layer (Smith, Warrington & Linderman, ICLR 2023, "Simplified State
Space Layers for Sequence Modeling"), after lindermanlab/S5 ``s5/ssm.py`` and ``s5/ssm_init.py``.

Where S4/S4D run H independent single-input single-output SSMs, S5 runs **one** multi-input
multi-output SSM whose state (size P) is shared by all H channels, diagonalised:

    x'(t) = Λ x(t) + B̃ u(t),    y(t) = C̃ x(t) + D ⊙ u(t)        Λ (P) diagonal, B̃ (P, H), C̃ (H, P)

Initialisation (paper Sec. 4.2 / reference ``make_DPLR_HiPPO``): HiPPO-LegS ``A`` plus the rank-one
term ``p pᵀ`` (``p_n = sqrt(n + 1/2)``) is the *normal* matrix HiPPO-N ``S = -1/2 I + S_skew``;
``S = V Λ V*`` with ``Re Λ = -1/2`` and ``Im Λ`` the eigenvalues of the Hermitian ``-i S_skew``.
``B̃ = V⁻¹ B`` and ``C̃ = C V`` for real random ``B`` (std ``1/sqrt(P)``) and complex random ``C``
(real and imaginary parts std ``1/sqrt(P)``) as in the reference (lecun-normal, untruncated here).
With ``blocks = J > 1`` the initial ``Λ``, ``V`` are J copies of the size-P/J HiPPO-N
eigendecomposition on the block diagonal (paper Sec. 4.3). ``D ~ N(0, 1)``.

Conjugate symmetry (paper Sec. 4.3 / reference ``conj_sym=True``): the eigenvalues of the real
matrix come in conjugate pairs, so only one of each pair is kept: the layer stores ``P/2`` complex
states and outputs

    y_k = 2 Re(C̃ x_k) + D ⊙ u_k

which equals the full-size real system. ``d_state`` is the full P (as the paper's tables count it).

Discretisation with a learned timescale per state, ``Δ = exp(log_dt)`` (P/2), log-uniform in
[dt_min, dt_max] at initialisation:

    ZOH:       Λ̄ = exp(ΔΛ),                       B̄ = (Λ̄ - 1) / Λ ⊙ B̃
    bilinear:  Λ̄ = (1 + ΔΛ/2) / (1 - ΔΛ/2),       B̄ = Δ / (1 - ΔΛ/2) ⊙ B̃

and the recurrence ``x_k = Λ̄ ⊙ x_{k-1} + B̄ u_k`` is evaluated for all k at once with the parallel
associative scan of ``kernels/assoc_scan.py`` (``kernel="torch"``) or by the Numba diagonal-scan
kernel ``kernels.assoc_scan.diagonal_scan`` (``kernel="numba"``, CPU or CUDA; ``"auto"`` picks per
device what ``benchmarks/kernels.py`` measured faster, ``KERNEL_AUTO``); the input projection
``B̄ u`` and the output ``2 Re(C̃ x)`` stay matrix products in torch. ``forward_recurrent`` is the
same layer stepped sequentially (the reference the tests compare against).

``Re Λ`` is clipped to at most -1e-4 in the forward pass (the reference's ``clip_eigs`` option,
off by default there; on here so that no training or adversarial input can make the system
unstable). Pass ``clip_eigs=False`` for the unclipped parameterisation.

AdS: S5 is a plain SSM mixer; the shared ``Block`` (models/body.py) applies
``AdS(GELU(y))`` to this layer's output ``y`` (after ``+ D ⊙ u``), before the block's output Linear.

Defaults: ``d_state=32`` (P), ZOH, dt in [1e-3, 1e-1], one block. Paper scale (AdS paper, MNIST /
CIFAR-10): ``d_model=128, d_state=128``.

Not implemented from the reference: the bidirectional variant and ``step_rescale``.
"""

import math

import torch
from torch import nn

from ..kernels.assoc_scan import associative_scan, diagonal_scan, sequential_scan
from ..kernels.backend import KernelChoice, check_kernel
from ..validation import is_number
from .checks import check_mixer_args

S5_DISCRETIZATIONS = ("zoh", "bilinear")


def hippo_n_eigendecomposition(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues Λ (N,) and unitary eigenvectors V (N, N), complex128, of HiPPO-N of size N.

    HiPPO-LegS: ``A_nk = -sqrt(2n+1) sqrt(2k+1)`` (n > k), ``-(n+1)`` (n = k), 0 (n < k). Adding
    ``p pᵀ`` with ``p_n = sqrt(n + 1/2)`` gives ``S = -1/2 I + S_skew`` (S_skew real skew-symmetric).
    Eigenvalues come sorted by imaginary part, so the first N/2 hold one of every conjugate pair.
    """
    n = torch.arange(N, dtype=torch.float64)  # (N)
    q = torch.sqrt(1 + 2 * n)  # (N)
    A = -(torch.tril(q[:, None] * q[None, :]) - torch.diag(n))  # (N N) HiPPO-LegS
    p = torch.sqrt(n + 0.5)  # (N)
    S = A + p[:, None] * p[None, :]  # (N N) HiPPO-N, normal
    S_diag = torch.diagonal(S)  # (N) all -1/2
    S_skew = S - torch.diag(S_diag)  # (N N) skew-symmetric
    Lambda_imag, V = torch.linalg.eigh(-1j * S_skew.to(torch.complex128))  # (N), (N N)
    Lambda = S_diag.mean() + 1j * Lambda_imag  # (N)
    return Lambda, V


class S5(KernelChoice, nn.Module):
    """S5 mixer: (B, L, H) -> (B, L, H), one MIMO diagonal SSM with state size P shared by the H channels.

    Args:
        d_model: H, channels in and out.
        d_state: P, the (full, real-system) state size; P/2 complex states are stored. Even.
        discretization: "zoh" or "bilinear".
        dt_min, dt_max: range of the log-uniform initial timescales Δ (one per state).
        blocks: J, number of HiPPO-N blocks on the diagonal of the initial state matrix (P divisible by 2J).
        clip_eigs: clip Re Λ to <= -1e-4 in the forward pass (stable for any input).
        kernel: "auto", "torch" (parallel associative scan) or "numba" (the Numba scan kernel).

    Shape:
        input (B, L, H) real; output (B, L, H) real.
    """

    no_weight_decay = ("log_dt", "Lambda_re", "Lambda_im", "B")  # ssmdefense.optim

    KERNEL_AUTO = {"cpu": "numba", "cuda": "torch"}
    KERNEL_WHAT = "s5"

    def __init__(
        self,
        d_model: int,
        d_state: int = 32,
        discretization: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        *,
        blocks: int = 1,
        clip_eigs: bool = True,
        kernel: str = "auto",
    ):
        super().__init__()
        self.kernel_choice = check_kernel(kernel)
        check_mixer_args(d_model, d_state, dt_min, dt_max, pairs="S5 keeps one of each conjugate pair")
        if not is_number(blocks, integer=True) or blocks < 1 or d_state % (2 * blocks):
            raise ValueError(
                f"blocks must be an integer >= 1 with d_state divisible by 2*blocks; "
                f"got blocks={blocks!r}, d_state={d_state}"
            )
        if discretization not in S5_DISCRETIZATIONS:
            raise ValueError(f"discretization must be one of {', '.join(S5_DISCRETIZATIONS)}; got {discretization!r}")
        H, P = d_model, d_state
        P2 = P // 2  # stored complex states (one per conjugate pair)
        self.H, self.P, self.discretization, self.clip_eigs = H, P, discretization, bool(clip_eigs)

        # Λ and V: J blocks of the size-P/J HiPPO-N eigendecomposition, half of each kept
        Lambda_blk, V_blk = hippo_n_eigendecomposition(P // blocks)  # (P/J), (P/J P/J)
        half = P // (2 * blocks)
        Lambda = Lambda_blk[:half].repeat(blocks)  # (P/2)
        V = torch.block_diag(*[V_blk[:, :half]] * blocks)  # (P P/2)
        V_inv = torch.block_diag(*[V_blk[:, :half].conj().T] * blocks)  # (P/2 P)

        B = torch.randn(P, H, dtype=torch.float64) / math.sqrt(P)  # (P H) real, lecun-normal as the reference
        B_tilde = V_inv @ B.to(torch.complex128)  # (P/2 H)
        C = torch.complex(torch.randn(H, P, dtype=torch.float64), torch.randn(H, P, dtype=torch.float64)) / math.sqrt(
            P
        )  # (H P)
        C_tilde = C @ V  # (H P/2)
        log_dt = torch.rand(P2, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)

        f32 = torch.get_default_dtype()
        self.Lambda_re = nn.Parameter(Lambda.real.to(f32))  # (P/2)
        self.Lambda_im = nn.Parameter(Lambda.imag.to(f32))  # (P/2)
        self.B = nn.Parameter(torch.view_as_real(B_tilde).to(f32))  # (P/2 H 2): B̃ in the eigenbasis
        self.C = nn.Parameter(torch.view_as_real(C_tilde).to(f32))  # (H P/2 2): C̃ in the eigenbasis
        self.D = nn.Parameter(torch.randn(H, dtype=torch.float64).to(f32))  # (H)
        self.log_dt = nn.Parameter(log_dt.to(f32))  # (P/2)

    def continuous(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Continuous-time (Λ (P/2), B̃ (P/2, H), C̃ (H, P/2)), complex."""
        Lambda_re = self.Lambda_re.clamp(max=-1e-4) if self.clip_eigs else self.Lambda_re  # (P/2)
        Lambda = torch.complex(Lambda_re, self.Lambda_im)  # (P/2)
        return Lambda, torch.view_as_complex(self.B), torch.view_as_complex(self.C)

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Discrete (Λ̄ (P/2), B̄ (P/2, H), C̃ (H, P/2)), complex, by ZOH or bilinear."""
        Lambda, B_tilde, C_tilde = self.continuous()
        dt = torch.exp(self.log_dt)  # (P/2)
        if self.discretization == "zoh":
            Lambda_bar = torch.exp(Lambda * dt)  # (P/2)
            B_bar = ((Lambda_bar - 1.0) / Lambda)[:, None] * B_tilde  # (P/2 H)
        else:
            BL = 1.0 / (1.0 - dt / 2.0 * Lambda)  # (P/2)
            Lambda_bar = BL * (1.0 + dt / 2.0 * Lambda)  # (P/2)
            B_bar = (BL * dt)[:, None] * B_tilde  # (P/2 H)
        return Lambda_bar, B_bar, C_tilde

    def _inputs(self, u: torch.Tensor):
        if u.ndim != 3 or u.shape[-1] != self.H:
            raise ValueError(f"expected input (B, L, {self.H}); got {tuple(u.shape)}")
        Lambda_bar, B_bar, C_tilde = self.discretize()
        Bu = torch.complex(u @ B_bar.real.T, u @ B_bar.imag.T)  # (B L P/2) = B̄ u_k
        return Lambda_bar, Bu, C_tilde

    def _outputs(self, x: torch.Tensor, C_tilde: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        y = 2 * (x.real @ C_tilde.real.T - x.imag @ C_tilde.imag.T)  # (B L H) = 2 Re(C̃ x_k)
        return y + self.D * u  # (B L H)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: (B L H)
        # in float32 also under a bf16 autocast: complex tensors have no bfloat16 type
        with torch.autocast(u.device.type, enabled=False):
            if u.dtype in (torch.bfloat16, torch.float16):
                u = u.float()  # (B L H)
            Lambda_bar, Bu, C_tilde = self._inputs(u)
            if self.resolved_kernel(u.device.type) == "numba":
                x = diagonal_scan(Lambda_bar, Bu)  # (B L P/2)
            else:
                x = associative_scan(Lambda_bar, Bu, dim=1)  # (B L P/2)
            return self._outputs(x, C_tilde, u)  # (B L H)

    def forward_recurrent(self, u: torch.Tensor) -> torch.Tensor:
        """Reference: the same layer with the state updated one step at a time. (B, L, H) -> (B, L, H)."""
        Lambda_bar, Bu, C_tilde = self._inputs(u)
        x = sequential_scan(Lambda_bar, Bu, dim=1)  # (B L P/2)
        return self._outputs(x, C_tilde, u)  # (B L H)

    def extra_repr(self) -> str:
        return (
            f"H={self.H}, P={self.P}, discretization={self.discretization}, clip_eigs={self.clip_eigs}, "
            f"kernel={self.kernel_choice}"
        )
