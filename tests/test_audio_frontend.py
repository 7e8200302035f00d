"""Audio sequence modes: the mel front end against librosa, gradients to the waveform, frames and
samples, the features attack space, and checkpoints that rebuild the front end."""

import numpy as np
import pytest
import torch

import ssmdefense as sd
from ssmdefense.models.audio import MelSequence

SR = 16000


def tone_clips(n=4, T=SR, seed=0):
    """Chirps with a silent (zero) tail, in [-1, 1]: (n, 1, T) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / SR
    x = np.zeros((n, 1, T), np.float32)
    for i in range(n):
        f0 = 200 + 300 * i
        wave = 0.5 * np.sin(2 * np.pi * (f0 * t + 400 * t**2)) + 0.01 * rng.standard_normal(T)
        x[i, 0, : 3 * T // 4] = wave[: 3 * T // 4]
    return x


def audio_classifier(sequence="mel", T=SR, seed=0, **sequence_params):
    torch.manual_seed(seed)
    _, D = sd.sequence_dims((1, T), sequence, **sequence_params)
    body = sd.build_model("s4d", d_input=D, n_classes=4, d_model=16, n_layers=1, d_state=8)
    return sd.SSMClassifier(
        body,
        input_shape=(1, T),
        nb_classes=4,
        sequence=sequence,
        sequence_params=sequence_params,
        sample_rate=SR,
        clip_values=(-1.0, 1.0),
        device_type="cpu",
    )


@pytest.mark.parametrize("kernel", ["torch", "numba"])
@pytest.mark.parametrize("settings", [dict(), dict(n_mels=64, win_ms=32.0, hop_ms=16.0, f_min=50.0, f_max=7000.0)])
def test_mel_front_end_agrees_with_librosa(settings, kernel):
    """Same numbers as librosa.feature.melspectrogram + power_to_db (Slaney mel scale and norm,
    periodic Hann window centred in n_fft, reflect padding). Tolerance: 1e-3 dB (max abs, a relative
    error of 2.3e-4 in power) on every bin, in float32; in float64 the error is about 1e-4 dB because
    torchaudio builds its filterbank and window in float32."""
    import librosa

    x = tone_clips(3)
    front = MelSequence((1, SR), kernel=kernel, **settings)
    p = front.settings
    for dtype, tol in ((torch.float64, 1e-3), (torch.float32, 1e-3)):
        ours = front.front_end.to(dtype)(torch.from_numpy(x).to(dtype))[:, 0].numpy()  # (N n_mels frames)
        for clip, mine in zip(x, ours):
            ref = librosa.feature.melspectrogram(
                y=clip[0].astype(np.float64),
                sr=SR,
                n_fft=p["n_fft"],
                hop_length=p["hop_length"],
                win_length=p["win_length"],
                window="hann",
                center=True,
                pad_mode="reflect",
                power=2.0,
                n_mels=p["n_mels"],
                fmin=p["f_min"],
                fmax=p["f_max"],
                htk=False,
                norm="slaney",
            )
            ref_db = librosa.power_to_db(ref, ref=1.0, amin=p["amin"], top_db=p["top_db"])
            assert mine.shape == ref_db.shape == (p["n_mels"], 1 + SR // p["hop_length"])
            assert np.abs(mine - ref_db).max() < tol


def test_sequence_dims_of_the_audio_modes():
    assert sd.sequence_dims((1, SR), "mel") == (101, 40)
    assert sd.sequence_dims((1, SR), "mel", hop_ms=20.0, n_mels=64) == (51, 64)
    assert sd.sequence_dims((1, SR), "frames") == (100, 160)
    assert sd.sequence_dims((1, 1000), "frames", frame=300) == (4, 300)  # last frame zero-padded
    assert sd.sequence_dims((1, SR), "samples") == (SR, 1)


def test_frames_and_samples_keep_every_sample_in_order():
    x = torch.arange(2 * 1000, dtype=torch.float32).reshape(2, 1, 1000)
    frames = sd.build_serialiser("frames", (1, 1000), frame=300)(x)  # (2 4 300)
    assert frames.shape == (2, 4, 300)
    assert torch.equal(frames.reshape(2, -1)[:, :1000], x[:, 0]) and (frames.reshape(2, -1)[:, 1000:] == 0).all()
    samples = sd.build_serialiser("samples", (1, 1000))(x)  # (2 1000 1)
    assert torch.equal(samples[..., 0], x[:, 0])


def test_gradients_reach_the_waveform_through_the_front_end():
    clf = audio_classifier()
    x = tone_clips(4)
    y = np.arange(4)
    grad = clf.loss_gradient(x, y)  # (4 1 T)
    assert np.isfinite(grad).all()
    speech = np.abs(grad[:, 0, : 3 * SR // 4])
    assert (speech.mean(axis=1) > 0).all()  # every clip gets a gradient where there is sound
    # the silent tail is exactly zero: d|X|^2/dx vanishes where X = 0 (random starts move off it) ...
    noisy = np.clip(x + np.random.default_rng(0).uniform(-1e-3, 1e-3, x.shape).astype(np.float32), -1, 1)
    tail = np.abs(clf.loss_gradient(noisy, y)[:, 0, 3 * SR // 4 + 400 :])
    assert (tail.mean(axis=1) > 0).all()  # ... and a 1e-3 perturbation there already gets a gradient


def test_an_example_does_not_depend_on_its_batch():
    """AmplitudeToDB's top_db clamps each clip at its own maximum, not the batch's."""
    clf = audio_classifier()
    x = tone_clips(4)
    x[3] *= 0.001  # a very quiet clip next to loud ones
    together = clf.predict(x)
    alone = np.concatenate([clf.predict(x[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_features_attack_space_perturbs_the_spectrogram():
    clf = audio_classifier(attack_space="features")
    wave = audio_classifier()  # the same weights (same seed), waveform space
    x = tone_clips(4)
    feats = clf.prepare_inputs(x)  # (4 1 40 101)
    assert clf.input_shape == (1, 40, 101) and feats.shape == (4, 1, 40, 101)
    lo, hi = clf.clip_values
    assert lo == pytest.approx(-100.0) and feats.min() >= lo and feats.max() <= hi
    np.testing.assert_allclose(clf.predict(feats), wave.predict(x), rtol=1e-5, atol=1e-5)
    x_adv = sd.get_attack("pgd", clf, eps=3.0, max_iter=5).generate(feats, np.arange(4))  # 3 dB
    assert np.abs(x_adv - feats).max() <= 3.0 + 1e-4 and x_adv.min() >= lo
    assert clf.prepare_inputs(feats) is not None and clf.prepare_inputs(feats).shape == feats.shape


def test_checkpoint_rebuilds_the_front_end(tmp_path):
    clf = audio_classifier(n_mels=48, hop_ms=12.5, top_db=60.0)
    x = tone_clips(3)
    sd.save(clf, tmp_path / "mel", extra={"dataset": "tones"})
    back = sd.load(tmp_path / "mel", device_type="cpu")
    assert back.sequence == "mel" and back.sample_rate == SR
    assert back.sequence_params == clf.sequence_params and back.sequence_params["n_mels"] == 48
    np.testing.assert_array_equal(back.predict(x), clf.predict(x))
    feats = audio_classifier(attack_space="features")
    sd.save(feats, tmp_path / "feats")
    again = sd.load(tmp_path / "feats", device_type="cpu")
    assert again.input_shape == (1, 40, 101) and again.natural_shape == (1, SR)
    assert again.natural_clip_values == (-1.0, 1.0)


@pytest.mark.parametrize(
    "sequence, params, shape, message",
    [
        ("mel", {"n_mels": 0}, (1, SR), "n_mels must be an integer >= 1"),
        ("mel", {"attack_space": "spectrum"}, (1, SR), "attack_space must be one of waveform, features"),
        ("mel", {"f_max": 9000}, (1, SR), "f_max <= 8000"),
        ("mel", {"win_ms": 25.0, "n_fft": 256}, (1, SR), "n_fft (256) must be >= the window"),
        ("mel", {}, (1, 28, 28), "needs mono audio input_shape (1, T)"),
        ("mel", {}, (2, SR), "needs mono audio input_shape (1, T)"),
        ("mel", {"hop": 10}, (1, SR), "unknown parameter(s) hop"),
        ("frames", {"frame": 0}, (1, SR), "frame must be an integer >= 1"),
        ("rows", {}, (1, SR), "needs image input_shape (C, H, W)"),
    ],
)
def test_bad_sequence_settings_are_clear_errors(sequence, params, shape, message):
    with pytest.raises(sd.SSMDefenseError, match=__import__("re").escape(message)):
        sd.sequence_dims(shape, sequence, **params)


def test_sample_rate_flows_into_the_mel_front_end():
    _, D = sd.sequence_dims((1, 8000), "mel", sample_rate=8000)
    body = sd.build_model("s4d", d_input=D, n_classes=4, d_model=8, n_layers=1)
    clf = sd.SSMClassifier(
        body,
        input_shape=(1, 8000),
        nb_classes=4,
        sequence="mel",
        sample_rate=8000,
        clip_values=(-1.0, 1.0),
        device_type="cpu",
    )
    assert clf.sequence_params["sample_rate"] == 8000 and clf.sequence_params["f_max"] == 4000
    with pytest.raises(sd.SSMDefenseError, match="contradicts sample_rate=8000"):
        sd.SSMClassifier(
            body,
            input_shape=(1, 8000),
            nb_classes=4,
            sequence="mel",
            sample_rate=8000,
            sequence_params={"sample_rate": 16000},
            clip_values=(-1.0, 1.0),
            device_type="cpu",
        )
