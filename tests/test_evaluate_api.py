"""``ssmdefense.experiment.evaluate_checkpoints`` / ``attack_checkpoint``: what ``ssmdefense evaluate`` and
``ssmdefense attack`` do, from Python, with the same numbers and the same files."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import ssmdefense as sd
from ssmdefense.cli import cli
from ssmdefense.experiment import (
    AttackConfig,
    AttackResult,
    EvaluateConfig,
    EvaluationReport,
    OptionError,
    RunConfig,
    attack_checkpoint,
    evaluate_checkpoints,
    run,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Two epochs of standard training of a tiny S4D on digits: best and last checkpoints, eps 0.1."""
    out = tmp_path_factory.mktemp("evaluate-api") / "run"
    run(
        RunConfig(
            defense="none",
            dataset="digits",
            epochs=2,
            eps=0.1,
            eval_samples=20,
            aa_samples=0,
            out=out,
            verbose=False,
            model_params={"d_model": 16, "n_layers": 1, "d_state": 8},
            defense_params={"lr": 0.01},
        )
    )
    return out


def cli_run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_the_api_reproduces_the_evaluate_command(run_dir, tmp_path):
    result = cli_run(
        "evaluate",
        "--checkpoint",
        run_dir,
        "--eps",
        "0.1,0.2",
        "--samples",
        "30",
        "--attacks",
        "fgsm,pgd",
        "-p",
        "pgd.max_iter=3",
        "--out",
        tmp_path / "cli",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = evaluate_checkpoints(
        checkpoint=run_dir,
        eps=[0.1, 0.2],
        samples=30,
        attacks=["fgsm", "pgd"],
        attack_params={"pgd": {"max_iter": 3}},
        out=tmp_path / "api",
    )
    from_cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    from_api = json.loads((tmp_path / "api" / "report.json").read_text())
    assert list(from_api) == list(from_cli) == ["config", "best", "last", "gap", "gradient_masking_suspected", "plots"]
    assert from_api == from_cli  # same seed: the same accuracies, curves, checks and plots
    assert (tmp_path / "api" / "report.md").read_text() == (tmp_path / "cli" / "report.md").read_text()
    assert json.loads(result.stdout) == {k: v for k, v in from_cli.items() if k != "plots"}  # --json: no plots
    assert report.out == tmp_path / "api" and report.best["robust_accuracy"].keys() == {"fgsm", "pgd-3"}
    assert list(report.results) == ["best", "last"]
    # the result round-trips through JSON, and is what report.json holds
    assert json.loads(json.dumps(report.to_dict())) == from_api
    again = EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict())), out=report.out)
    assert again == EvaluationReport.load(tmp_path / "api") and again.to_dict() == from_api


def test_one_checkpoint_without_checks(run_dir, tmp_path):
    config = EvaluateConfig(
        checkpoint=run_dir / "last", attacks=["fgsm"], eps=[0.1], samples=20, checks=False, out=tmp_path / "eval"
    )
    report = evaluate_checkpoints(config)
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert list(report.results) == ["checkpoint"] and report.best is None and report.gap is None
    assert "gradient_masking_suspected" not in saved and "sanity" not in saved["checkpoint"]
    assert saved == report.to_dict() and saved["config"]["eps_list"] == [0.1]
    assert [p["eps"] for p in report.checkpoint["curve"]] == [0.0, 0.1]


def test_the_api_reproduces_the_attack_command(run_dir, tmp_path):
    result = cli_run(
        "attack", "--checkpoint", run_dir, "--attack", "pgd", "-p", "max_iter=3", "--samples", "30", "--json"
    )
    assert result.exit_code == 0, result.output
    attacked = attack_checkpoint(
        checkpoint=run_dir, attack="pgd", params={"max_iter": 3}, samples=30, save_examples=tmp_path / "adv.npz"
    )
    from_cli = json.loads(result.output)
    assert from_cli["params"] == {"max_iter": 3, "eps": 0.1}  # the run's eps by default
    assert attacked.to_dict() == {**from_cli, "examples": str(tmp_path / "adv.npz")}
    assert AttackResult.from_dict(json.loads(json.dumps(attacked.to_dict()))) == attacked
    x, x_adv = attacked.arrays["x"], attacked.arrays["x_adv"]
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and attacked.adversarial_accuracy <= attacked.clean_accuracy
    assert np.array_equal(np.load(tmp_path / "adv.npz")["x_adv"], x_adv)


def test_configs_round_trip_through_json(tmp_path):
    config = EvaluateConfig(
        checkpoint=tmp_path / "run",
        attacks=("pgd", "autoattack"),
        eps=0.1,
        attack_params={"pgd": {"max_iter": 20}},
        data_dir=tmp_path,
        out=tmp_path / "e",
    )
    assert config.eps == [0.1] and config.attacks == ["pgd", "autoattack"]
    assert EvaluateConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    attack = AttackConfig(checkpoint=str(tmp_path / "run" / "best"), attack="fgsm", save_examples="x.npz")
    assert AttackConfig.from_dict(json.loads(json.dumps(attack.to_dict()))) == attack
    with pytest.raises(sd.SSMDefenseError, match="EvaluateConfig has no field"):
        EvaluateConfig.from_dict({"checkpoint": "run", "attack": "pgd"})


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda d: evaluate_checkpoints(checkpoint=d / "missing"), sd.CheckpointError, "no checkpoint at"),
        (lambda d: attack_checkpoint(checkpoint=d / "missing", attack="pgd"), sd.CheckpointError, "no checkpoint at"),
        (
            lambda d: evaluate_checkpoints(checkpoint=d, attacks=["pgd", "zzz"]),
            sd.UnknownNameError,
            "unknown attack 'zzz'",
        ),
        (lambda d: attack_checkpoint(checkpoint=d, attack="boom"), sd.UnknownNameError, "unknown attack 'boom'"),
        (lambda d: evaluate_checkpoints(checkpoint=d, attacks=[]), OptionError, "attacks: give at least one attack"),
        (
            lambda d: evaluate_checkpoints(checkpoint=d, attack_params={"square": {"max_iter": 3}}),
            OptionError,
            "attack_params: ",
        ),
        (lambda d: evaluate_checkpoints(checkpoint=d, eps=[0.0, 0.1]), OptionError, "the first eps must be positive"),
        (
            lambda d: evaluate_checkpoints(checkpoint=d, attack_params={"pgd": {"steps": 3}}),
            sd.SSMDefenseError,
            "unknown parameter(s) steps",
        ),
        (
            lambda d: attack_checkpoint(checkpoint=d, attack="pgd", eps=0.1, params={"eps": 0.2}),
            OptionError,
            "give eps once",
        ),
        (
            lambda d: attack_checkpoint(checkpoint=d, attack="pgd", save_examples=d / "x.txt"),
            OptionError,
            "must end in .npz",
        ),
    ],
    ids=[
        "evaluate-missing",
        "attack-missing",
        "evaluate-unknown",
        "attack-unknown",
        "no-attacks",
        "params-of-an-unlisted-attack",
        "first-eps-zero",
        "bad-attack-param",
        "eps-twice",
        "not-npz",
    ],
)
def test_bad_input_raises_a_clear_error_and_writes_nothing(run_dir, call, error, message):
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(error, match=re.escape(message)):
        call(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == before  # no evaluation/ and no x.txt
