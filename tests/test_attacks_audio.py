"""Audio attacks (snr-pgd, time-shift, speed, pitch-shift, noise at an SNR) on a tiny S4D with the
mel front end, trained on synthetic tones: accuracy falls, budgets hold, search results are the
input or one of its transformations, seeds reproduce, bad parameters are rejected clearly; and
ART's and Foolbox's own PGD run on the audio classifier."""

import numpy as np
import pytest
import torch
from art.attacks import EvasionAttack

import ssmdefense as sd
from ssmdefense.attacks._common import perturbation_snr_db
from ssmdefense.attacks.pitch_shift import shift_pitch
from ssmdefense.attacks.speed import change_speed
from ssmdefense.attacks.time_shift import shift_waveform

SR, T = 16000, 4000  # 0.25 s clips: fast, and long enough for the mel front end and a 512-point STFT
SEARCH = ["time-shift", "speed", "pitch-shift"]


def tones(n, seed):
    """n clips of 10 classes: class k a tone at 250 * 1.4^k Hz, odd classes rising chirps; random
    phase, amplitude (0.2 to 0.6) and onset (first quarter), plus a little white noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10  # (n)
    t = np.arange(T) / SR  # (T)
    f = 250 * 1.4 ** y[:, None] * (1 + 0.5 * (y[:, None] % 2) * t / t[-1])  # (n T) instantaneous frequency
    phase = 2 * np.pi * np.cumsum(f, axis=1) / SR + rng.uniform(0, 2 * np.pi, (n, 1))  # (n T)
    onset = np.arange(T) >= rng.integers(0, T // 4, (n, 1))  # (n T)
    x = rng.uniform(0.2, 0.6, (n, 1)) * np.sin(phase) * onset + 0.01 * rng.normal(size=(n, T))
    return x[:, None].astype(np.float32), y.astype(np.int64)  # (n 1 T), (n)


def audio_classifier(**kwargs):
    _, D = sd.sequence_dims((1, T), "mel")
    body = sd.build_model("s4d", d_input=D, n_classes=10, d_model=32, n_layers=1)
    return sd.SSMClassifier(
        body,
        input_shape=(1, T),
        nb_classes=10,
        sequence="mel",
        sample_rate=SR,
        clip_values=(-1.0, 1.0),
        device_type="cpu",
        **kwargs,
    )


def tone_classifier(defense: str = "none", epochs: int = 6, **params):
    """The tiny S4D with the mel front end trained by ``defense`` on 600 tones (seed 0, lr 1e-2)."""
    torch.manual_seed(0)
    x, y = tones(600, 0)
    clf = audio_classifier()
    sd.get_defense(defense, clf, lr=1e-2, verbose=False, **params).fit(x, y, nb_epochs=epochs)
    return clf


@pytest.fixture(scope="module")
def clf():
    """The tiny S4D on log-mel features of the tones (100% clean test accuracy, ~2 s to train)."""
    return tone_classifier()


@pytest.fixture(scope="module")
def batch():
    return tones(100, 1)


def test_the_audio_classifier_learned_the_tones(clf, batch):
    x, y = batch
    assert clf.is_audio and clf.input_shape == (1, T)
    assert clf.accuracy(x, y) > 0.9


# ---- snr-pgd --------------------------------------------------------------------------------------
def test_snr_pgd_at_20_db_lowers_accuracy_below_noise_and_keeps_the_snr(clf, batch):
    x, y = batch
    attack = sd.get_attack("snr-pgd", clf, snr_db=20)
    assert isinstance(attack, EvasionAttack)
    x_adv = attack.generate(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert perturbation_snr_db(x, x_adv).min() >= 20 - 1e-3
    assert x_adv.min() >= -1.0 and x_adv.max() <= 1.0
    clean, adv = clf.accuracy(x, y), clf.accuracy(x_adv, y)
    noise = clf.accuracy(sd.get_attack("noise", clf, snr_db=20, seed=0).generate(x), y)
    assert adv < clean - 0.5 and adv < noise - 0.5, (clean, noise, adv)


def test_snr_pgd_at_80_db_barely_changes_accuracy(clf, batch):
    x, y = batch
    x_adv = sd.get_attack("snr-pgd", clf, snr_db=80, max_iter=5).generate(x, y)
    assert perturbation_snr_db(x, x_adv).min() >= 80 - 1e-3
    assert clf.accuracy(x_adv, y) >= clf.accuracy(x, y) - 0.03


def test_snr_pgd_seed_restarts_silence_and_ignored_eps(clf, batch):
    x, y = batch
    x = x.copy()
    x[0] = 0.0  # a silent clip: radius 0, returned as it is
    runs = {}
    for restarts, eps in ((1, None), (1, 0.3), (3, None)):
        np.random.seed(0)  # random starts come from NumPy's global state
        attack = sd.get_attack(
            "snr-pgd", clf, snr_db=30, max_iter=5, num_random_init=restarts, eps=eps, batch_size=len(x)
        )
        runs[restarts, eps] = attack.generate(x, y)
    np.testing.assert_array_equal(runs[1, None], runs[1, 0.3])  # same seed, same result; eps is ignored
    assert np.array_equal(runs[3, None][0], x[0]) and np.array_equal(runs[1, None][0], x[0])
    assert perturbation_snr_db(x, runs[3, None])[1:].min() >= 30 - 1e-3
    # The first of three restarts is the single run (same seed); an example keeps a restart that fools.
    fooled = {r: clf.predict(runs[r, None]).argmax(1) != y for r in (1, 3)}
    assert fooled[1].any() and not (fooled[1] & ~fooled[3]).any()


def test_targeted_snr_pgd_moves_towards_the_targets(clf, batch):
    x, y = batch
    target = (y + 1) % 10
    x_adv = sd.get_attack("snr-pgd", clf, snr_db=10, targeted=True).generate(x, target)
    assert perturbation_snr_db(x, x_adv).min() >= 10 - 1e-3
    assert (clf.predict(x_adv).argmax(1) == target).mean() > 0.5
    with pytest.raises(ValueError, match="target labels"):
        sd.get_attack("snr-pgd", clf, targeted=True).generate(x)


# ---- noise at an SNR ------------------------------------------------------------------------------
@pytest.mark.parametrize("color", ["white", "pink", "dataset"])
def test_noise_at_an_snr_has_exactly_that_snr(clf, batch, color):
    x, _ = batch
    quiet = 0.25 * x  # so that nothing is clipped: the SNR is exactly the one asked for
    x_adv = sd.get_attack("noise", clf, snr_db=10, color=color, seed=0).generate(quiet)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert np.abs(x_adv).max() < 1.0
    np.testing.assert_allclose(perturbation_snr_db(quiet, x_adv), 10, atol=0.01)
    # Loud: clipped into [-1, 1], which only lowers the noise.
    loud = sd.get_attack("noise", clf, snr_db=-10, color=color, seed=0).generate(x)
    assert loud.min() >= -1.0 and loud.max() <= 1.0 and np.abs(loud).max() == 1.0
    assert perturbation_snr_db(x, loud).min() >= -10 - 0.01


def test_noise_colors_have_their_spectra(clf, batch):
    x, _ = batch
    quiet = 0.25 * x

    def band_ratio(color):  # power in bins 10-100 over power in bins 1000-2000
        noise = sd.get_attack("noise", clf, snr_db=10, color=color, seed=0).generate(quiet) - quiet
        power = (np.abs(np.fft.rfft(noise[:, 0].astype(np.float64), axis=1)) ** 2).mean(axis=0)
        return power[10:100].mean() / power[1000:2000].mean()

    assert 0.5 < band_ratio("white") < 2
    assert band_ratio("pink") > 10  # 1/f: ~40 expected

    babble = sd.get_attack("noise", clf, snr_db=10, color="dataset", seed=0).generate(quiet) - quiet
    unit = lambda a: a.reshape(len(a), -1) / np.linalg.norm(a.reshape(len(a), -1), axis=1, keepdims=True)  # noqa: E731
    cosines = [np.sum(unit(babble) * unit(np.roll(quiet, k, axis=0)), axis=1).min() for k in range(1, len(x))]
    assert max(cosines) > 0.9999  # every clip's background is the clip k places away, for one k


def test_noise_at_an_snr_is_seeded_and_validated(clf, batch):
    x, _ = batch
    first = sd.get_attack("noise", clf, snr_db=20, color="pink", seed=0).generate(x)
    np.testing.assert_array_equal(sd.get_attack("noise", clf, snr_db=20, color="pink", seed=0).generate(x), first)
    assert not np.array_equal(sd.get_attack("noise", clf, snr_db=20, color="pink", seed=1).generate(x), first)
    silent = x[:4].copy()
    silent[0] = 0.0
    for color in ("white", "dataset"):  # a silent clip stays silent; so does one with a silent background
        out = sd.get_attack("noise", clf, snr_db=20, color=color, seed=0).generate(silent)
        assert not out[0].any() and np.isfinite(out).all()
    eps_ball = sd.get_attack("noise", clf, eps=0.05, seed=0).generate(x)  # the image baseline, unchanged
    assert np.abs(eps_ball - x).max() <= 0.05 + 1e-6 and np.abs(eps_ball).max() <= 1.0
    for bad in ({"snr_db": "a"}, {"snr_db": float("inf")}, {"snr_db": 10, "color": "brown"}, {"color": "pink"}):
        with pytest.raises(ValueError, match="snr_db|color"):
            sd.get_attack("noise", clf, **bad)
    with pytest.raises(ValueError, match="at least 2 clips"):
        sd.get_attack("noise", clf, snr_db=10, color="dataset").generate(x[:1])


# ---- worst-case searches --------------------------------------------------------------------------
def transform(name, x, label, attack):
    """x (n 1 T) transformed as the attack's candidate ``label``, clipped."""
    xt = torch.from_numpy(x)
    if name == "time-shift":
        out = shift_waveform(xt, label[1], label[0])
    elif name == "speed":
        out = change_speed(xt, label)
    else:
        out = shift_pitch(xt, label, attack._n_fft())
    return out.clamp(-1, 1).numpy()


