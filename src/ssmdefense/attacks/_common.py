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


def check_number(name: str, value, low: float, high: float | None = None) -> None:
    """``value`` a real number in [low, high] (high None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not low <= value <= (np.inf if high is None else high):
        bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValueError(f"{name} must be a number {bound}; got {value!r}")


def check_count(name: str, value) -> None:
    """``value`` an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def check_ignored_eps(attack: str, eps) -> None:
    """Spatial attacks take ``eps`` only for a uniform call signature; still reject nonsense."""
    if eps is not None:
        check_number(f"eps (ignored by {attack}: it is not an eps-ball attack)", eps, 0.0)


def check_image_estimator(attack: str, estimator) -> None:
    """Image attacks (rotations, shifts, squares) need an estimator whose input is (C, H, W)."""
    shape = tuple(getattr(estimator, "input_shape", ()) or ())
    if len(shape) != 3:
        raise ValueError(f"{attack} needs image-shaped input (C, H, W); the estimator takes {shape}")


def within_budget(attack, eps: float, norm):
    """Wrap a minimum-norm attack (Carlini-Wagner) so that it reports accuracy *at* ``eps``: an
    adversarial example farther than ``eps`` from its input (in ``norm``) is replaced by the input.
    ART's C&W attacks have no budget of their own, so this is the standard way to score them."""
    from art.attacks.attack import EvasionAttack

    class WithinBudget(EvasionAttack):
        attack_params = EvasionAttack.attack_params + ["eps", "norm"]
        _estimator_requirements = ()

        def __init__(self):
            super().__init__(estimator=attack.estimator)
            self.attack, self.eps, self.norm = attack, eps, norm

        def generate(self, x, y=None, **kwargs):
            x_adv = self.attack.generate(x, y, **kwargs).astype(x.dtype)
            delta = (x_adv - x).reshape(len(x), -1)  # (N features)
            dist = np.abs(delta).max(axis=1) if self.norm == np.inf else np.linalg.norm(delta, axis=1)  # (N)
            too_far = dist > self.eps * (1 + 1e-6)
            x_adv[too_far] = x[too_far]
            return x_adv

    WithinBudget.__name__ = WithinBudget.__qualname__ = f"WithinBudget[{type(attack).__name__}]"
    return WithinBudget()
