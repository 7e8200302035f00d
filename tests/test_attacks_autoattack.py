"""Standard AutoAttack and FAB-T: FAB finds the minimal perturbation of a linear classifier (the
behaviour its paper rests on), its projection is the exact minimal step, and AutoAttack's report
is the per-sample worst case of its components."""

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier
from scipy.optimize import linprog

import ssmdefense as sd
from ssmdefense.attacks.fab import project
from ssmdefense.evaluation.robustness import autoattack_check

D, C, N = 20, 10, 48
# FAB's steps per target: the linearisation of a linear classifier is exact, so FAB settles on its
# answer within a few steps (the same distances, 1.0052 x the true ones, after 20 steps as after the
# default 100 AutoAttack uses), at a fifth of the cost
FAB_STEPS = 20


@pytest.fixture(scope="module")
def linear():
    """A 10-class linear classifier on [0, 1]^20, inputs in the interior (the box never binds), and
    each input's exact minimal L-inf and L2 distance to a misclassified point: min over classes k
    of (z_y - z_k) / ||w_y - w_k||_1 (L-inf) or ||.||_2 (L2)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(D, C)
    with torch.no_grad():
        model.weight.mul_(3)
    clf = PyTorchClassifier(
        model, loss=torch.nn.CrossEntropyLoss(), input_shape=(D,), nb_classes=C, clip_values=(0.0, 1.0)
    )
    x = np.random.default_rng(0).uniform(0.4, 0.6, (N, D)).astype(np.float32)
    w, b = model.weight.detach().double().numpy(), model.bias.detach().double().numpy()
    z = x @ w.T + b  # (N C)
    y = z.argmax(1)
    dist = {}
    for norm, order in (("inf", 1), ("2", 2)):
        diff = w[y][:, None, :] - w[None, :, :]  # (N C D)
        scale = np.linalg.norm(diff, ord=order, axis=2)  # (N C)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = (z[np.arange(N), y][:, None] - z) / scale  # (N C)
        d[np.arange(N), y] = np.inf
        dist[norm] = d.min(1)
    return clf, x, y, dist


def norms(delta: np.ndarray, norm: str) -> np.ndarray:
    delta = delta.reshape(len(delta), -1)
    return np.abs(delta).max(1) if norm == "inf" else np.linalg.norm(delta, axis=1)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_fab_finds_the_minimal_perturbation_of_a_linear_classifier(linear, norm):
    clf, x, y, dist = linear
    assert sd.get_attack("fab", clf, norm=norm).max_iter == 100  # AutoAttack's budget by default
    attack = sd.get_attack("fab", clf, eps=1e-6, norm=norm, max_iter=FAB_STEPS)  # a tiny eps: every target is tried
    attack.generate(x, y)
    ratio = attack.min_norms / dist[norm]
    assert ratio.min() >= 1 - 1e-4  # nothing closer than the true distance exists
    assert ratio.max() <= 1.01  # and FAB gets within 1% of it (the paper: within its overshoot eta)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_fab_at_eps_fools_exactly_the_samples_closer_than_eps(linear, norm):
    clf, x, y, dist = linear
    eps = float(np.median(dist[norm]))
    x_adv = sd.get_attack("fab", clf, eps=eps, norm=norm, max_iter=FAB_STEPS).generate(x, y)
    fooled = clf.predict(x_adv).argmax(1) != y
    assert fooled[dist[norm] < 0.99 * eps].all()
    assert not fooled[dist[norm] > eps].any()
    assert norms(x_adv - x, norm).max() <= eps * (1 + 1e-5)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm", [np.inf, 2])
def test_projection_stops_halving_only_where_more_halvings_change_nothing(norm, dtype):
    """``project`` stops its bisection once the brackets stop moving: the step is bit for bit the one
    of all 60 halvings (the plain loop below), in float32 (FAB's) and float64."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 50, generator=g, dtype=dtype)  # (B D)
    w = torch.randn(64, 50, generator=g, dtype=dtype) * torch.logspace(-4, 1, 64, dtype=dtype)[:, None]  # (B D)
    c = torch.randn(64, generator=g, dtype=dtype)  # (B)
    s = torch.sign(c)[:, None] * torch.sign(w)  # (B D)
    room = torch.where(s > 0, 1 - x, x).clamp(min=0)  # (B D)
    a = torch.ones_like(w) if norm == np.inf else w.abs()  # (B D)
    lo, hi = torch.zeros_like(c), torch.where(a > 0, room / a.clamp(min=1e-30), torch.zeros_like(a)).amax(1)
    for _ in range(60):
        mid = (lo + hi) / 2  # (B)
        short = (w.abs() * torch.minimum(mid[:, None] * a, room)).sum(1) < c.abs()  # (B)
        lo, hi = torch.where(short, mid, lo), torch.where(short, hi, mid)
    assert torch.equal(project(x, w, c, 0.0, 1.0, norm), s * torch.minimum(hi[:, None] * a, room))


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_projection_is_the_smallest_step_to_the_hyperplane_inside_the_box(norm):
    """Against a linear program (L-inf) or the KKT point found by scipy (L2) on random small cases
    where the box binds."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (6, 5))
    w = rng.normal(size=(6, 5))
    c = rng.normal(size=6) * 0.8
    d = project(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(c), 0.0, 1.0, np.inf if norm == "inf" else 2)
    d = d.numpy()
    reached = 0  # cases whose hyperplane the box reaches (the others: the step goes as far as it can)
    for i in range(6):
        assert (x[i] + d[i] >= -1e-9).all() and (x[i] + d[i] <= 1 + 1e-9).all()
        if norm == "inf":  # min r s.t. w.d = c, -r <= d <= r, -x <= d <= 1 - x; variables (d, r)
            res = linprog(
                np.r_[np.zeros(5), 1.0],
                A_ub=np.block([[np.eye(5), -np.ones((5, 1))], [-np.eye(5), -np.ones((5, 1))]]),
                b_ub=np.zeros(10),
                A_eq=np.r_[w[i], 0.0][None],
                b_eq=[c[i]],
                bounds=[(-x[i, j], 1 - x[i, j]) for j in range(5)] + [(0, None)],
            )
            if res.success:
                assert w[i] @ d[i] == pytest.approx(c[i], abs=1e-9)
                assert np.abs(d[i]).max() == pytest.approx(res.fun, abs=1e-9)
                reached += 1
            else:  # the box cannot reach the hyperplane: the step goes as far as the box allows
                assert abs(w[i] @ d[i]) < abs(c[i])
        else:
            if abs(w[i] @ d[i] - c[i]) < 1e-9:  # reachable: no feasible step is shorter (random probes)
                inside = 0
                for _ in range(200):
                    probe = d[i] + rng.normal(size=5) * 0.05
                    probe -= (w[i] @ probe - c[i]) * w[i] / (w[i] @ w[i])  # back onto the hyperplane
                    if (x[i] + probe >= 0).all() and (x[i] + probe <= 1).all():
                        inside += 1
                        assert np.linalg.norm(probe) >= np.linalg.norm(d[i]) - 1e-9
                assert inside > 0  # some probes stayed in the box: the comparison above ran (98 to 200 here)
                reached += 1
            else:  # the box cannot reach the hyperplane: the step goes as far as the box allows
                assert abs(w[i] @ d[i]) < abs(c[i])
    assert 0 < reached < 6  # both kinds of case were checked (5 reachable, 1 not)


def test_autoattack_report_is_the_worst_case_of_its_components(trained, digits):
    x, y = digits.x_test[:30], digits.y_test[:30]
    check = autoattack_check(trained, x, y, eps=0.1, params={"max_iter": 10, "n_queries": 100})
    steps = [b["robust_accuracy"] for b in check["breakdown"]]
    assert [b["component"] for b in check["breakdown"]] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert steps == sorted(steps, reverse=True)
    assert check["robust_accuracy"]["autoattack"] == steps[-1]
    assert check["worst_case"] <= min(check["robust_accuracy"].values())
    assert check["worst_case"] < check["clean_accuracy"] - 0.2  # the trained tiny model is not robust
    assert check["samples"] == 30 and check["version"] == "standard"


def test_autoattack_results_stay_in_the_ball_and_the_box(trained, digits):
    x, y = digits.x_test[:20], digits.y_test[:20]
    attack = sd.get_attack("autoattack", trained, eps=0.05, max_iter=5, n_queries=20)
    x_adv = attack.generate(x, y)
    assert np.abs(x_adv - x).max() <= 0.05 * (1 + 1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert trained.accuracy(x_adv, y) == pytest.approx(attack.breakdown[-1]["robust_accuracy"])
