"""Small helpers shared by the attack factories. Parameter checks are ``ssmdefense.validation``'s;
the ones here accept numpy scalars, which ART code passes around."""

import hashlib
from abc import ABC, abstractmethod
from contextlib import contextmanager

import numpy as np

from ..validation import number, positive

NORMS = {"inf": np.inf, "linf": np.inf, "2": 2, "l2": 2}


def parse_norm(norm):
    """'inf'/'linf'/np.inf -> np.inf, '2'/'l2'/2 -> 2."""
    key = str(norm).lower().replace("np.", "")
    if key in NORMS:
        return NORMS[key]
    raise ValueError(f"norm must be one of inf, 2; got {norm!r}")


def check_positive(optional: tuple[str, ...] = (), **values) -> None:
    """Each value a positive number; those named in ``optional`` may also be None (ART's default)."""
    for key, value in values.items():
        positive(key, value, optional=key in optional)


def check_number(name: str, value, low: float, high: float | None = None) -> None:
    """``value`` a finite real number in [low, high] (high None: no upper bound)."""
    number(name, value, low, high, numpy=True)


def check_count(name: str, value) -> None:
    """``value`` an integer >= 1."""
    positive(name, value, integer=True, numpy=True)


def check_targets(n_target_classes, nb_classes: int) -> None:
    """A targeted ensemble's number of target classes: an integer in 1..nb_classes - 1."""
    check_count("n_target_classes", n_target_classes)
    if n_target_classes > nb_classes - 1:
        raise ValueError(f"n_target_classes must be at most nb_classes - 1 = {nb_classes - 1}; got {n_target_classes}")


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


# ---- audio ---------------------------------------------------------------------------------------
def class_indices(estimator, x: np.ndarray, y: np.ndarray | None, batch_size: int) -> np.ndarray:
    """Labels as class indices (N,): y given as indices or one-hot, or the estimator's predictions."""
    if y is None:
        return estimator.predict(x, batch_size=batch_size).argmax(axis=1)
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if y.shape != (len(x),):
        raise ValueError(f"y must hold one label per input ({len(x)}); got shape {y.shape}")
    return y.astype(np.int64)


def check_snr(name: str, value) -> None:
    """``value`` a finite real number (a signal-to-noise ratio in dB; negative is allowed)."""
    number(name, value, unit="dB", numpy=True)


def check_waveform_estimator(attack: str, estimator) -> None:
    """Waveform attacks need an estimator whose input is a mono waveform (1, T)."""
    shape = tuple(getattr(estimator, "input_shape", ()) or ())
    if len(shape) == 2 and shape[0] == 1:
        return
    if getattr(estimator, "is_audio", False):
        raise ValueError(
            f"{attack} needs waveform input (1, T); the estimator takes {shape}: "
            f"attack_space=features perturbs spectrograms (log-mel features), not waveforms. "
            f"Use a classifier with the default attack_space (waveform)"
        )
    raise ValueError(
        f"{attack} needs waveform input (1, T) (audio, natural shape (N, 1, T)); the estimator takes {shape}"
    )


def check_waveforms(attack: str, x: np.ndarray) -> tuple[np.ndarray, np.dtype]:
    """``x`` (mono waveforms (N, 1, T)) as float32, the dtype attacks compute in, and the dtype to
    return (x's own when floating, else float32)."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[1] != 1:
        raise ValueError(f"{attack} needs mono waveforms (N, 1, T); got x of shape {x.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    return x.astype(np.float32, copy=False), dtype


def resolve_sample_rate(attack: str, sample_rate, estimator) -> int:
    """``sample_rate`` if given, else the estimator's (``SSMClassifier.sample_rate``); an error if neither."""
    if sample_rate is None:
        sample_rate = getattr(estimator, "sample_rate", None)
        if sample_rate is None:
            raise ValueError(
                f"{attack} needs the sample rate: pass sample_rate=... or use an estimator built "
                f"with sample_rate (sd.SSMClassifier(..., sample_rate=16000))"
            )
    return int(positive("sample_rate", sample_rate, integer=True, hint="samples per second", numpy=True))


def snr_radius(x: np.ndarray, snr_db: float) -> np.ndarray:
    """(N,) float64: the L2 norm a perturbation of each example may have at ``snr_db``,
    ``||x_i||_2 * 10 ** (-snr_db / 20)`` (0 for a silent example)."""
    x = np.asarray(x)
    return np.linalg.norm(x.reshape(len(x), -1).astype(np.float64), axis=1) * 10.0 ** (-float(snr_db) / 20.0)


