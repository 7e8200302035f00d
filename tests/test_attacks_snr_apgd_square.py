"""snr-apgd (L2 Auto-PGD in each clip's SNR ball) and square-1d (L-inf Square Attack with 1-D
segments) on the tiny S4D with the mel front end trained on synthetic tones: accuracy falls,
budgets hold, seeds reproduce, misclassified clips are left alone, APGD is at least as strong as
PGD, the losses and the schedule are the reference's, and bad parameters or inputs are rejected
clearly."""

import numpy as np
import pytest
import torch
from art.attacks import EvasionAttack

import ssmdefense as sd
from ssmdefense.attacks._common import perturbation_snr_db
from ssmdefense.attacks.snr_apgd import SNRAPGDAttack
from ssmdefense.attacks.square_1d import Square1DAttack, p_selection, segment_candidate, segment_candidate_ref
from ssmdefense.errors import SSMDefenseError
from test_attacks_audio import SR, T, audio_classifier, tone_classifier, tones


@pytest.fixture(scope="module")
def clf():
    """The standard-trained tiny S4D on log-mel features of the tones (100% clean accuracy)."""
    return tone_classifier()


@pytest.fixture(scope="module")
def batch():
    return tones(30, 1)


# ---- snr-apgd ---------------------------------------------------------------------------------------
def test_snr_apgd_at_20_db_lowers_accuracy_and_keeps_the_snr(clf, batch):
    x, y = batch
    attack = sd.get_attack("snr-apgd", clf, snr_db=20, max_iter=20)
    assert isinstance(attack, EvasionAttack) and isinstance(attack, SNRAPGDAttack)
    x_adv = attack.generate(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (perturbation_snr_db(x, x_adv) >= 20 - 1e-6).all()
    assert x_adv.min() >= -1.0 and x_adv.max() <= 1.0
    clean, adv = clf.accuracy(x, y), clf.accuracy(x_adv, y)
    assert clean > 0.9 and adv < clean - 0.5, (clean, adv)
    # float64 input: the same budget, measured on the input as given
    x64 = sd.get_attack("snr-apgd", clf, snr_db=20, max_iter=3).generate(x[:5].astype(np.float64), y[:5])
    assert x64.dtype == np.float64 and (perturbation_snr_db(x[:5].astype(np.float64), x64) >= 20 - 1e-6).all()


def test_snr_apgd_is_at_least_as_strong_as_snr_pgd(clf, batch):
    x, y = batch
    np.random.seed(0)
    pgd = sd.get_attack("snr-pgd", clf, snr_db=40, max_iter=10).generate(x, y)
    np.random.seed(0)
    apgd = sd.get_attack("snr-apgd", clf, snr_db=40, max_iter=100).generate(x, y)
    assert (perturbation_snr_db(x, apgd) >= 40 - 1e-6).all()
    correct = {name: int((clf.predict(a).argmax(1) == y).sum()) for name, a in (("pgd", pgd), ("apgd", apgd))}
    assert correct["apgd"] <= correct["pgd"] + 1, correct


def test_snr_apgd_dlr_loss_lowers_accuracy(clf, batch):
    x, y = batch
    x_adv = sd.get_attack("snr-apgd", clf, snr_db=20, max_iter=10, loss="dlr").generate(x, y)
    assert (perturbation_snr_db(x, x_adv) >= 20 - 1e-6).all()
    assert clf.accuracy(x_adv, y) < clf.accuracy(x, y) - 0.5


def test_snr_apgd_seed_restarts_silence_ignored_eps_and_misclassified_clips(clf, batch):
    x, y = batch
    x, y = x[:12].copy(), y[:12].copy()
    x[0] = 0.0  # a silent clip: radius 0, returned as it is
    y[1] = (y[1] + 1) % 10  # misclassified as given: returned as it is
    runs = {}
    for restarts, eps in ((1, None), (1, 0.3), (3, None)):
        np.random.seed(0)  # the random starts come from NumPy's global state
        attack = sd.get_attack("snr-apgd", clf, snr_db=40, max_iter=10, nb_restarts=restarts, eps=eps)
        runs[restarts, eps] = attack.generate(x, y)
    np.testing.assert_array_equal(runs[1, None], runs[1, 0.3])  # same seed, same result; eps is ignored
    np.random.seed(1)
    assert not np.array_equal(sd.get_attack("snr-apgd", clf, snr_db=40, max_iter=10).generate(x, y), runs[1, None])
    for run in runs.values():
        np.testing.assert_array_equal(run[:2], x[:2])
        assert (perturbation_snr_db(x[2:], run[2:]) >= 40 - 1e-6).all()
    # The first of three restarts is the single run (same seed); a clip keeps a restart that fools.
    fooled = {r: clf.predict(runs[r, None]).argmax(1) != y for r in (1, 3)}
    assert not (fooled[1] & ~fooled[3]).any()


def test_targeted_snr_apgd_needs_the_true_labels_and_fools(clf, batch):
    x, y = batch
    target = (y + 1) % 10
    for loss in ("ce", "dlr"):
        attack = sd.get_attack("snr-apgd", clf, snr_db=30, max_iter=10, loss=loss, targeted=True)
        x_adv = attack.generate(x, target, y_true=y)
        assert (perturbation_snr_db(x, x_adv) >= 30 - 1e-6).all()
        pred = clf.predict(x_adv).argmax(1)
        assert (pred != y).mean() > 0.5 and (pred == target).mean() > 0.5, loss
    attack = sd.get_attack("snr-apgd", clf, targeted=True, max_iter=2)
    with pytest.raises(ValueError, match="needs the true labels too"):
        attack.generate(x, target)
    with pytest.raises(ValueError, match="needs the target labels y"):
        attack.generate(x, y_true=y)
    with pytest.raises(ValueError, match="y_true is only for targeted=True"):
        sd.get_attack("snr-apgd", clf, max_iter=2).generate(x, y, y_true=y)


def test_snr_apgd_losses_are_the_reference_ones(clf):
    """CE and DLR (untargeted, and targeted with 4+ and with 3 classes) against their formulas."""
    rng = np.random.default_rng(0)
    for classes in (10, 3):
        z = rng.normal(size=(8, classes))  # (B C)
        y, t = rng.integers(0, classes, 8), rng.integers(0, classes, 8)
        zs = -np.sort(-z, axis=1)  # (B C) decreasing
        u = np.arange(8)
        other = np.where(z.argmax(1) == y, zs[:, 1], zs[:, 0])
        low = (zs[:, 2] + zs[:, 3]) / 2 if classes >= 4 else zs[:, 2]
        lse = np.log(np.exp(z).sum(1))
        expected = {
            ("ce", False): lse - z[u, y],
            ("ce", True): -(lse - z[u, t]),
            ("dlr", False): -(z[u, y] - other) / (zs[:, 0] - zs[:, 2] + 1e-12),
            ("dlr", True): -(z[u, y] - z[u, t]) / (zs[:, 0] - low + 1e-12),
        }
        for (loss, targeted), want in expected.items():
            attack = SNRAPGDAttack(clf, loss=loss, targeted=targeted)
            got = attack._loss(torch.from_numpy(z), torch.from_numpy(y), torch.from_numpy(t)).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=f"{loss} targeted={targeted} C={classes}")


