"""The fast adversarial trainings: ``free-at``, ``yopo`` and ``fbf``."""

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.defences.trainer import AdversarialTrainerFBFPyTorch, Trainer
from torch.optim.optimizer import register_optimizer_step_post_hook

import ssmdefense as sd
from conftest import Interrupt, interrupt_on_call, make_classifier

EPS = 0.1
#: one budget for all: nb_epochs=12 is 12 epochs of standard training, 12 epochs of yopo and fbf,
#: and ceil(12 / 4) = 3 epochs of free-at's 4 replays per batch (as many optimizer steps as standard)
BUDGET = 12


@pytest.fixture(scope="module")
def baseline(standard_history):
    """Standard training on the budget every defense below gets."""
    return standard_history(BUDGET)


class StepCounter:
    """Counts optimizer steps taken on ``model``'s parameters (not on the copies the overhead timing trains)."""

    def __init__(self, model):
        self.params = {id(p) for p in model.parameters()}
        self.n = 0

    def __enter__(self):
        def hook(optimizer, args, kwargs):
            if id(optimizer.param_groups[0]["params"][0]) in self.params:
                self.n += 1

        self.handle = register_optimizer_step_post_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# yopo as YOPO-2-3 (m=2 full propagations per batch, not the default 5: its mechanics are the yopo tests'
