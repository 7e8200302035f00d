"""``kernels/cuda_compile.py``, the one way the kernel files compile their CUDA code: nothing at import
(not even ``import numba.cuda``), a kernel compiled once on its first launch, and the CPU kernels of
every file working where Numba's CUDA target cannot be imported at all. (The CUDA kernels compiled
this way run in ``tests/cuda_checks_*.py``, under the simulator.)"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssmdefense.kernels import cuda_compile

KERNEL_FILES = ["selective_scan_cpu", "selective_scan_cuda", "diag_scan_numba", "logmel_numba", "stft_numba"]
KERNELS_DIR = Path(cuda_compile.__file__).parent


class FakeTarget:
    """Stands in for ``numba.cuda``: records what ``jit`` compiles; a compiled kernel launches as a tuple."""

    def __init__(self):
        self.compiled = []

    def jit(self, **options):
        def compile(fn):
            self.compiled.append((fn.__name__, options))
            return FakeDispatcher(fn)

        return compile


class FakeDispatcher:
    def __init__(self, fn):
        self.fn = fn
        self._numba_type_ = ("type of", fn.__name__)

    def __getitem__(self, config):
        return lambda *args: ("launched", config, self.fn(*args))

    def __call__(self, *args):
        return self.fn(*args)


def _function(source: str):
    """A function defined in a namespace of its own with ``cuda = None``, as a kernel module has."""
    namespace = {"cuda": None}
    exec(textwrap.dedent(source), namespace)
    return namespace


def test_a_kernel_compiles_once_on_its_first_launch_and_binds_cuda(monkeypatch):
    target = FakeTarget()
    monkeypatch.setattr(cuda_compile, "cuda_target", lambda: target)
    ns = _function("def add_one(x):\n    return x + 1 if cuda is not None else None\n")
    kernel = cuda_compile.cuda_kernel(ns["add_one"])
    assert target.compiled == [] and ns["cuda"] is None  # nothing at definition
    assert kernel[4, 32, 0](1) == ("launched", (4, 32, 0), 2)
    assert kernel[1, 1, 0](5) == ("launched", (1, 1, 0), 6)
    assert target.compiled == [("add_one", {"cache": True})]  # once, cached on disk by default
    assert ns["cuda"] is target  # the module's ``cuda`` global, bound for the body
    assert kernel.__name__ == "add_one" and kernel.py_func is ns["add_one"]

    opts = cuda_compile.cuda_kernel(cache=False, fastmath=True)(ns["add_one"])
    opts[1, 1, 0](0)
    assert target.compiled[-1] == ("add_one", {"cache": False, "fastmath": True})


def test_a_device_function_compiles_when_numba_types_it_or_the_simulator_calls_it(monkeypatch):
    target = FakeTarget()
    monkeypatch.setattr(cuda_compile, "cuda_target", lambda: target)
    ns = _function("def twice(x):\n    return 2 * x\n")
    device = cuda_compile.cuda_device(ns["twice"])
    assert target.compiled == []
    assert device._numba_type_ == ("type of", "twice")  # what a kernel's typing asks first
    assert device(21) == 42  # the simulator calls it as Python
    assert target.compiled == [("twice", {"device": True})]


def test_kernel_files_compile_cuda_only_through_cuda_compile():
    """No kernel file calls ``cuda.jit`` itself, and every one has its CUDA kernels as ``CudaKernel``s."""
    import importlib

    for name in KERNEL_FILES:
        source = (KERNELS_DIR / f"{name}.py").read_text()
        assert not re.search(r"@cuda\.jit|cuda\.jit\(", source), name
        module = importlib.import_module(f"ssmdefense.kernels.{name}")
        kernels = [v for v in vars(module).values() if isinstance(v, cuda_compile.CudaKernel)]
        assert kernels or name == "selective_scan_cpu", name


def test_kernel_files_import_and_run_on_the_cpu_without_numba_cuda():
    """In a fresh interpreter: importing every kernel file imports no ``numba.cuda``; with the CUDA
    target made unimportable, the CPU kernels still run and a CUDA launch is a clear error."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        mods = {KERNEL_FILES!r}
        for m in mods:
            __import__("ssmdefense.kernels." + m)
        assert not [m for m in sys.modules if m.startswith(("numba.cuda", "numba_cuda"))], "numba.cuda imported"
        sys.modules["numba.cuda"] = None  # from numba import cuda: ImportError from here on
        from ssmdefense.kernels import selective_scan_cpu as cpu, selective_scan_cuda as gpu, stft_numba
        rng = np.random.default_rng(0)
        u = rng.standard_normal((1, 2, 5))
        out, last, _ = cpu.forward_cpu(u, u, -np.ones((2, 3)), rng.standard_normal((1, 3, 5)), np.ones((1, 3, 5)))
        assert out.shape == (1, 2, 5) and np.isfinite(out).all()
        g_x = np.empty((1, 8))
        stft_numba.backward_cpu(np.ones((1, 3, 4)), np.ones(4), 2, g_x)
        try:
            gpu._fwd_cuda[1, 1, 0]()
        except RuntimeError as exc:
            assert "numba-cuda" in str(exc), exc
        else:
            raise AssertionError("a CUDA launch without numba.cuda did not fail")
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.mark.parametrize("name", ["state_step", "adjoint_step", "gate_backward"])
def test_the_shared_selective_scan_math_is_one_body_on_both_targets(name):
    """The CPU kernels' inlined ``njit`` twin and the CUDA device function wrap the same Python body."""
    from ssmdefense.kernels import selective_scan_cpu, selective_scan_cuda, selective_scan_math

    body = getattr(selective_scan_math, name)
    assert getattr(selective_scan_cpu, f"_{name}").py_func is body
    assert getattr(selective_scan_cuda, f"_{name}").py_func is body
