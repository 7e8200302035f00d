"""Argument checks shared by the model constructors (ValueError with a clear message)."""

from ..validation import integer


def check_int(name: str, value, low: int = 1) -> None:
    """``value`` must be an int (not a bool) >= ``low``."""
    integer(name, value, low)
