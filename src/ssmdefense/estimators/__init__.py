"""ART wrappers for sequence models."""

from .classifier import SSMClassifier

__all__ = ["SSMClassifier"]
