"""Small helpers shared by the attack factories."""

import numpy as np

NORMS = {"inf": np.inf, "linf": np.inf, "2": 2, "l2": 2}


def parse_norm(norm):
    """'inf'/'linf'/np.inf -> np.inf, '2'/'l2'/2 -> 2."""
    key = str(norm).lower().replace("np.", "")
    if key in NORMS:
        return NORMS[key]
    raise ValueError(f"norm must be one of inf, 2; got {norm!r}")


def check_positive(**values):
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{key} must be a positive number; got {value!r}")