def perturbation_snr_db(x: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
    """(N,) float64: the signal-to-noise ratio of each example's perturbation, in dB,
    ``20 log10(||x_i|| / ||x_adv_i - x_i||)``; +inf where nothing changed, -inf for a silent x_i
    that changed."""
    x = np.asarray(x).reshape(len(x), -1).astype(np.float64)  # (N T)
    delta = np.asarray(x_adv).reshape(len(x), -1).astype(np.float64) - x  # (N T)
    signal, noise = np.linalg.norm(x, axis=1), np.linalg.norm(delta, axis=1)  # (N), (N)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 20.0 * (np.log10(signal) - np.log10(noise))  # (N)
    return np.where(noise == 0, np.inf, snr)


def estimator_device(estimator):
    """The torch device the estimator computes on (CPU for estimators without one)."""
    import torch

    return torch.device(getattr(estimator, "device", None) or "cpu")


class WaveformSearchAttack(ABC):
    """Mixin for the worst-case search attacks over waveform transformations (``time-shift``,
    ``speed``, ``pitch-shift``), the audio counterpart of Foolbox's spatial attack.

    A subclass (also an ART ``EvasionAttack``) sets ``name`` and defines ``candidates(T)``: the
    transformations to try, in order, as ``(label, fn)`` pairs, ``fn`` mapping a torch batch
    (B, 1, T) on the estimator's device to (B, 1, T). For each example the result is the first
    candidate (after clipping to ``clip_values``) that the model misclassifies; an example that
    nothing fools, or that the model already misclassifies, is returned unchanged. Only examples
    not fooled yet are transformed and scored, so a search that fools early is cheap.
    ``self.transformations`` then holds, per example, the label of the candidate it got (None:
    unchanged).
    """

    name = "search"

    @abstractmethod
    def candidates(self, length: int) -> list:
        """The (label, fn) transformations to try on clips of ``length`` samples; every subclass defines
        it (an abstract method: a subclass without it cannot be built)."""

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        x, dtype = check_waveforms(self.name, x)  # float32
        bs = int(self.batch_size)
        labels = class_indices(self.estimator, x, y, bs)  # (N)
        clip = self.estimator.clip_values
        device = estimator_device(self.estimator)
        candidates = self.candidates(x.shape[-1])
        x_adv = x.copy()
        chosen = np.full(len(x), None, dtype=object)
        starts = range(0, len(x), bs)
        with tqdm(total=len(starts) * len(candidates), desc=self.name, disable=not self.verbose) as bar:
            for start in starts:
                xb = x[start : start + bs]  # (B 1 T)
                yb = labels[start : start + bs]  # (B)
                # Already misclassified: the input itself is the answer (as in Foolbox).
                active = np.flatnonzero(self.estimator.predict(xb, batch_size=bs).argmax(axis=1) == yb)  # (A)
                xt = torch.from_numpy(xb).to(device)  # (B 1 T)
                for label, fn in candidates:
                    bar.update(1)
                    if active.size == 0:
                        continue
                    with torch.no_grad():
                        xc = fn(xt[torch.from_numpy(active).to(device)])  # (A 1 T)
                        if clip is not None:
                            xc = xc.clamp(float(clip[0]), float(clip[1]))
                    xc = xc.cpu().numpy()  # (A 1 T) float32
                    fooled = self.estimator.predict(xc, batch_size=bs).argmax(axis=1) != yb[active]  # (A)
                    x_adv[start + active[fooled]] = xc[fooled]
                    for i in start + active[fooled]:
                        chosen[i] = label  # one by one: a tuple label must not be broadcast
                    active = active[~fooled]
        self.transformations = chosen
        return x_adv.astype(dtype, copy=False)


@contextmanager
def predictions_remembered(estimator):
    """For the block, ``estimator.predict`` answers the rows it has already predicted from memory
    (keyed by a digest of each row's bytes) and runs the model on the new rows only.

    Why: ART's ``SquareAttack`` predicts the same points three times per iteration (all of x_adv to
    find the robust ones, the robust ones for their current margin, then the candidates), and only
    the candidates are new, so two of every three forward passes repeat earlier ones. Square is
    most of the standard AutoAttack's time (docs/performance.md)."""
    predict = estimator.predict
    seen: dict[bytes, np.ndarray] = {}

    def remembered(x, batch_size: int = 128, **kwargs):
        if kwargs:
            return predict(x, batch_size=batch_size, **kwargs)
        x = np.ascontiguousarray(x)
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x]
        new = [i for i, key in enumerate(keys) if key not in seen]
        if new:
            for i, logits in zip(new, predict(x[new], batch_size=batch_size)):
                seen[keys[i]] = logits
        return np.stack([seen[key] for key in keys]) if keys else predict(x, batch_size=batch_size)

    estimator.predict = remembered  # an instance attribute over the method, for the block
    try:
        yield
    finally:
        del estimator.predict
