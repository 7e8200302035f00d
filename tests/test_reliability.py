"""The bad-input catalogue of docs/reliability.md, one test per row: what a user sees for each bad
input to the command line (one line on stderr, exit status 2, nothing written) and to the Python API
(a clear ``SSMDefenseError``). Row numbers match the table."""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

import ssmdefense as sd
from ssmdefense import plugins
from ssmdefense.cli import cli

TINY_MODEL = ["-m", "d_model=8", "-m", "n_layers=1", "-m", "d_state=4"]
TINY = ["--dataset", "digits", "--epochs", "1", "--eval-samples", "16", "--aa-samples", "0", "-q", *TINY_MODEL]


def fails(*args, message: str, workdir=None):
    """Run the CLI; it must exit 2 with one ``Error:`` line holding ``message``, the last thing it
    prints (a run that fails after some epochs has printed their progress lines first), and write
    nothing."""
    before = set(os.listdir(workdir)) if workdir is not None else None
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert message in errors[0], errors[0]
    if workdir is not None:
        assert set(os.listdir(workdir)) == before, "something was written"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A finished tiny run to attack and to damage."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    result = CliRunner().invoke(cli, ["train", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def damaged(ckpt, tmp_path, json_edit=None, tensors: bytes | None = None):
    """A copy of the run's best checkpoint with its JSON edited or its tensors file replaced."""
    stem = tmp_path / "best"
    meta = json.loads((ckpt / "best.json").read_text())
    if json_edit is not None:
        json_edit(meta)
    (tmp_path / "best.json").write_text(json.dumps(meta))
    data = (ckpt / "best.safetensors").read_bytes() if tensors is None else tensors
    (tmp_path / "best.safetensors").write_bytes(data)
    return stem


# ---- rows 1-19: defend / train -------------------------------------------------------------------
CLI_ROWS = [
    (1, ["--model", "nope"], "unknown model 'nope'"),
    (2, ["--defense", "nope"], "unknown defense 'nope'"),
    (3, ["--dataset", "nope"], "unknown dataset 'nope'"),
    (4, ["--sequence", "nope"], "unknown sequence mode 'nope'"),
    (5, ["-p", "max_iter=0"], "max_iter must be"),
    (6, ["-p", "eps_step=abc"], "eps_step must be"),
    (7, ["-p", "nope=1"], "unknown parameter(s) nope"),
    (8, ["-m", "d_model=-4"], "d_model must be"),
    (9, ["-p", "lr=nan"], "lr must be"),
    (10, ["--eps", "0"], "Invalid value for '--eps'"),
    (11, ["--eps", "1.5"], "not smaller than the inputs' range"),
    (12, ["--epochs", "0"], "Invalid value for '--epochs'"),
    (13, ["--batch-size", "0"], "Invalid value for '--batch-size'"),
    (14, ["-D", "nope=1"], "unknown parameter(s) nope"),
    (15, ["--threads", "0"], "Invalid value for '--threads'"),
    (16, ["-p", "eps=0.2"], "set eps with its own option"),
    (41, ["--aa-samples", "-1"], "Invalid value for '--aa-samples'"),
    (48, ["--select-on", "nonsense"], "Invalid value for '--select-on': 'nonsense' is not one of 'val', 'test'"),
    (49, ["-D", "val_fraction=0"], "val_fraction must be between 0 and 1 (exclusive)"),
    (50, ["-D", "val_fraction=1.5"], "val_fraction must be between 0 and 1 (exclusive)"),
    (
        51,
        ["-D", "val_fraction=0.2", "--select-on", "test"],
        "'-D': val_fraction: --select-on test carves no validation",
    ),
    (52, ["-D", "val_fraction=0.9999"], "dataset 'digits' is too small to carve a validation split from"),
    (53, ["--aa-snr-db", "inf"], "aa_snr_db must be a finite number of dB"),
]


