"""Shared fixtures: small models on the embedded ``digits`` dataset so the suite runs on 2 cores."""

import numpy as np
import pytest
import torch

import ssmdefense as sd

# One thread: these models are tiny, and extra threads only add synchronisation (see docs/architecture.md).
torch.set_num_threads(1)

# dt up to 1 suits these short (L = 8) sequences; the paper range (1e-3, 1e-1) is tuned for L ~ 1000.
TINY = dict(d_model=32, n_layers=1, d_state=16, dt_min=1e-2, dt_max=1.0)


@pytest.fixture(scope="session")
def digits():
    return sd.load_dataset("digits")


def make_classifier(data, seed=0, **model_params):
    torch.manual_seed(seed)
    body = sd.build_model("s4d", d_input=8, n_classes=10, **{**TINY, **model_params})
    return sd.SSMClassifier(body, input_shape=data.input_shape, nb_classes=10, sequence="rows",
                            clip_values=(0.0, 1.0), device_type="cpu")


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
    clf = sd.SSMClassifier(body, input_shape=data.input_shape, nb_classes=10, sequence="rows",
                           clip_values=(0.0, 1.0), device_type="cpu")
    sd.get_defense("none", clf, lr=1e-2, verbose=False).fit(data.x_train, data.y_train, nb_epochs=epochs)
    return clf
