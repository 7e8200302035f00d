"""Certified robustness: lower bounds on robust accuracy that hold against every attack.

``certify(clf, x, y, method="smoothing", sigma=0.25)``: randomized smoothing (Cohen et al. 2019;
``smoothing.py``), for every model, images and audio, certifying L2 radii of the smoothed classifier.
``certify(clf, x, y, method="ibp", eps=0.1)``: interval bounds (``ibp.py``) through the LTI models
(S4, S4D, DSS, S5, MLP) on images, certifying the model itself in the L-inf ball.
``certify(clf, x, y, method="crown", eps=0.01)``: backward linear bounds (``crown.py``), far tighter,
for S4, S4D, DSS and the MLP on images read as rows.
``certify(clf, x, y, method="crown-ibp", eps=0.1)``: the same backward pass with the relaxations built
from interval bounds (Zhang et al. 2020): between the two in tightness, near ibp in cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SSMDefenseError
from .crown import certify_crown, certify_crown_ibp
from .ibp import certify_ibp
from .smoothing import certify_smoothing

METHODS = {"smoothing": certify_smoothing, "ibp": certify_ibp, "crown": certify_crown, "crown-ibp": certify_crown_ibp}


def certify(clf: Any, x: np.ndarray, y: np.ndarray, method: str = "smoothing", **params: Any) -> dict:
    """Certify ``clf`` on ``x`` (as the classifier takes it) with labels ``y`` by ``method``; the
    method's summary (for smoothing: certified accuracy against the L2 radius, abstain rate, median
    and largest certifiable radius, each sample's prediction and radius)."""
    if method not in METHODS:
        raise SSMDefenseError(f"unknown certification method {method!r}; known: {', '.join(METHODS)}")
    return METHODS[method](clf, x, y, **params)


__all__ = ["METHODS", "certify"]