@pytest.mark.parametrize("row,args,message", CLI_ROWS, ids=[f"row{r[0]}" for r in CLI_ROWS])
def test_defend_refuses_bad_settings(row, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["defend", "--defense", "pgd-at", *TINY, "--out", "out"]
    # a later option wins in click, so the bad value is appended after the good defaults
    fails(*base, *args, message=message, workdir=tmp_path)


def test_row17_data_dir_that_does_not_exist(tmp_path):
    fails(
        "train",
        "--dataset",
        "speech-commands",
        "--data-dir",
        tmp_path / "missing",
        "--out",
        tmp_path / "o",
        message="speech-commands",
        workdir=tmp_path,
    )


def test_row18_out_that_is_an_existing_file_or_below_one(tmp_path):
    (tmp_path / "taken").write_text("not a run")
    fails("train", *TINY, "--out", tmp_path / "taken", message="already exists", workdir=tmp_path)
    fails("train", *TINY, "--out", tmp_path / "taken" / "run", message="taken", workdir=tmp_path)
    assert (tmp_path / "taken").read_text() == "not a run"


def test_row19_resume_with_nothing_to_resume(tmp_path):
    fails("defend", "--resume", tmp_path / "never", message="nothing to resume", workdir=tmp_path)


# ---- rows 20-30: checkpoints, attack, evaluate -------------------------------------------------
def test_row20_missing_checkpoint(tmp_path):
    fails("attack", "--checkpoint", tmp_path / "none", "--attack", "pgd", message="no checkpoint at")


def test_row21_unknown_attack(ckpt):
    fails("attack", "--checkpoint", ckpt, "--attack", "nope", message="unknown attack 'nope'")


def test_row22_truncated_checkpoint(ckpt, tmp_path):
    data = (ckpt / "best.safetensors").read_bytes()
    stem = damaged(ckpt, tmp_path, tensors=data[: len(data) // 2])
    fails("attack", "--checkpoint", stem, "--attack", "fgsm", message="best")


def test_row23_corrupt_checkpoint_json(ckpt, tmp_path):
    stem = damaged(ckpt, tmp_path)
    (tmp_path / "best.json").write_text("{not json")
    fails("attack", "--checkpoint", stem, "--attack", "fgsm", message="best.json")


class _Payload:
    def __reduce__(self):
        return (open, (os.environ["SSMDEFENSE_PICKLE_MARKER"], "w"))


def test_row24_pickle_under_a_safetensors_name_is_refused_never_run(ckpt, tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    monkeypatch.setenv("SSMDEFENSE_PICKLE_MARKER", str(marker))
    stem = damaged(ckpt, tmp_path, tensors=pickle.dumps(_Payload()))
    fails("attack", "--checkpoint", stem, "--attack", "fgsm", message="best")
    assert not marker.exists()  # the payload never ran


def test_row25_safetensors_header_claiming_a_huge_size(ckpt, tmp_path):
    stem = damaged(ckpt, tmp_path, tensors=struct.pack("<Q", 2**62) + b"{}")
    fails("attack", "--checkpoint", stem, "--attack", "fgsm", message="best")


def test_row26_checkpoint_json_naming_another_model(ckpt, tmp_path):
    stem = damaged(ckpt, tmp_path, json_edit=lambda m: m["model"].update(name="nope"))
    fails("attack", "--checkpoint", stem, "--attack", "fgsm", message="nope")


def test_row27_checkpoint_json_with_edited_parameters(ckpt, tmp_path):
    stem = damaged(ckpt, tmp_path, json_edit=lambda m: m["model"]["params"].update(d_model=12))
    fails("attack", "--checkpoint", stem, "--attack", "fgsm", message="best")


def test_row28_attack_eps_beyond_the_clip_range(ckpt):
    fails("attack", "--checkpoint", ckpt, "--attack", "pgd", "--eps", "3", message="not smaller than the inputs' range")


def test_row29_save_examples_needs_npz(ckpt, tmp_path):
    fails(
        "attack",
        "--checkpoint",
        ckpt,
        "--attack",
        "fgsm",
        "--save-examples",
        tmp_path / "x.txt",
        message="must end in .npz",
        workdir=tmp_path,
    )


def test_row30_evaluate_eps_that_is_not_a_number(ckpt, tmp_path):
    fails("evaluate", "--checkpoint", ckpt, "--eps", "abc", "--out", tmp_path / "ev", message="--eps", workdir=tmp_path)


# ---- rows 31-38: the Python API ------------------------------------------------------------------
@pytest.fixture
def trainer(digits):
    body = sd.build_model("s4d", d_input=8, n_classes=10, d_model=8, n_layers=1, d_state=4)
    clf = sd.SSMClassifier(
        body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )
    return sd.get_defense("none", clf, verbose=False, eval_samples=16)


def test_row31_nan_or_inf_inputs(trainer, digits):
    x = digits.x_train[:32].copy()
    x[3, 0, 2, 2] = np.nan
    x[5, 0, 1, 1] = np.inf
    with pytest.raises(sd.SSMDefenseError, match="2 NaN or infinite values"):
        trainer.fit(x, digits.y_train[:32], nb_epochs=1)


def test_row32_empty_data(trainer, digits):
    with pytest.raises(sd.SSMDefenseError, match="x is empty"):
        trainer.fit(digits.x_train[:0], digits.y_train[:0], nb_epochs=1)


def test_row33_wrongly_shaped_data(trainer, digits):
    with pytest.raises(sd.SSMDefenseError, match="the classifier expects"):
        trainer.fit(digits.x_train[:32, :, :4], digits.y_train[:32], nb_epochs=1)


def test_row34_labels_out_of_range(trainer, digits):
    with pytest.raises(sd.SSMDefenseError, match="labels must lie in 0..9"):
        trainer.fit(digits.x_train[:32], digits.y_train[:32] + 5, nb_epochs=1)


def test_row35_wrong_type_parameters_through_the_api(trainer):
    clf = trainer.get_classifier()
    with pytest.raises(sd.SSMDefenseError, match="eps must be"):
        sd.get_attack("pgd", clf, eps="big")
    with pytest.raises(sd.SSMDefenseError, match="d_state must be"):
        sd.build_model("s4d", 8, 10, d_state="x")


def test_row42_autoattack_version_and_aa_samples_through_the_api(trainer, tmp_path):
    from ssmdefense.experiment import RunConfig, run

    with pytest.raises(sd.SSMDefenseError, match="version must be one of standard, fast; got 'plus'"):
        sd.get_attack("autoattack", trainer.get_classifier(), version="plus")
    with pytest.raises(sd.SSMDefenseError, match="aa_samples must be an integer >= 0"):
        run(RunConfig(dataset="digits", aa_samples=-1, out=tmp_path / "r", verbose=False))
    assert not (tmp_path / "r").exists()


@pytest.fixture
def plugin_with(monkeypatch):
    """Install a fake third-party plugin module (``hooks``: name -> function) for this test."""
    monkeypatch.delenv("SSMDEFENSE_LOAD_PLUGINS", raising=False)  # conftest.py sets it empty: load this one

    def install(**hooks):
        module = types.ModuleType("bad_plugin_mod")
        for name, fn in hooks.items():
            setattr(module, name, sd.hookimpl(fn))
        monkeypatch.setitem(sys.modules, "bad_plugin_mod", module)

        class EntryPoint:
            name, value, group, dist = "bad", "bad_plugin_mod", "ssmdefense", None

            def load(self):
                return module

        real = plugins.importlib.metadata.entry_points
        monkeypatch.setattr(
            plugins.importlib.metadata,
            "entry_points",
            lambda **kw: [EntryPoint()] if kw.get("group") == "ssmdefense" else real(**kw),
        )
        plugins.reset()

    yield install
    plugins.reset()


def test_row36_a_plugin_hook_that_raises_leaves_the_others_working(plugin_with):
    def register_attacks(register):
        raise RuntimeError("broken on purpose")

    plugin_with(register_attacks=register_attacks)
    assert "pgd" in sd.list_attacks()
    row = {r["name"]: r for r in plugins.plugin_info()}["bad"]
    assert "register_attacks: RuntimeError: broken on purpose" in row["error"]
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0 and "broken on purpose" in result.output


def test_row37_a_plugin_registering_a_non_callable(plugin_with):
    def register_models(register):
        register("not-callable", 42, "a number, not a factory")

    plugin_with(register_models=register_models)
    assert "s4d" in sd.list_models() and "not-callable" not in sd.list_models()
    with pytest.raises(sd.UnknownNameError, match="plugin 'bad' failed to register its models .*not callable"):
        sd.build_model("not-callable", 8, 10)


def test_row38_a_loss_that_turns_nan_stops_the_run_and_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    from ssmdefense.defenses.none import StandardTrainer

    calls = {"n": 0}
    original = StandardTrainer.training_step

    def turns_nan(self, model, x, y):
        calls["n"] += 1
        loss, logits = original(self, model, x, y)
        return (loss * float("nan") if calls["n"] > 23 else loss), logits  # digits: 23 batches an epoch

    monkeypatch.setattr(StandardTrainer, "training_step", turns_nan)
    out = tmp_path / "run"
    fails("train", *TINY, "--epochs", "3", "--out", out, message="the training loss became nan in epoch 2")
    assert not out.exists()
    (kept,) = tmp_path.glob(".run.partial-*")  # the last good epoch, kept
    assert json.loads((kept / "last.json").read_text())["extra"]["epoch"] == 1