@pytest.mark.parametrize("name", SEARCH)
def test_search_attack_returns_x_or_the_first_transformation_that_fools(clf, batch, name):
    x, y = batch
    attack = sd.get_attack(name, clf, eps=0.1)  # eps is accepted and ignored
    assert isinstance(attack, EvasionAttack)
    x_adv = attack.generate(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= -1.0 and x_adv.max() <= 1.0
    clean, adv = clf.accuracy(x, y), clf.accuracy(x_adv, y)
    # steady tones barely change when shifted (only their onsets move): a smaller drop there
    assert adv < clean - (0.1 if name == "time-shift" else 0.2), (clean, adv)
    np.testing.assert_array_equal(attack.generate(x, y), x_adv)  # a deterministic grid
    np.testing.assert_array_equal(attack.generate(x), x_adv)  # y=None: the (correct) predictions
    # Reference: every candidate on the first 20 clips, in the attack's order.
    labels = [label for label, _ in attack.candidates(T)]
    n = 20
    wrong = np.stack([clf.predict(transform(name, x[:n], label, attack)).argmax(1) != y[:n] for label in labels])
    first = [labels[int(np.argmax(col))] if col.any() else None for col in wrong.T]
    already_wrong = clf.predict(x[:n]).argmax(1) != y[:n]
    expected = [None if w else f for w, f in zip(already_wrong, first)]
    assert list(attack.transformations[:n]) == expected
    for i, label in enumerate(attack.transformations):
        if label is None:
            np.testing.assert_array_equal(x_adv[i], x[i])
        else:
            assert label in labels
            np.testing.assert_allclose(x_adv[i], transform(name, x[i : i + 1], label, attack)[0], atol=1e-5)


def test_search_grids_stay_within_their_budgets(clf):
    shifts = [s for (_, s), _ in sd.get_attack("time-shift", clf, max_shift_ms=50, num_shifts=5).candidates(T)]
    assert sorted(set(shifts)) == [-800, -400, 400, 800] and [abs(s) for s in shifts] == sorted(abs(s) for s in shifts)
    modes = {m for (m, _), _ in sd.get_attack("time-shift", clf, mode="zero").candidates(T)}
    assert modes == {"zero"}
    factors = [f for f, _ in sd.get_attack("speed", clf, max_change=0.2, num_factors=5).candidates(T)]
    assert factors == [0.9, 1.1, 0.8, 1.2]
    steps = [s for s, _ in sd.get_attack("pitch-shift", clf).candidates(T)]
    assert steps == [-0.5, 0.5, -1.0, 1.0, -1.5, 1.5, -2.0, 2.0]


def test_transformations_match_their_definitions():
    x = torch.from_numpy(tones(4, 2)[0])  # (4 1 T)
    np.testing.assert_array_equal(shift_waveform(x, 3, "circular")[..., 3:], x[..., :-3])
    zero = shift_waveform(x, -5, "zero")
    assert torch.equal(zero[..., :-5], x[..., 5:]) and not zero[..., -5:].any()
    import torchaudio.functional as AF

    # speed: torchaudio's own speed (the same rates, 41 / 40, at this factor), then zero-padded to T
    fast, reference = change_speed(x, 1.025), AF.speed(x, SR, 1.025)[0]  # (4 1 T), (4 1 ~T / 1.025)
    np.testing.assert_allclose(fast[..., : reference.shape[-1]], reference, atol=1e-6)
    assert not fast[..., reference.shape[-1] :].any()
    np.testing.assert_allclose(change_speed(x, 0.9), AF.speed(x, SR, 0.9)[0][..., :T], atol=1e-6)  # cropped
    # pitch: torchaudio's pitch_shift, where the ratio is exact (an octave)
    for steps in (12, -12):
        np.testing.assert_allclose(shift_pitch(x, steps, 512), AF.pitch_shift(x, SR, steps), atol=1e-5)


# ---- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params, match",
    [
        ("snr-pgd", {"snr_db": "a"}, "snr_db must be a finite number"),
        ("snr-pgd", {"snr_db": float("nan")}, "snr_db must be a finite number"),
        ("snr-pgd", {"max_iter": 0}, "max_iter"),
        ("snr-pgd", {"rel_step": -1.0}, "rel_step"),
        ("snr-pgd", {"num_random_init": -1}, "num_random_init"),
        ("snr-pgd", {"eps": -1.0}, "eps"),
        ("time-shift", {"max_shift_ms": -10}, "max_shift_ms"),
        ("time-shift", {"num_shifts": 0}, "num_shifts"),
        ("time-shift", {"mode": "reflect"}, "mode must be one of circular, zero, both"),
        ("time-shift", {"sample_rate": 0}, "sample_rate"),
        ("speed", {"max_change": 1.0}, r"max_change must be a number in \[0, 1\)"),
        ("speed", {"max_change": -0.1}, "max_change"),
        ("speed", {"num_factors": 0}, "num_factors"),
        ("pitch-shift", {"max_semitones": 13}, "max_semitones"),
        ("pitch-shift", {"n_fft": 8}, "n_fft"),
    ],
)
def test_bad_parameters_are_rejected_clearly(clf, name, params, match):
    with pytest.raises(ValueError, match=match):
        sd.get_attack(name, clf, **params)


