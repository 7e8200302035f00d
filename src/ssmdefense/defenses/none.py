"""``none``: standard training (no defense) on the shared loop, the baseline every defense is
compared with. Its per-epoch PGD-10 evaluation still runs, at ``eps``."""

from .loop import TrainingLoop


class StandardTrainer(TrainingLoop):
    """Cross-entropy on clean batches. Takes the loop's arguments (see ``TrainingLoop``)."""

    name = "none"
