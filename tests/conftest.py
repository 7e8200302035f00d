"""Shared fixtures: small models on the embedded ``digits`` dataset so the suite runs on 2 cores."""

import os

# OpenMP threads with nothing to do sleep instead of spinning. The suite runs as 2 xdist workers on
# 2 cores, and an audio run takes every core (up to 4) by default: spinning threads then hold the
# core the other worker needs (an audio run took 4x longer beside a busy process). Set before torch
# loads its OpenMP runtime; subprocesses inherit it; no result depends on it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The suite checks the built-ins and the plugins it installs itself (those tests load them by name or
# clear this): another package's plugin in the same environment (one that imports torch at import
# time, say) must not change what the listing and import checks see.
os.environ["SSMDEFENSE_LOAD_PLUGINS"] = ""

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import ssmdefense as sd  # noqa: E402

# One thread: these models are tiny, and extra threads only add synchronisation (see docs/architecture.md).
torch.set_num_threads(1)

# dt up to 1 suits these short (L = 8) sequences; the paper range (1e-3, 1e-1) is tuned for L ~ 1000.
TINY = dict(d_model=32, n_layers=1, d_state=16, dt_min=1e-2, dt_max=1.0)


@pytest.fixture(autouse=True)
def one_thread():
    """Back to one thread after each test: the CLI picks more for audio runs (``--threads`` default)."""
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """The loader's digits, all 1,437 training images (no validation split carved: these tests train
    and attack directly, and their measured numbers were taken on the whole training set)."""
    from ssmdefense.api import load_dataset_as_is

    return load_dataset_as_is("digits")


def make_classifier(data, seed=0, **model_params):
    torch.manual_seed(seed)
    body = sd.build_model("s4d", d_input=8, n_classes=10, **{**TINY, **model_params})
    return sd.SSMClassifier(
        body, input_shape=data.input_shape, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )


def tiny_lstm(shape=(1, 8, 8)) -> sd.SSMClassifier:
    """An LSTM classifier on digit rows: a model no certifier can bound."""
    torch.manual_seed(0)
    body = sd.build_model("lstm", d_input=shape[2], n_classes=10, d_model=8)
    return sd.SSMClassifier(body, input_shape=shape, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0))


def assert_survives_margin_pgd(model, x, y, eps: float, restarts: int) -> None:
    """Plain torch PGD on the margin (best other logit − true logit), ``restarts`` random starts of 50
    steps in the L-inf ball of ``eps`` within [0, 1]: no x of ``x`` (certified) may be misclassified."""
    for restart in range(restarts):
        torch.manual_seed(restart)
        z = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(50):
            z.requires_grad_(True)
            logits = model(z)  # (n C)
            other = logits.scatter(1, y[:, None], -torch.inf).amax(1)
            (g,) = torch.autograd.grad((other - logits.gather(1, y[:, None])[:, 0]).sum(), z)
            z = torch.minimum(torch.maximum(z + eps / 4 * g.sign(), x - eps), x + eps).clamp(0, 1).detach()
        with torch.no_grad():
            assert (model(z).argmax(1) == y).all(), restart


@pytest.fixture(scope="session")
def trained(digits):
    """A standard-trained tiny S4D on digits (about 95% clean test accuracy)."""
    clf = make_classifier(digits)
    sd.get_defense("none", clf, lr=1e-2, verbose=False).fit(digits.x_train, digits.y_train, nb_epochs=10)
    return clf


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def train_on_digits(name, data, epochs=8, seed=0, **model_params):
    """Model ``name`` (8 features per step: digits rows) trained ``epochs`` by standard training."""
    torch.manual_seed(seed)
    body = sd.build_model(name, d_input=8, n_classes=10, **model_params)
    clf = sd.SSMClassifier(
        body, input_shape=data.input_shape, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )
    sd.get_defense("none", clf, lr=1e-2, verbose=False).fit(data.x_train, data.y_train, nb_epochs=epochs)
    return clf


@pytest.fixture(scope="session")
def standard_history(digits):
    """``standard_history(epochs)``: per-epoch metrics of standard training of the tiny S4D on digits
    (lr 1e-2, PGD-10 on 200 test samples), the baseline each defense test must beat; cached per budget."""
    cache = {}

    def history(epochs):
        if epochs not in cache:
            clf = make_classifier(digits)
            cache[epochs] = sd.get_defense("none", clf, eps=0.1, lr=1e-2, eval_samples=200, verbose=False).fit(
                digits.x_train, digits.y_train, validation_data=(digits.x_test, digits.y_test), nb_epochs=epochs
            )
        return cache[epochs]

    return history


class Interrupt(Exception):
    """Stands in for Ctrl-C in resume tests (a plain exception, so pytest.raises can catch it)."""


def outcomes(rows: list[dict]) -> list[dict]:
    """History rows without what is measured rather than computed (seconds, peak memory): a resumed
    run must equal an uninterrupted one in everything else."""
    return [{k: v for k, v in r.items() if "seconds" not in k and k != "peak_memory_mb"} for r in rows]


def interrupt_on_call(monkeypatch, owner, method: str, call: int, exc=Interrupt):
    """Make ``owner.method`` raise ``exc`` on its ``call``-th call (a simulated interruption).
    Returns a function that puts the original method back."""
    original, calls = getattr(owner, method), {"n": 0}

    def patched(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise exc
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, method, patched)
    return lambda: monkeypatch.setattr(owner, method, original)


# About how many seconds each of the longest test files takes on the 2-core test machine. Under
# ``-n auto --dist loadscope`` a file is one unit of work, handed out in collection order (setup.cfg
# turns off xdist's reordering by test count, which put these few-test files last, where one worker
# ran them alone while the other sat idle): the longest first, the many short files fill in at the end.
LONGEST_FIRST = {
    "test_distributed.py": 57,
    "test_evaluation.py": 42,
    "test_cli.py": 37,
    "test_cli_audio.py": 30,
    "test_example_study.py": 23,
    "test_data_spoken_digits.py": 21,
    "test_defense_distill_augment.py": 19,
    "test_attacks_ensemble.py": 18,
    "test_attacks_audio_autoattack.py": 15,
    "test_defense_fast_at.py": 14,
    "test_data_lazy.py": 13,
    "test_defense_trades_minmax.py": 12,
    "test_example_plugin_plain.py": 12,
}


SLOW_SECONDS = 25  # a file at least this long (LONGEST_FIRST) is marked ``slow``


def pytest_collection_modifyitems(config, items):
    """The longest files first (LONGEST_FIRST; the others keep their order after them), and those of
    SLOW_SECONDS or more marked ``slow`` (``pytest -m "not slow"`` for a quick local pass; CI runs
    every test). The ``gpu`` tier runs only where torch sees a CUDA GPU (``pytest -m gpu`` on a GPU
    machine)."""
    items.sort(key=lambda item: -LONGEST_FIRST.get(item.path.name, 0))  # stable: in-file order kept
    for item in items:
        if LONGEST_FIRST.get(item.path.name, 0) >= SLOW_SECONDS:
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
