"""Sequence kernels and their plain references. No models, no ART, no plugins here.

The Numba kernels are imported on first use (``kernels.backend``), never by this package.
"""

from .diag_ssm import diag_ssm_recurrence
from .long_conv import fft_conv

__all__ = ["diag_ssm_recurrence", "fft_conv"]
