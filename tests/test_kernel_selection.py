"""``kernel=auto|torch|numba``: every SSM with a Numba kernel gives the same logits and input gradients
either way, ``auto`` falls back to torch (one log line) where Numba cannot run, an explicit ``numba``
there is a clear error, and runs record what ran."""

import json
import logging
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import ssmdefense as sd
from ssmdefense.cli import cli
from ssmdefense.kernels import backend

CASES = [
    ("s4d", {}),
    ("dss", {"variant": "exp"}),
    ("dss", {"variant": "softmax"}),
    ("s5", {}),
    ("s5", {"discretization": "bilinear"}),
    ("mamba", {}),
]


def _pair(name, params, d_input=3):
    torch.manual_seed(0)
    a = sd.build_model(name, d_input=d_input, n_classes=4, d_model=8, n_layers=2, d_state=8, kernel="torch", **params)
    b = sd.build_model(name, d_input=d_input, n_classes=4, d_model=8, n_layers=2, d_state=8, kernel="numba", **params)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("name, params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
@pytest.mark.parametrize("L", [1, 37])
def test_numba_and_torch_kernels_give_the_same_logits_and_input_gradients(name, params, L):
    torch_model, numba_model = _pair(name, params)
    x = torch.randn(5, L, 3)  # (B L D)
    outs, grads = [], []
    for model in (torch_model, numba_model):
        xi = x.clone().requires_grad_()
        logits = model(xi)  # (B classes)
        (g,) = torch.autograd.grad(logits.logsumexp(-1).sum(), xi)
        outs.append(logits.detach())
        grads.append(g)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, params", CASES[:1] + CASES[3:4] + CASES[5:], ids=["s4d", "s5", "mamba"])
def test_numba_kernel_trains_the_same_parameters(name, params):
    torch_model, numba_model = _pair(name, params)
    x, y = torch.randn(4, 20, 3), torch.tensor([0, 1, 2, 3])
    grads = []
    for model in (torch_model, numba_model):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-3, atol=1e-5, msg=f"gradient of {k}")


def test_auto_resolves_per_device_and_the_classifier_reports_it():
    body = sd.build_model("mamba", d_input=8, n_classes=10, d_model=8, n_layers=1)
    clf = sd.SSMClassifier(
        body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )
    assert clf.kernels == {"mamba": body.blocks[0].mixer.KERNEL_AUTO["cpu"]}
    s4d = sd.build_model("s4d", d_input=8, n_classes=10, kernel="numba")
    assert backend.chosen_kernels(s4d, "cpu") == {"s4d": "numba"}
    assert backend.chosen_kernels(sd.build_model("lstm", d_input=8, n_classes=10), "cpu") == {}


def test_checkpoints_record_the_kernels_that_ran(tmp_path):
    body = sd.build_model("s5", d_input=8, n_classes=10, d_model=8, n_layers=1, kernel="numba")
    clf = sd.SSMClassifier(
        body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )
    sd.save(clf, tmp_path / "best")
    meta = json.loads((tmp_path / "best.json").read_text())
    assert meta["kernels"] == {"device": "cpu", "s5": "numba"}
    assert sd.load(tmp_path / "best", device_type="cpu").body.blocks[0].mixer.kernel_choice == "numba"


@pytest.mark.parametrize("name", ["s4d", "dss", "s5", "mamba"])
def test_a_bad_kernel_name_is_a_clear_error(name):
    with pytest.raises(sd.SSMDefenseError, match="kernel must be one of auto, torch, numba; got 'cuda'"):
        sd.build_model(name, d_input=4, n_classes=3, kernel="cuda")


def test_auto_falls_back_with_one_log_line_and_numba_is_a_clear_error_where_numba_cannot_run(monkeypatch, caplog):
    monkeypatch.setattr(backend, "device_problem", lambda device_type: "numba cannot be imported (test)")
    backend._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="ssmdefense"):
        assert backend.resolve("auto", "cpu", {"cpu": "numba"}, "mamba") == "torch"
        assert backend.resolve("auto", "cpu", {"cpu": "numba"}, "mamba") == "torch"
    assert [r.getMessage() for r in caplog.records] == [
        "mamba: kernel=auto falls back to torch on cpu: numba cannot be imported (test)"
    ]
    with pytest.raises(backend.KernelUnavailableError, match="kernel='numba' cannot run on cpu: numba cannot"):
        backend.resolve("numba", "cpu", {}, "mamba")
    assert backend.resolve("torch", "cpu", {}, "mamba") == "torch"
    backend._warn_once.cache_clear()


# The checks that need a fresh interpreter share one per condition (each costs seconds of imports):
# the parts of a script are separated on stdout and stderr by NEXT.
NEXT = "----- next check -----"