# ---- square-1d --------------------------------------------------------------------------------------
def test_square_1d_lowers_accuracy_within_eps_and_stops_when_fooled(clf, batch):
    x, y = batch
    attack = sd.get_attack("square-1d", clf, eps=0.1, max_iter=100)
    assert isinstance(attack, EvasionAttack) and isinstance(attack, Square1DAttack)
    x_adv = attack.generate(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert np.abs(x_adv.astype(np.float64) - x).max() <= 0.1 + 1e-7
    assert x_adv.min() >= -1.0 and x_adv.max() <= 1.0
    clean, adv = clf.accuracy(x, y), clf.accuracy(x_adv, y)
    assert adv < clean - 0.25, (clean, adv)
    # Every sample moved by +-eps (nothing is clipped at these amplitudes): the attack's search space.
    np.testing.assert_allclose(np.abs(x_adv - x), 0.1, atol=1e-6)
    fooled = clf.predict(x_adv).argmax(1) != y
    q = attack.queries
    assert q.shape == (len(x),) and q.dtype.kind == "i"
    assert (q[~fooled] == 100).all() and (q[fooled] <= 100).all() and (q[fooled] < 100).any()


def test_square_1d_seed_reproduces_and_misclassified_clips_are_left_alone(clf, batch):
    x, y = batch
    x, y = x[:10], y[:10].copy()
    y[:3] = (y[:3] + 1) % 10  # misclassified as given
    runs = []
    for seed in (0, 0, 1):
        np.random.seed(seed)  # the draws come from NumPy's global state
        attack = sd.get_attack("square-1d", clf, eps=0.05, max_iter=20, nb_restarts=2, batch_size=4)
        runs.append(attack.generate(x, y))
        np.testing.assert_array_equal(runs[-1][:3], x[:3])
        assert (attack.queries[:3] == 0).all() and (attack.queries[3:] >= 1).all()
        assert np.abs(runs[-1].astype(np.float64) - x).max() <= 0.05 + 1e-7
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_square_1d_schedule_is_the_reference_one():
    halvings = [0, 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]  # p halves after each of these
    for k, bound in enumerate(halvings):
        assert p_selection(0.8, bound + 1, 10000) == pytest.approx(0.8 / 2**k)
        if bound:
            assert p_selection(0.8, bound, 10000) == pytest.approx(0.8 / 2 ** (k - 1))
    assert p_selection(0.8, 1, 100) == pytest.approx(0.8 / 4)  # rescaled to 10,000 iterations: 100


@pytest.mark.parametrize("s", [1, 7, 63])
def test_square_1d_segment_step_equals_its_reference(s):
    """The candidate computed on the segments only is bit for bit the one computed on every sample,
    with the same random draws, including rows where clipping undoes a value and it is drawn again."""
    gen = torch.Generator().manual_seed(s)
    A, T, eps, lo, hi = 6, 64, 0.05, -0.5, 0.5
    x = (torch.rand(A, 1, T, generator=gen) - 0.5) * 1.2  # (A 1 T), some samples beyond the clip range
    x[:2] = hi + 0.1  # rows 0-1: every value clips to hi, so +eps changes nothing and -eps may too
    d_cur = torch.where(torch.rand(A, 1, T, generator=gen) < 0.5, -eps, eps)  # (A 1 T)
    x_cur = (x + d_cur).clamp(lo, hi)  # (A 1 T)
    first = torch.randint(0, T - s + 1, (A,), generator=gen)  # (A)
    np.random.seed(s)
    fast = segment_candidate(x, x_cur, d_cur, first, s, eps, lo, hi)
    state_after_fast = np.random.get_state()[1].copy()
    np.random.seed(s)
    ref = segment_candidate_ref(x, x_cur, d_cur, first, s, eps, lo, hi)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(np.random.get_state()[1], state_after_fast)  # the same draws
    changed = (fast[0] != x_cur).flatten(1).any(1)  # (A)
    assert changed[2:].all() and not changed[:2].any()  # rows 0-1 gave up after 100 draws


# ---- both: errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params, match",
    [
        ("snr-apgd", {"loss": "foo"}, "loss must be one of ce, dlr"),
        ("snr-apgd", {"rho": 1.5}, r"rho must be a number in \(0, 1\)"),
        ("snr-apgd", {"rho": 0}, r"rho must be a number in \(0, 1\)"),
        ("snr-apgd", {"snr_db": float("nan")}, "snr_db must be a finite number"),
        ("snr-apgd", {"max_iter": 0}, "max_iter must be a positive integer"),
        ("snr-apgd", {"nb_restarts": 0}, "nb_restarts must be a positive integer"),
        ("snr-apgd", {"batch_size": 0}, "batch_size must be a positive integer"),
        ("snr-apgd", {"targeted": 1}, "targeted must be True or False"),
        ("snr-apgd", {"eps": -1.0}, "eps"),
        ("square-1d", {"p_init": 0}, r"p_init must be a number in \(0, 1\]"),
        ("square-1d", {"p_init": 1.5}, r"p_init must be a number in \(0, 1\]"),
        ("square-1d", {"eps": -1}, "eps must be a positive number"),
        ("square-1d", {"max_iter": 0}, "max_iter must be a positive integer"),
        ("square-1d", {"nb_restarts": 0}, "nb_restarts must be a positive integer"),
        ("square-1d", {"verbose": "yes"}, "verbose must be True or False"),
    ],
)
def test_bad_parameters_are_rejected_clearly(clf, name, params, match):
    with pytest.raises(SSMDefenseError, match=match):
        sd.get_attack(name, clf, **params)
    if "eps" not in params or name == "square-1d":  # the classes check the same (eps: the factory's)
        cls = SNRAPGDAttack if name == "snr-apgd" else Square1DAttack
        with pytest.raises(ValueError, match=match):
            cls(clf, **params)


