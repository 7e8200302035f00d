"""Argument checks shared by the model constructors (ValueError with a clear message)."""


def check_int(name: str, value, low: int = 1) -> None:
    """``value`` must be an int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