# below): best PGD-10 0.52 against standard training's 0.11 (YOPO-5-3, at 2.5x the cost: 0.58)
@pytest.mark.parametrize("defense, params", [("free-at", {}), ("yopo", {"m": 2}), ("fbf", {})])
def test_defense_raises_robust_accuracy_over_standard_training(digits, baseline, defense, params):
    clf = make_classifier(digits)
    trainer = sd.get_defense(defense, clf, eps=EPS, lr=1e-2, eval_samples=200, verbose=False, **params)
    assert isinstance(trainer, Trainer)
    history = trainer.fit(
        digits.x_train, digits.y_train, validation_data=(digits.x_test, digits.y_test), nb_epochs=BUDGET
    )
    assert len(history) == (BUDGET // 4 if defense == "free-at" else BUDGET)
    best_defended = max(r["robust_accuracy"]["pgd-10"] for r in history)
    best_standard = max(r["robust_accuracy"]["pgd-10"] for r in baseline)
    assert best_defended > best_standard + 0.15, (best_defended, best_standard)
    assert history[-1]["clean_accuracy"] > 0.5


# ---- free-at ----------------------------------------------------------------------------------------
def test_free_at_runs_nb_epochs_over_m_epochs_of_m_steps_per_batch(tmp_path, digits):
    x, y = digits.x_train[:200], digits.y_train[:200]  # 4 batches of 64 (the last one 8)
    clf = make_classifier(digits)
    trainer = sd.get_defense("free-at", clf, eps=EPS, replays=2, verbose=False)
    with StepCounter(clf.model) as steps:
        history = trainer.fit(x, y, nb_epochs=5, out_dir=tmp_path)
    assert [r["epoch"] for r in history] == [1, 2, 3]  # ceil(5 / 2)
    assert steps.n == 3 * 4 * 2  # epochs x batches x replays
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["scheduler"]["last_epoch"] == steps.n
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine schedule spans all the steps
    assert trainer.describe()["replays"] == 2 and trainer.epoch_divisor == 2 and trainer.steps_per_batch == 2


def test_free_at_perturbation_persists_across_batches_and_stays_in_the_ball(digits):
    clf = make_classifier(digits)
    trainer = sd.get_defense("free-at", clf, eps=EPS, replays=3, verbose=False)
    model = clf.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    inputs = []
    handle = model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    xa, ya = torch.from_numpy(digits.x_train[:64]), torch.from_numpy(digits.y_train[:64])
    xb, yb = torch.from_numpy(digits.x_train[64:84]), torch.from_numpy(digits.y_train[64:84])  # a smaller batch
    try:
        trainer.train_batch(model, optimizer, scheduler, xa, ya)
        after_a = trainer.delta.clone()
        trainer.train_batch(model, optimizer, scheduler, xb, yb)
    finally:
        handle.remove()
    assert len(inputs) == 6  # 3 replays per batch
    torch.testing.assert_close(inputs[0], xa)  # the paper starts from delta = 0
    assert after_a.shape == xa.shape and after_a.abs().max() == pytest.approx(EPS)  # it moved, up to eps
    assert after_a.abs().max() <= EPS + 1e-7
    # the second batch starts from the perturbation the first ended with (its first 20 rows)
    torch.testing.assert_close(inputs[3], (xb + after_a[:20]).clamp(0, 1))
    delta = trainer.delta
    assert delta.shape == xa.shape and delta.abs().max() <= EPS + 1e-7
    assert not torch.equal(delta[:20], after_a[:20])  # updated by the second batch's replays
    torch.testing.assert_close(delta[20:], after_a[20:], rtol=0, atol=0)  # rows the small batch did not use
    for replay in inputs:
        assert replay.min() >= 0 and replay.max() <= 1

    other = sd.get_defense("free-at", make_classifier(digits), eps=EPS, verbose=False)
    other.load_extra_state(trainer.extra_state())
    torch.testing.assert_close(other.delta, delta, rtol=0, atol=0)


def test_free_at_resume_restores_the_perturbation(tmp_path, digits, monkeypatch):
    from ssmdefense.defenses.free_at import FreeATTrainer

    x, y = digits.x_train[:256], digits.y_train[:256]

    def trainer():
        return sd.get_defense(
            "free-at", make_classifier(digits, seed=1), eps=EPS, replays=2, lr=1e-2, seed=4, verbose=False
        )

    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    trainer().fit(x, y, nb_epochs=6, out_dir=tmp_path / "whole")

    # Ctrl-C in the third epoch's first batch: epochs 1-2 are saved
    restore = interrupt_on_call(monkeypatch, FreeATTrainer, "train_batch", 4 * 2 + 1)
    with pytest.raises(Interrupt):
        trainer().fit(x, y, nb_epochs=6, out_dir=tmp_path / "cut")
    restore()
    from safetensors.torch import load_file

    tensors = json.loads((tmp_path / "cut" / "state.json").read_text())["tensors"]
    assert tensors == "state-2.safetensors" and sorted(p.name for p in (tmp_path / "cut").glob("*.safetensors")) == [
        "best.safetensors",
        "last.safetensors",
        tensors,
    ]  # the earlier epochs' states are gone
    saved = load_file(str(tmp_path / "cut" / tensors))
    assert saved["extra.delta"].shape == (64, 1, 8, 8) and saved["extra.delta"].abs().max() > 0

    trainer().fit(x, y, nb_epochs=6, out_dir=tmp_path / "cut", resume=True)
    final = sd.load(tmp_path / "cut" / "last").body.state_dict()
    for k, v in sd.load(tmp_path / "whole" / "last").body.state_dict().items():
        torch.testing.assert_close(final[k], v, rtol=0, atol=0)


# ---- yopo -------------------------------------------------------------------------------------------
class NoStep:
    """An optimizer and a schedule that change nothing: train_batch on a trained model, weights kept."""

    def zero_grad(self, set_to_none=True):
        pass

    def step(self):
        pass


def yopo_perturbations(trainer, model, x, y):
    """Run yopo's ``train_batch`` and return the (eta before, eta after) of every inner loop."""
    calls = []
    inner_steps = trainer.inner_steps

    def spy(model, x, eta, p):
        out = inner_steps(model, x, eta, p)
        calls.append((eta.detach().clone(), out.detach().clone(), p.detach().clone()))
        return out

    trainer.inner_steps = spy
    try:
        trainer.train_batch(model, NoStep(), NoStep(), x, y)
    finally:
        del trainer.inner_steps
    return calls


def test_yopo_first_layer_inner_loop_raises_the_loss(trained, digits):
    trainer = sd.get_defense("yopo", trained, eps=EPS, verbose=False)  # YOPO-5-3
    model = copy.deepcopy(trained.model)
    x, y = torch.from_numpy(digits.x_test[:64]), torch.from_numpy(digits.y_test[:64])
    torch.manual_seed(0)
    calls = yopo_perturbations(trainer, model, x, y)
    assert len(calls) == trainer.m - 1 and trainer.n == 3
    start, end = calls[0][0], calls[-1][1]  # the random start; after (m - 1) * n first-layer updates
    for eta in (start, end):
        assert eta.abs().max() <= EPS + 1e-6 and (x + eta).min() >= 0 and (x + eta).max() <= 1
    model.eval()
    with torch.no_grad():
        loss_start = F.cross_entropy(model(x + start), y)
        loss_end = F.cross_entropy(model(x + end), y)
    assert loss_end > loss_start + 0.5, (loss_start, loss_end)


def test_yopo_adjoint_step_is_the_full_gradient_step_at_its_point(trained, digits):
    """At the point where p = dL/dz was taken, one first-layer step moves eta exactly as one step on
    the full input gradient would (the chain rule through the encoder and the serialiser)."""
    trainer = sd.get_defense("yopo", trained, eps=EPS, m=2, n=1, verbose=False)
    model = copy.deepcopy(trained.model)
    x, y = torch.from_numpy(digits.x_test[:64]), torch.from_numpy(digits.y_test[:64])
    torch.manual_seed(1)
    ((eta0, eta1, p),) = yopo_perturbations(trainer, model, x, y)
    assert p.shape == (64, 8, 32)  # (B, L, H): the encoder's output for rows of 8 pixels, d_model 32
    model.train()
    x_adv = (x + eta0).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y) / trainer.m, x_adv)
    expected = (x + (eta0 + trainer.eps_step * grad.sign()).clamp(-EPS, EPS)).clamp(0, 1) - x
    torch.testing.assert_close(eta1, expected)


