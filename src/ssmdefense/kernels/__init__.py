"""Sequence kernels and their plain references. No models, no ART, no plugins here."""

from .diag_ssm import diag_ssm_recurrence, fft_conv

__all__ = ["diag_ssm_recurrence", "fft_conv"]
