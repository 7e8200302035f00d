"""Progress of long work, one convention for every command and the library (docs/cli.md, "Progress").

Work that can take more than a few seconds runs as a named *phase* (``with phase("AutoAttack apgd-ce",
total=100, unit="samples") as p: ... p.update(); p.done(f"{n} robust")``), which the mode shows:

- ``bars`` (stderr is a terminal): a live tqdm bar per phase, replaced by its line when it ends;
- ``lines`` (``-q``, or stderr is not a terminal: a log file, a pipe, CI): no bars; the phase's line
  when it ends (``AutoAttack apgd-ce: 100 samples, 61 robust, 42.1 s``), and, while one runs on, a
  line every ``HEARTBEAT`` seconds of silence saying which phase and how far (``... 40/100 samples,
  16 s``), so no phase is silent for long;
- ``off``: nothing (``set_mode("off")``); processes of a distributed run other than rank 0 are off.

The mode is ``auto`` (bars on a terminal, else lines) unless ``set_mode`` or ``using`` chose one; the
command line's ``-q`` chooses ``lines``. ``say`` prints any other status line the same way.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

MODES = ("auto", "bars", "lines", "off")
HEARTBEAT = 6.0  # seconds of silence before a running phase says where it is (lines mode) ...
SETTLE = 3.0  # ... once it has run this long (a short phase, or one an error ends at once, says nothing)
_setting = {"mode": "auto", "prefix": ""}
_active: list[Phase] = []  # the running phases, innermost last
_lock = threading.RLock()
_clock = {"last": time.monotonic(), "thread": None}


def set_mode(mode: str) -> None:
    """Choose how phases show (module docstring); ``ValueError`` for another name."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}; got {mode!r}")
    _setting["mode"] = mode


def in_worker_process() -> None:
    """Call first in a pool's worker process: tqdm's lock for its writes becomes a thread lock. Else
    tqdm creates a multiprocessing lock, a named semaphore that the parent's resource tracker reports
    at exit as leaked ("There appear to be 1 leaked semaphore objects") when the pool ends the worker
    without its finalizers (``Pool.terminate``)."""
    tqdm.set_lock(threading.RLock())


@contextlib.contextmanager
def using(mode: str) -> Iterator[None]:
    """Run a block in ``mode``, then restore the previous one."""
    previous = _setting["mode"]
    set_mode(mode)
    try:
        yield
    finally:
        _setting["mode"] = previous


@contextlib.contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Run a block with every line it prints starting with ``prefix`` (a second process's lines
    beside the first's: ``[last] AutoAttack apgd-ce: ...``)."""
    previous = _setting["prefix"]
    _setting["prefix"] = previous + prefix
    try:
        yield
    finally:
        _setting["prefix"] = previous


@contextlib.contextmanager
def without_bars() -> Iterator[None]:
    """Run a block with lines where there would be bars (``-q``); other modes stay as they are."""
    with using("lines") if mode() == "bars" else contextlib.nullcontext():
        yield


def active() -> bool:
    """Whether a phase is running: a library call inside one is part of a command's reported work."""
    return bool(_active)


def mode() -> str:
    """The mode in effect: "bars", "lines" or "off" (``auto`` resolved against stderr)."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return "off"
    chosen = _setting["mode"]
    if chosen != "auto":
        return chosen
    return "bars" if getattr(sys.stderr, "isatty", lambda: False)() else "lines"


def say(line: str) -> None:
    """Print a status line on stderr (between the bars of a terminal), unless the mode is off."""
    if mode() == "off":
        return
    with _lock:
        tqdm.write(_setting["prefix"] + line, file=sys.stderr)
        sys.stderr.flush()
        _clock["last"] = time.monotonic()


class Phase:
    """A running phase: ``update(n)`` counts done units, ``status(text)`` says what it does now (shown
    on its bar and in its heartbeat lines), ``done(text)`` is what its closing line reports."""

    def __init__(self, what: str, total: int | None, unit: str, shown: str):
        self.what, self.total, self.unit, self.count, self.now, self.result = what, total, unit, 0, "", None
        self.start = time.monotonic()
        disable = shown != "bars"
        self.bar = tqdm(total=total, desc=what, unit=f" {unit}" if unit else "it", leave=False, disable=disable)

    def update(self, n: int = 1) -> None:
        self.count += n
        self.bar.update(n)

    def status(self, text: str) -> None:
        self.now = text
        self.bar.set_postfix_str(text, refresh=False)

    def done(self, text: str) -> None:
        self.result = text

    def progress(self) -> str:
        """How far it is: "40/100 samples", and what it does now."""
        count = f"{self.count}/{self.total} {self.unit}".strip() if self.total else ""
        return ", ".join(part for part in (count, self.now) if part)

    def seconds(self) -> float:
        return time.monotonic() - self.start


@contextlib.contextmanager
def phase(what: str, total: int | None = None, unit: str = "", *, line: bool = True) -> Iterator[Phase]:
    """A named phase of long work (module docstring). Its closing line, unless ``line`` is False (a
    caller that prints its own), is ``what: <done text, else the count>, <seconds> s``; none when it
    fails (the error says what happened)."""
    shown = mode()
    p = Phase(what, total, unit, shown)
    with _lock:
        _active.append(p)
    _watch()
    try:
        yield p
    finally:
        with _lock:
            _active.remove(p)
        p.bar.close()
    if line and shown != "off":
        say(f"{what}: {', '.join(x for x in (p.result or p.progress(), f'{p.seconds():.1f} s') if x)}")


def track(items: Iterable, what: str, total: int | None = None, unit: str = "", *, line: bool = True) -> Iterator:
    """``items`` one by one, as a phase that counts them."""
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    with phase(what, total, unit, line=line) as p:
        for item in items:
            yield item
            p.update()


def status(text: str) -> None:
    """What the innermost running phase does now (``Phase.status``); nothing outside a phase."""
    with _lock:
        if _active:
            _active[-1].status(text)


def _watch() -> None:
    """Start, once, the thread that keeps running phases visible: in lines mode a line for the innermost
    phase after ``HEARTBEAT`` seconds of silence; on a terminal, the bars' elapsed time."""
    with _lock:
        if _clock["thread"] is None:
            _clock["thread"] = threading.Thread(target=_heartbeat, name="ssmdefense-progress", daemon=True)
            _clock["thread"].start()


def _heartbeat() -> None:
    while True:
        time.sleep(0.5)
        with _lock:
            if not _active:
                continue
            inner, shown = _active[-1], mode()
            if shown == "bars":
                inner.bar.refresh()
            elif shown == "lines" and time.monotonic() - _clock["last"] >= HEARTBEAT and inner.seconds() >= SETTLE:
                say(f"{inner.what}: {', '.join(x for x in (inner.progress(), f'{inner.seconds():.0f} s') if x)} ...")
