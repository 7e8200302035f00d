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
