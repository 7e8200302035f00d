"""The Numba selective scan (``selective_scan_fn``) against the sequential reference
``selective_scan_ref``: outputs, last state and the gradients of every input, in float64 on tiny
inputs, plus gradcheck, edge lengths, float32, a long sequence, bad shapes and the real-GPU tier.
(The CUDA kernels under the simulator: ``cuda_checks_selective_scan.py``.)"""

import numpy as np
import pytest
import torch

from ssmdefense.kernels import backend
from ssmdefense.kernels.selective_scan import selective_scan, selective_scan_fn, selective_scan_ref

pytest.importorskip("numba")

NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def scan_inputs(L, batch=2, dim=3, N=4, seed=0, dtype=torch.float64, device="cpu", channels_last=None):
    """u, delta, A (negative), B, C, D, z, delta_bias as a dict, each requiring grad. ``channels_last``
    (default: for float32) gives u, delta, z, B and C as (B, L, .) memory seen as (B, ., L), the Mamba
    block's layout: the float32 tests then run the kernels' specialisation the model runs, one Numba
    compiles anyway, rather than one more (about 13 s of compiling each on a fresh machine)."""
    g = torch.Generator().manual_seed(seed)
    t = dict(
        u=torch.randn(batch, dim, L, generator=g, dtype=dtype),  # (B D L)
        delta=0.5 * torch.randn(batch, dim, L, generator=g, dtype=dtype),  # (B D L)
        A=-torch.exp(torch.randn(dim, N, generator=g, dtype=dtype)),  # (D N)
        B=torch.randn(batch, N, L, generator=g, dtype=dtype),  # (B N L)
        C=torch.randn(batch, N, L, generator=g, dtype=dtype),  # (B N L)
        D=torch.randn(dim, generator=g, dtype=dtype),  # (D)
        z=torch.randn(batch, dim, L, generator=g, dtype=dtype),  # (B D L)
        delta_bias=0.3 * torch.randn(dim, generator=g, dtype=dtype),  # (D)
    )
    if channels_last if channels_last is not None else dtype == torch.float32:
        t = {k: v.transpose(1, 2).contiguous().transpose(1, 2) if v.ndim == 3 else v for k, v in t.items()}
    return {k: v.to(device).requires_grad_() for k, v in t.items()}


def run(fn, t, use, softplus, last_state, weights):
    """Outputs and the gradients of every used input of sum(weights * outputs)."""
    kw = {k: (t[k] if k in use else None) for k in ("D", "z", "delta_bias")}
    res = fn(t["u"], t["delta"], t["A"], t["B"], t["C"], delta_softplus=softplus, return_last_state=last_state, **kw)
    outs = res if last_state else (res,)
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    inputs = [t[k] for k in NAMES if k in use or k in ("u", "delta", "A", "B", "C")]
    return [o.detach() for o in outs], torch.autograd.grad(loss, inputs)


CASES = [  # optional inputs used, softplus, return_last_state
    (("D", "z", "delta_bias"), True, True),
    ((), False, False),
    (("D",), True, False),
    (("z",), False, True),
    (("delta_bias",), True, True),
    (("D", "z"), False, False),
]


@pytest.mark.parametrize("use, softplus, last_state", CASES)
@pytest.mark.parametrize("L", [1, 7, 40])
def test_outputs_and_gradients_equal_the_reference(use, softplus, last_state, L):
    t = scan_inputs(L, seed=L)
    g = torch.Generator().manual_seed(1)
    weights = [
        torch.randn(2, 3, L, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 4, generator=g, dtype=torch.float64),
    ]
    outs, grads = run(selective_scan_fn, t, use, softplus, last_state, weights)
    outs_ref, grads_ref = run(selective_scan_ref, t, use, softplus, last_state, weights)
    assert outs[0].shape == (2, 3, L) and outs[0].dtype == torch.float64
    for o, o_ref in zip(outs, outs_ref):
        torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-12)
    for gr, gr_ref in zip(grads, grads_ref):
        assert gr.shape == gr_ref.shape
        torch.testing.assert_close(gr, gr_ref, rtol=1e-9, atol=1e-11)


