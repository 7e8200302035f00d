"""Mamba: the selective state space block (Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling
with Selective State Spaces", https://arxiv.org/abs/2312.00752), after state-spaces/mamba
``mamba_ssm/modules/mamba_simple.py`` and alxndrTL/mamba.py ``mambapy/mamba.py``. The selective
scan runs in PyTorch (``kernel="torch"``) or as this package's Numba kernel (``kernel="numba"``, CPU
or CUDA, with ``mamba_ssm``'s ``selective_scan_fn`` arguments); ``mamba_ssm`` itself is not used.

With H = d_model, E = expand * H inner channels, N = d_state, R = dt_rank, the block maps
u (B, L, H) to (B, L, H):

    x, z  = split(in_proj(u))                   in_proj: Linear(H, 2E, bias=False); x, z (B L E)
    x     = SiLU(conv1d(x)[:L])                 causal depthwise Conv1d(E, kernel d_conv, padding d_conv-1)
    dt, B, C = split(x_proj(x))                 x_proj: Linear(E, R + 2N, bias=False): (B L R), (B L N), (B L N)
    delta = softplus(dt_proj(dt))               dt_proj: Linear(R, E), input-dependent step (B L E)
    A     = -exp(A_log)                         (E N), S4D-Real init A_log[e, n] = log(n + 1)
    y     = selective_scan(x, delta, A, B, C) + D * x    the selective SSM (kernels/selective_scan.py)
    y     = AdS(y)                              Adaptive Scaling slot (Identity unless AdS is on)
    out   = out_proj(y * SiLU(z))               out_proj: Linear(E, H, bias=False)

with the selective SSM, per channel e and state n,
``h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t``, ``y_t = C_t . h_t`` (zero-order hold for A, the
simplified Euler step for B, as Mamba's code does).

Initialisation as in Mamba: ``dt_proj.weight ~ U(-R^-1/2, R^-1/2)``; ``dt_proj.bias`` is the
inverse softplus of a step drawn log-uniformly in [dt_min, dt_max] = [1e-3, 1e-1] (floored at
1e-4), so softplus(bias) starts in that range; D = 1; the conv has a bias, the projections none.
Defaults: d_state N = 16, expand 2, d_conv 4, dt_rank ceil(H / 16). Paper scale (AdS paper,
Qi et al. 2024): d_model 128, N = 32 on MNIST and 16 on CIFAR-10, expand 2, d_conv 4.

Adaptive Scaling (Qi et al., NeurIPS 2024) goes "after the SSM output, before the block's output
projection". Here that is on the selective-scan output *after* the ``+ D * x`` skip and *before*
the SiLU(z) gate and ``out_proj``: ``out = out_proj(AdS(y) * SiLU(z))``. The AdS authors' public
code (Norma7755/robustness_copy) builds its Mamba models from the stock ``mamba_ssm`` package and
has AdS only inside its S4 layer, so it settles nothing for Mamba; this placement follows the
paper's wording. Because the SSM here is E = expand * H wide, the AdS module in the slot is
E-wide (``W``: Linear(E, E)); ``MambaMixer.ads_width`` tells the classifier body that width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.backend import KernelChoice, check_kernel
from ..kernels.causal_conv import causal_conv_silu, causal_conv_silu_ref
from ..kernels.selective_scan import selective_scan, selective_scan_fn, selective_scan_ref
from ..validation import positive
from .checks import check_int


class MambaMixer(KernelChoice, nn.Module):
    """Mamba block (selective SSM with gate and projections): (B, L, H) -> (B, L, H).

    A gated mixer (``has_output_projection = True``): the classifier body puts the AdS module into
    ``self.ads``, which runs on the SSM output (after ``+ D x``) before the gate and ``out_proj``.

    Args:
        d_model: H, input and output width.
        d_state: N, state size per inner channel. Default: 16.
        expand: E = expand * H inner channels. Default: 2.
        d_conv: kernel size of the causal depthwise convolution. Default: 4.
        dt_rank: R, rank of the step-size projection; None means ceil(H / 16). Default: None.
        dt_min, dt_max: range of the log-uniform initial step size. Default: 1e-3, 1e-1.
        dt_init_floor: lower clamp of the initial step size. Default: 1e-4.
        chunk_size: steps per chunk of the torch scan (None: its default). Default: None.
        kernel: the selective scan's implementation: "torch" (``kernels.selective_scan.selective_scan``,
            chunked), "numba" (``selective_scan_fn``, the Numba kernel, CPU or CUDA) or "auto" (per
            device, what ``benchmarks/kernels.py`` measured faster: ``KERNEL_AUTO``). Default: "auto".

    Shape:
        u: (B, L, H) -> (B, L, H). ``step`` runs one time step from a (conv, ssm) state;
        ``forward_recurrent`` is the whole block as a step-by-step recurrence (the reference).
    """

    no_weight_decay = ("A_log", "D")  # ssmdefense.optim

    has_output_projection = True
    KERNEL_AUTO = {"cpu": "numba", "cuda": "torch"}
    KERNEL_WHAT = "mamba"

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        chunk_size: int | None = None,
        kernel: str = "auto",
    ):
        super().__init__()
        self.kernel_choice = check_kernel(kernel)
        check_int("d_model", d_model, 1)
        check_int("d_state", d_state, 1)
        check_int("expand", expand, 1)
        check_int("d_conv", d_conv, 1)
        if dt_rank is not None:
            check_int("dt_rank", dt_rank, 1)
        if chunk_size is not None:
            check_int("chunk_size", chunk_size, 1)
        for name, value in (("dt_min", dt_min), ("dt_max", dt_max), ("dt_init_floor", dt_init_floor)):
            positive(name, value)
        if not dt_min <= dt_max:
            raise ValueError(f"need dt_min <= dt_max; got {dt_min}, {dt_max}")
        H, N, E = d_model, d_state, expand * d_model
        R = math.ceil(H / 16) if dt_rank is None else dt_rank
        self.H, self.N, self.E, self.R, self.d_conv = H, N, E, R, d_conv
        self.chunk_size = chunk_size

        self.in_proj = nn.Linear(H, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, kernel_size=d_conv, groups=E, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
        dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))  # (E)
        dt = dt.clamp(min=dt_init_floor)  # (E)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus, (E)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float)).repeat(E, 1))  # (E N)
        self.D = nn.Parameter(torch.ones(E))  # (E)
        self.A_log._no_weight_decay = True  # Mamba's marker; optimisers that honour it skip weight decay
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(E, H, bias=False)
        self.ads = nn.Identity()

    @property
    def ads_width(self) -> int:
        """Width of the AdS slot: E = expand * d_model (the SSM runs on the E inner channels)."""
        return self.E

    def _ssm_inputs(self, x: torch.Tensor):
        """x (B L E) after conv and SiLU -> delta before bias/softplus (B L E), B (B L N), C (B L N)."""
        dt, B, C = torch.split(self.x_proj(x), [self.R, self.N, self.N], dim=-1)  # (B L R), (B L N), (B L N)
        dt = F.linear(dt, self.dt_proj.weight)  # (B L E); the bias is added with softplus in the scan
        return dt, B, C

    def forward(self, u: torch.Tensor, reference: bool = False) -> torch.Tensor:  # u: (B L H)
        """The block; ``reference=True`` uses the sequential ``selective_scan_ref``."""
        x, z = self._in(u)  # (B L E), (B L E)
        x = self._conv(x, reference)  # (B L E)
        dt, B, C = self._ssm_inputs(x)  # (B L E), (B L N), (B L N)
        y = self._ssm(x, dt, B, C, z, reference)  # (B L E)
        return self.out_proj(y)  # (B L H)

    def _in(self, u: torch.Tensor):
        """u (B L H) -> x, z (B L E): the input projection, as two products with the halves of its
        weight (the products of ``in_proj(u).chunk(2, -1)``, but x and z come out contiguous,
        and the backward adds two (B L H) gradients instead of concatenating two (B L E) ones)."""
        W_x, W_z = self.in_proj.weight.chunk(2, dim=0)  # (E H), (E H)
        return F.linear(u, W_x), F.linear(u, W_z)  # (B L E), (B L E)

    def _conv(self, x: torch.Tensor, reference: bool = False) -> torch.Tensor:
        """x (B L E) -> SiLU(causal depthwise conv(x)) (B L E): the Numba kernel with the numba
        kernel choice on CPU, else the torch reference (``kernels/causal_conv.py``)."""
        w, bias = self.conv1d.weight[:, 0], self.conv1d.bias  # (E K), (E)
        if not reference and x.device.type == "cpu" and self.resolved_kernel("cpu") == "numba":
            return causal_conv_silu(x, w, bias)  # (B L E)
        return causal_conv_silu_ref(x, w, bias)  # (B L E)

    def _ssm(self, x, dt, B, C, z, reference: bool = False) -> torch.Tensor:
        """The selective scan (+ D x), AdS and the SiLU(z) gate: x, dt, z (B L E), B, C (B L N)
        -> y (B L E), ready for ``out_proj``. Without AdS the scan applies the gate itself."""
        A = -torch.exp(self.A_log)  # (E N)
        fused_gate = isinstance(self.ads, nn.Identity)
        scan_args = (x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2))
        kw = dict(D=self.D, z=z.transpose(1, 2) if fused_gate else None, delta_bias=self.dt_proj.bias)
        if reference:
            y = selective_scan_ref(*scan_args, **kw, delta_softplus=True)  # (B E L)
        elif self.resolved_kernel(x.device.type) == "numba":
            y = selective_scan_fn(*scan_args, **kw, delta_softplus=True)  # (B E L)
        else:
            y = selective_scan(*scan_args, **kw, delta_softplus=True, chunk_size=self.chunk_size)  # (B E L)
        if fused_gate:
            return y.transpose(1, 2)  # (B L E)
        y = self.ads(y.transpose(1, 2))  # (B L E): AdS after the SSM output (+ D x), before gate and out_proj
        return y * F.silu(z)  # (B L E)

    def initial_state(self, batch_size: int, dtype=None, device=None):
        """Zero (conv_state (B E d_conv), ssm_state (B E N)) for ``step``."""
        dtype = dtype or self.in_proj.weight.dtype
        device = device or self.in_proj.weight.device
        return (
            torch.zeros(batch_size, self.E, self.d_conv, dtype=dtype, device=device),
            torch.zeros(batch_size, self.E, self.N, dtype=dtype, device=device),
        )

    def step(self, u_t: torch.Tensor, state):
        """One time step, as Mamba's ``step``: u_t (B, H), state (conv (B E d_conv), ssm (B E N))
        -> (out (B, H), new state). Functional (the state tensors are not modified)."""
        conv_state, ssm_state = state
        x, z = self.in_proj(u_t).chunk(2, dim=-1)  # (B E), (B E)
        conv_state = torch.cat([conv_state[:, :, 1:], x[:, :, None]], dim=-1)  # (B E d_conv): last d_conv inputs
        x = (conv_state * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias  # (B E)
        x = F.silu(x)  # (B E)
        dt, B, C = self._ssm_inputs(x)  # (B E), (B N), (B N)
        delta = F.softplus(dt + self.dt_proj.bias)  # (B E)
        A = -torch.exp(self.A_log)  # (E N)
        dA = torch.exp(delta[:, :, None] * A)  # (B E N)
        dB = delta[:, :, None] * B[:, None, :]  # (B E N)
        ssm_state = dA * ssm_state + dB * x[:, :, None]  # (B E N)
        y = (ssm_state * C[:, None, :]).sum(-1) + self.D * x  # (B E)
        y = self.ads(y)  # (B E)
        return self.out_proj(y * F.silu(z)), (conv_state, ssm_state)  # (B H)

    def forward_recurrent(self, u: torch.Tensor) -> torch.Tensor:
        """Reference: the whole block step by step (conv state + SSM state). (B, L, H) -> (B, L, H)."""
        state = self.initial_state(u.shape[0], u.dtype, u.device)
        outs = []
        for t in range(u.shape[1]):
            out, state = self.step(u[:, t], state)  # (B H)
            outs.append(out)
        return torch.stack(outs, dim=1)  # (B L H)

    def extra_repr(self) -> str:
        return f"d_model={self.H}, d_state={self.N}, expand={self.E // self.H}, d_conv={self.d_conv}, dt_rank={self.R}"
