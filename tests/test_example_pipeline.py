"""``examples/art_pipeline.py --quick`` runs end to end: an SSMClassifier through ART's PGD,
AutoAttack, SpatialTransformation and AdversarialTrainerMadryPGD, and Foolbox's SpatialAttack.
Its ``main`` is called in this process (a new interpreter would add seconds of imports)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import art_pipeline  # noqa: E402

ATTACKS = ("art-pgd", "art-autoattack", "art-spatial-transformation", "foolbox-spatial-attack")
# attack  model  n  accuracy  seconds
ROW = re.compile(r"^(clean|[a-z][a-z-]+)\s+(standard|art-madry-pgd-at)\s+(\d+)\s+(\d\.\d{3})\s+(\d+\.\d)$")


def test_art_pipeline_quick_runs_and_reports_accuracy_per_attack(capsys):
    assert art_pipeline.main(["--quick"]) == 0
    stdout = capsys.readouterr().out

    rows = {(m[1], m[2]): (int(m[3]), float(m[4])) for line in stdout.splitlines() if (m := ROW.match(line.strip()))}
    for name in ATTACKS:
        assert (name, "standard") in rows, f"no accuracy row for {name}:\n{stdout}"
    assert ("clean", "art-madry-pgd-at") in rows and ("art-pgd", "art-madry-pgd-at") in rows

    for (name, model), (n, acc) in rows.items():
        assert n > 0 and 0.0 <= acc <= 1.0, (name, model, n, acc)
    _, clean = rows[("clean", "standard")]
    assert clean > 0.3, f"the quickly trained model should beat chance clearly; clean accuracy {clean}"
    _, pgd = rows[("art-pgd", "standard")]
    assert pgd < clean, f"PGD accuracy {pgd} should fall below clean accuracy {clean}"
    assert rows[("art-pgd", "art-madry-pgd-at")][1] <= rows[("clean", "art-madry-pgd-at")][1]
