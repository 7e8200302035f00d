"""Parameter checks with one wording: a ``ValueError`` naming the parameter, what it must be, and what
it got (the registry shows it as the plugin's error; the CLI as one line, exit status 2). Booleans
are not numbers here, though Python counts them as ints."""

from __future__ import annotations

import math


def positive(key: str, value, integer: bool = False) -> None:
    """``value`` must be a positive number (an int when ``integer``), not a bool."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{key} must be a positive {'integer' if integer else 'number'}; got {value!r}")


def non_negative(key: str, value) -> None:
    """``value`` must be a finite number >= 0, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be >= 0; got {value!r}")


def integer(key: str, value, low: int | None = None) -> None:
    """``value`` must be an int (not a bool), and ``>= low`` when ``low`` is given."""
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise ValueError(f"{key} must be an integer{'' if low is None else f' >= {low}'}; got {value!r}")


def boolean(key: str, value) -> None:
    """``value`` must be True or False (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be True or False; got {value!r}")
