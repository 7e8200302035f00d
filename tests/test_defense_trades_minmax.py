"""The ``trades`` and ``minmax`` defenses."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.defences.trainer import Trainer

import ssmdefense as sd
from conftest import make_classifier
from ssmdefense.defenses.minmax import project_simplex, simplex_weights
from ssmdefense.defenses.trades import kl_per_sample

EPS = 0.1


@pytest.fixture(scope="module")
def baseline(standard_history):
    """Standard training on the budget every defense below gets (as in test_defenses.py)."""
    return standard_history(5)


@pytest.mark.parametrize(
    "defense, params",
    [
        ("trades", {"max_iter": 5}),  # beta = 1, the AdS paper's MNIST value
        ("minmax", {"max_iter": 5, "classes": "topk:2"}),
        ("minmax", {"max_iter": 2, "classes": "all", "lam": 1.0, "include_clean": True}),
    ],
)
def test_defense_raises_robust_accuracy_over_standard_training(digits, baseline, defense, params):
    clf = make_classifier(digits)
    trainer = sd.get_defense(defense, clf, eps=EPS, lr=1e-2, eval_samples=200, verbose=False, **params)
    assert isinstance(trainer, Trainer)
    history = trainer.fit(digits.x_train, digits.y_train, validation_data=(digits.x_test, digits.y_test), nb_epochs=5)
    best_defended = max(r["robust_accuracy"]["pgd-10"] for r in history)
    best_standard = max(r["robust_accuracy"]["pgd-10"] for r in baseline)
    assert best_defended > best_standard + 0.15, (best_defended, best_standard)
    assert history[-1]["clean_accuracy"] > 0.5


# ---- trades ------------------------------------------------------------------------------------------
def test_trades_inner_loop_maximises_the_kl(trained, digits):
    model = trained.model
    x = torch.from_numpy(digits.x_test[:64])
    trainer = sd.get_defense("trades", trained, eps=EPS, verbose=False)
    model.train()
    torch.manual_seed(0)
    start = (x + 1e-3 * torch.randn_like(x)).clamp(0, 1)  # the inner loop's start (same seed below)
    torch.manual_seed(0)
    x_adv = trainer.perturb(model, x)
    assert model.training  # mode restored
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        model.eval()
        p = F.softmax(model(x), dim=1)
        kl_start = kl_per_sample(p, model(start)).mean()
        kl_end = kl_per_sample(p, model(x_adv)).mean()
    assert kl_end > 0.3 and kl_end > 100 * kl_start, (kl_start, kl_end)


def test_trades_loss_is_clean_cross_entropy_plus_beta_times_kl(trained, digits):
    model = trained.model
    x, y = torch.from_numpy(digits.x_train[:32]), torch.from_numpy(digits.y_train[:32])
    model.train()  # no dropout in the tiny model: deterministic forward passes
    with torch.no_grad():
        ce = F.cross_entropy(model(x), y)
    losses = {}
    for beta in (0.0, 1.0, 6.0):
        trainer = sd.get_defense("trades", trained, eps=EPS, beta=beta, max_iter=3, verbose=False)
        torch.manual_seed(1)  # the same Gaussian start, hence the same x' for every beta
        loss, logits = trainer.training_step(model, x, y)
        losses[beta] = loss.item()
        torch.testing.assert_close(logits, model(x))  # the clean logits, for the training accuracy
    assert losses[0.0] == pytest.approx(ce.item(), rel=1e-6)
    kl = losses[1.0] - losses[0.0]
    assert kl > 0.05
    assert losses[6.0] - losses[0.0] == pytest.approx(6 * kl, rel=1e-4)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"beta": -1}, "beta must be a finite number >= 0"),
        ({"beta": "six"}, "beta must be a finite number >= 0"),
        ({"beta": float("nan")}, "beta must be a finite number >= 0"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
        ({"eps_step": 0}, "eps_step must be a positive number"),
    ],
)
def test_trades_bad_parameters(digits, params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.get_defense("trades", make_classifier(digits), **params)


# ---- minmax ------------------------------------------------------------------------------------------
def test_project_simplex_solves_the_projection(rng):
    from scipy.optimize import minimize

    for n in (1, 2, 3, 5, 8):
        v = torch.from_numpy(rng.normal(scale=2.0, size=(20, n)))
        t = project_simplex(v)
        assert t.shape == v.shape and t.dtype == v.dtype
        assert (t >= 0).all()
        torch.testing.assert_close(t.sum(-1), torch.ones(20, dtype=v.dtype))
        for row, got in zip(v.numpy()[:5], t.numpy()[:5]):  # brute force: a generic QP solver
            ref = minimize(
                lambda s, row=row: ((s - row) ** 2).sum(),
                np.full(n, 1.0 / n),
                method="SLSQP",
                bounds=[(0, None)] * n,
                constraints={"type": "eq", "fun": lambda s: s.sum() - 1},
                options={"ftol": 1e-12},
            ).x
            np.testing.assert_allclose(got, ref, atol=1e-5)
    # batched over leading dimensions; a point of the simplex is its own projection
    v = torch.from_numpy(rng.normal(size=(3, 4, 6)))
    torch.testing.assert_close(project_simplex(v)[1], project_simplex(v[1]))
    inside = torch.tensor([0.2, 0.5, 0.0, 0.3], dtype=torch.float64)
    torch.testing.assert_close(project_simplex(inside), inside)


def test_simplex_weights_maximise_the_regularised_objective(rng):
    losses = torch.from_numpy(rng.exponential(size=(50, 6)))  # (B J) cross-entropy-like values
    lam = 0.7
    t_star = simplex_weights(losses, lam)  # (B J)

    def objective(t):
        return (t * losses).sum(-1) - lam / 2 * (t * t).sum(-1)

    best = objective(t_star)
    for _ in range(200):  # random feasible points never do better
        t = torch.from_numpy(rng.dirichlet(np.full(6, 0.5), size=50))
        assert (objective(t) <= best + 1e-12).all()
    # lam -> 0: the plain max (one-hot at the largest loss); lam = 0 exactly is that one-hot
    one_hot = F.one_hot(losses.argmax(-1), 6).to(losses.dtype)
    torch.testing.assert_close(simplex_weights(losses, 1e-6), one_hot)
    torch.testing.assert_close(simplex_weights(losses, 0.0), one_hot)
    # lam -> inf: nearly uniform (the mean loss)
    assert (simplex_weights(losses, 1e4) - 1 / 6).abs().max() < 1e-3


def test_minmax_targeted_attacks_reach_their_targets(trained, digits):
    model = trained.model
    x, y = torch.from_numpy(digits.x_test[:40]), torch.from_numpy(digits.y_test[:40])
    trainer = sd.get_defense("minmax", trained, eps=EPS, max_iter=10, verbose=False)
    torch.manual_seed(0)
    x_adv, targets = trainer.targeted_attacks(model, x, y)  # (B 9 1 8 8), (B 9)
    assert x_adv.shape == (40, 9, 1, 8, 8) and targets.shape == (40, 9)
    assert not (targets == y[:, None]).any()
    assert ((x_adv - x[:, None]).abs().amax(dim=(2, 3, 4)) <= EPS + 1e-6).all()
    noise = (x[:, None] + EPS * torch.empty_like(x_adv).uniform_(-1, 1).sign()).clamp(0, 1)  # (B 9 1 8 8)
    model.eval()
    with torch.no_grad():
        hit = (model(x_adv.flatten(0, 1)).argmax(1) == targets.flatten()).float().mean()
        hit_noise = (model(noise.flatten(0, 1)).argmax(1) == targets.flatten()).float().mean()
    assert hit > hit_noise + 0.15, (hit, hit_noise)  # about 0.27 against 0.01


def test_minmax_candidates_topk_and_include_clean(trained, digits):
    model = trained.model.train()
    x, y = torch.from_numpy(digits.x_train[:16]), torch.from_numpy(digits.y_train[:16])
    counts = {}
    for classes in ("all", "topk:2"):
        for include_clean in (False, True):
            trainer = sd.get_defense(
                "minmax", trained, eps=EPS, max_iter=2, classes=classes, include_clean=include_clean, verbose=False
            )
            losses, logits = trainer.candidate_losses(model, x, y)
            assert losses.shape[1] == trainer.nb_candidates and logits.shape == (16, losses.shape[1], 10)
            counts[classes, include_clean] = losses.shape[1]
            if include_clean:  # the last candidate is the clean sample
                with torch.no_grad():
                    clean = F.cross_entropy(model(x), y, reduction="none")
                torch.testing.assert_close(losses[:, -1].detach(), clean)
    assert counts == {("all", False): 9, ("all", True): 10, ("topk:2", False): 2, ("topk:2", True): 3}
    # top-k attacks the most likely wrong classes
    trainer = sd.get_defense("minmax", trained, eps=EPS, classes="topk:3", verbose=False)
    with torch.no_grad():
        model.eval()
        ranked = model(x).scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, :3]
    assert torch.equal(trainer.target_classes(model, x, y), ranked)


def test_minmax_loss_is_the_max_over_candidates_at_lambda_zero(trained, digits):
    model = trained.model.train()
    x, y = torch.from_numpy(digits.x_train[:32]), torch.from_numpy(digits.y_train[:32])
    trainer = sd.get_defense("minmax", trained, eps=EPS, max_iter=3, classes="topk:4", verbose=False)
    torch.manual_seed(2)
    loss, worst = trainer.training_step(model, x, y)
    torch.manual_seed(2)
    losses, logits = trainer.candidate_losses(model, x, y)  # the same random starts: the same candidates
    losses = losses.detach()
    assert loss.item() == pytest.approx(losses.max(1).values.mean().item(), rel=1e-5)
    assert loss.item() > losses.mean().item() + 0.01  # max >= mean, strictly here
    torch.testing.assert_close(worst, logits[torch.arange(32), losses.argmax(1)].detach())
    # lam > 0: between the mean (minus lam / 2J, the uniform weights' value) and the max
    smooth = sd.get_defense("minmax", trained, eps=EPS, lam=1.0, verbose=False).robust_loss(losses).item()
    assert losses.mean().item() - 1.0 / 8 <= smooth < losses.max(1).values.mean().item()
    loss.backward()  # Danskin: a plain backward through the weighted losses
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"classes": "topk:0"}, "K must be between 1 and 9"),
        ({"classes": "topk:10"}, "K must be between 1 and 9"),
        ({"classes": "topk:x"}, 'classes must be "all" or "topk:K"'),
        ({"classes": "some"}, 'classes must be "all" or "topk:K"'),
        ({"classes": 3}, 'classes must be "all" or "topk:K"'),
        ({"lam": -0.5}, "lam must be a finite number >= 0"),
        ({"lam": "big"}, "lam must be a finite number >= 0"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
        ({"include_clean": "yes"}, "include_clean must be True or False"),
        ({"beta": 1.0}, "unknown parameter"),
    ],
)
def test_minmax_bad_parameters(digits, params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.get_defense("minmax", make_classifier(digits), **params)


def test_both_work_as_the_base_of_ads(digits):
    for base, params in (("trades", {"beta": 6.0}), ("minmax", {"classes": "topk:2", "lam": 0.5})):
        trainer = sd.get_defense("ads", make_classifier(digits), base=base, verbose=False, **params)
        assert trainer.base.name == base
        assert all(trainer.describe()["base_params"][k] == v for k, v in params.items())
