"""The example plugin ``plugins/ssmdefense-plain``, pip-installed: a plain ART trainer registered as a
defense (ART's ``AdversarialTrainerMadryPGD`` unchanged) and a plain ``nn.Module`` as a model run
``ssmdefense defend`` end to end; what needs an SSM's internals says so in one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import ssmdefense as sd
from plugin_install import install, run_cli
from ssmdefense import plugins
from ssmdefense.cli import cli
from ssmdefense.defenses.art_trainer import ARTTrainerDefense, as_defense

FAST = ("--dataset", "digits", "--eval-samples", "64", "--aa-samples", "0", "--threads", "1", "-q")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return install("ssmdefense-plain", tmp_path_factory.mktemp("plain-plugin"))


@pytest.fixture(scope="module")
def madry_run(site):
    """``ssmdefense defend`` in its own process with the plugin on PYTHONPATH, as a user runs it; the
    tests below run the command line in this process with the plugin loaded (``with_plugin``): a new
    interpreter for each would cost seconds of imports and check nothing more."""
    out = site.parent / "madry-run"
    run_cli(
        site,
        "defend",
        "--defense",
        "madry-pgd",
        "--model",
        "tiny-gru",
        "--epochs",
        "3",
        "-p",
        "max_iter=2",  # PGD-2 inside ART's trainer, not its PGD-7: half the training, and clean 0.34, not 0.20
        "--out",
        str(out),
        *FAST,
        parse_json=False,
    )
    return out


def test_defend_with_a_plain_art_trainer_and_a_plain_module_runs_end_to_end(madry_run):
    report = json.loads((madry_run / "report.json").read_text())
    config = json.loads((madry_run / "config.json").read_text())
    assert report["config"]["defense"] == "madry-pgd" and report["config"]["model"] == "tiny-gru"
    assert config["trainer"]["art_trainer"].endswith("AdversarialTrainerMadryPGD")
    metrics = [json.loads(line) for line in (madry_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]  # evaluated after every epoch
    assert all("pgd-10" in m["robust_accuracy"] for m in metrics)
    assert report["best"]["clean_accuracy"] > 0.2  # it trained: 10 classes, chance is 0.1
    for name in ("best", "last"):
        assert (madry_run / f"{name}.safetensors").is_file() and (madry_run / f"{name}.json").is_file()
    assert {"fgsm", "pgd-10"} <= set(report["best"]["robust_accuracy"])


def in_process(*args, expect: int = 0):
    """``ssmdefense *args`` in this process (the plugin loaded by ``with_plugin``); the click result."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == expect, (
        f"ssmdefense {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
    )
    return result


def test_the_plain_model_checkpoint_is_attacked_like_any_other(with_plugin, madry_run):
    out = in_process("attack", "--checkpoint", madry_run, "--attack", "pgd", "--samples", "32", "--json")
    result = json.loads(out.stdout)
    assert result["samples"] == 32 and result["adversarial_accuracy"] <= result["clean_accuracy"]


@pytest.mark.parametrize(
    "args,needs",
    [
        (("defend", "--defense", "ads", "--model", "tiny-gru", "--epochs", "1"), "SequenceClassifier"),
        (("defend", "--defense", "yopo", "--model", "tiny-gru", "--epochs", "1"), "encoder"),
    ],
)
def test_what_needs_ssm_internals_says_so_in_one_line(with_plugin, tmp_path, args, needs):
    proc = in_process(*args, "--out", tmp_path / "run", *FAST, expect=2)
    assert len(proc.stderr.strip().splitlines()) == 1 and needs in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_components_analysis_of_a_plain_model_says_so_in_one_line(with_plugin, madry_run, tmp_path):
    proc = in_process(
        "evaluate",
        "--checkpoint",
        str(madry_run),
        "--attacks",
        "fgsm",
        "--samples",
        "16",
        "--no-checks",
        "--analysis",
        "components",
        "--out",
        tmp_path / "ev",
        expect=2,
    )
    assert len(proc.stderr.strip().splitlines()) == 1 and "components" in proc.stderr, proc.stderr
    assert not (tmp_path / "ev").exists()


@pytest.fixture
def with_plugin(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("SSMDEFENSE_LOAD_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()
    for name in [m for m in sys.modules if m.split(".")[0] == "ssmdefense_plain"]:
        del sys.modules[name]


def test_the_adapter_wraps_the_plain_trainer_and_refuses_to_resume(with_plugin, digits, tmp_path):
    from art.defences.trainer import AdversarialTrainerMadryPGD

    body = sd.build_model("tiny-gru", d_input=8, n_classes=10)
    clf = sd.SSMClassifier(
        body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )
    trainer = sd.get_defense("madry-pgd", clf, eps=0.1, seed=0, batch_size=64, eval_samples=32, verbose=False)
    assert isinstance(trainer, AdversarialTrainerMadryPGD)  # the plugin's object, as registered
    defense = as_defense(trainer, "madry-pgd", {"eps": 0.1, "seed": 0, "eval_samples": 32, "verbose": False})
    assert isinstance(defense, ARTTrainerDefense) and defense.get_classifier() is clf
    history = defense.fit(
        digits.x_train[:128],
        digits.y_train[:128],
        validation_data=(digits.x_test, digits.y_test),
        nb_epochs=2,
        out_dir=tmp_path,
    )
    assert [h["epoch"] for h in history] == [1, 2] and np.isfinite(history[-1]["clean_accuracy"])
    assert (tmp_path / "best.json").is_file()
    with pytest.raises(sd.SSMDefenseError, match="no training state to resume"):
        defense.fit(digits.x_train[:128], digits.y_train[:128], nb_epochs=1, out_dir=tmp_path, resume=True)
    assert as_defense(sd.get_defense("pgd-at", clf, verbose=False), "pgd-at", {}).__class__.__name__ == "PGDATTrainer"
