"""The shared training loop and the built-in defenses none, pgd-at and ads."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.defences.trainer import Trainer

import ssmdefense as sd
from conftest import Interrupt, interrupt_on_call, make_classifier, outcomes
from ssmdefense.defenses.perturb import pgd_linf

EPS = 0.1


@pytest.fixture(scope="module")
def baseline(standard_history):
    """Standard training on the budget every defense below gets."""
    return standard_history(5)


@pytest.mark.parametrize("defense, params", [("pgd-at", {}), ("ads", {"act": "relu"})])
def test_defense_raises_robust_accuracy_over_standard_training(digits, baseline, defense, params):
    clf = make_classifier(digits)
    trainer = sd.get_defense(defense, clf, eps=EPS, max_iter=5, lr=1e-2, eval_samples=200, verbose=False, **params)
    assert isinstance(trainer, Trainer)
    history = trainer.fit(digits.x_train, digits.y_train, validation_data=(digits.x_test, digits.y_test), nb_epochs=5)
    best_defended = max(r["robust_accuracy"]["pgd-10"] for r in history)
    best_standard = max(r["robust_accuracy"]["pgd-10"] for r in baseline)
    assert best_defended > best_standard + 0.15, (best_defended, best_standard)
    assert history[-1]["clean_accuracy"] > 0.5
    if defense == "ads":
        assert clf.body.ads == "relu"


def test_same_seed_same_run_and_one_hot_labels_are_accepted(digits):
    x, y = digits.x_train[:256], digits.y_train[:256]
    val = (digits.x_test[:64], digits.y_test[:64])
    runs = []
    for labels in (y, np.eye(10, dtype=np.float32)[y]):
        clf = make_classifier(digits, seed=3)
        runs.append(
            sd.get_defense("pgd-at", clf, eps=EPS, max_iter=2, seed=7, verbose=False).fit(
                x, labels, validation_data=val, nb_epochs=2
            )
        )
    for a, b in zip(*runs):
        assert a["train_loss"] == b["train_loss"]
        assert a["robust_accuracy"] == b["robust_accuracy"]


def test_evaluation_does_not_reseed_the_training_random_stream(digits):
    """Per-epoch evaluation uses fixed random starts but must not replay the same training noise
    (random starts, dropout) in every epoch: the global generators are left unseeded."""
    import random

    clf = make_classifier(digits)
    trainer = sd.get_defense("pgd-at", clf, eps=EPS, verbose=False, seed=5)
    draws, results = [], []
    for outer_seed in (123, 456):
        torch.manual_seed(outer_seed)
        np.random.seed(outer_seed)
        random.seed(outer_seed)
        results.append(trainer.evaluate(digits.x_test[:50], digits.y_test[:50]))
        draws.append((torch.rand(4).tolist(), np.random.rand(4).tolist(), random.random()))
    assert results[0] == results[1]  # the same random starts each time
    for a, b in zip(*draws):
        assert a != b


def test_evaluation_leaves_the_training_random_stream_alone(digits):
    """Whether and on how many samples the epochs are evaluated does not change what is trained:
    the evaluation's attack and predictions draw nothing from the training's random stream (ART's
    predict iterates a DataLoader, which draws a seed from torch's global generator)."""
    x, y = digits.x_train[:256], digits.y_train[:256]
    weights = []
    for samples in (None, 64, 16):
        clf = make_classifier(digits, seed=3)
        trainer = sd.get_defense("pgd-at", clf, eps=EPS, max_iter=2, seed=7, eval_samples=samples, verbose=False)
        trainer.fit(x, y, validation_data=None if samples is None else (digits.x_test, digits.y_test), nb_epochs=3)
        weights.append({k: v.clone() for k, v in clf.model.state_dict().items()})
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])


