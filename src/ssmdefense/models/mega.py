"""Mega: moving average equipped gated attention (Ma et al., ICLR 2023, "Mega: Moving Average
Equipped Gated Attention"), after facebookresearch/mega ``fairseq/modules/exponential_moving_average.py``
(``MultiHeadEMA``) and ``moving_average_gated_attention.py`` (``MovingAverageGatedAttention``).

**Multi-dimensional damped EMA** (paper Sec. 3.1). Each channel h of the input u (B, L, H) is
expanded to N = ``d_ema`` dimensions by β (H, N), smoothed by a damped EMA and projected back by η:

    h_t = α ⊙ β ⊙ u_t + (1 - α ⊙ δ) ⊙ h_{t-1}          α = sigmoid(α̂), δ = sigmoid(δ̂)  (H, N)
    y_t = η · h_t / sqrt(N)                              (η summed over the N dims of each channel)

This is a causal convolution ``y = K * u`` with ``K_{h,l} = sum_n η_{hn} α_{hn} β_{hn} q_{hn}^l / sqrt(N)``,
``q = 1 - α ⊙ δ``; ``ema`` computes K and applies it by FFT, or directly when short (``kernels.long_conv.long_conv``),
``ema_recurrent`` steps the recurrence (the reference the tests compare against). The ``1/sqrt(N)``
is the reference's ``scale`` folded into η. Bidirectional (reference ``bidirectional=True``,
``shift=True``): a second set of (α, δ, β, η) runs the same EMA over the reversed sequence, shifted
by one step so that it sees only u_{t+1}, ..., u_{L-1} (u_t is counted once, by the forward EMA):

    y_t = η¹·h¹_t + η²·(q² ⊙ h²_{t+1})/sqrt(N),    h²_t = α² β² u_t + q² h²_{t+1}   (h²_L = 0)

The EMA sub-layer output is ``X' = SiLU(y + ω ⊙ u)`` (ω (H) the residual weight).

**Single-head gated attention** (paper Sec. 3.2 / 3.3, softmax variant):

    X'' = AdS(X')                                       the Adaptive Scaling slot (Identity without AdS)
    V   = SiLU(u W_v + b_v)                             (B, L, E)      E = d_value
    Z   = SiLU(X'' W_z + b_z)                           (B, L, z)      z = d_qk, shared by Q and K
    Q   = κ_q ⊙ Z + μ_q,   K = κ_k ⊙ Z + μ_k            per-dimension scale and offset
    A   = softmax(Q Kᵀ / sqrt(z) + b_rel)               b_rel[i, j] = learned bias of the offset j - i
                                                        (causal mask j > i unless bidirectional)
    O   = A V
    γ   = SiLU(X'' W_γ + b_γ)                           reset gate (B, L, E)
    φ   = sigmoid(X'' W_φ + b_φ)                        update gate (B, L, H)
    Ĥ   = SiLU(X'' W_h + (γ ⊙ O) U_h + b_h)            (B, L, H)
    Y   = φ ⊙ Ĥ + (1 - φ) ⊙ u

W_z, W_γ, W_φ, W_h are one fused Linear (``mx_proj``, as in the reference); weights ~ N(0, 0.02²),
biases 0, κ ~ N(0, 0.02²), μ = 0, b_rel ~ N(0, 0.02²); EMA: α̂, δ̂ ~ N(0, 0.2²), β = ±1 alternating
+ N(0, 0.02²), η, ω ~ N(0, 1), all as in the reference.

**Where AdS sits.** ``self.ads`` (``nn.Identity`` unless the body puts ``AdaptiveScaling`` there)
acts on the EMA sub-layer output X' = SiLU(EMA(u) + ω ⊙ u), the SSM output of this block, and
its result X'' is what every following projection reads: the gates γ, φ, the shared Z (hence Q and
K) and W_h. V and the residual read the block input u. So AdS is "after the SSM output, before
the block's output projection" (the AdS paper's placement), the output projections being
W_z/W_γ/W_φ/W_h and U_h.

**Protocol with the shared body.** ``has_output_projection = True``: ``models/body.Block`` wraps
this mixer as ``LayerNorm(u + dropout(mixer(u)))``. Because Mega's gated residual already contains
u, ``forward`` returns the *update* ``φ ⊙ (Ĥ - u)``, so the block computes exactly
``LayerNorm(φ ⊙ Ĥ + (1 - φ) ⊙ u)`` (the reference's ``torch.addcmul(residual, u, h - residual)``
followed by its post-norm). ``gated_output(u)`` returns Y itself.

Choices: softmax attention (the paper's choice for image and other non-text LRA tasks; laplace and
relu² are not implemented); E = ``d_value`` defaults to 2H, the paper's setting; full attention
over the whole sequence (no chunking), relative bias for sequences up to ``max_positions``
(default 1024, enough for CIFAR-10 pixel sequences); no attention/hidden dropout inside the layer
(the body's dropout applies to its output); no normalisation inside the layer (the body is
post-norm, which is the reference's ``prenorm=False``).

Defaults: ``d_qk=32, d_ema=16``. Paper scale (AdS paper): ``d_model=128, d_qk=64, d_ema=16``.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.long_conv import long_conv
from ..validation import boolean
from .checks import check_int


class MegaLayer(nn.Module):
    """Mega mixer: damped-EMA + single-head gated attention, (B, L, H) -> (B, L, H).

    Args:
        d_model: H, channels in and out.
        d_qk: z, width of the shared representation Z from which Q and K are made. Default 32.
        d_ema: N, EMA dimensions per channel. Default 16.
        d_value: E, width of V and of the reset gate; None means 2H (the paper's setting).
        bidirectional: a second, reversed EMA and no causal attention mask (not causal then).
        max_positions: longest sequence the relative position bias covers. Default 1024.

    Shape:
        input (B, L, H); ``forward`` returns the residual update φ ⊙ (Ĥ - u) (B, L, H) for the
        shared ``Block``; ``gated_output`` returns Mega's output φ ⊙ Ĥ + (1 - φ) ⊙ u.
    """

    has_output_projection = True

    def __init__(
        self,
        d_model: int,
        d_qk: int = 32,
        d_ema: int = 16,
        d_value: int | None = None,
        bidirectional: bool = False,
        max_positions: int = 1024,
    ):
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_qk", d_qk)
        check_int("d_ema", d_ema)
        if d_value is not None:
            check_int("d_value", d_value)
        boolean("bidirectional", bidirectional)
        check_int("max_positions", max_positions)
        H, z, N = d_model, d_qk, d_ema
        E = 2 * H if d_value is None else d_value
        n_dir = 2 if bidirectional else 1
        self.H, self.z, self.N, self.E = H, z, N, E
        self.bidirectional, self.max_positions = bidirectional, max_positions

        # damped EMA, per direction: (n_dir H N)
        self.alpha = nn.Parameter(torch.randn(n_dir, H, N) * 0.2)  # α = sigmoid(alpha)
        self.delta = nn.Parameter(torch.randn(n_dir, H, N) * 0.2)  # δ = sigmoid(delta)
        sign = torch.ones(N)
        sign[1::2] = -1.0  # β starts near [1, -1, 1, ...] (the reference finds this more stable)
        self.beta = nn.Parameter(sign + torch.randn(n_dir, H, N) * 0.02)
        self.eta = nn.Parameter(torch.randn(n_dir, H, N))
        self.omega = nn.Parameter(torch.randn(H))  # (H)

        # gated attention
        self.v_proj = nn.Linear(H, E)  # W_v
        self.mx_proj = nn.Linear(H, H + z + E + H)  # [W_φ | W_z | W_γ | W_h]
        self.h_proj = nn.Linear(E, H)  # U_h
        self.qk_scale = nn.Parameter(torch.randn(2, z) * 0.02)  # κ_q, κ_k
        self.qk_offset = nn.Parameter(torch.zeros(2, z))  # μ_q, μ_k
        self.rel_pos_bias = nn.Parameter(torch.randn(2 * max_positions - 1) * 0.02)  # offsets -(M-1)..M-1
        for lin in (self.v_proj, self.mx_proj, self.h_proj):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

        self.ads = nn.Identity()  # AdS slot: applied to the EMA output X' (see the module docstring)

    # ---- damped EMA -------------------------------------------------------------------------

    def ema_coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(α ⊙ β, q = 1 - α ⊙ δ, η / sqrt(N)), each (n_dir, H, N)."""
        alpha = torch.sigmoid(self.alpha)  # (n_dir H N)
        delta = torch.sigmoid(self.delta)  # (n_dir H N)
        return alpha * self.beta, 1.0 - alpha * delta, self.eta / math.sqrt(self.N)

    def ema_kernel(self, L: int) -> torch.Tensor:
        """EMA convolution kernels (n_dir, H, L): ``K_l = sum_n η_n α_n β_n q_n^l / sqrt(N)``."""
        ab, q, eta = self.ema_coefficients()
        pos = torch.arange(L, device=q.device, dtype=q.dtype)  # (L)
        powers = torch.exp(pos * torch.log(q)[..., None])  # (n_dir H N L) = q^l
        return torch.einsum("dhn,dhnl->dhl", ab * eta, powers)  # (n_dir H L)

    def _check_input(self, u: torch.Tensor) -> None:
        if u.ndim != 3 or u.shape[-1] != self.H:
            raise ValueError(f"expected input (B, L, {self.H}); got {tuple(u.shape)}")

    def ema(self, u: torch.Tensor) -> torch.Tensor:
        """The damped-EMA output y (before ω ⊙ u and SiLU) by FFT convolution: (B, L, H) -> (B, L, H)."""
        self._check_input(u)
        L = u.shape[1]
        K = self.ema_kernel(L)  # (n_dir H L)
        u_t = u.transpose(1, 2)  # (B H L)
        y = long_conv(u_t, K[0])  # (B H L) causal
        if self.bidirectional:
            K_bwd = torch.cat([torch.zeros_like(K[1, :, :1]), K[1, :, 1:]], dim=-1)  # (H L) lag 0 dropped
            y = y + long_conv(u_t.flip(-1), K_bwd).flip(-1)  # (B H L) anti-causal
        return y.transpose(1, 2)  # (B L H)

    def ema_recurrent(self, u: torch.Tensor) -> torch.Tensor:
        """Reference for ``ema``: ``h_t = α⊙β⊙u_t + (1-α⊙δ)⊙h_{t-1}``, ``y_t = η·h_t``, step by step.

        Bidirectional: plus ``η²·(q² ⊙ h²_{t+1})`` from the same recurrence run backwards in time.
        """
        self._check_input(u)
        ab, q, eta = self.ema_coefficients()  # (n_dir H N)
        B, L, H = u.shape
        h = torch.zeros(B, H, self.N, dtype=u.dtype, device=u.device)  # (B H N)
        ys = []
        for t in range(L):
            h = ab[0] * u[:, t, :, None] + q[0] * h  # (B H N)
            ys.append(torch.einsum("hn,bhn->bh", eta[0], h))  # (B H)
        y = torch.stack(ys, dim=1)  # (B L H)
        if self.bidirectional:
            h = torch.zeros(B, H, self.N, dtype=u.dtype, device=u.device)  # h²_L = 0
            ys = [None] * L
            for t in reversed(range(L)):
                ys[t] = torch.einsum("hn,bhn->bh", eta[1], q[1] * h)  # (B H) from h²_{t+1}
                h = ab[1] * u[:, t, :, None] + q[1] * h  # (B H N) h²_t
            y = y + torch.stack(ys, dim=1)  # (B L H)
        return y

    # ---- gated attention --------------------------------------------------------------------

    def relative_position_bias(self, L: int) -> torch.Tensor:
        """(L, L) bias, entry (i, j) is the learned value for offset j - i."""
        if L > self.max_positions:
            raise ValueError(
                f"sequence length {L} exceeds max_positions={self.max_positions} of the Mega relative position bias"
            )
        idx = torch.arange(L, device=self.rel_pos_bias.device)  # (L)
        offsets = idx[None, :] - idx[:, None] + self.max_positions - 1  # (L L)
        return self.rel_pos_bias[offsets]  # (L L)

    def gated_output(self, u: torch.Tensor) -> torch.Tensor:
        """Mega's layer output ``Y = φ ⊙ Ĥ + (1 - φ) ⊙ u``: (B, L, H) -> (B, L, H)."""
        return u + self(u)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: (B L H)
        """The residual update ``φ ⊙ (Ĥ - u)`` (the body adds u back): (B, L, H) -> (B, L, H)."""
        L = u.shape[1] if u.ndim == 3 else 0
        bias = self.relative_position_bias(L)  # (L L), checks L first
        v = F.silu(self.v_proj(u))  # (B L E)
        mx = F.silu(self.ema(u) + self.omega * u)  # (B L H) X', the EMA sub-layer output
        mx = self.ads(mx)  # (B L H) X'' = AdS(X')
        phi, zr, hx = torch.split(self.mx_proj(mx), [self.H, self.z + self.E, self.H], dim=-1)
        phi = torch.sigmoid(phi)  # (B L H) update gate
        z, r = torch.split(F.silu(zr), [self.z, self.E], dim=-1)  # (B L z), (B L E) reset gate
        q = z * self.qk_scale[0] + self.qk_offset[0]  # (B L z)
        k = z * self.qk_scale[1] + self.qk_offset[1]  # (B L z)
        scores = q @ k.transpose(1, 2) / math.sqrt(self.z) + bias  # (B L L)
        if not self.bidirectional:
            future = torch.ones(L, L, dtype=torch.bool, device=u.device).triu(1)  # (L L) j > i
            scores = scores.masked_fill(future, float("-inf"))
        attn = torch.softmax(scores, dim=-1)  # (B L L)
        o = attn @ v  # (B L E)
        h = F.silu(hx + self.h_proj(r * o))  # (B L H) Ĥ
        return phi * (h - u)  # (B L H)

    def extra_repr(self) -> str:
        return (
            f"H={self.H}, z={self.z}, N={self.N}, E={self.E}, bidirectional={self.bidirectional}, "
            f"max_positions={self.max_positions}"
        )
