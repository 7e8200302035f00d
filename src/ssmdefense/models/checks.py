"""Argument checks shared by the model constructors (ValueError with a clear message), on
``ssmdefense.validation``."""

from ..validation import integer, is_number, number


def check_int(name: str, value, low: int = 1) -> None:
    """``value`` must be an int (not a bool) >= ``low``."""
    integer(name, value, low)


def check_dropout(dropout) -> None:
    """``dropout`` must be a rate in [0, 1)."""
    number("dropout", dropout, 0.0, 1.0, high_open=True)


def check_mixer_args(d_model, d_state, dt_min, dt_max, pairs: str = "N/2 conjugate pairs") -> None:
    """The diagonal and S4-family mixers' shared arguments: H, an even N (its complex modes come in
    conjugate ``pairs``), and the range 0 < dt_min <= dt_max of the initial step."""
    integer("d_model", d_model, 1)
    if not is_number(d_state, integer=True) or d_state < 2 or d_state % 2:
        raise ValueError(f"d_state must be an even integer >= 2 ({pairs}); got {d_state!r}")
    for key, value in (("dt_min", dt_min), ("dt_max", dt_max)):
        number(key, value)
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
