"""Audio through the command line: real-dataset trees trained end to end with --data-dir, audio run
directories (examples, SNR budgets), audio attacks and evaluate's SNR curve, and bad input."""

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import ssmdefense as sd
from ssmdefense.cli import cli
from ssmdefense.workflows.common import available_cores
from test_data_audio_files import write_speech_commands_tree, write_urbansound8k_tree

SMALL = [
    "--epochs",
    "1",
    "-q",
    "--threads",
    "1",
    "-m",
    "d_model=16",
    "-m",
    "n_layers=1",
    "-m",
    "d_state=8",
    "-p",
    "lr=0.01",
]


def run(*args):
    """The command line in-process; attack and evaluate on one thread (the default for audio is every
    core, which a busy test machine turns into waiting)."""
    if args[0] in ("attack", "evaluate"):
        args = (*args, "--threads", "1")
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    """PGD-AT for one epoch on a small Speech Commands tree (digits, 3 clips per word in train). The
    audio AutoAttack of its final evaluation runs on the first 2 test clips only: its standard budgets
    cost about a minute per clip that survives APGD, and here the report, not the attack, is under test
    (test_attacks_audio_autoattack checks what its components find)."""
    root = tmp_path_factory.mktemp("sc")
    write_speech_commands_tree(root, per_word=6, n_test=2, n_valid=1)
    out = root / "run"
    result = run(
        "defend",
        "--defense",
        "pgd-at",
        "--dataset",
        "speech-commands",
        "--data-dir",
        root,
        *SMALL,
        "-p",
        "max_iter=2",
        "--aa-samples",
        "2",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    return root, out


def test_speech_commands_trains_from_its_official_layout(speech_run):
    root, out = speech_run
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "speech-commands" and config["data_dir"] == str(root)
    assert config["sequence"] == "mel" and config["sequence_params"]["n_mels"] == 40
    assert config["sample_rate"] == 16000 and config["eps"] == 0.001  # the dataset's default budget
    report = json.loads((out / "report.json").read_text())
    budget = report["budget"]
    assert budget["attack_space"] == "waveform" and budget["eps"] == 0.001
    assert budget["worst_case_snr_db_min"] <= budget["worst_case_snr_db_median"]
    assert 0 <= report["best"]["robust_accuracy"]["pgd-10"] <= report["best"]["clean_accuracy"] <= 1
    assert config["validation"] == {**config["validation"], "source": "official", "val": 10}  # validation_list.txt
    aa = report["best"]["autoattack"]  # the audio AutoAttack of the final evaluation
    assert aa["attack"] == "audio-autoattack" and aa["samples"] == 2 and aa["snr_db"] == 30.0
    assert aa["components"] == ["apgd-ce", "apgd-t", "square-1d", "snr-apgd-ce", "snr-apgd-t"]
    assert (
        aa["worst_case"] <= aa["linf_worst_case"] <= min(aa["robust_accuracy"]["fgsm"], aa["robust_accuracy"]["pgd-10"])
    )
    md = (out / "report.md").read_text()
    assert "## Audio AutoAttack (standard) on the first 2 evaluated clips" in md and "L-inf worst case" in md


def test_audio_run_keeps_listenable_examples(speech_run):
    _, out = speech_run
    report = json.loads((out / "report.json").read_text())
    assert report["best"]["clean_accuracy"] >= 0.3  # 6 of the 20 test clips or more: enough to attack
    examples = report["examples"]
    assert len(examples) == 3, examples  # the first 3 correctly classified clips PGD-10 fools (or not)
    for e in examples:
        clean, rate = sf.read(out / e["clean_wav"], dtype="float32")
        adv, _ = sf.read(out / e["adversarial_wav"], dtype="float32")
        assert rate == 16000 and clean.shape == adv.shape == (16000,)
        assert np.abs(adv - clean).max() <= 0.001 + 1e-6 and np.abs(adv).max() <= 1
        assert (out / e["png"]).stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "## Threat model" in md and "dBFS" in md and "examples/example_0.png" in md


def test_audio_attacks_run_on_an_audio_run(speech_run):
    _, out = speech_run
    result = run("attack", "--checkpoint", out, "--attack", "snr-pgd", "-p", "snr_db=30", "--json")
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert "eps" not in res["params"]  # snr-pgd's budget is the SNR, not the run's eps
    assert res["perturbed"] > 0 and res["min_snr_db"] is not None  # clips were attacked ...
    assert res["min_snr_db"] >= 30 - 1e-3  # ... and each stayed in the 30 dB SNR ball
    assert res["adversarial_accuracy"] <= res["clean_accuracy"]
    for name in ("time-shift", "speed", "pitch-shift", "noise"):
        params = ["-p", "snr_db=20"] if name == "noise" else []
        result = run("attack", "--checkpoint", out, "--attack", name, *params, "--samples", "10", "--json")
        assert result.exit_code == 0, (name, result.output)
        res = json.loads(result.stdout)
        assert res["samples"] == 10 and 0 <= res["adversarial_accuracy"] <= 1


def evaluated(checkpoint, out, *args) -> dict:
    """``ssmdefense evaluate --checkpoint CHECKPOINT --no-checks *args --out OUT``: its report.json."""
    result = run("evaluate", "--checkpoint", checkpoint, "--no-checks", *args, "--out", out)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_evaluate_adds_accuracy_against_snr(speech_run, tmp_path):
    _, out = speech_run
    # --aa-samples 0: the AutoAttack is checked below, on its own (its standard budgets take a minute
    # per clip that survives APGD)
    snr_args = ["--attacks", "pgd", "--snr", "40,20", "-p", "snr-pgd.max_iter=3", "--samples", "6"]
    report = evaluated(out, tmp_path / "eval", *snr_args, "--aa-samples", "0")
    assert report["config"]["select_on"] == "val"  # as the run chose its best checkpoint
    assert report["config"]["aa_samples"] == 0 and "autoattack" not in report["best"]
    audio = report["best"]["audio"]
    assert [p["snr_db"] for p in audio["snr_curve"]] == [40.0, 20.0]
    assert audio["snr_curve"][1]["accuracy"] <= audio["snr_curve"][0]["accuracy"] + 1e-9
    assert set(audio["search"]) == {"time-shift", "speed"}
    assert (tmp_path / "eval" / "plots" / "accuracy_vs_snr.png").is_file()
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "## Audio attacks" in md and "snr-pgd 20 dB" in md
    # the audio AutoAttack by default on a waveform checkpoint (100 clips, here all 2 evaluated)
    report = evaluated(out, tmp_path / "aa", "--attacks", "fgsm", "--snr", "none", "--samples", "2")
    aa = report["best"]["autoattack"]
    assert report["config"]["aa_samples"] == 2 and aa["attack"] == "audio-autoattack" and aa["samples"] == 2
    assert [b["component"] for b in aa["breakdown"]] == ["clean", *aa["components"]] and len(aa["components"]) == 5


def test_urbansound8k_trains_from_mixed_rates_and_channels(tmp_path):
    write_urbansound8k_tree(tmp_path)
    out = tmp_path / "run"
    result = run(
        "train",
        "--dataset",
        "urbansound8k",
        "--data-dir",
        tmp_path,
        "-D",
        "test_fold=10",
        "-D",
        "duration=2.0",
        *SMALL,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["dataset_params"] == {"test_fold": 10, "duration": 2.0}
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["dataset"] == "urbansound8k" and "budget" in report
    # attack re-reads the dataset with the run's folder and parameters
    result = run("attack", "--checkpoint", out, "--attack", "fgsm", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_linf"] <= 0.001 + 1e-6


def test_features_attack_space_from_the_cli(tmp_path):
    write_speech_commands_tree(tmp_path, per_word=3)
    out = tmp_path / "run"
    result = run(
        "defend",
        "--defense",
        "pgd-at",
        "--dataset",
        "speech-commands",
        "--data-dir",
        tmp_path,
        "--eps",
        "2.0",
        "-m",
        "attack_space=features",
        *SMALL,
        "-p",
        "max_iter=2",
        "--aa-samples",
        "1",  # the key is the point here: standard budgets on a clip the model gets right take a minute
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["budget"] == {**report["budget"], "attack_space": "features", "eps": 2.0}
    assert report["config"]["sequence_params"]["attack_space"] == "features"
    assert "Features attack space" in (out / "report.md").read_text()
    assert report["best"]["autoattack"]["attack"] == "autoattack"  # a spectrogram is an image: image AutoAttack
    result = run("attack", "--checkpoint", out, "--attack", "pgd", "--json", "--out", tmp_path / "attack")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_linf"] <= 2.0 + 1e-4  # dB on the log-mel spectrogram
    attacked = json.loads((tmp_path / "attack" / "report.json").read_text())
    assert "Features attack space" in (tmp_path / "attack" / "report.md").read_text()
    assert attacked["examples"], "no example was written"
    for e in attacked["examples"]:  # a perturbed spectrogram has no sound: its picture only
        assert (tmp_path / "attack" / e["png"]).is_file() and "clean_wav" not in e


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "speech-commands"], "give its folder with --data-dir DIR"),
        (["train", "--dataset", "digits", "--data-dir", "."], "dataset 'digits' is embedded and reads no folder"),
        (["train", "--dataset", "speech-commands", "--data-dir", "nowhere"], "nowhere"),
        (["train", "--dataset", "urbansound8k", "--data-dir", ".", "-D", "test_fold=11"], "test_fold"),
        (["train", "--dataset", "digits", "--sequence", "mel"], "needs mono audio input_shape (1, T)"),
        (["train", "--dataset", "digits", "--sequence", "columns"], "unknown sequence mode 'columns'"),
        (["train", "--dataset", "digits", "-D", "bogus=1"], "unknown parameter(s) bogus"),
    ],
)
def test_bad_audio_input_exits_2_with_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run(*args, "--out", "out")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_spoken_digits_defaults_flow_into_the_run(tmp_path, monkeypatch):
    """The embedded audio default: mel front end and eps 0.001 come from the dataset (its defaults of
    8 epochs and 240 evaluation clips too: test_plugins checks that a dataset's defaults apply)."""
    monkeypatch.setenv("SSMDEFENSE_CACHE_DIR", str(tmp_path / "cache"))  # never the user's cache
    out = tmp_path / "run"
    result = run(
        "train",
        "--dataset",
        "spoken-digits",
        "-D",
        'accents=["en-us","en"]',
        "--epochs",
        "2",
        "--eval-samples",
        "40",
        "-q",
        "-m",
        "d_model=8",
        "-m",
        "n_layers=1",
        "-m",
        "d_state=8",
        "-p",
        "lr=0.01",
        "--out",
        out,
    )  # two of the eight accents: 600 clips
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["sequence"], config["eps"], config["sample_rate"]) == ("mel", 0.001, 16000)
    assert config["threads"] == min(4, available_cores())  # audio: every core up to 4 by default
    report = json.loads((out / "report.json").read_text())
    assert report["classes"][:3] == ["zero", "one", "two"]
    assert report["best"]["clean_accuracy"] > 0.15  # two epochs of a tiny model on 480 clips: above chance
    assert report["best"]["robust_accuracy"]["pgd-10"] < report["best"]["clean_accuracy"]
    assert "| checkpoint | attack | zero | one |" in (out / "report.md").read_text()
    v = config["validation"]  # one of the 8 training voices of the two accents held out: 60 clips
    assert v["stratified_by"] == "group" and len(v["held_out_groups"]) == 1 and v["val"] == 60
    assert report["best"]["autoattack"]["samples"] == 40  # the audio AutoAttack by default, on the evaluated clips


def test_smoothing_certifies_waveform_radii_as_snr(speech_run):
    _, out = speech_run
    target = out.parent / "smoothing.json"
    args = ["certify", "--checkpoint", out, "--sigma", "0.001", "--n", "100", "--samples", "4", "--out", target]
    result = run(*args, "--batch-size", "50", "--no-attack-check")  # the attack check: test_certify_smoothing
    assert result.exit_code == 0, result.output
    written = json.loads(target.read_text())
    assert written["samples"] == 4 and len(written["snr_db"]) == 4
    from ssmdefense.workflows import load_test_data

    _, x, _, _ = load_test_data(sd.load(out / "best", device_type="cpu"), samples=4)
    norms = np.linalg.norm(x.reshape(4, -1).astype(np.float64), axis=1)  # (4,) each clip's L2 norm
    for radius, snr, norm in zip(written["radii"], written["snr_db"], norms, strict=True):
        assert (radius == 0) == (snr is None)  # an SNR for every certified radius: 20 log10(|x| / R) dB
        assert snr is None or snr == pytest.approx(20 * np.log10(norm / radius))
