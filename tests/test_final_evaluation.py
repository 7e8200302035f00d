"""The final evaluation of a run's best and last checkpoints: in one process or, when the AutoAttack is
long, in two: the last checkpoint beside the best one when they differ, and when they are one
checkpoint its curve beside its AutoAttack. The figures are the same either way."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import ssmdefense as sd
import ssmdefense.workflows.train as train


def checkpoints(trained, digits, tmp_path, same: bool = False):
    """A run's folder with two different checkpoints: ``best`` (the session's trained S4D, "epoch 10")
    and ``last`` (a copy trained one epoch more on part of the data, "epoch 11"); with ``same``, both
    the session's S4D at "epoch 10" (the best epoch was the last)."""
    sd.save(trained, tmp_path / "best", extra={"dataset": "digits", "epoch": 10})
    if same:
        sd.save(trained, tmp_path / "last", extra={"dataset": "digits", "epoch": 10})
        return tmp_path
    more = sd.load(tmp_path / "best", device_type="cpu")
    sd.get_defense("none", more, lr=1e-2, verbose=False).fit(digits.x_train[:256], digits.y_train[:256], nb_epochs=1)
    sd.save(more, tmp_path / "last", extra={"dataset": "digits", "epoch": 11})
    return tmp_path


def measured_removed(value):
    """``value`` without what is measured rather than computed: every "seconds" entry."""
    if isinstance(value, dict):
        return {k: measured_removed(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [measured_removed(v) for v in value]
    return value


def evaluate(folder, digits, monkeypatch, second_process: bool) -> dict:
    monkeypatch.setattr(train, "PARALLEL_AA_SAMPLES", 1 if second_process else 10**9)
    monkeypatch.setattr(train, "available_cores", lambda: 2 * torch.get_num_threads())
    run = SimpleNamespace(seed=0, aa_snr_db=30.0, defense="none")
    setup = SimpleNamespace(eps=0.1, aa_samples=6)
    x, y = digits.x_test[:40], digits.y_test[:40]
    return train._evaluate_best_and_last(run, setup, folder, "cpu", x, y)


def test_a_second_process_gives_the_figures_of_one_process(trained, digits, tmp_path, monkeypatch, capfd):
    folder = checkpoints(trained, digits, tmp_path)
    alone = evaluate(folder, digits, monkeypatch, second_process=False)
    assert "[last]" not in capfd.readouterr().err
    beside = evaluate(folder, digits, monkeypatch, second_process=True)
    err = capfd.readouterr().err  # the second process writes to the same stderr, each line marked
    assert "evaluating the last checkpoint in a second process, beside the best one" in err
    assert "[last] evaluating the last checkpoint" in err and "[last] AutoAttack" in err
    assert "[best]" not in err and "\nevaluating the best checkpoint" in err
    assert measured_removed(beside) == measured_removed(alone)  # every figure, AutoAttack's included
    assert (alone["best"]["epoch"], alone["last"]["epoch"]) == (10, 11)
    assert alone["best"] != alone["last"]  # two different checkpoints ...
    assert 0 < alone["best"]["robust_accuracy"]["pgd-10"] < alone["best"]["clean_accuracy"]  # ... real figures
    assert not (folder / train.FINAL_EVALUATION).exists()


def test_one_checkpoint_evaluates_its_curve_beside_its_autoattack(trained, digits, tmp_path, monkeypatch, capfd):
    folder = checkpoints(trained, digits, tmp_path, same=True)
    alone = evaluate(folder, digits, monkeypatch, second_process=False)
    assert "[best]" not in capfd.readouterr().err
    beside = evaluate(folder, digits, monkeypatch, second_process=True)
    err = capfd.readouterr().err
    assert "evaluating the best checkpoint's curve in a second process, beside its AutoAttack" in err
    assert "[best] evaluating the best checkpoint" in err and "[best] AutoAttack" not in err  # the curve there ...
    assert "\nAutoAttack" in err  # ... the AutoAttack here
    assert measured_removed(beside) == measured_removed(alone)
    assert list(beside["best"]) == list(alone["best"])  # the same keys in the same order
    assert alone["best"] == alone["last"] and "autoattack" in alone["best"]
    assert not (folder / train.FINAL_EVALUATION).exists()


def test_a_run_whose_threads_fill_the_cores_evaluates_on_half_of_them_in_each_process(
    trained, digits, tmp_path, monkeypatch, capfd
):
    """An audio run's 2 threads on 2 cores: best and last side by side on 1 thread each, this
    process's threads put back after, and every figure as one process on 2 threads gives."""
    folder = checkpoints(trained, digits, tmp_path)
    torch.set_num_threads(2)  # the conftest fixture puts 1 back
    monkeypatch.setattr(train, "PARALLEL_AA_SAMPLES", 10**9)
    alone = evaluate(folder, digits, monkeypatch, second_process=False)
    seen = []
    original = train._evaluate_checkpoint
    monkeypatch.setattr(train, "_evaluate_checkpoint", lambda *a: seen.append(torch.get_num_threads()) or original(*a))
    monkeypatch.setattr(train, "PARALLEL_AA_SAMPLES", 1)
    monkeypatch.setattr(train, "available_cores", lambda: 2)
    setup = SimpleNamespace(eps=0.1, aa_samples=6)
    run = SimpleNamespace(seed=0, aa_snr_db=30.0, defense="none")
    beside = train._evaluate_best_and_last(run, setup, folder, "cpu", digits.x_test[:40], digits.y_test[:40])
    assert "evaluating the last checkpoint in a second process, beside the best one" in capfd.readouterr().err
    assert seen == [1] and torch.get_num_threads() == 2
    assert measured_removed(beside) == measured_removed(alone)


def test_threads_of_each_final_evaluation_process(monkeypatch):
    setup = SimpleNamespace(aa_samples=100)
    cases = {(1, 2): 1, (2, 2): 1, (2, 4): 2, (4, 4): 2, (3, 2): 1, (1, 1): None, (4, 16): 4}
    for (threads, cores), each in cases.items():
        torch.set_num_threads(threads)
        monkeypatch.setattr(train, "available_cores", lambda cores=cores: cores)
        assert train._second_process_threads(setup, "cpu") == each, (threads, cores)
    assert train._second_process_threads(setup, "gpu") is None
    assert train._second_process_threads(SimpleNamespace(aa_samples=None), "cpu") is None


WORKER = """
import os, time
from ssmdefense.workflows.train import end_with_parent

def evaluate_forever(pid_file):
    end_with_parent()
    open(pid_file, "w").write(str(os.getpid()))
    time.sleep(600)
"""

PARENT = """
import multiprocessing, sys, time
import worker
if __name__ == "__main__":
    pool = multiprocessing.get_context("spawn").Pool(1)
    pool.apply_async(worker.evaluate_forever, (sys.argv[1],))
    time.sleep(600)
"""


def test_the_second_process_ends_when_its_run_is_killed(tmp_path):
    """A run SIGKILLed while its second process evaluates leaves nothing computing: the worker
    (spawned as the run spawns it, watching its parent with ``end_with_parent``) ends within seconds."""
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "parent.py").write_text(PARENT)
    pid_file = tmp_path / "worker.pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(pid_file)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text()):
            assert parent.poll() is None and time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        for _ in range(100):  # up to 10 s; the watch looks every second
            if not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]:
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            raise AssertionError("the worker kept running after its parent was killed")
    finally:
        if parent.poll() is None:
            parent.kill()


