"""examples/defense_study.py with several seeds: each seed is its own run and evaluation, and the row
holds their mean ± standard deviation."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
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
