"""Datasets: embedded ones (always available, no network) and loaders for real ones."""

from .base import Dataset, LazyDataset

__all__ = ["Dataset", "LazyDataset"]