BESIDE = """
import multiprocessing, sys
from pathlib import Path
import numpy as np
import ssmdefense.workflows.train as train
from ssmdefense.api import load_dataset_as_is
if __name__ == "__main__":
    data = load_dataset_as_is("digits")
    task = train._FinalEvaluation(0.1, 0, None, 30.0, False)
    args = (Path(sys.argv[1]), "cpu", 1, "lines", "last", task, data.x_test[:20], data.y_test[:20])
    pool = multiprocessing.get_context("spawn").Pool(1)
    print(pool.apply_async(train._evaluate_saved, args).get()["clean_accuracy"])
    pool.terminate()  # as the run ends its pool
    pool.join()
"""


def test_the_second_process_leaves_no_leaked_semaphore_warning(trained, tmp_path):
    """The run's second process, ended as the run ends it, leaves no "leaked semaphore objects"
    warning at the run's exit (tqdm's lock for the worker's lines was a multiprocessing one)."""
    sd.save(trained, tmp_path / "last", extra={"dataset": "digits", "epoch": 10})
    (tmp_path / "beside.py").write_text(BESIDE)
    out = subprocess.run(
        [sys.executable, str(tmp_path / "beside.py"), str(tmp_path / "last")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "[last] evaluating the last checkpoint" in out.stderr and 0.5 < float(out.stdout) <= 1.0
    assert "leaked" not in out.stderr and "resource_tracker" not in out.stderr, out.stderr
