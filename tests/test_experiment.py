"""``ssmdefense.experiment``: what ``ssmdefense defend`` does, from Python, with the same numbers."""

import json

import pytest
from click.testing import CliRunner

import ssmdefense as sd
from ssmdefense.cli import cli
from ssmdefense.experiment import RunConfig, RunReport, run

SMALL = [
    "--aa-samples",
    "0",
    "--dataset",
    "digits",
    "--epochs",
    "2",
    "--eval-samples",
    "40",
    "-m",
    "d_model=16",
    "-m",
    "n_layers=1",
    "-m",
    "d_state=8",
    "-p",
    "lr=0.01",
]


def test_the_api_reproduces_the_command_line_run(tmp_path):
    result = CliRunner().invoke(cli, ["defend", "--defense", "ads", *SMALL, "--out", str(tmp_path / "cli"), "-q"])
    assert result.exit_code == 0, result.output
    config = RunConfig(
        defense="ads",
        dataset="digits",
        epochs=2,
        eval_samples=40,
        aa_samples=0,
        model_params={"d_model": 16, "n_layers": 1, "d_state": 8},
        defense_params={"lr": 0.01},
        out=tmp_path / "api",
        verbose=False,
    )
    report = run(config)
    from_cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    from_api = json.loads((tmp_path / "api" / "report.json").read_text())
    for which in ("best", "last"):
        assert from_api[which] == from_cli[which]  # same seed: the same epochs, accuracies and curves
    assert from_api["config"] == from_cli["config"]
    assert report.to_dict()["best"] == from_api["best"] and report.out == tmp_path / "api"
    assert report.plots == from_api["plots"] and "plots/training_curves.png" in report.plots
    assert RunReport.load(tmp_path / "api").to_dict() == from_api
    saved = json.loads((tmp_path / "api" / "config.json").read_text())
    assert saved["defense"] == "ads" and saved["model_params"] == {
        "d_model": 16,
        "n_layers": 1,
        "d_state": 8,
        "ads": "relu",
    }  # the ads defense adds AdS


def test_run_config_round_trips_through_json(tmp_path):
    config = RunConfig(
        defense="pgd-at",
        model="s5",
        out=tmp_path / "x",
        data_dir=tmp_path,
        model_params={"kernel": "numba"},
        dataset_params={"subset": "all"},
    )
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(sd.SSMDefenseError, match="RunConfig has no field"):
        RunConfig.from_dict({"defence": "ads"})


@pytest.mark.parametrize(
    "config, message",
    [
        (RunConfig(model="nope"), "unknown model 'nope'"),
        (RunConfig(defense="pgd-at", defense_params={"eps": 0.3}), "set eps with its own option"),
        (RunConfig(device="cuda"), "CUDA is not available"),
    ],
)
def test_bad_configs_fail_before_any_work(config, message, tmp_path):
    import torch

    if config.device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config.out = tmp_path / "run"
    with pytest.raises(sd.SSMDefenseError, match=message):
        run(config)
    assert not config.out.exists()


def test_an_existing_out_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(sd.SSMDefenseError, match="already exists"):
        run(RunConfig(dataset="digits", out=tmp_path / "run", verbose=False))
