"""Distributed training under ``torchrun`` (DDP on gloo, two CPU processes) and training on lazily
loaded datasets.

- The global batches of N processes are exactly the batches of one process (``RankBatches``).
- ``fit`` on a ``torch.utils.data.Dataset`` gives the same history as ``fit`` on the same arrays.
- ``torchrun --nproc-per-node 2 -m ssmdefense defend`` writes one run directory whose metrics match
  a one-process run with the same global batch and seed within the tolerance docs/scale.md states
  (FreeAT draws no attack randomness, but other defenses do, per rank: equality is not promised).
- A rank killed with SIGKILL ends the run with one clear line and a kept run directory; ``--resume``
  under torchrun finishes it with the same metrics as an uninterrupted two-process run (FreeAT: its
  per-rank perturbation is resumed too).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ssmdefense as sd
from ssmdefense import distributed
from ssmdefense.errors import SSMDefenseError
from ssmdefense.seeding import seed_everything

# FreeAT, whose perturbation each rank carries from batch to batch (the killed-rank test resumes it):
# 4 epochs of 2 replays are 2 passes, one FGSM step per replay
ARGS = [
    "--defense",
    "free-at",
    "--dataset",
    "digits",
    "--epochs",
    "4",
    "--device",
    "cpu",
    "--aa-samples",
    "0",
    "--eval-samples",
    "100",
    "-q",
    "-p",
    "replays=2",
    "-p",
    "lr=0.005",
    "-m",
    "d_model=16",
    "-m",
    "n_layers=1",
    "-m",
    "d_state=8",
]
# docs/scale.md: the tolerance between N processes and one with the same global batch and seed
LOSS_TOLERANCE = 0.02  # relative, per epoch's training loss
ACCURACY_TOLERANCE = 0.05  # absolute, per epoch's clean and PGD accuracy on 100 samples


def _env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def torchrun(out: Path, *extra: str, wait: bool = True):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "ssmdefense", "defend", *extra]
    if wait:
        return subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env(), cwd=out.parent)
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=out.parent
    )


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A one-process run (in this process: a new interpreter costs seconds of imports) and an
    uninterrupted two-process run of the same settings."""
    from click.testing import CliRunner

    from ssmdefense.cli import cli

    base = tmp_path_factory.mktemp("ddp")
    assert "WORLD_SIZE" not in os.environ  # one process, as the command line started alone
    one = CliRunner().invoke(cli, ["defend", *ARGS, "--out", str(base / "one")])
    assert one.exit_code == 0, one.output[-2000:]
    two = torchrun(base / "two", *ARGS, "--out", str(base / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    return base, two


# ---- the batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_global_batches_of_n_processes_are_the_batches_of_one(size):
    n, batch = 103, 10  # a last batch of 3: shared by up to 3 processes, skipped by 4
    data = torch.utils.data.TensorDataset(torch.arange(n))
    shuffle = torch.Generator().manual_seed(7)
    plain = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, generator=shuffle)
    expected = [b[0].tolist() for _ in range(2) for b in plain]  # two epochs of the one-process loop
    generators = [torch.Generator().manual_seed(7) for _ in range(size)]
    shares = [
        distributed.RankBatches(
            torch.utils.data.DataLoader(range(n), batch_size=batch, shuffle=True, generator=generators[rank]),
            distributed.World(rank, size),
            n,
            batch,
        )
        for rank in range(size)
    ]
    drawn = [[b for _ in range(2) for b in iter(s)] for s in shares]  # per rank, two epochs
    kept = [b for b in expected if len(b) >= size]
    assert all(len(d) == len(kept) == 2 * len(s) for d, s in zip(drawn, shares))
    for k, global_batch in enumerate(kept):
        parts = [drawn[rank][k] for rank in range(size)]
        assert sum(parts, []) == global_batch  # contiguous shares, in rank order
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert len(global_batch) == shares[0].global_sizes[k % len(shares[0])]
    assert len(expected) - len(kept) == (2 if size == 4 else 0)


def test_share_covers_every_item_once():
    for n in (0, 1, 5, 100, 101):
        for size in (1, 2, 3, 7):
            parts = [distributed.share(n, distributed.World(r, size)) for r in range(size)]
            assert [i for p in parts for i in range(p.start, p.stop)] == list(range(n))


# ---- lazy data in the loop -----------------------------------------------------------------------


class Decoded(torch.utils.data.Dataset):
    """Items made on demand from arrays, as a lazily loaded dataset yields them."""

    def __init__(self, x, y):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.reads += 1
        return torch.from_numpy(self.x[i].copy()), int(self.y[i])


def _trainer(data, defense="pgd-at", **params):
    seed_everything(0)
    clf = sd.SSMClassifier(
        sd.build_model("s4d", 8, 10, d_model=16, n_layers=1, d_state=8),
        input_shape=data.input_shape,
        nb_classes=10,
        sequence="rows",
        clip_values=(0.0, 1.0),
    )
    return sd.get_defense(defense, clf, eps=0.1, max_iter=2, eval_samples=64, verbose=False, **params)


def test_fit_on_a_lazy_dataset_equals_fit_on_arrays():
    data = sd.load_dataset("digits")
    x, y, xv, yv = data.x_train[:300], data.y_train[:300], data.x_test[:64], data.y_test[:64]
    on_arrays = _trainer(data).fit(x, y, validation_data=(xv, yv), nb_epochs=2)
    lazy = Decoded(x, y)
    on_lazy = _trainer(data).fit(lazy, None, validation_data=Decoded(xv, yv), nb_epochs=2)
    assert lazy.reads >= 2 * len(y)  # read item by item, every epoch
    for a, b in zip(on_arrays, on_lazy):
        for key in ("train_loss", "train_accuracy", "clean_accuracy", "robust_accuracy"):
            assert a[key] == b[key], key


def test_lazy_dataset_errors_are_clear():
    data = sd.load_dataset("digits")
    trainer = _trainer(data)
    with pytest.raises(SSMDefenseError, match="expects"):
        trainer.fit(Decoded(np.zeros((4, 1, 4, 4), np.float32), np.zeros(4, np.int64)), None, nb_epochs=1)
    with pytest.raises(SSMDefenseError, match="labels must lie in 0..9"):
        trainer.fit(Decoded(data.x_train[:8], np.full(8, 12)), None, nb_epochs=1)
    with pytest.raises(SSMDefenseError, match="carries its labels"):
        trainer.fit(Decoded(data.x_train[:8], data.y_train[:8]), data.y_train[:8], nb_epochs=1)


def test_bf16_autocast_trains_and_a_bad_precision_is_refused():
    data = sd.load_dataset("digits")
    x, y = data.x_train[:256], data.y_train[:256]
    fp32 = _trainer(data).fit(x, y, nb_epochs=1)
    bf16 = _trainer(data, precision="bf16").fit(x, y, nb_epochs=1)
    assert np.isfinite(bf16[0]["train_loss"]) and bf16[0]["train_loss"] < 2.6
    assert bf16[0]["train_loss"] != fp32[0]["train_loss"]  # the steps did run in bfloat16
    with pytest.raises(SSMDefenseError, match="precision must be one of fp32, bf16"):
        _trainer(data, precision="fp16")


# ---- torchrun --------------------------------------------------------------------------------------


def test_two_processes_match_one_process_and_rank_0_alone_writes(runs):
    base, two = runs
    assert "distributed: 2 processes (gloo), global batch 64" in two.stderr
    assert sorted(p.name for p in base.iterdir()) == ["one", "two"]  # no partial or lock files left
    config = json.loads((base / "two" / "config.json").read_text())
    assert config["processes"] == 2 and config["batch_size"] == 64
    report = json.loads((base / "two" / "report.json").read_text())
    assert report["timing"]["processes"] == 2 and len(report["timing"]["peak_memory_mb"]) == 2  # per pass
    for a, b in zip(metrics(base / "one"), metrics(base / "two"), strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) <= LOSS_TOLERANCE * a["train_loss"]
        assert abs(a["clean_accuracy"] - b["clean_accuracy"]) <= ACCURACY_TOLERANCE
        assert abs(a["robust_accuracy"]["pgd-10"] - b["robust_accuracy"]["pgd-10"]) <= ACCURACY_TOLERANCE
    one = json.loads((base / "one" / "report.json").read_text())
    assert abs(one["last"]["clean_accuracy"] - report["last"]["clean_accuracy"]) <= ACCURACY_TOLERANCE


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _rank_pid(agent: int, rank: int) -> int | None:
    for pid in _children(agent):
        try:
            env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


def kill_rank_1_then_resume(base: Path, out: Path, args: list[str]) -> str:
    """Start ``args`` under torchrun, SIGKILL rank 1 once epoch 1 is committed, then ``--resume`` the
    run; returns the interrupted run's stderr."""
    agent = torchrun(out, *args, "--out", str(out), wait=False)
    deadline = time.monotonic() + 300
    while not list(base.glob(f".{out.name}.partial-*/state.json")):  # epoch 1 finished and committed
        assert agent.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
        time.sleep(0.1)
    victim = _rank_pid(agent.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)  # mid-epoch 2 (or 3): a real kill, no cleanup
    _, stderr = agent.communicate(timeout=300)
    assert agent.returncode != 0
    assert not out.exists() and list(base.glob(f".{out.name}.partial-*"))
    resumed = torchrun(out, "--resume", str(out), "-q", "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(base.glob(f".{out.name}.partial-*"))
    assert json.loads((out / "report.json").read_text())["timing"]["resumed"] is True
    return stderr


def assert_same_metrics(a_run: Path, b_run: Path) -> None:
    for a, b in zip(metrics(a_run), metrics(b_run), strict=True):
        for key in ("train_loss", "train_accuracy", "clean_accuracy", "robust_accuracy"):
            assert a[key] == b[key], (a["epoch"], key)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the rank's process through /proc")
def test_a_killed_rank_stops_the_run_clearly_and_resume_gives_the_uninterrupted_run(runs, tmp_path):
    """Killed in the second pass and resumed: FreeAT's per-rank perturbation comes back too, so the
    result equals the module's uninterrupted two-process run."""
    base, _ = runs
    out = tmp_path / "killed"
    stderr = kill_rank_1_then_resume(tmp_path, out, ARGS)
    # rank 0 sees the lost peer in a collective, or torchrun's SIGTERM first: either way one line says
    # where the run stopped and how to continue it
    hint = f"continue with: torchrun --nproc-per-node 2 -m ssmdefense defend --resume {out}"
    assert hint in stderr, stderr[-3000:]
    line = next(line for line in stderr.splitlines() if hint in line)
    assert line.startswith(("another process of the distributed run stopped", "interrupted after epoch"))
    assert_same_metrics(out, base / "two")  # as if never interrupted
