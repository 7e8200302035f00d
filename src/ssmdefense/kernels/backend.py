"""Which implementation of a kernel runs: ``kernel=auto|torch|numba``, Numba's availability, and the
bridge from torch tensors to Numba's CUDA arrays.

Every model or front end with a Numba kernel takes ``kernel``:

- ``"torch"``: the plain PyTorch path (always available);
- ``"numba"``: the Numba kernel, on the tensor's device (CPU: ``@njit(parallel=True)``; CUDA:
  ``cuda.jit``). If it cannot run there (Numba missing, no Numba CUDA target for a CUDA tensor) it
  is a clear error, ``KernelUnavailableError``;
- ``"auto"``: per device, what ``benchmarks/kernels.py`` measured faster (each caller passes its
  own table, e.g. ``{"cpu": "numba", "cuda": "torch"}``); when that is Numba and Numba cannot run,
  torch, with one log line.

Numba is imported lazily, on the first kernel call, so importing ssmdefense (and ``--help``) does not
pay for it. JIT compilation is cached on disk (``cache=True``; Numba's cache directory, or
``NUMBA_CACHE_DIR``) so a second process does not compile again.
"""

from __future__ import annotations

import functools
import logging

import torch

from ..errors import SSMDefenseError

KERNELS = ("auto", "torch", "numba")
log = logging.getLogger("ssmdefense")


class KernelUnavailableError(SSMDefenseError, RuntimeError):
    """``kernel="numba"`` was asked for where Numba cannot run (not installed, or no CUDA target)."""


def check_kernel(kernel) -> str:
    """``kernel`` if it is one of ``KERNELS``; a ValueError naming them otherwise."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
    return kernel


@functools.cache
def numba_cpu_problem() -> str | None:
    """None when Numba's CPU target imports; otherwise why not."""
    try:
        import numba  # noqa: F401
    except Exception as exc:  # ImportError, or a numba/numpy version mismatch raising at import
        return f"numba cannot be imported ({type(exc).__name__}: {exc})"
    return None


@functools.cache
def numba_cuda_problem() -> str | None:
    """None when Numba's CUDA target can run kernels (a GPU, or the simulator); otherwise why not."""
    problem = numba_cpu_problem()
    if problem:
        return problem
    try:
        from numba import cuda
    except Exception as exc:
        return f"numba's CUDA target cannot be imported ({type(exc).__name__}: {exc}; install numba-cuda)"
    try:
        if not cuda.is_available():
            return "numba's CUDA target finds no usable GPU or driver"
    except Exception as exc:
        return f"numba's CUDA target failed to initialise ({type(exc).__name__}: {exc})"
    return None


def device_problem(device_type: str) -> str | None:
    """None when the Numba kernels can run on tensors of ``device_type`` ("cpu" or "cuda")."""
    if device_type == "cpu":
        return numba_cpu_problem()
    if device_type == "cuda":
        return numba_cuda_problem()
    return f"no Numba kernel for {device_type!r} tensors"


@functools.cache
def _warn_once(what: str, device_type: str, problem: str) -> None:
    log.warning("%s: kernel=auto falls back to torch on %s: %s", what, device_type, problem)


def resolve(kernel: str, device_type: str, auto: dict[str, str], what: str) -> str:
    """The implementation (``"torch"`` or ``"numba"``) that ``kernel`` means on ``device_type``.

    Args:
        kernel: "auto", "torch" or "numba".
        device_type: the inputs' ``tensor.device.type``.
        auto: what ``auto`` picks per device type when Numba can run (missing types: torch).
        what: the kernel's name, for messages ("selective scan", "log-mel", ...).
    Raises:
        KernelUnavailableError: ``kernel="numba"`` where it cannot run.
    """
    if kernel == "torch":
        return "torch"
    if kernel == "numba":
        problem = device_problem(device_type)
        if problem:
            raise KernelUnavailableError(
                f"{what}: kernel='numba' cannot run on {device_type}: {problem}; use kernel='torch' or 'auto'"
            )
        return "numba"
    check_kernel(kernel)
    choice = auto.get(device_type, "torch")
    if choice == "numba":
        problem = device_problem(device_type)
        if problem:
            _warn_once(what, device_type, problem)
            return "torch"
    return choice


def cuda_arrays(*tensors: torch.Tensor | None):
    """Numba device arrays viewing the given CUDA tensors (zero copy, through
    ``__cuda_array_interface__``; None stays None), and a Numba stream wrapping torch's current
    stream so kernels are ordered with torch's work on it."""
    from numba import cuda

    stream = cuda.external_stream(torch.cuda.current_stream().cuda_stream)
    arrays = tuple(None if t is None else cuda.as_cuda_array(t.detach()) for t in tensors)
    return arrays, stream


def sync_threads() -> int:
    """Give Numba's parallel CPU kernels torch's thread count (``--threads``, ``torch.set_num_threads``),
    capped at the threads Numba started with; returns it. Call before each CPU kernel launch.

    Numba's ``omp`` threading layer shares the OpenMP runtime with torch, and starting Numba's
    thread pool (its first parallel launch) sets OpenMP's thread count to all cores, which torch
    then reads as its own: ``--threads 1`` would silently become 2 after the first kernel call. So
    the pool is started here and torch's count put back.
    """
    import numba

    want = torch.get_num_threads()
    n = max(1, min(want, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:  # the first call starts Numba's pool
        numba.set_num_threads(n)
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)
    return n


class KernelChoice:
    """Mixin for a module with a ``kernel=auto|torch|numba`` choice. The module sets ``kernel_choice``
    (checked with ``check_kernel``; not ``kernel``, which the convolutional SSMs' ``kernel(L)``
    method owns) and has class attributes ``KERNEL_AUTO`` (``auto``'s pick per device type,
    from the benchmark) and ``KERNEL_WHAT`` (its name in messages and reports)."""

    KERNEL_AUTO: dict[str, str] = {}
    KERNEL_WHAT = "kernel"

    def resolved_kernel(self, device_type: str) -> str:
        """``"torch"`` or ``"numba"``: what runs on tensors of ``device_type``."""
        return resolve(self.kernel_choice, device_type, self.KERNEL_AUTO, self.KERNEL_WHAT)


def chosen_kernels(module: torch.nn.Module, device_type: str) -> dict[str, str]:
    """``{KERNEL_WHAT: "torch" | "numba"}`` for every ``KernelChoice`` inside ``module`` on
    ``device_type`` (what a run records in its checkpoints and report)."""
    chosen: dict[str, str] = {}
    for sub in module.modules():
        if isinstance(sub, KernelChoice):
            chosen[sub.KERNEL_WHAT] = sub.resolved_kernel(device_type)
    return chosen
