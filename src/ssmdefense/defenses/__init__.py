"""Built-in defense plugins, one per file, all on the shared loop in ``loop.py``."""

from .loop import TrainingLoop

__all__ = ["TrainingLoop"]
