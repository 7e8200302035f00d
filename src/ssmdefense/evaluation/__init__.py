"""Robustness evaluation, reports and plots."""

from .robustness import attack_key, best_last_gap, evaluate_robustness

__all__ = ["attack_key", "best_last_gap", "evaluate_robustness"]
