"""The fused log-mel kernel (``kernels/logmel.py``, the mel front end's ``kernel="numba"``) against
torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB`` and the plain reference ``log_mel_ref``: values
and gradients w.r.t. the waveform in float64 and float32, with and without top_db, on clips whose dB
range exceeds top_db (so the clamp and its gradient to each example's maximum matter), tied maxima
and a tie with the floor, gradcheck; ``MelSequence`` with kernel numba vs torch; kernel selection."""

import json

import numpy as np
import pytest
import torch

import ssmdefense as sd
from ssmdefense.kernels import backend
from ssmdefense.kernels.logmel import log_mel, log_mel_ref, mel_bands
from ssmdefense.models.audio import AUTO, MelSequence

SR = 16000


def loud_and_quiet(n, T, seed=0):
    """(n, 1, T) float64 clips with dB ranges beyond 80 dB: a loud chirp with a near-silent tail
    (1e-7 noise), a 10x quieter one with a silent tail, and one that is exact zeros but for a burst
    (zeros make mel below amin: the -100 dB floor). n = 1 gives the first only."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / SR
    x = np.zeros((n, 1, T))
    for i in range(n):
        wave = 0.5 * np.sin(2 * np.pi * ((300 + 500 * i) * t + 300 * t**2)) + 0.01 * rng.standard_normal(T)
        if i % 3 == 0:
            x[i, 0] = np.where(t < 0.6 * t[-1], wave, 1e-7 * rng.standard_normal(T))
        elif i % 3 == 1:
            x[i, 0] = np.where(t < 0.4 * t[-1], 0.1 * wave, 0.0)
        else:
            x[i, 0, T // 3 : T // 2] = wave[T // 3 : T // 2]
    return torch.from_numpy(x)


def front_ends(T, dtype, **settings):
    """The mel front end with kernel torch and numba, same settings, in ``dtype``."""
    return tuple(MelSequence((1, T), kernel=k, **settings).front_end.to(dtype) for k in ("torch", "numba"))


def values_and_input_gradient(front, x, g):
    x = x.clone().requires_grad_()
    y = front(x)  # (N 1 n_mels frames)
    (grad,) = torch.autograd.grad(y, x, g)
    return y.detach(), grad


@pytest.mark.parametrize("n, T", [(3, 8000), (1, 5003)])  # a batch, and batch 1 of an odd length
@pytest.mark.parametrize("top_db", [80.0, None])
def test_numba_matches_torchaudio_in_float64(n, T, top_db):
    """Values to 1e-10 dB and input gradients to 1e-9 of their largest, with a random upstream gradient."""
    torch_front, numba_front = front_ends(T, torch.float64, top_db=top_db)
    x = loud_and_quiet(n, T)
    a = torch_front(x)  # (N 1 n_mels frames)
    g = torch.randn(a.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (a, ga), (b, gb) = (values_and_input_gradient(f, x, g) for f in (torch_front, numba_front))
    low = a.amin(dim=(1, 2, 3), keepdim=True)  # (N 1 1 1)
    span = a.amax(dim=(1, 2, 3)) - low.flatten()  # (N)
    if top_db is not None:  # the clamp bites on every clip: clamped entries send their gradient to the maximum
        torch.testing.assert_close(span, torch.full_like(span, top_db))
        assert ((a == low).sum(dim=(1, 2, 3)) > 10).all()
    else:
        assert (span > 80.0).all()
    torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
    torch.testing.assert_close(gb, ga, rtol=0, atol=1e-9 * float(ga.abs().max()))


@pytest.mark.parametrize("top_db", [80.0, None])
def test_numba_matches_torchaudio_in_float32(top_db):
    """Values within 1e-4 relative (|numba - torch| <= 1e-4 |torch| + 1e-4 dB; the two sum the filterbank
    in different orders). Input gradients within 1e-3 of their norm."""
    T = SR
    torch_front, numba_front = front_ends(T, torch.float32, top_db=top_db)
    x = loud_and_quiet(3, T).float()
    g = torch.randn(torch_front(x).shape, generator=torch.Generator().manual_seed(2))
    (a, ga), (b, gb) = (values_and_input_gradient(f, x, g) for f in (torch_front, numba_front))
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert float((gb - ga).norm() / ga.norm()) < 1e-3


def tiny_spec(seed=0, scale=(-2.0, 1.0)):
    """A complex128 STFT (N 2, C 1, F 9, T 5) with magnitudes 10^U(scale), and a sparse (9, 3)
    triangular filterbank (each bin in at most two bands, bin 0 and bin 8 in none)."""
    rng = np.random.default_rng(seed)
    mag = 10.0 ** rng.uniform(*scale, (2, 1, 9, 5))
    spec = torch.from_numpy(mag * np.exp(2j * np.pi * rng.random((2, 1, 9, 5))))  # (N C F T)
    fb = torch.zeros(9, 3, dtype=torch.float64)  # (F M)
    for m in range(3):
        fb[1 + 2 * m : 4 + 2 * m, m] = torch.tensor([0.5, 1.0, 0.5]) * (1.0 + m)
    return spec, fb


@pytest.mark.parametrize("amin, top_db", [(1e-10, 20.0), (1e-10, None), (1e-2, 20.0)])
def test_gradcheck(amin, top_db):
    """Finite differences on a tiny complex input, away from the kinks (the clamps at amin and at
    the floor), which the test checks it is; amin=1e-2 puts some bands below amin (zero gradient)."""
    spec, fb = tiny_spec(scale=(-2.5, 1.0))
    mel = torch.matmul(spec.abs().pow(2).transpose(-1, -2), fb).transpose(-1, -2)  # (N C M T)
    assert ((mel - amin).abs() > 1e-2 * amin).all()
    if amin == 1e-2:
        assert (mel < amin).any()
    db = log_mel_ref(spec, fb, amin, None)  # (N C M T)
    if top_db is not None:
        floor = db.amax(dim=(1, 2, 3), keepdim=True) - top_db
        assert (db < floor).any() and ((db - floor).abs() > 1e-3).all()
    spec.requires_grad_()
    assert torch.autograd.gradcheck(lambda s: log_mel(s, fb, amin, top_db), (spec,), eps=1e-7, atol=1e-6)
    torch.testing.assert_close(log_mel(spec, fb, amin, top_db), log_mel_ref(spec, fb, amin, top_db))


def reference_and_fast_gradients(spec, fb, amin, top_db, seed=3):
    g = torch.randn(
        (spec.shape[0], spec.shape[1], fb.shape[1], spec.shape[3]),
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(seed),
    )
    out = []
    for f in (log_mel_ref, log_mel):
        s = spec.clone().requires_grad_()
        y = f(s, fb, amin, top_db)
        out.append((y.detach(), *torch.autograd.grad(y, s, g)))
    return out


def test_ties_split_the_gradient_as_torch_does():
    """Two tied maxima share the gradient of the clamped entries (amax's backward), and entries exactly
    at the floor send half of theirs to the maxima (maximum's backward)."""
    spec, fb = tiny_spec(seed=1)
    spec[0, 0, :, 3] = spec[0, 0, :, 1] = 20.0  # example 0: frames 1 and 3 the same loud frame: tied maxima
    (a, ga), (b, gb) = reference_and_fast_gradients(spec, fb, 1e-10, 30.0)
    assert int((a[0] == a[0].max()).sum()) == 2 and (a[0] == a[0].max() - 30.0).any()  # clamped entries
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    torch.testing.assert_close(gb, ga, rtol=1e-12, atol=1e-12)
    # example 1: its maximum exactly 0 dB (mel 1) and silent bins at exactly 10 log10(amin) = -100 dB,
    # the floor for top_db = 100: a tie between the floor and the entries
    fb1 = torch.zeros(9, 3, dtype=torch.float64)
    fb1[2, 0] = fb1[5, 1] = fb1[7, 2] = 1.0
    spec = torch.zeros(1, 1, 9, 5, dtype=torch.complex128)
    spec[0, 0, 2, 2] = 1.0  # mel 1: 0 dB, the maximum
    spec[0, 0, 5] = 0.5  # -6 dB, in every frame
    (a, ga), (b, gb) = reference_and_fast_gradients(spec, fb1, 1e-10, 100.0)
    assert (a == -100.0).sum() == (b == -100.0).sum() == 9
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    torch.testing.assert_close(gb, ga, rtol=1e-12, atol=1e-12)
    assert ga[0, 0, 2, 2].abs() > 0  # the maximum got the floor's half


def test_mel_bands_are_the_filterbank_nonzero_ranges():
    _, fb = tiny_spec()
    band_lo, band_hi, bin_lo, bin_hi = mel_bands(fb)
    assert band_lo.tolist() == [1, 3, 5] and band_hi.tolist() == [4, 6, 8]
    assert bin_lo.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 0] and bin_hi.tolist() == [0, 1, 1, 2, 2, 3, 3, 3, 0]


def test_mel_sequence_numba_and_torch_give_the_same_features_and_input_gradients():
    x = loud_and_quiet(3, SR).float()
    outs = []
    for kernel in ("torch", "numba"):
        seq = MelSequence((1, SR), kernel=kernel)
        xx = x.clone().requires_grad_()
        y = seq(xx)  # (N frames n_mels)
        (grad,) = torch.autograd.grad(y.square().sum(), xx)
        feats = MelSequence((1, SR), kernel=kernel, attack_space="features").prepare(x)  # (N 1 n_mels frames)
        outs.append((y.detach(), grad, feats))
    (ya, ga, fa), (yb, gb, fb) = outs
    torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-5)  # (dB + 40) / 20: 1e-4 dB is 5e-6
    torch.testing.assert_close(fb, fa, rtol=1e-4, atol=1e-4)
    assert float((gb - ga).norm() / ga.norm()) < 1e-3


