"""The augment defense's audio transforms: SNR noise, time shift, speed, SpecAugment masks."""

import math

import numpy as np
import pytest
import torch

import ssmdefense as sd
from conftest import Interrupt, interrupt_on_call, make_classifier, outcomes
from ssmdefense.defenses.augment import augment_audio, change_speed, mask_spectrogram
from ssmdefense.models.audio import DB_REFERENCE

SR, T = 16000, 4000  # a quarter of a second


def tones(n_per_class=6, seed=0):
    """10 classes of pure tones (class c at 500 (c + 1) Hz), random amplitude in [0.2, 0.5] and phase:
    x (N, 1, T) float32 in [-0.5, 0.5], y (N,) int64."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n_per_class)
    t = np.arange(T) / SR
    amp = rng.uniform(0.2, 0.5, len(y))[:, None]
    phase = rng.uniform(0, 2 * np.pi, len(y))[:, None]
    x = amp * np.sin(2 * np.pi * 500 * (y[:, None] + 1) * t + phase)
    return x[:, None, :].astype(np.float32), y.astype(np.int64)


def audio_classifier(sequence="mel", seed=0, **sequence_params):
    torch.manual_seed(seed)
    _, D = sd.sequence_dims((1, T), sequence, **({"sample_rate": SR} if sequence == "mel" else {}))
    body = sd.build_model("s4d", d_input=D, n_classes=10, d_model=16, n_layers=1, d_state=8, dt_min=1e-2, dt_max=1.0)
    return sd.SSMClassifier(
        body,
        input_shape=(1, T),
        nb_classes=10,
        sequence=sequence,
        sample_rate=SR,
        clip_values=(-1.0, 1.0),
        device_type="cpu",
        sequence_params=sequence_params or None,
    )


def augment(clf, **params):
    return sd.get_defense("augment", clf, verbose=False, **params)


def dominant_hz(x: torch.Tensor) -> torch.Tensor:
    """Frequency of the largest FFT bin of each waveform (N, 1, T'), zero-padded 4x: (N)."""
    n = 4 * x.shape[-1]
    return torch.fft.rfft(x[:, 0].double(), n=n).abs().argmax(1).double() * SR / n


def zero_bands(spec: torch.Tensor, axis: int, value: float = 0.0) -> list[list[int]]:
    """Per example of ``spec`` (N, ..., n_mels, frames): the indices along ``axis`` (-2 bins, -1 frames)
    whose whole row/column is exactly ``value`` (0 in the body's input: the masks' -40 dB)."""
    other = -1 if axis == -2 else -2
    zero = (spec == value).all(dim=other).flatten(1)  # (N size)
    return [torch.nonzero(row).flatten().tolist() for row in zero]


def contiguous(indices: list[int]) -> bool:
    return indices == list(range(indices[0], indices[0] + len(indices))) if indices else True


@pytest.fixture(scope="module")
def waves():
    x, y = tones()
    return torch.from_numpy(x), torch.from_numpy(y)


# ---- each transform does what it says ------------------------------------------------------------
def test_snr_noise_lies_in_the_drawn_range(waves):
    x, _ = waves
    trainer = augment(audio_classifier(), snr_db=[10, 30], p=1.0)
    torch.manual_seed(0)
    out = trainer.transform(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.abs().max() <= 1
    signal, noise = x.flatten(1).pow(2).sum(1), (out - x).flatten(1).pow(2).sum(1)  # (N)
    snr = 10 * torch.log10(signal / noise)  # (N) measured, within 0.5 dB (5 sigma) of the draw
    assert snr.min() > 10 - 0.5 and snr.max() < 30 + 0.5, snr
    assert snr.std() > 3  # drawn across the range, not one value (uniform on [10, 30]: std 5.8)
    residual = out - x  # white Gaussian: about zero mean, no dominant tone
    assert residual.mean().abs() < 0.01
    fixed = augment(audio_classifier(), snr_db=20, p=1.0).transform(x)
    snr = 10 * torch.log10(signal / (fixed - x).flatten(1).pow(2).sum(1))
    # the realised noise power of T samples varies by sqrt(2 / T) (2.2%, 0.1 dB): 0.5 dB is 5 sigma
    torch.testing.assert_close(snr, torch.full_like(snr, 20.0), rtol=0, atol=0.5)
    silent = torch.zeros(2, 1, T)
    assert torch.equal(augment_audio(silent, speed=0, max_shift=0, snr_db=(10, 30), p=1.0, clip=(-1, 1)), silent)


def test_shift_is_a_circular_roll_by_at_most_the_max():
    x = torch.rand(24, 1, T) - 0.5  # noise: a roll is identifiable by its shift
    trainer = augment(audio_classifier(), shift_ms=20, p=1.0)
    assert trainer.max_shift == 320  # 20 ms at 16 kHz
    torch.manual_seed(0)
    out = trainer.transform(x)
    shifts = []
    for xi, oi in zip(x, out):
        found = [s for s in range(-320, 321) if torch.equal(torch.roll(xi, s, -1), oi)]
        assert len(found) == 1, found
        shifts.extend(found)
    assert len(set(shifts)) > 12 and max(abs(s) for s in shifts) > 100  # random, and spread over the range


def test_speed_scales_the_dominant_frequency_by_the_factor():
    t = torch.arange(T) / SR
    x = (0.5 * torch.sin(2 * math.pi * 1000 * t)).expand(6, 1, T).contiguous()  # (6 1 T) 1 kHz
    percent = torch.tensor([90, 95, 100, 100, 105, 110])
    out = change_speed(x, percent)
    assert out.shape == x.shape
    torch.testing.assert_close(dominant_hz(out), 10.0 * percent.double(), rtol=0.005, atol=0)
    assert torch.equal(out[2], x[2])  # factor 1: untouched
    # faster (1.1x) is T / 1.1 samples long, centred, zero-padded at both ends
    nonzero = torch.nonzero(out[5, 0].abs() > 1e-3).flatten()
    assert abs((nonzero[-1] - nonzero[0] + 1).item() - T / 1.1) < 10 and nonzero[0].item() > 150
    nonzero = torch.nonzero(out[0, 0].abs() > 1e-3).flatten()
    assert nonzero[0].item() < 5 and nonzero[-1].item() > T - 5  # slower (0.9x): cropped, so full

    trainer = augment(audio_classifier(), speed=0.1, p=1.0)
    torch.manual_seed(0)
    ratio = dominant_hz(trainer.transform(x[:1].expand(32, 1, T).contiguous())) / 1000  # (32)
    assert ratio.min() > 0.9 - 0.005 and ratio.max() < 1.1 + 0.005, ratio
    assert len(set((ratio * 100).round().tolist())) > 8  # many factors of the 1% grid


def test_masks_act_only_in_training_forward_passes(waves):
    x, y = waves
    clf = audio_classifier()
    trainer = augment(clf, base="pgd-at", max_iter=1, eps=0.002, freq_mask=8, time_mask=6, p=1.0)
    seen = []  # (training?, body input (N frames n_mels) = (dB + 40) / 20 after the masks)
    clf.body.register_forward_pre_hook(lambda module, args: seen.append((module.training, args[0].detach())))
    model = clf.model
    with torch.no_grad():
        clean = model.eval()(x).clone()
    seen.clear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model.train()
    torch.manual_seed(0)
    trainer.train_batch(model, optimizer, scheduler, x, y)
    training = [s for mode, s in seen if mode]
    attacking = [s for mode, s in seen if not mode]
    assert len(training) == 1 and len(attacking) == 1  # PGD-1 in eval mode, then the training pass
    spec = training[0].transpose(1, 2)  # (N n_mels frames)
    bins, frames = zero_bands(spec, -2), zero_bands(spec, -1)
    assert sum(map(bool, bins)) > 0.6 * len(x) and sum(map(bool, frames)) > 0.6 * len(x)
    assert all(contiguous(b) and len(b) <= 7 for b in bins) and all(contiguous(f) and len(f) <= 6 for f in frames)
    assert all(not any(zero_bands(attacking[0].transpose(1, 2), axis)) for axis in (-2, -1))  # eval: unmasked
    assert not clf.serialiser.front_end._forward_hooks  # removed after the batch

    with trainer.spectrogram_masks(model):  # the hook itself: eval mode is untouched, train mode masks
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), clean, rtol=0, atol=0)
            masked = clf.serialiser.front_end.train()(x)
        assert sum(map(bool, zero_bands(masked, -2, DB_REFERENCE))) > 0.6 * len(x)
    assert not clf.serialiser.front_end._forward_hooks


