"""The audio checks of the examples on one tiny spoken-digits run: examples/independent_pgd.py
attacks it in the L-inf and the SNR ball (plain torch) and never finds more than the report's audio
AutoAttack, within noise; examples/thesis_audio.py's scoring variants behave as their definitions say."""

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssmdefense.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import independent_pgd  # noqa: E402
import thesis_audio  # noqa: E402


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    """PGD-AT on spoken-digits' en-us voices (40 training clips, 10 validation, 10 test), 2 epochs."""
    root = tmp_path_factory.mktemp("audio-checks")
    out = root / "run"
    args = ["defend", "--defense", "pgd-at", "--dataset", "spoken-digits", "-D", 'accents=["en-us"]']
    args += ["-D", "rates=[180]", "-D", "pitches=[35]", "-D", f"cache_dir={root / 'cache'}", "--epochs", "2"]
    args += ["--aa-samples", "8", "-q", "--threads", "1", "-p", "lr=0.01", "-p", "max_iter=3"]
    args += ["-m", "d_model=16", "-m", "n_layers=1", "-m", "d_state=8", "--eps", "0.003", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


def test_the_independent_check_attacks_both_balls_and_finds_no_more_than_the_report(audio_run):
    found = independent_pgd.check(audio_run, steps=20, restarts=2)
    report = json.loads((audio_run / "report.json").read_text())
    aa = report["best"]["autoattack"]
    assert found["samples"] == aa["samples"] == 8 and found["snr_db"] == aa["snr_db"] == 30.0
    assert found["largest_perturbation"] <= 0.003 + 1e-6 and found["largest_snr_ratio"] <= 1 + 1e-6
    assert found["independent"] <= min(found["independent_linf"], found["independent_snr"])  # either ball breaks
    assert found["aa"] == aa["worst_case"] and found["aa_linf"] == aa["linf_worst_case"]
    assert found["gap_aa"] <= 0.125 and found["gap_aa_linf"] <= 0.125  # at most 1 of the 8 clips


def test_the_thesis_scoring_variants(audio_run):
    p = thesis_audio.protocols(audio_run, eps=0.003, samples=8, seed=0)
    assert set(p) == {
        "clean",
        "pgd",
        "pgd_given_correct",
        "pgd_predicted_labels",
        "fgsm_true_labels",
        "fgsm_predicted_labels",
        "pgd_detached_front_end",
        "noise",
    }
    assert p["pgd"] <= p["clean"] and p["fgsm_true_labels"] <= p["clean"]
    assert p["clean"] > 0  # the run learned something, so the conditional figure exists
    assert p["pgd_given_correct"] <= p["pgd"] / p["clean"] + 1e-9  # robust and correct, over the correct ones
    # with every input gradient 0, PGD only moves to its random start: noise in the eps-ball
    assert abs(p["pgd_detached_front_end"] - p["noise"]) <= 0.25
