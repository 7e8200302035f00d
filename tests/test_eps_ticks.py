"""The eps axis of the robust-accuracy plots (report.html's and compare.html's): with small, close
budgets such as an audio run's (0.00025, 0.0005, 0.001) the tick labels stay apart and readable.
Each plot is checked as it is saved: drawn, every visible tick label's box measured by the renderer."""

import matplotlib.figure
import pytest

from ssmdefense.evaluation import compare, report

EPS_SETS = [
    [0.0, 0.00025, 0.0005, 0.001],  # the audio default around eps 0.001
    [0.0, 0.0005, 0.001, 0.0015, 0.002],
    [0.0, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002],
    [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255],  # CIFAR-10
    [0.0, 0.05, 0.1, 0.15, 0.2],  # MNIST, the image default
]


@pytest.fixture
def saved_axes(monkeypatch):
    """Every eps axis's visible tick labels [(text, x0, x1)] of each figure saved while the test runs."""
    seen = []
    original = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            labels = [t for t in ax.get_xticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]
            boxes = sorted(((t.get_window_extent(renderer), t.get_text()) for t in labels), key=lambda b: b[0].x0)
            seen.append([(text, box.x0, box.x1) for box, text in boxes])
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return seen


def assert_apart(axes):
    assert axes, "no plot was saved"
    for labels in axes:
        texts = [t for t, _, _ in labels]
        assert len(texts) >= 3 and len(set(texts)) == len(texts), texts  # an axis a reader can use
        assert all(len(t) <= 7 for t in texts), texts  # written short: 0.00075, not 0.000750
        for (left, _, right_edge), (right, x0, _) in zip(labels, labels[1:]):
            assert right_edge < x0, f"tick labels {left!r} and {right!r} overlap: {texts}"


@pytest.mark.parametrize("eps", EPS_SETS)
def test_report_plot_eps_labels_do_not_overlap(eps, saved_axes, tmp_path):
    curve = [{"eps": e, "fgsm": 1 - 0.3 * i, "pgd-10": 1 - 0.4 * i} for i, e in enumerate(eps)]
    assert report.plot_curves({"best": {"epoch": 3, "curve": curve}}, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000
    assert_apart(saved_axes)


@pytest.mark.parametrize("eps", EPS_SETS[:3])
def test_compare_plot_eps_labels_do_not_overlap(eps, saved_axes):
    curve = [{"eps": e, "mean": 1 - e * 200, "sd": 0.02, "n": 2} for e in eps]
    row = {"dataset": "spoken-digits", "seeds": [0, 1], "curve": curve, "label": {"model": "s4d", "defense": "ads"}}
    assert compare.plot_curves([row]).startswith("data:image/png;base64,")
    assert_apart(saved_axes)
