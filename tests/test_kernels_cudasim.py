"""The CUDA kernels under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which runs ``cuda.jit``
kernels on the CPU. The simulator must be switched on before Numba is imported, and this process has
already imported Numba for the CPU kernels, so the checks (``tests/cuda_checks_*.py``, named so
that the main run does not collect them) run in a pytest subprocess of their own: one for all the
files (each interpreter spends seconds importing torch and Numba), whose JUnit report says how each
file's checks ended."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

CHECKS = sorted(Path(__file__).parent.glob("cuda_checks_*.py"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """{file stem: Counter of outcomes ("passed", "failed", "error", "skipped")} of one simulator run."""
    report = tmp_path_factory.mktemp("cudasim") / "junit.xml"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *map(str, CHECKS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert report.is_file(), proc.stdout[-4000:] + proc.stderr[-2000:]
    found: dict[str, Counter] = {}
    for case in ET.parse(report).iter("testcase"):
        stem = next((part for part in case.get("classname", "").split(".") if part.startswith("cuda_checks_")), "?")
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kinds[0]] if kinds else "passed"
        found.setdefault(stem, Counter())[outcome] += 1
    return found, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("check", CHECKS, ids=[c.stem for c in CHECKS])
def test_cuda_kernels_pass_their_checks_in_the_simulator(outcomes, check):
    found, output = outcomes
    counts = found.get(check.stem, Counter())
    assert counts["passed"] > 0, output  # the file's checks ran ...
    assert set(counts) == {"passed"}, (counts, output)  # ... and every one passed: none failed or skipped


def test_there_are_simulator_checks_for_every_kernel():
    assert {c.stem for c in CHECKS} >= {
        "cuda_checks_selective_scan",
        "cuda_checks_diag_scan",
        "cuda_checks_logmel",
        "cuda_checks_stft",
    }
