"""Each SSM trains on digits and survives a checkpoint round trip (the same check for every model)."""

import numpy as np
import pytest

import ssmdefense as sd
from conftest import train_on_digits
from ssmdefense.models import S4, S5, MegaLayer

SHORT_DT = dict(dt_min=1e-2, dt_max=1.0)  # dt up to 1 suits the short (L = 8) digit rows
CASES = {
    # name: (model params, mixer class); accuracies measured over seeds 0-2 (chance is 0.10):
    "s4": (dict(d_model=32, n_layers=1, d_state=16, **SHORT_DT), S4),  # 0.87-0.91
    "s5": (dict(d_model=32, n_layers=1, d_state=16, **SHORT_DT), S5),  # 0.86-0.89
    "mega": (dict(d_model=32, n_layers=1, d_qk=16, d_ema=8), MegaLayer),  # 0.83-0.89
}


@pytest.fixture(scope="module", params=sorted(CASES))
def trained_model(request, digits):
    name = request.param
    params, mixer = CASES[name]
    return name, mixer, train_on_digits(name, digits, **params)


def test_model_trains_on_digits(trained_model, digits):
    _, _, clf = trained_model
    assert clf.accuracy(digits.x_test, digits.y_test) > 0.7


def test_checkpoint_round_trip(trained_model, digits, tmp_path):
    name, mixer, clf = trained_model
    sd.save(clf, tmp_path / name)
    again = sd.load(tmp_path / name, device_type="cpu")
    assert type(again.body.blocks[0].mixer) is mixer
    if name == "s4":
        assert int(again.body.blocks[0].mixer.l_kernel) == 8  # the length C̃ refers to travels with it
    x = digits.x_test[:50]
    np.testing.assert_array_equal(again.predict(x), clf.predict(x))