def parts(code: str) -> tuple[int, list[str], list[str]]:
    """Run ``code`` in a new interpreter: its exit code and its stdout and stderr split at NEXT."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout.split(NEXT + "\n"), proc.stderr.split(NEXT + "\n")


@pytest.fixture(scope="module")
def without_numba(tmp_path_factory):
    """An interpreter where numba cannot be imported: the package on the torch paths, then the CLI
    asked for kernel=numba (test_cli_refuses_kernel_numba_where_numba_cannot_run_before_writing_anything)."""
    tmp = tmp_path_factory.mktemp("without-numba")
    out = tmp / "run"
    code = f"""
import sys
sys.modules["numba"] = None  # as if numba were not installed: importing it raises ImportError
import torch, ssmdefense as sd
m = sd.build_model("mamba", d_input=2, n_classes=3, d_model=8, n_layers=1)
m(torch.randn(2, 5, 2)).sum().backward()  # auto: torch, with one log line
try:
    sd.build_model("s5", d_input=2, n_classes=3, kernel="numba")(torch.randn(2, 5, 2))
except sd.SSMDefenseError as exc:
    print("ERROR:", exc)
print({NEXT!r}, flush=True)
print({NEXT!r}, file=sys.stderr, flush=True)
from ssmdefense.cli import main
sys.argv = ["ssmdefense", "train", "--model", "s5", "-m", "kernel=numba", "--dataset", "digits", "--epochs", "1",
            "--out", {str(out)!r}]
main()
"""
    returncode, stdout, stderr = parts(code)
    assert len(stdout) == len(stderr) == 2, stderr[-1][-2000:]  # the first part ran to its end
    return returncode, stdout, stderr, tmp


def test_without_numba_the_package_imports_and_trains_on_the_torch_paths(without_numba):
    _, stdout, stderr, _ = without_numba
    assert "mamba: kernel=auto falls back to torch on cpu: numba cannot be imported" in stderr[0]
    assert "ERROR: s5: kernel='numba' cannot run on cpu: numba cannot be imported" in stdout[0]


@pytest.fixture(scope="module")
def fresh_import():
    """A new interpreter: the package imported (not numba), then a Numba kernel run with one thread set."""
    code = f"""
import torch
torch.set_num_threads(1)
import sys, ssmdefense, ssmdefense.cli; import ssmdefense.models; print('numba' in sys.modules)
print({NEXT!r}, flush=True)
import numba, ssmdefense as sd
sd.build_model("s5", d_input=2, n_classes=3, kernel="numba")(torch.randn(2, 5, 2)).sum().backward()
print(torch.get_num_threads(), numba.get_num_threads())
"""
    returncode, stdout, stderr = parts(code)
    assert returncode == 0 and len(stdout) == 2, stderr[-1][-2000:]
    return stdout


def test_importing_the_package_does_not_import_numba(fresh_import):
    assert fresh_import[0].strip() == "False"


def test_cli_model_param_kernel_reaches_the_model_and_the_run_records_it(digits, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--model",
            "s5",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--eval-samples",
            "20",
            "-m",
            "d_model=8",
            "-m",
            "n_layers=1",
            "-m",
            "kernel=numba",
            "--out",
            str(out),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_params"]["kernel"] == "numba" and config["kernels"] == {"s5": "numba"}
    assert json.loads((out / "report.json").read_text())["config"]["kernels"] == {"s5": "numba"}
    assert json.loads((out / "best.json").read_text())["kernels"]["s5"] == "numba"


def test_a_kernel_parameter_goes_to_both_the_mel_front_end_and_the_model():
    from ssmdefense.workflows.common import split_sequence_params

    sequence, model = split_sequence_params("mel", {"kernel": "numba", "n_mels": 32, "d_model": 16}, "s4d")
    assert sequence == {"kernel": "numba", "n_mels": 32} and model == {"kernel": "numba", "d_model": 16}
    sequence, model = split_sequence_params("mel", {"kernel": "numba"}, "lstm")  # the LSTM has no kernel
    assert sequence == {"kernel": "numba"} and model == {}


def test_numba_kernels_keep_the_thread_count_the_user_set(fresh_import):
    """Numba's OpenMP layer would turn ``--threads 1`` into every core at its first launch."""
    assert fresh_import[1].split() == ["1", "1"]


def test_cli_refuses_kernel_numba_where_numba_cannot_run_before_writing_anything(without_numba):
    returncode, _, stderr, tmp = without_numba
    assert returncode == 2, stderr[-1][-2000:]
    lines = [line for line in stderr[1].splitlines() if line.strip()]
    assert lines[-1].startswith("Error: s5: kernel='numba' cannot run on cpu: numba cannot be imported"), lines
    assert not (tmp / "run").exists() and not any(tmp.iterdir())