def test_masks_in_the_features_space_apply_to_the_input_batch(waves):
    x, _ = waves
    clf = audio_classifier(attack_space="features")
    feats = torch.from_numpy(clf.prepare_inputs(x.numpy()))  # (N 1 n_mels frames) dB
    trainer = augment(clf, freq_mask=10, time_mask=8, p=1.0)
    assert trainer.describe()["rotation"] == 0 and trainer.masks_input
    torch.manual_seed(0)
    out = trainer.transform(feats)
    assert out.shape == feats.shape
    lo, hi = clf.clip_values
    assert out.min() >= lo and out.max() <= hi
    bins, frames = zero_bands(out, -2, DB_REFERENCE), zero_bands(out, -1, DB_REFERENCE)
    assert sum(map(bool, bins)) > 0.6 * len(x) and sum(map(bool, frames)) > 0.6 * len(x)
    assert all(contiguous(b) and len(b) <= 9 for b in bins) and all(contiguous(f) and len(f) <= 7 for f in frames)
    kept = out != DB_REFERENCE
    assert torch.equal(out[kept], feats[kept])  # masked bands are at -40 dB, the rest unchanged


def test_p_zero_leaves_the_batch_unchanged(waves):
    x, y = waves
    clf = audio_classifier()
    trainer = augment(clf, snr_db=[10, 30], shift_ms=50, speed=0.1, noise=0.1, freq_mask=8, time_mask=6, p=0.0)
    assert torch.equal(trainer.transform(x), x)
    model = clf.model.train()
    with torch.no_grad():
        plain = model(x)
        with trainer.spectrogram_masks(model):
            torch.testing.assert_close(model(x), plain, rtol=0, atol=0)
    spec = torch.randn(4, 1, 40, 26)
    assert torch.equal(mask_spectrogram(spec, freq_mask=8, time_mask=6, p=0.0), spec)
    half = augment(clf, snr_db=[10, 30], p=0.5).transform(x)  # some examples noised, the others exact
    kept = ((half - x).flatten(1).abs().amax(1) == 0).float().mean()
    assert 0.2 < kept < 0.8


