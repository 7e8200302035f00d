"""The CUDA kernels under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which runs ``cuda.jit``
kernels on the CPU. The simulator must be switched on before Numba is imported, and this process has
already imported Numba for the CPU kernels, so the checks (``tests/cuda_checks_*.py``, named so
that the main run does not collect them) run in a pytest subprocess of their own."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = sorted(Path(__file__).parent.glob("cuda_checks_*.py"))


@pytest.mark.parametrize("check", CHECKS, ids=[c.stem for c in CHECKS])
def test_cuda_kernels_pass_their_checks_in_the_simulator(check):
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(check)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary  # none may skip


def test_there_are_simulator_checks_for_every_kernel():
    assert {c.stem for c in CHECKS} >= {
        "cuda_checks_selective_scan",
        "cuda_checks_diag_scan",
        "cuda_checks_logmel",
        "cuda_checks_stft",
    }