def test_dlr_needs_three_classes():
    _, D = sd.sequence_dims((1, T), "mel")
    two = sd.SSMClassifier(
        sd.build_model("s4d", d_input=D, n_classes=2, d_model=8, n_layers=1),
        input_shape=(1, T),
        nb_classes=2,
        sequence="mel",
        sample_rate=SR,
        clip_values=(-1.0, 1.0),
        device_type="cpu",
    )
    with pytest.raises(ValueError, match="loss='dlr' needs at least 3 classes"):
        sd.get_attack("snr-apgd", two, loss="dlr")
    sd.get_attack("snr-apgd", two, loss="ce")


def test_both_need_waveforms(clf):
    image = sd.SSMClassifier(
        sd.build_model("s4d", d_input=8, n_classes=10, d_model=8, n_layers=1),
        input_shape=(1, 8, 8),
        nb_classes=10,
        sequence="rows",
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    features = audio_classifier(sequence_params={"attack_space": "features"})
    for name in ("snr-apgd", "square-1d"):
        with pytest.raises(ValueError, match=r"needs waveform input \(1, T\)"):
            sd.get_attack(name, image)
        with pytest.raises(ValueError, match="attack_space=features perturbs spectrograms"):
            sd.get_attack(name, features)
        with pytest.raises(ValueError, match=r"mono waveforms \(N, 1, T\)"):
            sd.get_attack(name, clf, max_iter=2).generate(np.zeros((2, T), np.float32))
    with pytest.raises(ValueError, match=r"needs waveform input \(1, T\)"):
        Square1DAttack(image)


def test_verbose_shows_progress_bars(clf, batch, capsys):
    x, y = batch
    sd.get_attack("snr-apgd", clf, max_iter=2, verbose=True).generate(x[:4], y[:4])
    sd.get_attack("square-1d", clf, max_iter=2, verbose=True).generate(x[:4], y[:4])
    err = capsys.readouterr().err
    assert "snr-apgd" in err and "square-1d" in err
