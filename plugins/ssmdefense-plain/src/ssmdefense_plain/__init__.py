"""ssmdefense-plain: an example plugin made of plain parts (see README.md).

The hook bodies register factories only; torch and ART are imported when a factory is first called,
so loading the plugin (``ssmdefense --help``, ``ssmdefense plugins``) stays fast.
"""

import ssmdefense

__version__ = "0.1.0"


def tiny_gru(d_input: int, n_classes: int, *, hidden: int = 32):
    """``tiny-gru``: (B, L, D) -> GRU(hidden) -> last step -> Linear -> logits (B, n_classes)."""
    from .model import TinyGRU

    return TinyGRU(d_input, n_classes, hidden)


def madry_pgd(classifier, *, eps: float = 0.1, max_iter: int = 7, batch_size: int = 64, **_):
    """``madry-pgd``: ART's ``AdversarialTrainerMadryPGD`` as it is (step eps / 4). ``**_`` takes what
    ``ssmdefense defend`` passes to every defense (seed, eval_samples, verbose) and this one ignores."""
    from art.defences.trainer import AdversarialTrainerMadryPGD

    return AdversarialTrainerMadryPGD(
        classifier, nb_epochs=1, batch_size=batch_size, eps=eps, eps_step=eps / 4, max_iter=max_iter
    )


@ssmdefense.hookimpl
def register_models(register):
    register("tiny-gru", tiny_gru, "Plain nn.Module: a GRU and a linear head")


@ssmdefense.hookimpl
def register_defenses(register):
    register("madry-pgd", madry_pgd, "ART's AdversarialTrainerMadryPGD, unchanged")