def test_best_and_last_checkpoints_and_metrics(tmp_path, digits):
    clf = make_classifier(digits)
    trainer = sd.get_defense("pgd-at", clf, eps=EPS, max_iter=2, lr=1e-2, eval_samples=100, verbose=False)
    history = trainer.fit(
        digits.x_train[:512],
        digits.y_train[:512],
        validation_data=(digits.x_test, digits.y_test),
        nb_epochs=3,
        out_dir=tmp_path,
        checkpoint_extra={"dataset": "digits"},
    )
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert lines == json.loads(json.dumps(history))
    best_epoch = max(history, key=lambda r: (r["robust_accuracy"]["pgd-10"], r["clean_accuracy"]))["epoch"]
    best = sd.load(tmp_path / "best", device_type="cpu")
    last = sd.load(tmp_path / "last", device_type="cpu")
    assert best.checkpoint_meta["extra"]["epoch"] == best_epoch == trainer.best_epoch
    assert last.checkpoint_meta["extra"]["epoch"] == 3
    assert best.checkpoint_meta["extra"]["dataset"] == "digits"
    np.testing.assert_allclose(last.predict(digits.x_test[:10]), clf.predict(digits.x_test[:10]), rtol=1e-5, atol=1e-6)
    trainer.restore_best()
    np.testing.assert_allclose(best.predict(digits.x_test[:10]), clf.predict(digits.x_test[:10]), rtol=1e-5, atol=1e-6)


def test_training_pgd_stays_in_bounds_and_raises_the_loss(trained, digits):
    model = trained.model
    x = torch.from_numpy(digits.x_test[:64])
    y = torch.from_numpy(digits.y_test[:64])
    model.train()
    x_adv = pgd_linf(model, x, y, eps=EPS, eps_step=0.025, steps=10, clip=(0.0, 1.0))
    assert model.training  # mode restored
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        model.eval()
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 0.5


def test_training_pgd_computes_the_ssm_kernel_once_and_gives_the_weights_back(digits, monkeypatch):
    """The attack inside a training step freezes the weights: its steps need input gradients only,
    so each convolutional SSM computes its kernel once per attack instead of once per step; the
    weights' requires_grad and a pending .grad come back as they were."""
    from ssmdefense.models.conv_ssm import ConvolutionalSSM

    model = make_classifier(digits).model.train()
    mixers = [m for m in model.modules() if isinstance(m, ConvolutionalSSM)]
    assert mixers
    computed = []
    for mixer in mixers:
        monkeypatch.setattr(mixer, "kernel", lambda L, _kernel=mixer.kernel: computed.append(L) or _kernel(L))
        mixer._kept = None  # the kernel kept from the classifier's shape check
    pending = [torch.full_like(p, 0.5) for p in model.parameters()]
    for p, g in zip(model.parameters(), pending):
        p.grad = g
    x, y = torch.from_numpy(digits.x_test[:16]), torch.from_numpy(digits.y_test[:16])
    pgd_linf(model, x, y, eps=EPS, eps_step=0.025, steps=10, clip=(0.0, 1.0))
    assert len(computed) == len(mixers)  # once per mixer for the 10 steps
    assert all(p.requires_grad and p.grad is g for p, g in zip(model.parameters(), pending))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"eps": -1}, "eps must be a positive number"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"lr": "fast"}, "lr must be a positive number"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
        ({"act": "softmax"}, "ads must be one of"),
        ({"epochs": 3}, "unknown parameter"),
    ],
)
def test_bad_defense_parameters(digits, params, message):
    clf = make_classifier(digits)
    name = "ads" if "act" in params else "pgd-at"
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.get_defense(name, clf, **params)


def test_bad_fit_arguments(digits):
    clf = make_classifier(digits)
    trainer = sd.get_defense("none", clf, verbose=False)
    with pytest.raises(sd.SSMDefenseError, match="nb_epochs must be"):
        trainer.fit(digits.x_train, digits.y_train, nb_epochs=0)
    with pytest.raises(sd.SSMDefenseError, match="expects"):
        trainer.fit(digits.x_train[:, :, :4], digits.y_train, nb_epochs=1)
    with pytest.raises(sd.SSMDefenseError, match="labels must lie in"):
        trainer.fit(digits.x_train, digits.y_train + 5, nb_epochs=1)
    no_clip = sd.SSMClassifier(
        make_classifier(digits).body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", device_type="cpu"
    )
    with pytest.raises(sd.SSMDefenseError, match="needs clip_values"):
        sd.get_defense("pgd-at", no_clip)