def test_yopo_needs_a_model_with_an_encoder(digits):
    torch.manual_seed(0)
    body = sd.build_model("lstm", d_input=8, n_classes=10, d_model=16)
    clf = sd.SSMClassifier(
        body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )
    with pytest.raises(sd.SSMDefenseError, match="yopo needs a model whose first layer is a Linear 'encoder'"):
        sd.get_defense("yopo", clf)


# ---- fbf --------------------------------------------------------------------------------------------
def test_fbf_runs_arts_batch_step_on_the_loops_optimizer_and_schedule(digits, monkeypatch):
    clf = make_classifier(digits)
    own_optimizer = clf._optimizer
    original = AdversarialTrainerFBFPyTorch._batch_process
    calls = []

    def spy(self, x_batch, y_batch, l_r):
        result = original(self, x_batch, y_batch, l_r)
        optimizer = self._classifier._optimizer
        calls.append(
            {
                "l_r": l_r,
                "lr_after": optimizer.param_groups[0]["lr"],
                "optimizer": optimizer,
                "trained_model": self._classifier.model is model,
                "n": len(x_batch),
            }
        )
        return result

    monkeypatch.setattr(AdversarialTrainerFBFPyTorch, "_batch_process", spy)
    model = clf.model
    trainer = sd.get_defense("fbf", clf, eps=EPS, lr=1e-2, verbose=False)
    x, y = digits.x_train[:200], digits.y_train[:200]
    with StepCounter(model) as steps:
        trainer.fit(x, y, nb_epochs=2)
    training = [c for c in calls if c["trained_model"]]  # the rest: the overhead timing's copy
    assert len(training) == steps.n == 2 * 4 and sum(c["n"] for c in training) == 2 * 200
    total = len(training)
    for t, call in enumerate(training):
        assert call["l_r"] == pytest.approx(1e-2 * (1 + math.cos(math.pi * t / total)) / 2)
        assert call["lr_after"] == call["l_r"]
        assert call["optimizer"] is not own_optimizer and call["optimizer"] is training[0]["optimizer"]
    # everything lent to ART is given back
    assert clf._optimizer is own_optimizer and clf.model is model and "loss_gradient" not in vars(clf)


def test_fbf_trains_in_train_mode_and_reports_arts_loss(digits):
    clf = make_classifier(digits, dropout=0.5)
    trainer = sd.get_defense("fbf", clf, eps=EPS, verbose=False)
    model = clf.model
    modes = []
    handle = model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    x, y = torch.from_numpy(digits.x_train[:64]), torch.from_numpy(digits.y_train[:64])
    try:
        loss, logits = trainer.train_batch(model, optimizer, scheduler, x, y)
    finally:
        handle.remove()
    assert modes == [False, True]  # the FGSM gradient in eval mode, the weight step in train mode
    assert logits.shape == (64, 10) and 0 < float(loss) < 10


def test_fast_defenses_work_as_the_base_of_ads(digits):
    x, y = digits.x_train[:128], digits.y_train[:128]
    for base, params in (("free-at", {"replays": 2}), ("yopo", {"m": 2, "n": 2}), ("fbf", {})):
        clf = make_classifier(digits)
        trainer = sd.get_defense("ads", clf, base=base, eps=EPS, verbose=False, **params)
        history = trainer.fit(x, y, nb_epochs=2)
        assert len(history) == (1 if base == "free-at" else 2) and clf.body.ads == "relu"
        assert np.isfinite(history[-1]["train_loss"])


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("free-at", {"replays": 0}, "replays must be an integer >= 1"),
        ("free-at", {"replays": 2.5}, "replays must be an integer >= 1"),
        ("free-at", {"eps_step": -0.1}, "eps_step must be a positive number"),
        ("yopo", {"m": 0}, "m must be an integer >= 1"),
        ("yopo", {"n": -1}, "n must be an integer >= 1"),
        ("yopo", {"eps_step": 0}, "eps_step must be a positive number"),
        ("fbf", {"eps": -1}, "eps must be a positive number"),
        ("fbf", {"eps_step": 0.1}, "unknown parameter"),
    ],
)
def test_bad_parameters(digits, name, params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.get_defense(name, make_classifier(digits), **params)
