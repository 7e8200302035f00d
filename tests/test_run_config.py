"""The run schema (``ssmdefense.workflows.config``): one field of ``RunConfig`` is all a new setting needs
to reach config.json, the report, every checkpoint, presets and a resumed run."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import interrupt_on_call
from ssmdefense.defenses.loop import TrainingLoop
from ssmdefense.errors import RunInterrupted, SSMDefenseError
from ssmdefense.workflows import presets, resume, train
from ssmdefense.workflows.config import RunConfig, setting


@pytest.fixture
def extended(monkeypatch):
    """RunConfig with one more field, as an edit of the class would add it; the modules that read the
    schema by name see it (nothing else is changed)."""
    cls = dataclasses.make_dataclass(
        "RunConfig",
        [("note", str, setting("plain", report=True, checkpoint=True, resumed=True, preset=True))],
        bases=(RunConfig,),
    )
    monkeypatch.setattr(resume, "RunConfig", cls)
    monkeypatch.setattr(presets, "RunConfig", cls)
    return cls


def test_a_new_field_reaches_config_report_checkpoints_presets_and_resume(extended, tmp_path, monkeypatch):
    small = {"model_params": {"d_model": 16, "n_layers": 1, "d_state": 8}, "defense_params": {"lr": 0.01}}
    config = extended(dataset="digits", epochs=2, eval_samples=32, aa_samples=0, out=tmp_path / "run", verbose=False)
    config = dataclasses.replace(config, note="from the user", **small)
    restore = interrupt_on_call(monkeypatch, TrainingLoop, "evaluate", 2, KeyboardInterrupt)  # in epoch 2
    with pytest.raises(RunInterrupted, match="interrupted after epoch 1; continue with: ssmdefense defend --resume"):
        train.run(config)
    restore()
    (partial,) = tmp_path.glob(".run.partial-*")
    assert json.loads((partial / "config.json").read_text())["note"] == "from the user"
    assert json.loads((partial / "best.json").read_text())["extra"]["note"] == "from the user"

    with pytest.raises(SSMDefenseError, match="from its config.json; drop --note, --out"):  # the schema's rule
        resume.resume_config(tmp_path / "run", "defend", ("note", "out", "device"))
    resumed, kept = resume.resume_config(tmp_path / "run", "defend")  # settings from config.json
    assert kept == partial and resumed.note == "from the user" and resumed.epochs == 2
    report = train.run(resumed, resume_dir=kept)
    assert report.config["note"] == "from the user"
    assert json.loads((tmp_path / "run" / "report.json").read_text())["config"]["note"] == "from the user"
    assert json.loads((tmp_path / "run" / "last.json").read_text())["extra"]["note"] == "from the user"

    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps({"config": {"note": "from a preset", "epochs": 3}}))
    assert presets.with_preset(extended(), str(preset)).note == "from a preset"
    assert presets.with_preset(extended(note="mine"), str(preset)).note == "mine"  # given explicitly: it wins


def test_the_cli_lists_come_from_the_schema():
    from ssmdefense.cli.run import PRESET_OPTIONS, RESUMED

    assert set(RESUMED) == set(RunConfig.options("resumed"))
    assert PRESET_OPTIONS["params"] == "defense_params" and "select_on" in RESUMED and "seed" not in PRESET_OPTIONS
    assert "defense_params" not in presets.FIELDS  # per defense, beside "config"
    record = RunConfig(dataset="digits", out="x").record()
    assert "out" not in record and "verbose" not in record and record["dataset"] == "digits"


def test_a_run_recorded_before_a_field_existed_resumes_with_its_old_value():
    old = {"command": "defend", "model": "s4d", "model_params": {"d_model": 8}, "sequence_params": {"n_mels": 20}}
    config = RunConfig.from_record(old, out="runs/x", command="defend")
    assert config.select_on == "test"  # runs before the validation split chose on test
    assert config.model_params == {"d_model": 8, "n_mels": 20} and config.aa_snr_db == 30.0