def test_audio_transforms_repeat_with_a_seed(waves):
    x, y = waves
    trainer = augment(audio_classifier(), snr_db=[10, 30], shift_ms=50, speed=0.1, p=0.7)
    torch.manual_seed(5)
    a = trainer.transform(x)
    torch.manual_seed(5)
    b = trainer.transform(x)
    assert torch.equal(a, b) and not torch.equal(a, x)

    def trained():
        clf = audio_classifier(seed=1)
        augment(
            clf, snr_db=[10, 30], shift_ms=50, speed=0.1, freq_mask=8, time_mask=6, lr=1e-2, seed=3, batch_size=20
        ).fit(x.numpy(), y.numpy(), nb_epochs=2)
        return clf.body.state_dict()

    first, second = trained(), trained()
    for key, value in first.items():
        torch.testing.assert_close(second[key], value, rtol=0, atol=0)


def test_audio_augment_resumes_exactly(waves, tmp_path, monkeypatch):
    from ssmdefense.defenses import loop

    x, y = waves[0].numpy(), waves[1].numpy()

    def trainer():
        return augment(
            audio_classifier(seed=1),
            snr_db=[10, 30],
            shift_ms=50,
            speed=0.1,
            freq_mask=8,
            time_mask=6,
            lr=1e-2,
            seed=3,
            batch_size=20,
        )

    whole = trainer().fit(x, y, nb_epochs=3, out_dir=tmp_path)
    whole_state = sd.load(tmp_path / "last", device_type="cpu").body.state_dict()
    cut = tmp_path / "cut"
    cut.mkdir()
    # dies saving epoch 2's resume state: the state on disk is epoch 1's
    restore = interrupt_on_call(monkeypatch, loop, "save_state", 2)
    with pytest.raises(Interrupt):
        trainer().fit(x, y, nb_epochs=3, out_dir=cut)
    restore()
    resumed = trainer().fit(x, y, nb_epochs=3, out_dir=cut, resume=True)

    assert outcomes(resumed) == outcomes(whole)
    for key, value in sd.load(cut / "last", device_type="cpu").body.state_dict().items():
        torch.testing.assert_close(value, whole_state[key], rtol=0, atol=0)