def test_kernel_is_recorded_and_old_settings_rebuild_with_the_default():
    seq = MelSequence((1, SR), kernel="torch")
    assert seq.params["kernel"] == seq.settings["kernel"] == "torch"
    old = {k: v for k, v in seq.params.items() if k != "kernel"}  # a checkpoint from before the kernel
    assert MelSequence((1, SR), **old).params["kernel"] == "auto"


def test_bad_kernel_is_a_clear_error():
    with pytest.raises(ValueError, match="kernel must be one of auto, torch, numba; got 'bogus'"):
        MelSequence((1, SR), kernel="bogus")
    with pytest.raises(sd.SSMDefenseError, match="kernel must be one of auto, torch, numba"):
        sd.sequence_dims((1, SR), "mel", kernel="bogus")


def test_resolved_kernel_per_device_and_without_numba(monkeypatch):
    auto, torch_, numba_ = (MelSequence((1, 4000), kernel=k).front_end for k in ("auto", "torch", "numba"))
    assert auto.resolved_kernel("cpu") == AUTO["cpu"] and auto.resolved_kernel("cuda") == AUTO["cuda"] == "torch"
    assert torch_.resolved_kernel("cuda") == "torch" and numba_.resolved_kernel("cpu") == "numba"
    monkeypatch.setattr(backend, "device_problem", lambda device_type: "numba cannot be imported (test)")
    backend._warn_once.cache_clear()
    x = loud_and_quiet(1, 4000).float()
    assert auto.resolved_kernel("cpu") == "torch"
    torch.testing.assert_close(auto(x), torch_(x))
    with pytest.raises(backend.KernelUnavailableError, match="log-mel: kernel='numba' cannot run on cpu"):
        numba_(x)
    backend._warn_once.cache_clear()


