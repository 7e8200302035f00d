"""``none``: standard training (no defense) on the shared loop, the baseline every defense is
compared with. Its per-epoch PGD-10 evaluation still runs, at ``eps``."""

from ..hookspecs import hookimpl
from .loop import TrainingLoop


class StandardTrainer(TrainingLoop):
    """Cross-entropy on clean batches. Takes the loop's arguments (see ``TrainingLoop``)."""

    name = "none"


@hookimpl
def register_defenses(register):
    register("none", StandardTrainer, "Standard training (no defense), the baseline")
