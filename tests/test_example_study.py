"""examples/defense_study.py with several seeds: each seed is its own run and evaluation, and the row
holds their mean ± standard deviation."""

from __future__ import annotations

import json
import statistics
import sys
from functools import partial
from pathlib import Path

from click.testing import CliRunner

from ssmdefense.cli import cli

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
    printed = capsys.readouterr().out
    root = tmp_path / "defenses"
    (row,) = json.loads((root / "results.json").read_text())
    runs = [root / "none", root / "none-seed1"]  # seed 0: the single-seed layout
    assert row["seeds"] == [0, 1] and row["runs"] == [str(d) for d in runs]
    assert (runs[1] / "evaluation" / "report.json").is_file()
    reports = [json.loads((d / "report.json").read_text())["best"] for d in runs]
    evaluations = [json.loads((d / "evaluation" / "report.json").read_text())["best"] for d in runs]
    margins = [json.loads((d / "evaluation" / "independent-best.json").read_text())["independent"] for d in runs]
    for figure, values in [
        ("clean", [r["clean_accuracy"] for r in reports]),
        ("pgd-10", [r["robust_accuracy"]["pgd-10"] for r in reports]),
        ("autoattack", [e["worst_case"]["robust_accuracy"] for e in evaluations]),  # with PGD-10, same samples
        ("margin PGD", margins),
    ]:
        assert row["figures"][figure] == {"mean": statistics.fmean(values), "sd": statistics.stdev(values), "n": 2}
    assert reports[0]["clean_accuracy"] != reports[1]["clean_accuracy"]  # the seeds differ
    verdict = json.loads((runs[0] / "evaluation" / "report.json").read_text())["gradient_masking_suspected"]
    assert row["figures"]["masking?"] == [{True: "yes", False: "no"}[verdict], "not run"]  # the checks: seed 0
    study = table_cells(printed)
    assert " ± " in study[-1][study[0].index("clean")]
    # the study's table is ssmdefense compare's over the same runs, with the study's columns after it
    result = CliRunner().invoke(cli, ["compare", *map(str, runs), "--html", str(tmp_path / "cli.html")])
    assert result.exit_code == 0, result.output
    compared = table_cells(result.output)
    assert compared[1:] and [r[: len(compared[0])] for r in study] == compared
    assert study[0][len(compared[0]) :] == [c.header for c in defense_study.COLUMNS]
    page = (root / "compare.html").read_text()
    assert all(cell in page for cell in study[-1])  # compare.html over the part's rows


def table_cells(output: str) -> list[list[str]]:
    """The cells of the last Markdown table in ``output``: its header, then its rows."""
    lines = output.splitlines()
    rule = max(i for i, line in enumerate(lines) if line.startswith("|---"))
    table = [lines[rule - 1]] + [line for line in lines[rule + 1 :] if line.startswith("| ")]
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in table]


def test_audio_study_runs_the_checks_on_the_seeds_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSMDEFENSE_CACHE_DIR", str(tmp_path / "cache"))  # never the user's cache
    # one thread (an audio run takes every core up to 4 by default): on the 2 cores of the test machine,
    # shared with another worker, more threads only wait; the thread default is test_cli_audio's subject
    monkeypatch.setattr("ssmdefense.workflows.common.available_cores", lambda: 1)
    # the independent margin PGD with 10 steps from 1 start instead of 50 from 5 (in both balls, a third
    # of this test's cost at full strength): its figures are only carried into the row here; what the
    # attack finds is the subject of test_example_independent_pgd and test_example_audio_checks
    monkeypatch.setattr(audio_study, "independent_check", partial(audio_study.independent_check, steps=10, restarts=1))
    args = ["--only", "lstm", "--defenses", "none", "--seeds", "0,1", "-D", 'accents=["en-us"]', "--epochs", "1"]
    args += ["--eval-samples", "4", "--samples", "4", "--checks", "--check-seeds", "0", "--root", str(tmp_path)]
    assert audio_study.main(args) == 0
    (row,) = json.loads((tmp_path / "results.json").read_text())
    seed0, seed1 = map(Path, row["runs"])
    evaluations = [json.loads((d / "evaluation" / "report.json").read_text()) for d in (seed0, seed1)]
    # the checks ran on seed 0 (their verdicts in its evaluation, the row's flag read from them) ...
    sanity = evaluations[0]["best"]["sanity"]
    assert {c["name"] for c in sanity["checks"]} >= {"loss_rises", "large_eps_breaks"}
    assert any(isinstance(c["passed"], bool) for c in sanity["checks"])
    assert isinstance(evaluations[0]["gradient_masking_suspected"], bool)
    assert evaluations[0]["gradient_masking_suspected"] is sanity["gradient_masking_suspected"]
    assert row["figures"]["masking?"] == [{True: "yes", False: "no"}[sanity["gradient_masking_suspected"]], "not run"]
    assert "sanity" not in evaluations[1]["best"]  # ... and not on seed 1
    pgd = [json.loads((d / "report.json").read_text())["best"]["robust_accuracy"]["pgd-10"] for d in (seed0, seed1)]
    assert row["figures"]["pgd-10"]["mean"] == statistics.fmean(pgd) and row["seeds"] == [0, 1]
    snr = [evaluations[i]["best"]["audio"]["snr_curve"][1] for i in (0, 1)]
    assert snr[0]["snr_db"] == 30 and row["figures"]["snr-pgd 30 dB"]["mean"] == statistics.fmean(
        [p["accuracy"] for p in snr]
    )
    assert row["label"]["model"] == "lstm" and (tmp_path / "compare.html").is_file()
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
