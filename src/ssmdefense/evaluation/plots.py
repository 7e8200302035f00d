"""The shared look of the accuracy plots of reports (robust accuracy vs eps, per epoch, certified vs
empirical)."""

from __future__ import annotations

from pathlib import Path


def accuracy_axes():
    """(pyplot, figure, axes) of one accuracy plot, on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    return plt, fig, ax


def eps_axis(ax) -> None:
    """Ticks of an eps x axis that never overlap, even for small, close budgets (0.00025, 0.0005,
    0.001): at most five, each written as short as it reads (``0.00075``, not ``0.00075000`` or a
    ``1e-3`` offset)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))


def save_accuracy_plot(plt, fig, ax, path: Path, xlabel: str, title: str) -> bool:
    """Label, style and write an accuracy plot to ``path``; True."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
