"""The LSTM, GRU and MLP baselines: shapes, causality, the lazily sized MLP, parameters, training,
checkpoints and adversarial training."""

import numpy as np
import pytest
import torch

import ssmdefense as sd

SIZES = {"lstm": dict(d_model=32), "gru": dict(d_model=32), "mlp": dict(d_hidden=64)}


def make(data, name, seed=0, **params):
    torch.manual_seed(seed)
    body = sd.build_model(name, d_input=8, n_classes=10, **{**SIZES[name], **params})
    return sd.SSMClassifier(
        body, input_shape=data.input_shape, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_is_torchs_stacked_rnn_read_at_the_last_step(cell):
    """The stack of one-layer RNNs equals torch's n-layer RNN; the head reads the last hidden state."""
    torch.manual_seed(0)
    model = sd.build_model(cell, d_input=5, n_classes=4, d_model=7, n_layers=2).double()
    ref = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](5, 7, num_layers=2, batch_first=True).double()
    with torch.no_grad():
        for name, p in ref.named_parameters():  # weight_ih_l1 -> layers.1.weight_ih_l0
            layer = int(name[-1])
            p.copy_(getattr(model.layers[layer], name[:-1] + "0"))
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    out, h_n = ref(x)
    h_last = (h_n[0] if cell == "lstm" else h_n)[-1]  # (B H): top layer, last step
    torch.testing.assert_close(model.features(x), out)
    torch.testing.assert_close(model(x), model.head(h_last))
    assert model(x).shape == (3, 4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_mean_pooling_reads_every_step(cell):
    """pool="mean" feeds the head the mean hidden state, so the last step no longer decides alone."""
    torch.manual_seed(0)
    model = sd.build_model(cell, d_input=5, n_classes=4, d_model=7, pool="mean").double()
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    torch.testing.assert_close(model(x), model.head(model.features(x).mean(dim=1)))
    with pytest.raises(sd.SSMDefenseError, match="pool must be one of last, mean; got 'max'"):
        sd.build_model(cell, d_input=5, n_classes=4, pool="max")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_is_causal(cell):
    torch.manual_seed(0)
    model = sd.build_model(cell, d_input=3, n_classes=5, d_model=8, n_layers=2).double().eval()
    x = torch.randn(2, 15, 3, dtype=torch.float64)
    h = model.features(x)  # (B L H)
    for k in (1, 6, 15):
        torch.testing.assert_close(model.features(x[:, :k]), h[:, :k])
        torch.testing.assert_close(model(x[:, :k]), model.head(h[:, k - 1]))  # logits of the prefix


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_input_gradients_in_eval_mode_on_cuda(cell):
    """Attacks differentiate the model in eval mode; cuDNN's RNN backward alone would refuse."""
    model = sd.build_model(cell, d_input=3, n_classes=5, d_model=8, n_layers=2).cuda().eval()
    x = torch.randn(2, 6, 3, device="cuda", requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    assert torch.backends.cudnn.enabled  # restored after the forward


def test_mlp_sizes_itself_from_the_first_batch_and_rejects_other_lengths(digits):
    body = sd.build_model("mlp", d_input=8, n_classes=10, d_hidden=16)
    assert body.seq_len is None
    clf = sd.SSMClassifier(
        body, input_shape=digits.input_shape, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )  # its probe batch sizes the model
    assert body.seq_len == 8 and body.fc1.weight.shape == (16, 64)
    assert clf.predict(digits.x_test[:3]).shape == (3, 10)
    with pytest.raises(ValueError, match="sized for sequences of 8 steps"):
        body(torch.zeros(2, 9, 8))
    with pytest.raises(ValueError, match=r"expected input \(B, L, 8\)"):
        body(torch.zeros(2, 8, 7))


def test_mlp_state_dict_loads_into_a_fresh_lazy_model():
    torch.manual_seed(0)
    trained = sd.build_model("mlp", d_input=4, n_classes=3, d_hidden=16)
    x = torch.randn(5, 6, 4)
    expected = trained(x)
    fresh = sd.build_model("mlp", d_input=4, n_classes=3, d_hidden=16)
    assert fresh.seq_len is None
    fresh.load_state_dict(trained.state_dict())  # materialises the lazy layer from the saved shape
    assert fresh.seq_len == 6
    torch.testing.assert_close(fresh(x), expected)


def test_ads_is_rejected_for_the_baselines():
    for name in ("lstm", "gru", "mlp"):
        with pytest.raises(sd.SSMDefenseError, match="unknown parameter.*ads"):
            sd.build_model(name, d_input=8, n_classes=10, ads="relu")


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("lstm", dict(d_model=0), "d_model must be an integer"),
        ("gru", dict(n_layers=0), "n_layers must be an integer"),
        ("lstm", dict(dropout=1.0), "dropout must be a number in"),
        ("gru", dict(d_model=2.5), "d_model must be an integer"),
        ("mlp", dict(d_hidden=0), "d_hidden must be an integer"),
        ("mlp", dict(dropout=-0.1), "dropout must be a number in"),
        ("mlp", dict(d_model=64), "unknown parameter"),
    ],
)
def test_bad_baseline_parameters_raise_clear_errors(name, params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.build_model(name, d_input=8, n_classes=10, **params)
    with pytest.raises(sd.SSMDefenseError, match="n_classes must be an integer"):
        sd.build_model(name, d_input=8, n_classes=1)


@pytest.mark.parametrize("name, floor", [("lstm", 0.75), ("gru", 0.75), ("mlp", 0.85)])
def test_baseline_trains_on_digits(digits, name, floor):
    """8 epochs; measured over 5 seeds: lstm 0.88-0.92, gru 0.89-0.93, mlp 0.96-0.97 (chance 0.1)."""
    clf = make(digits, name)
    sd.get_defense("none", clf, lr=1e-2, verbose=False).fit(digits.x_train, digits.y_train, nb_epochs=8)
    assert clf.accuracy(digits.x_test, digits.y_test) > floor


@pytest.mark.parametrize("name", ["lstm", "gru", "mlp"])
def test_baseline_checkpoint_round_trip(tmp_path, digits, name):
    clf = make(digits, name, dropout=0.2)
    sd.get_defense("none", clf, lr=1e-2, verbose=False).fit(digits.x_train[:256], digits.y_train[:256], nb_epochs=1)
    clf2 = sd.load(sd.save(clf, tmp_path / name), device_type="cpu")
    x = digits.x_test[:50]
    np.testing.assert_array_equal(clf.predict(x), clf2.predict(x))


@pytest.mark.parametrize("name", ["lstm", "mlp"])
def test_pgd_adversarial_training_runs_for_the_baselines(digits, name):
    clf = make(digits, name)
    before = {k: v.clone() for k, v in clf.body.state_dict().items()}
    history = sd.get_defense("pgd-at", clf, max_iter=2, lr=1e-2, verbose=False).fit(
        digits.x_train, digits.y_train, nb_epochs=1
    )
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    after = clf.body.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