def test_log_mel_rejects_what_it_cannot_compute():
    spec, fb = tiny_spec()
    with pytest.raises(ValueError, match="complex64/complex128 STFT"):
        log_mel(spec.abs(), fb)
    with pytest.raises(ValueError, match="fb must be"):
        log_mel(spec, fb[:5])
    with pytest.raises(ValueError, match="filterbank as a constant"):
        log_mel(spec, fb.clone().requires_grad_())
    with pytest.raises(backend.KernelUnavailableError, match="no Numba kernel for 'meta'"):
        log_mel(spec.to("meta"), fb.to("meta"))


def test_checkpoints_rebuild_the_kernel_and_old_ones_get_the_default(tmp_path):
    torch.manual_seed(0)
    body = sd.build_model("s4d", d_input=40, n_classes=3, d_model=8, n_layers=1, d_state=4)
    clf = sd.SSMClassifier(
        body,
        input_shape=(1, 4000),
        nb_classes=3,
        sequence="mel",
        sample_rate=SR,
        sequence_params={"kernel": "torch"},
        clip_values=(-1.0, 1.0),
        device_type="cpu",
    )
    assert clf.kernels["log-mel"] == "torch"
    x = loud_and_quiet(2, 4000).float().numpy()
    stem = sd.save(clf, tmp_path / "mel")
    assert sd.load(stem, device_type="cpu").sequence_params["kernel"] == "torch"
    meta_path = stem.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["classifier"]["sequence_params"]["kernel"]  # as written before the kernel choice existed
    meta_path.write_text(json.dumps(meta))
    old = sd.load(stem, device_type="cpu")
    assert old.sequence_params["kernel"] == "auto" and old.kernels["log-mel"] == AUTO["cpu"]
    np.testing.assert_allclose(old.predict(x), clf.predict(x), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_numba_matches_torchaudio_on_the_gpu(dtype):
    T = 8000
    torch_front, numba_front = (f.cuda() for f in front_ends(T, dtype))
    x = loud_and_quiet(3, T).to("cuda", dtype)
    g = torch.randn(torch_front(x).shape, dtype=dtype, device="cuda")
    (a, ga), (b, gb) = (values_and_input_gradient(f, x, g) for f in (torch_front, numba_front))
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(b, a, rtol=tol, atol=tol)
    assert float((gb - ga).norm() / ga.norm()) < (1e-9 if dtype == torch.float64 else 1e-3)
