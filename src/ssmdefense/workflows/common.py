"""What a run needs besides the model and the defense, without the command line: the data (with a
folder and parameters), the device and thread count, how ``-m`` parameters split between the sequence
mode and the model, and the staged run directory (built under a temporary name, moved into place only
when complete, kept for ``--resume`` when interrupted). A bad setting is an ``OptionError``, which the
CLI shows as one line and exit status 2.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..api import load_dataset, load_dataset_as_is
from ..errors import OptionError, RankLost, TrainingDiverged
from ..plugins import registry

if TYPE_CHECKING:
    from ..data.base import Dataset, LazyDataset


def load_data(
    name: str, data_dir: Path | None = None, params: dict | None = None, *, carve: bool = True
) -> Dataset | LazyDataset:
    """Load dataset ``name`` with ``--data-dir`` (as ``root=``) and ``-D`` parameters; with its
    validation split (``sd.load_dataset``), or, ``carve=False``, none carved from its training data
    (``--select-on test``)."""

    params = dict(params or {})
    if data_dir is not None:
        if "root" in params:
            raise OptionError("data_dir", "--data-dir", "give the folder once: --data-dir or -D root=...")
        accepted = registry("datasets").accepted_params(name)
        if accepted is not None and "root" not in accepted:
            raise OptionError("data_dir", "--data-dir", f"dataset {name!r} is embedded and reads no folder; drop it")
        params["root"] = str(data_dir)
    if carve:
        return load_dataset(name, **params)
    from ..data.splits import PARAMS

    given = [k for k in PARAMS if k in params]
    if given:
        raise OptionError(
            "dataset_params",
            "-D",
            f"{'/'.join(given)}: --select-on test carves no validation split (the run trains on all the "
            f"training data and chooses on test); drop it, or choose on the validation split",
        )
    return load_dataset_as_is(name, **params)


def split_sequence_params(sequence: str, model_params: dict, model: str | None = None) -> tuple[dict, dict]:
    """Split ``-m`` parameters into the sequence mode's settings (the keys its factory accepts, e.g.
    n_mels, attack_space, frame) and the model's (the rest). A key both accept goes to both:
    ``-m kernel=numba`` picks the Numba kernels of the mel front end and of the SSM together."""

    accepted = set(registry("sequences").accepted_params(sequence) or ())
    model_accepts = registry("models").accepted_params(model) if model is not None else []
    shared = accepted & set(model_accepts or ())  # a model taking **kwargs shares nothing
    own = {k: v for k, v in model_params.items() if k in accepted}
    return own, {k: v for k, v in model_params.items() if k not in accepted or k in shared}


def resolve_device(device: str, threads: int | None = None) -> str:
    """auto|cpu|cuda -> ART's device_type ("cpu" or "gpu"); sets torch's CPU thread count when given
    (``use_threads`` sets the default once the data is known)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("device", "--device", "cuda: CUDA is not available on this machine")
        return "gpu"
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` counts the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's CPU threads (and so the Numba kernels', ``kernels.backend.sync_threads``) set to
    ``threads`` for the block, then put back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def use_threads(threads: int | None, audio: bool) -> int:
    """Set torch's CPU threads: ``threads`` if given, else 1 for images and min(4, cores) for audio."""
    import torch

    if threads is None:
        threads = min(4, available_cores()) if audio else 1
    torch.set_num_threads(threads)
    return threads


@contextmanager
def staged_directory(
    target: Path, overwrite: bool, keep_interrupted: bool = False, reuse: Path | None = None
) -> Iterator[Path]:
    """Build a directory under a temporary name; move it to ``target`` only on success.

    On any error the temporary directory is removed: nothing half-written remains. With
    ``keep_interrupted``, a run stopped by Ctrl-C or SIGTERM, by a diverged loss, or by a lost rank of
    a distributed run, after saving a resume state (``state.json``) is kept under its temporary name
    (``--resume``; its ``last.*`` is the last finished epoch); ``reuse`` continues in such a directory.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise OptionError("out", "--out", f"{target} already exists (use --overwrite to replace it)")
    created_parent = not target.parent.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock(target)
    except OSError as exc:  # the parent is a file, or not writable
        raise OptionError("out", "--out", f"cannot write {target}: {exc.strerror or exc} ({exc.filename})") from None
    try:
        if reuse is not None:
            tmp = reuse
        else:
            tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        try:
            yield tmp
        except BaseException as exc:
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit, TrainingDiverged, RankLost))
            if keep_interrupted and interrupted and (tmp / "state.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        Path(lock.name).unlink(missing_ok=True)
        lock.close()  # releases the lock (so does the end of the process, however it ends)
        if created_parent and target.parent.exists() and not any(target.parent.iterdir()):
            target.parent.rmdir()


def _lock(target: Path):
    """An exclusive lock on ``target`` (a ``.<name>.lock`` file beside it, ``flock``): a second
    ssmdefense process writing the same ``--out`` is refused instead of corrupting the first's files.
    The kernel drops the lock when the process ends, even by SIGKILL."""
    handle = open(target.parent / f".{target.name}.lock", "w")  # noqa: SIM115 (held until staged_directory ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OptionError(
            "out",
            "--out",
            f"{target} is being written by another ssmdefense process; wait for it to finish or choose another --out",
        ) from None
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def interrupted_run(target: Path) -> Path | None:
    """The kept temporary directory of an interrupted run meant for ``target`` (newest), if any."""
    target = Path(target)
    found = [p for p in target.parent.glob(f".{target.name}.partial-*") if (p / "state.json").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def check_eps(eps: float, clip_values: tuple[float, float] | None, option: str = "--eps") -> None:
    """``OptionError`` when an L-inf budget reaches the inputs' whole range: the eps-ball would
    then hold every valid input, and robust accuracy under it would measure nothing."""
    if clip_values is None:
        return
    lo, hi = (float(v) for v in clip_values)
    if eps >= hi - lo:
        raise OptionError(
            "eps",
            option,
            f"{eps:g} is not smaller than the inputs' range {hi - lo:g} ({lo:g} to {hi:g}): "
            f"the eps-ball would hold every valid input",
        )


def check_report_out(out: Path) -> None:
    """``out`` can be replaced by a report directory (``evaluate --out``, ``attack --out``): it is no
    file and no run directory, so a slip of the option never deletes checkpoints."""
    if out.exists() and not out.is_dir():
        raise OptionError("out", "--out", f"{out} is a file, not a directory")
    if out.is_dir() and any(out.glob("*.safetensors")):
        raise OptionError("out", "--out", f"{out} holds checkpoints: it is not a report to replace")