def test_waveform_attacks_need_a_sample_rate_and_waveform_input(clf):
    _, D = sd.sequence_dims((1, T), "frames")
    no_rate = sd.SSMClassifier(
        sd.build_model("s4d", d_input=D, n_classes=10, d_model=8, n_layers=1),
        input_shape=(1, T),
        nb_classes=10,
        sequence="frames",
        clip_values=(-1.0, 1.0),
        device_type="cpu",
    )
    assert no_rate.sample_rate is None
    for name in ("time-shift", "pitch-shift"):
        with pytest.raises(ValueError, match="needs the sample rate"):
            sd.get_attack(name, no_rate)
        sd.get_attack(name, no_rate, sample_rate=SR)  # given explicitly: fine
    sd.get_attack("speed", no_rate)  # a ratio: no rate needed

    image = sd.SSMClassifier(
        sd.build_model("s4d", d_input=8, n_classes=10, d_model=8, n_layers=1),
        input_shape=(1, 8, 8),
        nb_classes=10,
        sequence="rows",
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    features = audio_classifier(sequence_params={"attack_space": "features"})
    assert features.is_audio and len(features.input_shape) == 3
    for name, params in [
        ("snr-pgd", {}),
        ("time-shift", {}),
        ("speed", {}),
        ("pitch-shift", {}),
        ("noise", {"snr_db": 10}),
    ]:
        with pytest.raises(ValueError, match=r"needs waveform input \(1, T\)"):
            sd.get_attack(name, image, sample_rate=SR, **params) if name in (
                "time-shift",
                "pitch-shift",
            ) else sd.get_attack(name, image, **params)
        with pytest.raises(ValueError, match="attack_space=features perturbs spectrograms"):
            sd.get_attack(name, features, **params)
    sd.get_attack("noise", features, eps=0.1)  # plain eps-ball noise works on any input
    with pytest.raises(ValueError, match=r"mono waveforms \(N, 1, T\)"):
        sd.get_attack("time-shift", clf).generate(np.zeros((2, T), np.float32))


def test_verbose_shows_a_progress_bar(clf, batch, capsys):
    x, y = batch
    sd.get_attack("speed", clf, num_factors=3, verbose=True).generate(x[:10], y[:10])
    assert "speed" in capsys.readouterr().err


# ---- ART's and Foolbox's own attacks on the audio classifier --------------------------------------
def test_art_and_foolbox_pgd_run_on_the_audio_classifier(clf, batch):
    import foolbox as fb
    from art.attacks.evasion import ProjectedGradientDescent

    x, y = batch
    eps = 0.01
    x_adv = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=10, verbose=False).generate(
        x, y
    )
    assert np.abs(x_adv - x).max() <= eps + 1e-6 and x_adv.min() >= -1.0 and x_adv.max() <= 1.0
    assert clf.accuracy(x_adv, y) < clf.accuracy(x, y) - 0.3

    fmodel = fb.PyTorchModel(clf.model.eval(), bounds=(-1, 1))
    attack = fb.attacks.LinfPGD(steps=10, rel_stepsize=0.25)  # the same steps as ART's above (Foolbox: eps/30)
    _, adv, success = attack(fmodel, torch.from_numpy(x), torch.from_numpy(y), epsilons=eps)
    adv = adv.numpy()
    assert np.abs(adv - x).max() <= eps + 1e-6 and adv.min() >= -1.0 and adv.max() <= 1.0
    assert success.float().mean().item() > 0.3


def test_a_search_attack_without_candidates_cannot_be_built():
    from art.attacks.attack import EvasionAttack

    from ssmdefense.attacks._common import WaveformSearchAttack

    class NoCandidates(WaveformSearchAttack, EvasionAttack):
        def _check_params(self):
            pass

    with pytest.raises(TypeError, match="abstract method.*candidates"):
        NoCandidates(estimator=None)
