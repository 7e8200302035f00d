"""``ssmdefense`` command lines run in real processes forked from a server that has imported the CLI
and its heavy libraries once (torch, ART, torch._dynamo, matplotlib): each process is new, can be
SIGKILLed or SIGSTOPped like any other, and starts in a fraction of a second instead of the ~8 s a
fresh interpreter spends importing (multiprocessing's forkserver; the server never trains, so no
thread pool is forked)."""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

PRELOAD = ["ssmdefense.cli", "ssmdefense.workflows.train", "torch._dynamo", "matplotlib.pyplot"]


@dataclass
class Finished:
    returncode: int  # -9: SIGKILLed
    stdout: str
    stderr: str


def _main(args: list[str], cwd: str, out: str, err: str, kill: tuple | None) -> None:
    """The child: stdout/stderr to files, ``kill`` installed, then ``ssmdefense *args`` in ``cwd``."""
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    os.chdir(cwd)
    os.environ["OMP_NUM_THREADS"] = "1"
    if kill is not None:
        _install_killer(*kill)
    from ssmdefense.cli import main

    sys.argv = ["ssmdefense", *args]
    main()  # exits through SystemExit: multiprocessing makes its code the process's exit status


def _install_killer(module_name: str, attribute: str, nth: int, when: str) -> None:
    """Replace ``module_name.attribute`` by a function that SIGKILLs this process on its ``nth`` call,
    before calling through or (``when="after"``) after: a real kill, no cleanup, no Python exception."""
    owner_name, _, member = attribute.rpartition(".")
    owner = importlib.import_module(module_name)
    if owner_name:
        owner = getattr(owner, owner_name)
    original, calls = getattr(owner, member), [0]

    def killer(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, member, killer)


class Launcher:
    """Starts ``ssmdefense`` command lines as forked processes (``start``) and waits for them (``wait``)."""

    def __init__(self, logs: Path):
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.logs, self.count = logs, 0

    def start(self, *args: str, cwd: Path, kill: tuple | None = None):
        self.count += 1
        out, err = self.logs / f"{self.count}.out", self.logs / f"{self.count}.err"
        process = self.context.Process(target=_main, args=([str(a) for a in args], str(cwd), str(out), str(err), kill))
        process.start()
        process.logs = (out, err)
        return process

    @staticmethod
    def wait(process, timeout: float = 600) -> Finished:
        process.join(timeout)
        assert process.exitcode is not None, "the process did not finish in time"
        out, err = process.logs
        return Finished(process.exitcode, out.read_text(), err.read_text())

    def run(self, *args: str, cwd: Path, kill: tuple | None = None) -> Finished:
        return self.wait(self.start(*args, cwd=cwd, kill=kill))
