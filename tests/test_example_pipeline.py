"""``examples/art_pipeline.py --quick`` runs end to end: an SSMClassifier through ART's PGD,
AutoAttack, SpatialTransformation and AdversarialTrainerMadryPGD, and Foolbox's SpatialAttack."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "art_pipeline.py"
ATTACKS = ("art-pgd", "art-autoattack", "art-spatial-transformation", "foolbox-spatial-attack")
# attack  model  n  accuracy  seconds
ROW = re.compile(r"^(clean|[a-z][a-z-]+)\s+(standard|art-madry-pgd-at)\s+(\d+)\s+(\d\.\d{3})\s+(\d+\.\d)$")


def test_art_pipeline_quick_runs_and_reports_accuracy_per_attack():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    rows = {
        (m[1], m[2]): (int(m[3]), float(m[4])) for line in proc.stdout.splitlines() if (m := ROW.match(line.strip()))
    }
    for name in ATTACKS:
        assert (name, "standard") in rows, f"no accuracy row for {name}:\n{proc.stdout}"
    assert ("clean", "art-madry-pgd-at") in rows and ("art-pgd", "art-madry-pgd-at") in rows

    for (name, model), (n, acc) in rows.items():
        assert n > 0 and 0.0 <= acc <= 1.0, (name, model, n, acc)
    _, clean = rows[("clean", "standard")]
    assert clean > 0.3, f"the quickly trained model should beat chance clearly; clean accuracy {clean}"
    _, pgd = rows[("art-pgd", "standard")]
    assert pgd < clean, f"PGD accuracy {pgd} should fall below clean accuracy {clean}"
    assert rows[("art-pgd", "art-madry-pgd-at")][1] <= rows[("clean", "art-madry-pgd-at")][1]
