"""The one way every Numba kernel file compiles its CUDA code: lazily, on the first launch.

    @cuda_kernel                      # or @cuda_kernel(cache=False, ...): options of ``numba.cuda.jit``
    def _fwd_cuda(x, out): ...        # launched as usual: _fwd_cuda[blocks, threads, stream](x, out)

    _step_cuda = cuda_device(_step)   # a device function, e.g. a plain body shared with an ``njit`` twin

Nothing happens at import: ``numba.cuda`` (about half a second to import, and absent without
numba-cuda) is imported and a kernel compiled (``numba.cuda.jit``, per argument types, cached on
disk: ``cache=True`` unless told otherwise) when it is first launched, so a kernel module imports,
and its CPU kernels run, on a machine without CUDA. A device function compiles when the first
kernel that calls it compiles (Numba types it through ``_numba_type_``); under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), which runs kernels as Python, it is simply called.

Kernel bodies name the CUDA module ``cuda`` (``cuda.blockIdx``, ``cuda.atomic.add``, ...) as a
global of their module, which the module sets to None (``cuda = None``) rather than importing it;
the first compile of a kernel or device function binds it there to ``numba.cuda`` (the simulator's
module under ``NUMBA_ENABLE_CUDASIM=1``).
"""

from __future__ import annotations

import functools
import threading

_lock = threading.Lock()


@functools.cache
def cuda_target():
    """``numba.cuda``, imported on the first call; RuntimeError when it cannot be imported."""
    try:
        from numba import cuda
    except Exception as exc:  # ImportError, or a broken numba-cuda install raising at import
        raise RuntimeError(
            f"numba's CUDA target cannot be imported ({type(exc).__name__}: {exc}); install numba-cuda"
        ) from exc
    return cuda


class _Lazy:
    """A plain Python function and the ``numba.cuda.jit`` options to compile it with, on first use."""

    def __init__(self, fn, options: dict):
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self.options = options
        self._compiled = None

    def bind(self):
        """``numba.cuda``, after binding it as ``cuda`` in the function's module if that is None."""
        cuda = cuda_target()
        if self.py_func.__globals__.get("cuda") is None:
            self.py_func.__globals__["cuda"] = cuda
        return cuda

    @property
    def compiled(self):
        """The ``numba.cuda.jit`` dispatcher (compiled on the first call with given argument types)."""
        if self._compiled is None:
            with _lock:
                if self._compiled is None:
                    self._compiled = self.bind().jit(**self.options)(self.py_func)
        return self._compiled


class CudaKernel(_Lazy):
    """A CUDA kernel compiled on its first launch: ``kernel[blocks, threads, stream](*args)``."""

    def __getitem__(self, config):
        return self.compiled[config]


class CudaDevice(_Lazy):
    """A CUDA device function compiled when a kernel that calls it compiles."""

    @property
    def _numba_type_(self):  # what Numba's typeof() asks of an object a kernel names
        return self.compiled._numba_type_

    def __call__(self, *args):  # the simulator runs kernels in Python, calling device functions so
        return self.compiled(*args)


def cuda_kernel(fn=None, **options):
    """``fn`` as a ``CudaKernel``: compiled with ``numba.cuda.jit(**options)`` on its first launch
    (``cache=True`` unless ``options`` say otherwise). A decorator, with or without options."""
    options = {"cache": True, **options}
    if fn is None:
        return lambda f: CudaKernel(f, options)
    return CudaKernel(fn, options)


def cuda_device(fn=None, **options):
    """``fn`` as a ``CudaDevice``: compiled with ``numba.cuda.jit(device=True, **options)`` when the
    first kernel calling it compiles. A decorator, with or without options, or a plain call on a
    function that is also compiled for the CPU (``njit``)."""
    options = {"device": True, **options}
    if fn is None:
        return lambda f: CudaDevice(f, options)
    return CudaDevice(fn, options)
