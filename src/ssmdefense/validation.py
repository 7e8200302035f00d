"""Parameter checks with one wording: a ``ValueError`` naming the parameter, what it must be, and what
it got, ``"<key> must be <what>[ or None][ (<hint>)]; got <value>"`` (the registry shows it as the
plugin's error; the CLI as one line, exit status 2). Booleans are not numbers here, though Python
counts them as ints; numpy scalars are numbers only with ``numpy=True`` (attacks and datasets, which
ART and numpy code call with them; a defense records its parameters in report.json, which takes
Python numbers only). Every check returns the value it was given, so it can be used inline.

Each check takes, besides the key and the value:

- ``optional``: None is accepted too (the message says "or None");
- ``hint``: a few words in parentheses after what the value must be ("the paper uses 100");
- ``numpy``: numpy integers and floats count as numbers;
- ``error``: the exception class, a ``ValueError`` subclass (datasets raise ``SSMDefenseError``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_number(value: Any, *, integer: bool = False, finite: bool = True, numpy: bool = False) -> bool:
    """Whether ``value`` is a real number (an integer when ``integer``), not a bool, and finite
    (within float range: no inf, nan or 10**400) unless ``finite=False``; numpy scalars count only
    when ``numpy``."""
    if isinstance(value, bool):
        return False
    if numpy:
        kinds = numbers.Integral if integer else numbers.Real
    else:
        kinds = int if integer else (int, float)
    if not isinstance(value, kinds):
        return False
    try:
        return not finite or math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _check(ok: bool, key: str, value: Any, what: str, *, optional: bool, hint: str, error: type[ValueError]):
    if not ok:
        raise error(
            f"{key} must be {what}{' or None' if optional else ''}{f' ({hint})' if hint else ''}; got {value!r}"
        )
    return value


def positive(
    key: str,
    value: Any,
    integer: bool = False,
    *,
    unit: str = "",
    optional: bool = False,
    hint: str = "",
    numpy: bool = False,
    error: type[ValueError] = ValueError,
) -> Any:
    """``value`` must be a finite number > 0 (an int when ``integer``): "a positive number[ of <unit>]"."""
    if optional and value is None:
        return value
    what = f"a positive {'integer' if integer else 'number'}{f' of {unit}' if unit else ''}"
    return _check(
        is_number(value, integer=integer, numpy=numpy) and value > 0,
        key,
        value,
        what,
        optional=optional,
        hint=hint,
        error=error,
    )


def non_negative(
    key: str,
    value: Any,
    *,
    optional: bool = False,
    hint: str = "",
    numpy: bool = False,
    error: type[ValueError] = ValueError,
) -> Any:
    """``value`` must be a finite number >= 0."""
    if optional and value is None:
        return value
    return _check(
        is_number(value, numpy=numpy) and value >= 0,
        key,
        value,
        "a finite number >= 0",
        optional=optional,
        hint=hint,
        error=error,
    )


def integer(
    key: str,
    value: Any,
    low: int | None = None,
    *,
    optional: bool = False,
    hint: str = "",
    numpy: bool = False,
    error: type[ValueError] = ValueError,
) -> Any:
    """``value`` must be an int, and ``>= low`` when ``low`` is given."""
    if optional and value is None:
        return value
    ok = is_number(value, integer=True, numpy=numpy) and (low is None or value >= low)
    return _check(
        ok, key, value, f"an integer{'' if low is None else f' >= {low}'}", optional=optional, hint=hint, error=error
    )


def number(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    high_open: bool = False,
    unit: str = "",
    optional: bool = False,
    hint: str = "",
    numpy: bool = False,
    error: type[ValueError] = ValueError,
) -> Any:
    """``value`` must be a finite number in [``low``, ``high``] (either bound may be None; with
    ``high_open``, ``high`` itself is out): "a number in [0, 180]", "a number >= 0", "a finite number"."""
    if optional and value is None:
        return value
    ok = (
        is_number(value, numpy=numpy)
        and (low is None or value >= low)
        and (high is None or (value < high if high_open else value <= high))
    )
    if low is not None and high is not None:
        span = f" in [{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None or high is not None:
        span = f" >= {low:g}" if low is not None else f" {'<' if high_open else '<='} {high:g}"
    else:
        span = ""
    what = f"{'a' if span else 'a finite'} number{f' of {unit}' if unit else ''}{span}"
    return _check(ok, key, value, what, optional=optional, hint=hint, error=error)


def boolean(key: str, value: Any, *, error: type[ValueError] = ValueError) -> Any:
    """``value`` must be True or False (not 0, 1 or a string)."""
    return _check(isinstance(value, bool), key, value, "True or False", optional=False, hint="", error=error)
