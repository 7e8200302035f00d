"""Paper-scale presets (``defend --preset``): each built-in names registered things with parameters
they accept; a preset fills what the command line leaves at its defaults and explicit options win;
a bad preset is one line and exit 2."""

import json

import pytest
from click.testing import CliRunner

from ssmdefense.cli import cli
from ssmdefense.plugins import registry
from ssmdefense.workflows.presets import FIELDS, PRESETS, apply_preset, load_preset


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_built_in_preset_names_registered_things_it_can_set(name):
    preset = load_preset(name)
    config = preset["config"]
    assert set(config) <= set(FIELDS)
    registry("datasets").get(config["dataset"])
    registry("sequences").get(config["sequence"])
    accepted = registry("models").accepted_params(config["model"])
    assert set(config["model_params"]) <= set(accepted)
    for defense, params in preset["defense_params"].items():
        known = registry("defenses").accepted_params(defense)
        if known is not None:  # ads passes its parameters on to its base (pgd-at)
            assert set(params) <= set(known), defense
        else:
            assert set(params) <= set(registry("defenses").accepted_params("pgd-at"))


def test_the_ads_presets_hold_the_papers_settings():
    mnist, cifar = PRESETS["ads-mnist"], PRESETS["ads-cifar10"]
    assert mnist["config"]["eps"] == 0.3 and mnist["defense_params"]["pgd-at"]["eps_step"] == 0.04
    assert cifar["config"]["eps"] == pytest.approx(8 / 255) and cifar["defense_params"]["trades"]["beta"] == 6.0
    assert mnist["config"]["model_params"]["d_model"] == cifar["config"]["model_params"]["d_model"] == 128


def test_explicit_settings_win_and_dicts_merge_key_by_key():
    preset = {"config": {"epochs": 100, "model_params": {"d_model": 128, "n_layers": 2}}, "defense_params": {}}
    settings = apply_preset(preset, {"epochs": 3, "model_params": {"d_model": 8}}, "none")
    assert settings["epochs"] == 3 and settings["model_params"] == {"d_model": 8, "n_layers": 2}


def test_a_preset_file_runs_and_is_recorded(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(
        json.dumps(
            {
                "config": {
                    "dataset": "digits",
                    "sequence": "pixels",
                    "model_params": {"d_model": 8, "n_layers": 1, "d_state": 4},
                    "epochs": 3,
                    "eval_samples": 40,
                    "aa_samples": 0,
                },
                "defense_params": {"pgd-at": {"max_iter": 2}, "trades": {"beta": 6.0}},
            }
        )
    )
    out = tmp_path / "run"
    result = run(
        "defend", "--defense", "pgd-at", "--preset", path, "--epochs", 1, "-m", "d_state=2", "--out", out, "-q"
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == str(path) and config["dataset"] == "digits" and config["sequence"] == "pixels"
    assert config["epochs"] == 1  # given explicitly
    assert config["model_params"]["d_model"] == 8 and config["model_params"]["d_state"] == 2
    assert config["defense_params"] == {"max_iter": 2}  # pgd-at's entry, not trades'
    assert config["eval_samples"] == 40 and config["aa_samples"] == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "unknown preset 'nope'"),
        ("{not json", "not a readable JSON file"),
        ('{"config": {"epoch": 3}}', "unknown setting(s) epoch"),
        ('{"config": {}, "defense_params": {"pgd-at": 3}}', "must map defense names to objects"),
    ],
)
def test_a_bad_preset_is_one_line_and_exit_2(tmp_path, content, message):
    preset = "nope"
    if content is not None:
        preset = tmp_path / "bad.json"
        preset.write_text(content)
    result = run("defend", "--defense", "none", "--preset", preset, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_presets_lists_the_built_ins():
    result = run("presets", "--json")
    assert result.exit_code == 0
    assert [p["name"] for p in json.loads(result.output)] == list(PRESETS)
