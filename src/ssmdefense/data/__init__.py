"""Datasets: embedded ones (always available, no network) and loaders for real ones."""

from .base import Dataset

__all__ = ["Dataset"]
