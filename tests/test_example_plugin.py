"""The example third-party plugin ``plugins/ssmdefense-noise``, installed the way a user would.

pip installs it into a temporary ``--target`` directory (the venv is never touched); the CLI then
runs with that directory on PYTHONPATH and must list the plugin (in its own process, as a user runs
it) and its attack and defense, and train with the defense (in this process, with the directory on
``sys.path``: a new interpreter per command costs seconds of imports). The same directory is
imported in-process to check that the attack and the defense do what they say.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ssmdefense as sd
from plugin_install import install, run_cli
from ssmdefense import plugins
from ssmdefense.cli import cli


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example plugin, pip-installed into a temporary directory."""
    site = install("ssmdefense-noise", tmp_path_factory.mktemp("noise-plugin"))
    assert (site / "ssmdefense_noise" / "__init__.py").is_file()
    return site


def in_process(*args):
    """``ssmdefense *args`` in this process (the plugin loaded by ``with_plugin``); its standard output."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, f"ssmdefense {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
    return result.stdout


def test_cli_lists_the_plugin_attack_defense_and_distribution(plugin_site, with_plugin):
    attacks = {row["name"]: row for row in json.loads(in_process("attacks", "--json"))}
    assert attacks["gaussian-noise"]["source"] == "ssmdefense-noise"
    assert "gaussian noise" in attacks["gaussian-noise"]["summary"].lower()
    # The built-ins are still there, the core uniform `noise` among them: no name clash.
    assert attacks["noise"]["source"] == "ssmdefense.attacks.noise"
    assert "pgd" in attacks

    defenses = {row["name"]: row for row in json.loads(in_process("defenses", "--json"))}
    assert defenses["noise-augment"]["source"] == "ssmdefense-noise"

    rows = {row["name"]: row for row in run_cli(plugin_site, "plugins", "--json")}  # its own process
    assert all(row["error"] is None for row in rows.values())
    noise = rows["ssmdefense-noise"]
    assert noise["distribution"] == "ssmdefense-noise"
    assert noise["version"] == "0.1.0"
    assert noise["builtin"] is False
    assert set(noise["hooks"]) == {"register_attacks", "register_defenses"}
    assert rows["ssmdefense.builtins"]["builtin"] is True  # every built-in, one table


def test_cli_defend_trains_with_the_plugin_defense(with_plugin, tmp_path):
    out = tmp_path / "run"
    in_process(
        "defend",
        "--defense",
        "noise-augment",
        "--aa-samples",
        "0",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "-m",
        "d_model=16",
        "-m",
        "n_layers=1",
        "--eval-samples",
        "32",
        "-p",
        "sigma=0.2",
        "--out",
        out,
        "-q",
    )
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["defense"] == "noise-augment"
    assert 0.0 <= report["last"]["clean_accuracy"] <= 1.0
    assert (out / "best.safetensors").is_file()


@pytest.fixture
def with_plugin(plugin_site, monkeypatch):
    """The installed plugin loaded in this process; forgotten again afterwards."""
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.delenv("SSMDEFENSE_LOAD_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()
    for name in [m for m in sys.modules if m == "ssmdefense_noise" or m.startswith("ssmdefense_noise.")]:
        del sys.modules[name]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models train fastest on one thread; on a busy 2-core machine two threads stall each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_classifier(seed: int = 0) -> sd.SSMClassifier:
    torch.manual_seed(seed)
    body = sd.build_model("s4d", d_input=8, n_classes=10, d_model=16, n_layers=1)
    return sd.SSMClassifier(
        body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )


def test_gaussian_noise_attack_stays_in_eps_ball_and_clip_range(with_plugin, digits):
    from art.attacks import EvasionAttack

    assert plugins.registry("attacks").get("gaussian-noise").source == "ssmdefense-noise"
    assert plugins.registry("attacks").get("noise").source == "ssmdefense.attacks.noise"
    clf = tiny_classifier()
    x = digits.x_test[:64]  # (64 1 8 8) in [0, 1], many pixels at exactly 0 or 1
    attack = sd.get_attack("gaussian-noise", clf, eps=0.1, seed=0)
    assert isinstance(attack, EvasionAttack)
    x_adv = attack.generate(x)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).mean() > 0.01  # noise was added, not just clipping
    np.testing.assert_array_equal(attack.generate(x), x_adv)  # same seed, same noise
    assert not np.array_equal(sd.get_attack("gaussian-noise", clf, eps=0.1, seed=1).generate(x), x_adv)

    # Gaussian, not the core uniform noise: N(0, sigma), sigma = eps / 2 by default, clipped to
    # [-eps, eps]. ~38 % of the values move by less than eps / 4 (uniform: 25 %) and ~4.6 % sit at
    # exactly +-eps (uniform: none). Measured on pixels the clip range leaves alone (~900 values).
    interior = (x > 0.2) & (x < 0.8)
    delta = np.abs(x_adv - x)[interior]
    uniform = np.abs(sd.get_attack("noise", clf, eps=0.1, seed=0).generate(x) - x)[interior]
    assert (delta < 0.025).mean() > 0.32 > (uniform < 0.025).mean()
    assert (delta > 0.0999).mean() > 0.02 > (uniform > 0.0999).mean()
    small = sd.get_attack("gaussian-noise", clf, eps=0.1, sigma=0.01, seed=0).generate(x)
    assert 0.008 < (small - x)[interior].std() < 0.012  # sigma sets the spread


def test_gaussian_noise_attack_rejects_bad_parameters_clearly(with_plugin):
    clf = tiny_classifier()
    with pytest.raises(sd.SSMDefenseError, match="eps must be a positive number"):
        sd.get_attack("gaussian-noise", clf, eps=-0.1)
    with pytest.raises(sd.SSMDefenseError, match="sigma must be a positive number"):
        sd.get_attack("gaussian-noise", clf, sigma=0)
    with pytest.raises(sd.SSMDefenseError, match="accepted: eps, seed, sigma"):
        sd.get_attack("gaussian-noise", clf, epsilon=0.1)
    with pytest.raises(sd.SSMDefenseError, match="sigma must be a number >= 0"):
        sd.get_defense("noise-augment", clf, sigma="big")


def test_noise_augment_trains_on_noisy_inputs_and_updates_weights(with_plugin, digits):
    from art.defences.trainer import Trainer

    clf = tiny_classifier()
    assert sd.get_defense("noise-augment", clf, eps=0.05, verbose=False).sigma == 0.05  # sigma defaults to eps
    trainer = sd.get_defense("noise-augment", clf, sigma=0.2, eps=0.1, verbose=False)
    assert isinstance(trainer, sd.TrainingLoop) and isinstance(trainer, Trainer)

    # training_step feeds the model x + uniform(-sigma, sigma), clipped to [0, 1].
    seen = []

    def spy(x):
        seen.append(x.detach().clone())
        return clf.model(x)

    xb = torch.from_numpy(digits.x_train[:32])
    loss, logits = trainer.training_step(spy, xb, torch.from_numpy(digits.y_train[:32]))
    assert loss.ndim == 0 and logits.shape == (32, 10)
    delta = seen[0] - xb
    assert delta.abs().max() <= 0.2 + 1e-6 and delta.abs().mean() > 0.03
    assert seen[0].min() >= 0.0 and seen[0].max() <= 1.0

    before = [p.detach().clone() for p in clf.model.parameters()]
    history = trainer.fit(
        digits.x_train[:256],
        digits.y_train[:256],
        validation_data=(digits.x_test[:64], digits.y_test[:64]),
        nb_epochs=1,
    )
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    assert 0.0 <= history[0]["robust_accuracy"]["pgd-10"] <= 1.0
    assert any(not torch.equal(b, p) for b, p in zip(before, clf.model.parameters()))