# ---- the hook's lifetime --------------------------------------------------------------------------
def test_the_mask_hook_is_removed_after_fit_and_after_an_exception(waves, monkeypatch):
    x, y = waves
    clf = audio_classifier()
    front_end = clf.serialiser.front_end
    trainer = augment(clf, freq_mask=8, time_mask=6)
    trainer.fit(x.numpy(), y.numpy(), nb_epochs=1)
    assert not front_end._forward_hooks and not clf.model.serialiser.front_end._forward_hooks

    hooked = []

    def failing_step(model, xb, yb):
        hooked.append(len(front_end._forward_hooks))
        raise RuntimeError("boom")

    monkeypatch.setattr(trainer.base, "training_step", failing_step)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(x.numpy(), y.numpy(), nb_epochs=1)
    assert hooked == [1] and not front_end._forward_hooks


# ---- parameters -----------------------------------------------------------------------------------
def test_audio_defaults_and_description():
    d = augment(audio_classifier()).describe()
    assert (d["rotation"], d["resize"], d["noise"], d["p"]) == (0, 0, 0, 0.5)
    assert (d["snr_db"], d["shift_ms"], d["speed"], d["freq_mask"], d["time_mask"]) == (None, 0, 0, 0, 0)
    d = augment(
        audio_classifier(), snr_db=[10, 40], shift_ms=100, speed=0.1, freq_mask=8, time_mask=6, noise=0.01
    ).describe()
    assert (d["snr_db"], d["shift_ms"], d["speed"], d["freq_mask"], d["time_mask"], d["noise"]) == (
        [10, 40],
        100,
        0.1,
        8,
        6,
        0.01,
    )


@pytest.mark.parametrize(
    "sequence, params, message",
    [
        ("mel", {"snr_db": [40, 10]}, "snr_db must be a number or a pair"),
        ("mel", {"snr_db": [10, 20, 30]}, "snr_db must be a number or a pair"),
        ("mel", {"snr_db": "loud"}, "snr_db must be a number or a pair"),
        ("mel", {"shift_ms": -5}, "shift_ms must be a number >= 0"),
        ("mel", {"shift_ms": 300}, "shorter than the clip"),
        ("mel", {"speed": 1.0}, r"speed must be 0 \(off\) or a number in \[0.01, 1\)"),
        ("mel", {"speed": -0.1}, "speed must be a number >= 0"),
        ("mel", {"speed": 0.001}, r"speed must be 0 \(off\) or a number in \[0.01, 1\)"),
        ("mel", {"freq_mask": 2.5}, "freq_mask must be an integer >= 0"),
        ("mel", {"freq_mask": 41}, "at most the spectrogram's 40 mel bins"),
        ("mel", {"time_mask": 27}, "at most the spectrogram's 26 frames"),
        ("frames", {"freq_mask": 8}, "need an audio classifier with sequence='mel'"),
        ("samples", {"time_mask": 4}, "need an audio classifier with sequence='mel'"),
        ("mel", {"rotation": 10}, "rotation is an image transform and this classifier takes audio"),
        ("mel", {"resize": 0.1}, "resize is an image transform and this classifier takes audio"),
    ],
)
def test_bad_audio_augment_parameters(sequence, params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        augment(audio_classifier(sequence), **params)


def test_audio_transforms_refuse_images_and_spectrogram_input(digits):
    for params in ({"shift_ms": 10}, {"speed": 0.1}, {"snr_db": 20}):
        with pytest.raises(sd.SSMDefenseError, match="waveforms"):
            augment(make_classifier(digits), **params)
        with pytest.raises(sd.SSMDefenseError, match="attack_space='features'"):
            augment(audio_classifier(attack_space="features"), **params)
    with pytest.raises(sd.SSMDefenseError, match="need an audio classifier with sequence='mel'"):
        augment(make_classifier(digits), freq_mask=2)


# ---- end to end -----------------------------------------------------------------------------------
def test_augment_over_pgd_at_trains_an_audio_classifier():
    x, y = tones(n_per_class=8, seed=1)
    x_val, y_val = tones(n_per_class=2, seed=2)
    clf = audio_classifier()
    trainer = sd.get_defense(
        "augment", clf, base="pgd-at", snr_db=[10, 30], shift_ms=50, max_iter=2, eps=0.002, verbose=False
    )
    assert trainer.base.name == "pgd-at" and trainer.max_shift == 800
    history = trainer.fit(x, y, validation_data=(x_val, y_val), nb_epochs=1)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    assert 0 <= history[0]["robust_accuracy"]["pgd-10"] <= history[0]["clean_accuracy"] <= 1
    d = trainer.describe()
    assert d["base_params"]["max_iter"] == 2 and d["snr_db"] == [10, 30] and d["shift_ms"] == 50
