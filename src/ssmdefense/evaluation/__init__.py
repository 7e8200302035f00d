"""Robustness evaluation, reports and plots."""

from .robustness import attack_key, evaluate_robustness

__all__ = ["attack_key", "evaluate_robustness"]
