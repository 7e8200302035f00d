"""examples/independent_pgd.py: a margin-loss PGD written without ART or the toolkit's attacks stays in
its budget and, on an honest model, is at least as strong as the report's attacks (within noise)."""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from ssmdefense.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import independent_pgd  # noqa: E402


def test_independent_margin_pgd_on_a_run(tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--aa-samples",
        "0",
        "--dataset",
        "digits",
        "--epochs",
        "3",
        "--eval-samples",
        "120",
        "-q",
        "-p",
        "lr=0.01",
        "-m",
        "d_model=16",
        "-m",
        "n_layers=1",
        "-m",
        "d_state=8",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    found = independent_pgd.check(out, steps=20, restarts=2)
    assert found["samples"] == 120 and found["eps"] == 0.1
    assert found["largest_perturbation"] <= 0.1 + 1e-6
    assert found["independent"] <= found["report"]["fgsm"] + 0.02  # many steps beat one
    assert found["independent"] <= found["report_min"] + 0.03  # and the report's best attack, within noise
