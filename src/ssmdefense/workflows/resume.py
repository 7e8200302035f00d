"""Resuming: the ``RunConfig`` of an interrupted run (``--resume``: its settings from its config.json,
the conflicting ones refused), and the ``RunInterrupted`` a stopped run raises, carrying the epoch it
reached and the command that continues it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..distributed import World
from ..errors import OptionError, RankLost, RunInterrupted
from .common import interrupted_run
from .config import RunConfig


def resume_config(out: Path, command: str, given: tuple[str, ...] = (), **settings: Any) -> tuple[RunConfig, Path]:
    """The ``RunConfig`` of the interrupted run meant for ``out``, and the directory to continue in.
    ``given``: the settings the caller was also given; those the run takes from its config.json
    (``RunConfig`` fields marked ``resumed``, by field or option name, and ``out``) are refused.
    ``settings``: the other fields, for this process (device, threads, verbose, workers)."""
    resumed = {*RunConfig.names("resumed"), *RunConfig.options("resumed"), "out"}
    conflicting = [key for key in (*given, *settings) if key in resumed]
    if conflicting:
        drop = ", ".join("--" + key.replace("_", "-") for key in conflicting)
        raise OptionError("resume", "--resume", f"it takes the run's settings from its config.json; drop {drop}")
    out = Path(out)
    partial = interrupted_run(out)
    if partial is None:
        what = "it finished" if out.exists() else "no interrupted run was found"
        raise OptionError("resume", "--resume", f"nothing to resume for {out}: {what}")
    record = json.loads((partial / "config.json").read_text())
    if record["command"] != command:
        raise OptionError("resume", "--resume", f"{out} was started by `ssmdefense {record['command']}`")
    return RunConfig.from_record(record, out=out, command=command, **settings), partial


def interruption(config: RunConfig, out: Path, world: World, exc: BaseException) -> RunInterrupted | None:
    """The ``RunInterrupted`` for ``exc`` (Ctrl-C, a signal's ``SystemExit`` or ``RankLost``) when the
    run kept a resumable directory for ``out`` (rank 0, after at least one epoch), else None."""
    kept = interrupted_run(out) if world.main else None
    if kept is None or not (kept / "state.json").is_file():
        return None
    epoch = json.loads((kept / "state.json").read_text())["epoch"]
    launcher = f"torchrun --nproc-per-node {world.size} -m ssmdefense" if world.distributed else "ssmdefense"
    if isinstance(exc, RankLost):
        status, reason = 2, f"{exc}; "
    elif isinstance(exc, SystemExit):
        status, reason = exc.code if isinstance(exc.code, int) else 1, ""
    else:
        status, reason = 130, ""
    return RunInterrupted(epoch, kept, f"{launcher} {config.command} --resume {out}", status, reason)