def test_resume_after_an_interruption_gives_the_uninterrupted_run(tmp_path, digits, monkeypatch):
    from ssmdefense.defenses.loop import TrainingLoop

    x, y = digits.x_train[:384], digits.y_train[:384]
    val = (digits.x_test[:64], digits.y_test[:64])

    def trainer():
        return sd.get_defense(
            "pgd-at", make_classifier(digits, seed=1, dropout=0.1), eps=EPS, max_iter=2, lr=1e-2, seed=4, verbose=False
        )

    for name in ("whole", "cut", "empty"):
        (tmp_path / name).mkdir()
    whole = trainer().fit(x, y, validation_data=val, nb_epochs=4, out_dir=tmp_path / "whole")

    # Ctrl-C in the third epoch's evaluation: epochs 1-2 are saved
    restore = interrupt_on_call(monkeypatch, TrainingLoop, "evaluate", 3)
    with pytest.raises(Interrupt):
        trainer().fit(x, y, validation_data=val, nb_epochs=4, out_dir=tmp_path / "cut")
    restore()
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["epoch"] == 2

    resumed_trainer = trainer()
    resumed = resumed_trainer.fit(x, y, validation_data=val, nb_epochs=4, out_dir=tmp_path / "cut", resume=True)
    assert outcomes(resumed) == outcomes(whole)
    lines = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    final = {k: v for k, v in sd.load(tmp_path / "cut" / "last").body.state_dict().items()}
    for k, v in sd.load(tmp_path / "whole" / "last").body.state_dict().items():
        torch.testing.assert_close(final[k], v, rtol=0, atol=0)
    # resuming a fit whose training finished (killed in the final evaluation) trains nothing more
    again = trainer()
    again_rows = again.fit(x, y, validation_data=val, nb_epochs=4, out_dir=tmp_path / "cut", resume=True)
    assert outcomes(again_rows) == outcomes(whole)
    for k, v in again.get_classifier().body.state_dict().items():
        torch.testing.assert_close(final[k], v, rtol=0, atol=0)
    with pytest.raises(sd.SSMDefenseError, match="more than the 3 asked for"):
        trainer().fit(x, y, validation_data=val, nb_epochs=3, out_dir=tmp_path / "cut", resume=True)
    with pytest.raises(sd.SSMDefenseError, match="no state.json"):
        trainer().fit(x, y, nb_epochs=4, out_dir=tmp_path / "empty", resume=True)


def test_overhead_is_timed_side_by_side_after_training(digits):
    clf = make_classifier(digits)
    trainer = sd.get_defense("pgd-at", clf, eps=EPS, max_iter=3, verbose=False)
    trainer.fit(digits.x_train[:256], digits.y_train[:256], nb_epochs=1)
    t = trainer.timing  # a schema check: the values themselves are machine-dependent and not compared
    assert set(t) == {"defense_batch_seconds", "standard_batch_seconds", "overhead_ratio"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in t.values())
    assert t["overhead_ratio"] == pytest.approx(t["defense_batch_seconds"] / t["standard_batch_seconds"])


def test_ads_takes_a_base_defense_and_forwards_its_parameters(digits):
    clf = make_classifier(digits)
    trainer = sd.get_defense("ads", clf, act="tanh", base="pgd-at", max_iter=3, verbose=False)
    assert trainer.base.name == "pgd-at" and trainer.base.max_iter == 3
    assert trainer.describe()["base_params"]["max_iter"] == 3 and clf.body.ads == "tanh"
    with pytest.raises(sd.SSMDefenseError, match="unknown parameter"):
        sd.get_defense("ads", make_classifier(digits), base="pgd-at", beta=3)
    with pytest.raises(sd.SSMDefenseError, match="unknown defense 'zzz'"):
        sd.get_defense("ads", make_classifier(digits), base="zzz")
    with pytest.raises(sd.SSMDefenseError, match="base must be a defense that trains batch by batch"):
        sd.get_defense("ads", make_classifier(digits), base="ads")


def test_a_defense_chooses_its_optimizer_through_configure_optimizers(digits, tmp_path):
    from ssmdefense.defenses.loop import TrainingLoop

    used = []

    class PlainSGD(TrainingLoop):
        def configure_optimizers(self, model, total_steps):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            used.append((type(optimizer).__name__, total_steps))
            return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    clf = make_classifier(digits)
    history = PlainSGD(clf, verbose=False, eval_samples=50).fit(
        digits.x_train, digits.y_train, validation_data=(digits.x_test, digits.y_test), nb_epochs=2, out_dir=tmp_path
    )
    steps = 2 * -(-len(digits.x_train) // 64)
    assert used == [("SGD", steps)] and history[-1]["clean_accuracy"] > 0.5  # SGD trains it
    assert all(row["lr"] == 0.05 for row in history)  # its constant schedule, not the cosine default
