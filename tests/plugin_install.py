"""Installing an example plugin package from ``plugins/`` the way a user would, for the tests.

``pip install --no-deps --target`` into a temporary directory (the venv is never touched); the CLI
then runs with that directory on PYTHONPATH (``run_cli``)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _venv_builds_wheels_offline() -> bool:
    """setuptools builds wheels by itself from 70.1 on; before that it needs the ``wheel`` package."""
    from packaging.version import Version

    try:
        import wheel  # noqa: F401

        return True
    except ImportError:
        return Version(importlib.metadata.version("setuptools")) >= Version("70.1")


def install(package: str, tmp: Path) -> Path:
    """``pip install --target`` of ``plugins/<package>``; returns the target (site) directory."""
    # Build from a copy: pip builds in-tree and would leave build/ and *.egg-info in the repository.
    src = tmp / "src"
    shutil.copytree(
        ROOT / "plugins" / package, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = tmp / "site"
    if _venv_builds_wheels_offline():
        isolation = ["--no-build-isolation"]  # offline: the venv's own setuptools builds the wheel
    else:
        # A venv made without `make venv` (setuptools < 70.1 and no `wheel`): let pip fetch a build
        # backend into an isolated environment from its configured index instead.
        isolation = []
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--disable-pip-version-check",
        *isolation,
        "--target",
        str(site),
        str(src),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip install of {package} failed:\n{proc.stdout}\n{proc.stderr}"
    return site


def run_cli(site: Path, *args: str, parse_json: bool = True, expect: int = 0):
    """``python -m ssmdefense *args`` with ``site`` on PYTHONPATH; its JSON output (or the process)."""
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    env.pop("SSMDEFENSE_LOAD_PLUGINS", None)  # load every installed plugin
    proc = subprocess.run(
        [sys.executable, "-m", "ssmdefense", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=site.parent,
        timeout=300,
    )
    assert proc.returncode == expect, f"ssmdefense {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    return json.loads(proc.stdout) if parse_json else proc
