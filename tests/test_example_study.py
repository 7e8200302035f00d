"""examples/defense_study.py with several seeds: each seed is its own run and evaluation, and the row
holds their mean ± standard deviation."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import audio_study  # noqa: E402
import defense_study  # noqa: E402


def test_two_seeds_give_mean_and_sd(tmp_path, capsys):
    args = [
        "--part",
        "defenses",
        "--only",
        "none",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--seeds",
        "0,1",
        "--check-seeds",
        "0",  # the gradient-masking checks (half this test's cost per seed) on one seed: not the subject here
        "--eval-samples",
        "16",
        "--aa-samples",
        "16",
        "--autoattack",
        "max_iter=5",
        "--autoattack",
        "n_queries=20",
        "--root",
        str(tmp_path),
    ]
    assert defense_study.main(args) == 0
    (row,) = json.loads((tmp_path / "defenses" / "results.json").read_text())
    assert row["seeds"] == [0, 1] and [r["seed"] for r in row["runs"]] == [0, 1]
    assert (tmp_path / "defenses" / "none" / "report.json").is_file()  # seed 0: the single-seed layout
    assert (tmp_path / "defenses" / "none-seed1" / "evaluation" / "report.json").is_file()
    for m in ("ca", "ra", "aa", "independent"):
        values = [r["best"][m] for r in row["runs"]]
        assert row["best"][m] == statistics.fmean(values) and row["best"][f"{m}_sd"] == statistics.stdev(values)
    assert row["runs"][0]["best"]["ca"] != row["runs"][1]["best"]["ca"]  # the seeds differ
    assert " ± " in capsys.readouterr().out.splitlines()[-1]


def test_audio_study_runs_the_checks_on_the_seeds_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSMDEFENSE_CACHE_DIR", str(tmp_path / "cache"))  # never the user's cache
    # one thread (an audio run takes every core up to 4 by default): on the 2 cores of the test machine,
    # shared with another worker, more threads only wait; the thread default is test_cli_audio's subject
    monkeypatch.setattr("ssmdefense.workflows.common.available_cores", lambda: 1)
    args = ["--only", "lstm", "--defenses", "none", "--seeds", "0,1", "-D", 'accents=["en-us"]', "--epochs", "1"]
    args += ["--eval-samples", "4", "--samples", "4", "--checks", "--check-seeds", "0", "--root", str(tmp_path)]
    assert audio_study.main(args) == 0
    (row,) = json.loads((tmp_path / "results.json").read_text())
    seed0, seed1 = row["runs"]
    # the checks ran on seed 0 (their verdicts in its evaluation, the row's flag read from them) ...
    sanity = json.loads((Path(seed0["dir"]) / "evaluation" / "report.json").read_text())["best"]["sanity"]
    assert {c["name"] for c in sanity["checks"]} >= {"loss_rises", "large_eps_breaks"}
    assert any(isinstance(c["passed"], bool) for c in sanity["checks"])
    assert seed0["masking_suspected"] is sanity["gradient_masking_suspected"]
    assert isinstance(seed0["masking_suspected"], bool)
    assert seed1["masking_suspected"] is None  # ... and not on seed 1
    assert "sanity" not in json.loads((Path(seed1["dir"]) / "evaluation" / "report.json").read_text())["best"]
    assert row["ra"] == statistics.fmean([seed0["ra"], seed1["ra"]])
    commands = (tmp_path / "commands.txt").read_text()
    assert (
        commands.count("-D 'accents=[\"en-us\"]' --epochs 1 --eval-samples 4") == 2
        and commands.count("--no-checks") == 1
    )
    assert " ± " in capsys.readouterr().out.splitlines()[-1]


def test_a_study_run_in_parts_keeps_every_part_in_its_results(tmp_path):
    from study_common import save_rows

    path = tmp_path / "results.json"
    save_rows(
        path,
        [{"model": "s4d", "defense": "none", "ra": 0.1}, {"model": "s4d", "defense": "ads", "ra": 0.4}],
        ("model", "defense"),
    )
    merged = save_rows(
        path,
        [{"model": "lstm", "defense": "none", "ra": 0.2}, {"model": "s4d", "defense": "ads", "ra": 0.5}],
        ("model", "defense"),
    )
    assert json.loads(path.read_text()) == merged
    assert [(r["model"], r["defense"], r["ra"]) for r in merged] == [
        ("s4d", "none", 0.1),  # an earlier call's row is kept ...
        ("lstm", "none", 0.2),
        ("s4d", "ads", 0.5),  # ... and a row measured again replaces its old one
    ]
