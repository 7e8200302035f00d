"""SSMClassifier (an ART PyTorchClassifier) and safetensors + JSON checkpoints."""

import json

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier

import ssmdefense as sd
from conftest import TINY, make_classifier


def test_is_an_art_classifier_on_natural_shapes(digits):
    clf = make_classifier(digits)
    assert isinstance(clf, PyTorchClassifier)
    assert clf.predict(digits.x_test[:5]).shape == (5, 10)
    grads = clf.loss_gradient(digits.x_test[:3], digits.y_test[:3])
    assert grads.shape == (3, 1, 8, 8)  # gradients live in image space
    assert clf.model(torch.from_numpy(digits.x_test[:2])).shape == (2, 10)  # natural shape -> logits


def test_pixels_sequence_feeds_one_channel_per_step(digits):
    body = sd.build_model("s4d", d_input=1, n_classes=10, **TINY)
    clf = sd.SSMClassifier(
        body, input_shape=(1, 8, 8), nb_classes=10, sequence="pixels", clip_values=(0, 1), device_type="cpu"
    )
    assert clf.model.serialiser.L == 64 and clf.predict(digits.x_test[:2]).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sequence="columns"), "unknown sequence mode .columns.; known: frames, mel, pixels, rows, samples"),
        (dict(input_shape=(1, 8, 16)), "expects d_input=8"),
        (dict(input_shape=(64,)), "needs image input_shape"),
        (dict(nb_classes=7), r"logits of shape \(10,\)"),
        (dict(device_type="tpu"), "device_type must be"),
    ],
)
def test_bad_wrapper_arguments(kwargs, message):
    body = sd.build_model("s4d", d_input=8, n_classes=10, **TINY)
    args = dict(input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0, 1), device_type="cpu")
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.SSMClassifier(body, **{**args, **kwargs})


def test_save_load_round_trip(tmp_path, trained, digits):
    sd.save(trained, tmp_path / "ckpt", extra={"dataset": "digits"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.json", "ckpt.safetensors"]
    meta = json.loads((tmp_path / "ckpt.json").read_text())
    assert meta["model"]["name"] == "s4d" and meta["classifier"]["sequence"] == "rows"
    again = sd.load(tmp_path / "ckpt", device_type="cpu")
    np.testing.assert_allclose(again.predict(digits.x_test), trained.predict(digits.x_test), rtol=1e-5, atol=1e-6)
    assert again.clip_values.tolist() == [0.0, 1.0]
    assert again.checkpoint_meta["extra"] == {"dataset": "digits"}
    # either file name, or the directory of a run (which means its best checkpoint), works too
    sd.load(tmp_path / "ckpt.safetensors", device_type="cpu")
    (tmp_path / "run").mkdir()
    sd.save(trained, tmp_path / "run" / "best")
    assert sd.load(tmp_path / "run", device_type="cpu").nb_classes == 10


def test_ads_added_by_a_defense_survives_save_and_load(tmp_path, digits):
    clf = make_classifier(digits)
    sd.get_defense("ads", clf, act="tanh", verbose=False)
    sd.save(clf, tmp_path / "ads")
    again = sd.load(tmp_path / "ads", device_type="cpu")
    assert again.body.ads == "tanh"
    np.testing.assert_allclose(again.predict(digits.x_test[:20]), clf.predict(digits.x_test[:20]), rtol=1e-5, atol=1e-6)


def test_loading_never_unpickles(tmp_path, trained, monkeypatch):
    import pickle

    sd.save(trained, tmp_path / "ckpt")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    sd.load(tmp_path / "ckpt", device_type="cpu")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "no checkpoint"),
        ("bad-json", "corrupt checkpoint metadata"),
        ("not-ours", "is not an ssmdefense checkpoint"),
        ("truncated-weights", "does not match its configuration or is corrupt"),
        ("wrong-shape", "does not match its configuration"),
        ("unknown-model", "unknown model 'bogus'"),
    ],
)
def test_corrupt_checkpoints_raise_checkpoint_errors(tmp_path, trained, damage, message):
    stem = tmp_path / "ckpt"
    sd.save(trained, stem)
    meta_path, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    meta = json.loads(meta_path.read_text())
    if damage == "missing":
        weights.unlink()
        meta_path.unlink()
    elif damage == "bad-json":
        meta_path.write_text("{not json")
    elif damage == "not-ours":
        meta_path.write_text(json.dumps({"hello": 1}))
    elif damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "wrong-shape":
        meta["model"]["params"]["d_model"] = 16
        meta_path.write_text(json.dumps(meta))
    elif damage == "unknown-model":
        meta["model"]["name"] = "bogus"
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.load(stem, device_type="cpu")


def test_save_refuses_models_it_cannot_rebuild(tmp_path):
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    clf = sd.SSMClassifier(
        body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0, 1), device_type="cpu"
    )
    with pytest.raises(sd.SSMDefenseError, match="not built by ssmdefense.build_model"):
        sd.save(clf, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_input_gradients_equal_arts_and_leave_the_weights_alone(trained, digits):
    """``loss_gradient`` and ``class_gradient`` run with the weights frozen (no weight gradient is
    computed): the same input gradients as ART's own methods, and the weights' ``.grad`` and
    ``requires_grad`` as they were."""
    x, y = digits.x_test[:16], digits.y_test[:16]
    params = list(trained.model.parameters())
    for p in params:
        p.grad = torch.full_like(p, 7.0)  # a training step's gradients, which an attack must not touch
    mine = trained.loss_gradient(x, y)
    classes = trained.class_gradient(x, label=y)
    assert all(p.requires_grad and torch.all(p.grad == 7.0) for p in params)
    np.testing.assert_allclose(mine, PyTorchClassifier.loss_gradient(trained, x, y), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(classes, PyTorchClassifier.class_gradient(trained, x, label=y), rtol=1e-5, atol=1e-7)
    assert np.abs(mine).sum() > 0 and mine.shape == x.shape


def test_pgd_gives_arts_adversarial_examples_and_keeps_its_name(trained, digits):
    """The PGD wrapper skips only ART's success-rate log line: same x_adv as ART's PGD for the same
    seed, and reports still name the class ProjectedGradientDescent."""
    from art.attacks.evasion import ProjectedGradientDescent

    x, y = digits.x_test[:64], digits.y_test[:64]
    attack = sd.get_attack("pgd", trained, eps=0.1, max_iter=5)
    assert isinstance(attack, ProjectedGradientDescent) and type(attack).__name__ == "ProjectedGradientDescent"
    np.random.seed(3)
    ours = attack.generate(x, y)
    np.random.seed(3)
    arts = ProjectedGradientDescent(
        trained, eps=0.1, eps_step=0.05, max_iter=5, num_random_init=1, batch_size=128
    ).generate(x, y)
    np.testing.assert_array_equal(ours, arts)
    assert trained.accuracy(ours, y) < trained.accuracy(x, y)