def test_channels_last_views_give_the_same_results_and_channels_last_gradients():
    """The Mamba block passes u, delta, z as (B D L) views of (B L D) memory and B, C as views of a
    wider projection: the kernel reads them as they are, and returns out, du, ddelta, dz in u's layout."""
    t = scan_inputs(37, batch=2, dim=5, N=3, seed=5)
    w = [torch.randn(2, 5, 37, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)]
    use = ("D", "z", "delta_bias")
    outs_ref, grads_ref = run(selective_scan_ref, t, use, True, True, w)
    strided = dict(t)
    for k in ("u", "delta", "z"):  # (B D L) views of channels-last (B L D)
        strided[k] = t[k].detach().transpose(1, 2).contiguous().requires_grad_()
    proj = torch.cat([t["B"].detach(), t["C"].detach()], 1).transpose(1, 2).contiguous()  # (B L 2N)
    strided["B"], strided["C"] = (p.requires_grad_() for p in proj.split(3, dim=2))  # (B L N) views
    views = {k: v.transpose(1, 2) if v.ndim == 3 else v for k, v in strided.items()}  # (B D L), (B N L)
    assert not views["u"].is_contiguous() and not views["B"].is_contiguous()
    outs, grads = run(selective_scan_fn, views, use, True, True, w)
    assert outs[0].stride(1) == 1  # out in u's channels-last layout
    for a, b in zip(outs + list(grads), outs_ref + list(grads_ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("N", [1, 5, 8, 11])
def test_state_sizes_around_the_groups_of_four(N):
    """The CPU kernels update four states per pass over the channels and the rest one at a time:
    every N (below, at, between and above multiples of four) matches the reference."""
    t = scan_inputs(35, batch=2, dim=5, N=N, seed=N)
    g = torch.Generator().manual_seed(2)
    w = [
        torch.randn(2, 5, 35, generator=g, dtype=torch.float64),
        torch.randn(2, 5, N, generator=g, dtype=torch.float64),
    ]
    use = ("D", "z", "delta_bias")
    outs, grads = run(selective_scan_fn, t, use, True, True, w)
    outs_ref, grads_ref = run(selective_scan_ref, t, use, True, True, w)
    for a, b in zip(outs + list(grads), outs_ref + list(grads_ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("last_state", [False, True])
def test_gradcheck_all_inputs(last_state):
    t = scan_inputs(5, dim=3, N=2, seed=11)

    def f(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan_fn(
            u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True, return_last_state=last_state
        )

    assert torch.autograd.gradcheck(f, tuple(t[k] for k in NAMES), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_gradcheck_without_optional_inputs_or_softplus():
    t = scan_inputs(4, batch=1, dim=2, N=3, seed=12)

    def f(u, delta, A, B, C):
        return selective_scan_fn(u, delta, A, B, C)

    assert torch.autograd.gradcheck(f, tuple(t[k] for k in ("u", "delta", "A", "B", "C")), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("L", [1, 2, 31, 33, 65])
def test_odd_lengths_and_batch_one(L):
    """Lengths around the checkpoint block (32 steps) and a single batch row."""
    t = scan_inputs(L, batch=1, dim=5, N=3, seed=L)
    w = [torch.ones(1, 5, L, dtype=torch.float64), torch.ones(1, 5, 3, dtype=torch.float64)]
    use = ("D", "z", "delta_bias")
    outs, grads = run(selective_scan_fn, t, use, True, True, w)
    outs_ref, grads_ref = run(selective_scan_ref, t, use, True, True, w)
    for a, b in zip(outs + list(grads), outs_ref + list(grads_ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_channel_blocks_split_for_small_batches_gives_the_same_results():
    """With more threads than batch rows the CPU kernels split the channels into blocks; the
    results do not depend on the split (dB, dC up to the order of their channel sums)."""
    from ssmdefense.kernels import selective_scan_cpu as K

    assert K.channel_blocks(1, 40, 4) == 16 and K.channel_blocks(32, 40, 4) == 40 and K.channel_blocks(1, 40, 1) == 40
    rng = np.random.default_rng(0)
    L, dim, N = 37, 40, 3
    u, delta, z, dout = (rng.standard_normal((1, dim, L)) for _ in range(4))
    A, D, bias = -np.exp(rng.standard_normal((dim, N))), rng.standard_normal(dim), rng.standard_normal(dim)
    B, C = rng.standard_normal((1, N, L)), rng.standard_normal((1, N, L))
    args = (u, delta, A, B, C, D, z, bias, True)
    fwd = {th: K.forward_cpu(*args, save_states=True, threads=th) for th in (1, 4)}
    for a, b in zip(fwd[1], fwd[4]):
        np.testing.assert_array_equal(a, b)
    bwd = {th: K.backward_cpu(*args, fwd[th][2], dout, threads=th) for th in (1, 4)}
    for a, b in zip(bwd[1], bwd[4]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_exp_and_softplus_match_numpy_to_two_ulps(dtype):
    """The kernels' own exp and softplus (LLVM vectorises them; libm's it cannot), over every range
    including overflow, underflow (to subnormals or zero), infinities and NaN."""
    from ssmdefense.kernels.selective_scan_math import apply_elementwise

    rng = np.random.default_rng(0)
    big = 120.0 if dtype == np.float32 else 800.0
    x = np.concatenate(
        [
            rng.uniform(-big, big, 20000),
            rng.uniform(-1, 1, 20000),
            rng.uniform(-30, 0, 20000),
            [0.0, -0.0, np.inf, -np.inf, np.nan],
        ]
    ).astype(dtype)
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    with np.errstate(over="ignore", under="ignore"):
        x64 = x.astype(np.float64)  # float64 results rounded once to float32: correctly rounded there
        wants = [np.exp(x64).astype(dtype), np.where(x64 > 20, x64, np.log1p(np.exp(x64))).astype(dtype)]
        if dtype == np.float64:
            wants = [np.exp(x), torch.nn.functional.softplus(torch.from_numpy(x)).numpy()]
    for which, want in enumerate(wants):
        got = np.empty_like(x)
        apply_elementwise(x, got, which)
        normal = np.isfinite(want) & (want >= tiny)
        assert np.all(np.abs(got[normal] / want[normal] - 1) <= 2.5 * eps), which  # exp: 1 ulp, softplus: 2
        tiny_or_zero = ~normal & np.isfinite(want)
        assert np.all(np.abs(got[tiny_or_zero] - want[tiny_or_zero]) <= tiny), which  # underflow: near 0
        assert np.array_equal(np.isinf(got), np.isinf(want)) and np.array_equal(np.isnan(got), np.isnan(want))


def test_float32_matches_the_reference():
    t = scan_inputs(50, batch=2, dim=8, N=16, seed=5, dtype=torch.float32)
    w = [torch.randn(2, 8, 50), torch.randn(2, 8, 16)]
    use = ("D", "z", "delta_bias")
    outs, grads = run(selective_scan_fn, t, use, True, True, w)
    outs_ref, grads_ref = run(selective_scan_ref, t, use, True, True, w)
    assert outs[0].dtype == torch.float32 and outs[1].dtype == torch.float32
    for a, b in zip(outs + list(grads), outs_ref + list(grads_ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_half_inputs_compute_in_float32_and_return_the_input_dtype():
    t = scan_inputs(9, seed=6, dtype=torch.float32)
    half = {k: v.detach().to(torch.bfloat16) for k, v in t.items()}
    out = selective_scan_fn(
        half["u"],
        half["delta"],
        half["A"],
        half["B"],
        half["C"],
        D=half["D"],
        z=half["z"],
        delta_bias=half["delta_bias"],
        delta_softplus=True,
    )
    ref = selective_scan_ref(
        half["u"],
        half["delta"],
        half["A"],
        half["B"],
        half["C"],
        D=half["D"],
        z=half["z"],
        delta_bias=half["delta_bias"],
        delta_softplus=True,
    )
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-2, atol=1e-2)  # bfloat16 rounding


def test_long_sequence_stays_finite_and_matches():
    """L = 16,000 with Mamba's initialisation (dt in [1e-3, 0.1], A = -(1..N)): the float32 kernel
    against the float64 reference (forward) and the float64 torch chunked scan (gradients)."""
    L, dim, N = 16_000, 2, 4
    g = torch.Generator().manual_seed(7)
    u = torch.randn(1, dim, L, generator=g)  # (B D L)
    dt = torch.exp(torch.rand(dim, generator=g) * (np.log(0.1) - np.log(1e-3)) + np.log(1e-3))  # (D)
    bias = dt + torch.log(-torch.expm1(-dt))  # (D), inverse softplus
    delta = 0.1 * torch.randn(1, dim, L, generator=g)  # (B D L)
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1)  # (D N)
    B, C = torch.randn(1, N, L, generator=g), torch.randn(1, N, L, generator=g)  # (B N L)
    D, z = torch.ones(dim), torch.randn(1, dim, L, generator=g)
    args = [x.requires_grad_() for x in (u, delta, A, B, C, D, z, bias)]

    def call(fn, xs):
        u, delta, A, B, C, D, z, bias = xs
        return fn(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True)

    out, last = call(selective_scan_fn, args)
    grads = torch.autograd.grad(out.sum() + last.sum(), args)
    assert all(torch.isfinite(x).all() for x in (out, last, *grads))
    x64 = [x.detach().double().requires_grad_() for x in args]
    with torch.no_grad():
        out_ref, last_ref = call(selective_scan_ref, x64)
    torch.testing.assert_close(out.double(), out_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(last.double(), last_ref, rtol=1e-4, atol=1e-4)
    out64, last64 = call(selective_scan, x64)
    grads_ref = torch.autograd.grad(out64.sum() + last64.sum(), x64)
    for name, a, b in zip(NAMES, grads, grads_ref):
        scale = b.abs().max().item()
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4 * scale, msg=name)


def test_zero_length_gives_empty_output_and_zero_state():
    t = scan_inputs(0)
    out, last = selective_scan_fn(
        t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=t["z"], return_last_state=True
    )
    assert out.shape == (2, 3, 0) and torch.equal(last, torch.zeros(2, 3, 4, dtype=torch.float64))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(u=torch.zeros(2, 3)), "u must be"),
        (dict(delta=torch.zeros(2, 3, 6)), "delta must"),
        (dict(A=torch.zeros(4, 4)), "A must be"),
        (dict(B=torch.zeros(2, 5, 7)), "B must be"),
        (dict(C=torch.zeros(1, 4, 7)), "C must be"),
        (dict(D=torch.zeros(4)), "D must be"),
        (dict(z=torch.zeros(2, 3, 8)), "z must"),
        (dict(delta_bias=torch.zeros(2)), "delta_bias must be"),
    ],
)
def test_bad_shapes_raise_value_error(bad, match):
    t = {k: v.detach() for k, v in scan_inputs(7).items()}
    t.update({k: v.double() for k, v in bad.items()})
    with pytest.raises(ValueError, match=match):
        selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=t["z"], delta_bias=t["delta_bias"])


def test_without_numba_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backend, "device_problem", lambda device_type: "numba cannot be imported (test)")
    t = scan_inputs(3)
    with pytest.raises(backend.KernelUnavailableError, match="cannot run on cpu.*numba cannot be imported"):
        selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_outputs_and_gradients_equal_the_reference(dtype):
    # 130 channels: two CUDA blocks of threads; 45 steps: two checkpoint blocks
    t = scan_inputs(45, batch=3, dim=130, N=8, seed=9, dtype=dtype, device="cuda")
    g = torch.Generator().manual_seed(2)
    w = [
        torch.randn(3, 130, 45, generator=g, dtype=dtype).cuda(),
        torch.randn(3, 130, 8, generator=g, dtype=dtype).cuda(),
    ]
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    for use, softplus, last_state in CASES[:3]:
        outs, grads = run(selective_scan_fn, t, use, softplus, last_state, w)
        outs_ref, grads_ref = run(selective_scan_ref, t, use, softplus, last_state, w)
        assert outs[0].is_cuda and outs[0].dtype == dtype
        for a, b in zip(outs + list(grads), outs_ref + list(grads_ref)):
            torch.testing.assert_close(a, b, **tol)
