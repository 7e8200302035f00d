"""Runs that survive a real kill, and two processes on one ``--out``.

``ssmdefense defend`` runs in a process (``forked_cli``) that SIGKILLs itself at a chosen moment (mid-epoch, in the
middle of writing the resume state, during the final evaluation, after the best checkpoint's figures were
kept); ``defend --resume`` then finishes
it, and its report must hold the same metrics as an uninterrupted run with the same seed. A second
process given the same ``--out`` while the first is writing it is refused with one line."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from forked_cli import Launcher

ARGS = [
    "defend",
    "--defense",
    "pgd-at",
    "--aa-samples",
    "0",
    "--dataset",
    "digits",
    "--epochs",
    "2",  # every kill below lands in epoch 2 or after it
    "--eval-samples",
    "48",
    "-q",
    "-p",
    "max_iter=2",
    "-p",
    "lr=0.01",
    "-m",
    "d_model=8",
    "-m",
    "n_layers=1",
    "-m",
    "d_state=4",
]


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """Every run below is a real process, forked from a server that imported the CLI once."""
    return Launcher(tmp_path_factory.mktemp("logs"))


def metrics(run_dir) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    return {k: report[k] for k in ("best", "last", "gap")}


@pytest.fixture(scope="module")
def whole(launcher, tmp_path_factory):
    """An uninterrupted run, the report every resumed run must equal. While it holds the lock on its
    --out, it is stopped and a second process is given the same --out: that process's result is
    test_a_second_process_on_the_same_out_is_refused's subject (one run instead of two)."""
    root = tmp_path_factory.mktemp("whole")
    first = launcher.start(*ARGS, "--out", "run", cwd=root)
    try:
        lock = root / ".run.lock"
        while not (lock.exists() and lock.read_text().strip()):  # the first one holds the lock (its pid written)
            assert first.is_alive(), "the first run ended before it was checked"  # pytest-timeout bounds the wait
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # hold the first one mid-run, lock taken
        try:
            second = launcher.run(*ARGS, "--out", "run", cwd=root)
        finally:
            os.kill(first.pid, signal.SIGCONT)
    finally:
        finished = launcher.wait(first)
    assert finished.returncode == 0, finished.stderr  # the first finished untouched
    return {
        "metrics": metrics(root / "run"),
        "second": second,
        "report": json.loads((root / "run" / "report.json").read_text()),
    }


KILLS = {  # moment: (module, attribute, n-th call, kill before or after the call)
    "mid-epoch": ("ssmdefense.defenses.loop", "TrainingLoop.train_batch", 30, "before"),  # epoch 2 (21 batches each)
    "writing the resume state": (
        "ssmdefense.defenses.resume",
        "save_file",
        2,
        "after",
    ),  # epoch 2's tensors written, not committed
    "final evaluation": ("ssmdefense.workflows.train", "evaluate_robustness", 1, "before"),
    "after the best's evaluation": ("ssmdefense.workflows.train", "_write_atomically", 1, "after"),  # figures kept
}


@pytest.mark.parametrize("moment", list(KILLS))
def test_a_run_killed_at_any_moment_resumes_to_the_same_report(moment, whole, launcher, tmp_path):
    killed = launcher.run(*ARGS, "--out", "run", cwd=tmp_path, kill=KILLS[moment])
    assert killed.returncode == -9, killed.stderr  # SIGKILL
    assert not (tmp_path / "run").exists()
    (partial,) = tmp_path.glob(".run.partial-*")
    assert (partial / "state.json").is_file()
    resumed = launcher.run("defend", "--resume", "run", "-q", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics(tmp_path / "run") == whole["metrics"]
    if moment == "after the best's evaluation":  # its figures were kept, not computed again
        assert "the best checkpoint's evaluation (epoch 2) is kept from the interrupted run" in resumed.stderr
        assert "evaluating the best checkpoint" not in resumed.stderr
    assert not list(tmp_path.glob(".run.*"))  # the partial directory and the lock are gone


def test_a_second_process_on_the_same_out_is_refused(whole):
    """The second process started while the ``whole`` run held its --out (see the fixture)."""
    second = whole["second"]
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "is being written by another ssmdefense process" in lines[0], second.stderr
    assert whole["report"]["config"]["defense"] == "pgd-at"  # the first finished untouched
