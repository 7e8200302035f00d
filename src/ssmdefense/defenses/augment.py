"""``augment``: the master thesis's regularisations as a defense ("Min-max optimization methods in
adversarial learning": random noise, rotation and resize/crop of the training images; for audio,
noise, masking and resampling), alone or under any adversarial training.

Every training batch is replaced by a randomly transformed copy before the base defense sees it.
Each transform is drawn independently for each sample and applied with probability ``p``.

Images (N, C, H, W):

- rotation by an angle uniform in [-rotation, rotation] degrees about the image centre;
- resize + crop: zoom by a factor s uniform in [1, 1 + resize] (the image grows to sH x sW), then
  crop back to H x W at an offset uniform over the positions that stay inside the zoomed image;
- noise: add uniform noise in [-noise, noise] to every pixel.

The two geometric transforms are one affine map per sample, resampled once (bilinear; the pixels
a rotation brings in from outside the image take the clip range's minimum, e.g. black). In the
normalised coordinates of ``affine_grid`` (u, v in [-1, 1]; output point o, rotation R by angle a
measured in pixels, so non-square images rotate rigidly), the input point sampled is::

    x_in = R (o / s + t),   R = [[cos a, -sin a * H/W], [sin a * W/H, cos a]],
    t ~ U[-(1 - 1/s), 1 - 1/s]^2

(a = 0 where the rotation is not drawn, s = 1 and t = 0 where the resize is not).

Audio (classifiers with a sample rate, ``clf.is_audio``; mono waveforms (N, 1, T) in [-1, 1]), in
this order:

- speed: play the clip faster or slower by a factor f (f > 1: shorter and higher-pitched, like
  Kaldi's speed perturbation), f uniform over the 1% grid {1 - speed, ..., 0.99, 1, 1.01, ...,
  1 + speed} (so that a batch needs one ``torchaudio.functional.resample(x, 100 f, 100)`` per
  distinct factor, at most 2 * 100 * speed + 1 of them, each with a short windowed-sinc kernel);
  the result, T / f samples, is cropped to its middle T samples (f < 1) or zero-padded equally on
  both sides back to T (f > 1), so the content stays centred;
- time shift: a circular shift (``torch.roll``) by an integer number of samples uniform in
  [-S, S], S = floor(shift_ms * sample_rate / 1000): nothing is lost, the end wraps to the start
  (clips are short and mostly silent at their ends, so a wrap costs less than the zero-filled
  gap a plain shift would leave);
- SNR noise: white Gaussian noise scaled for each example to an SNR drawn uniformly in
  [lo, hi] dB relative to that example's RMS (as it is after speed and shift):
  sigma = rms(x) * 10 ** (-snr / 20); a silent example (rms 0) gets no noise;
- uniform noise as for images (off by default for audio);
- SpecAugment masking (Park et al. 2019, https://arxiv.org/abs/1904.08779) on the log-mel
  spectrogram, through torchaudio's ``FrequencyMasking`` / ``TimeMasking`` with per-example masks
  (``iid_masks=True``): one band of w consecutive mel bins (frequency) and one of w frames (time),
  w = floor(U * max) with U uniform in [0, 1) (torchaudio's convention: up to max - 1 wide, and
  never more), at a uniform position, set to the front end's reference level, -40 dB (the body
  then sees 0, the level it is centred on: a masked band reads as "average", not as silence or as
  a loud band). With ``attack_space="features"`` the classifier's input is the spectrogram and the masks are
  applied to the batch like the other transforms. With the mel front end inside the model
  (``sequence="mel"``, waveform attack space), they are a forward hook on
  ``clf.serialiser.front_end`` that masks its output only while the module is in training mode and
  only inside this defense's ``train_batch`` (registered and removed around every batch, also when
  it raises): the attacks that make adversarial batches (eval mode), the per-epoch evaluation and
  everything after ``fit`` see unmasked spectrograms. Like dropout, each training-mode forward pass
  draws its own masks (TRADES' clean and adversarial passes get different ones). Masks need a mel
  spectrogram; other sequence modes (frames, samples) and images refuse them.

Rotation and resize are image transforms: for audio they default to 0 and refuse other values;
uniform noise defaults to 0 (off) for audio and applies when given. The audio waveform transforms
(speed, shift_ms, snr_db) need waveform input (1, T) and a sample rate. Every result is clipped to
``clip_values`` and keeps its shape. The random draws come from torch's global generator, which
the loop seeds and saves, so runs repeat and resume exactly; transforms that are off draw nothing.

Then the base defense trains on the transformed batch: ``base="none"`` (the default) is standard
training on augmented data; ``base="pgd-at"``, ``"trades"``, ``"minmax"``, ... attack the
augmented batch and train on that (the thesis combined its regularisations with min-max training).

Other non-image input (``len(input_shape) != 3``, no sample rate): only the noise applies;
rotation and resize must be set to 0 there, or the defense refuses with a clear error.

Arguments:
    noise (float | None): half-width of the uniform noise, in input units; None means 0.1 times
        the width of the clip range (0.1 for inputs in [0, 1]), and 0 (off) for audio; 0 turns it
        off. Default: None.
    rotation (float | None): largest rotation in degrees, 0 to 180; 0 turns it off. None means 30,
        and 0 for audio (where only 0 is accepted). Default: None.
    resize (float | None): largest relative zoom before cropping (0.2: up to 1.2x), >= 0; 0 turns
        it off. None means 0.2, and 0 for audio (where only 0 is accepted). Default: None.
    snr_db (float | [float, float] | None): audio: SNR of the added white Gaussian noise in dB, a
        range [lo, hi] (lo <= hi) drawn uniformly per example or one number (fixed SNR); None
        turns it off. Default: None.
    shift_ms (float): audio: largest circular time shift, in milliseconds, >= 0, shorter than the
        clip; 0 turns it off. Default: 0.
    speed (float): audio: largest relative speed change (0.1: factors 0.90 to 1.10 in steps of
        0.01), 0 or in [0.01, 1); 0 turns it off. Default: 0.
    freq_mask (int): audio with a mel spectrogram: mask widths up to freq_mask - 1 mel bins,
        0 to n_mels; 0 turns it off. Default: 0.
    time_mask (int): audio with a mel spectrogram: mask widths up to time_mask - 1 frames, 0 to
        the number of frames; 0 turns it off. Default: 0.
    p (float): probability, per sample and per transform, that the transform is applied, in [0, 1].
        Default: 0.5 (on average half of each batch keeps each transform off, so the model also
        sees the clean data it is tested on).
    base (str): the training: "none", "pgd-at", "trades", "free-at", "yopo", "fbf", "minmax" (any
        defense that trains batch by batch on the shared loop). Default: "none".
    every parameter of the base (e.g. max_iter, eps_step for pgd-at) and of the loop.

Examples::

    trainer = sd.get_defense("augment", clf, rotation=15, resize=0.1, noise=0.05)
    trainer = sd.get_defense("augment", clf, base="pgd-at", max_iter=10)
    trainer = sd.get_defense("augment", audio_clf, base="pgd-at", snr_db=[10, 40], shift_ms=100,
                             speed=0.1, freq_mask=8, time_mask=10)

    ssmdefense defend --defense augment --dataset spoken-digits -p base=pgd-at -p snr_db=[10,40]
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..errors import SSMDefenseError
from ..models.audio import DB_REFERENCE
from ..validation import integer, is_number, number
from .loop import TrainingLoop
from .with_base import WithBase, with_base

#: speed factors lie on a grid of 1 / SPEED_STEPS (1%): resample(x, k, SPEED_STEPS) plays x at k %
SPEED_STEPS = 100


def _snr_range(value) -> tuple[float, float] | None:
    """``snr_db`` as (lo, hi) dB: None, one number (lo = hi) or a pair with lo <= hi."""
    if value is None:
        return None
    if is_number(value):
        return float(value), float(value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(is_number(v) for v in value)
        and value[0] <= value[1]
    ):
        return float(value[0]), float(value[1])
    raise ValueError(
        f"snr_db must be a number or a pair [lo, hi] of numbers with lo <= hi, in dB (e.g. [10, 40]); got {value!r}"
    )


def _per_sample(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N) -> (N, 1, ..., 1), broadcastable against ``x``."""
    return mask.view(len(x), *[1] * (x.dim() - 1))


def affine_resample(
    x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, fill: float = 0.0
) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) rotated by ``angle`` (N) radians about their centre, zoomed by
    ``scale`` (N) and cropped at ``shift`` (N, 2) (normalised (u, v) offsets of the crop centre),
    resampled bilinearly; pixels from outside the image take ``fill``. Samples the input at
    ``R (o / s + t)`` for each output point o (see the module docstring)."""
    n, _, h, w = x.shape
    cos, sin = angle.cos(), angle.sin()  # (N)
    rot = torch.stack(
        [torch.stack([cos, -sin * (h / w)], 1), torch.stack([sin * (w / h), cos], 1)], 1
    )  # (N 2 2), rigid in pixel units
    theta = torch.cat([rot / scale[:, None, None], rot @ shift[:, :, None]], 2)  # (N 2 3)
    grid = F.affine_grid(theta.to(x.dtype), [n, *x.shape[1:]], align_corners=False)  # (N H W 2)
    # Resample x - fill so that zero padding brings in fill (the background), not 0.
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def augment_batch(
    x: torch.Tensor, *, noise: float, rotation: float, resize: float, p: float, clip: tuple[float, float]
) -> torch.Tensor:
    """Randomly rotated, resized/cropped and noised copy of ``x`` (see the module docstring).

    ``x``: (N, C, H, W) images, or any (N, ...) batch when rotation = resize = 0 (noise only).
    Transforms that are off (0) draw no random numbers. Returns a new tensor in ``clip``.
    """
    lo, hi = clip
    n, device, dtype = len(x), x.device, x.dtype
    with torch.no_grad():
        if rotation > 0 or resize > 0:
            # Written with affine_grid/grid_sample: torchvision's RandomAffine applies one set
            # of random parameters to a whole batch, and each sample needs its own.
            zeros = torch.zeros(n, device=device, dtype=dtype)
            angle, scale, shift = zeros, zeros + 1, torch.zeros(n, 2, device=device, dtype=dtype)
            moved = torch.zeros(n, device=device, dtype=torch.bool)
            if rotation > 0:
                rotated = torch.rand(n, device=device) < p  # (N)
                angle = torch.deg2rad((torch.rand(n, device=device, dtype=dtype) * 2 - 1) * rotation) * rotated
                moved |= rotated
            if resize > 0:
                zoomed = torch.rand(n, device=device) < p  # (N)
                scale = 1 + torch.rand(n, device=device, dtype=dtype) * resize * zoomed  # (N) in [1, 1+resize]
                shift = (torch.rand(n, 2, device=device, dtype=dtype) * 2 - 1) * (1 - 1 / scale)[:, None]  # (N 2)
                moved |= zoomed
            out = affine_resample(x, angle, scale, shift, fill=lo)
            x = torch.where(moved.view(n, *[1] * (x.dim() - 1)), out, x)
        if noise > 0:
            noised = torch.rand(n, device=device) < p  # (N)
            delta = (torch.rand_like(x) * 2 - 1) * noise  # (N ...)
            x = x + delta * noised.view(n, *[1] * (x.dim() - 1))
        return x.clamp(lo, hi)


# ---- audio --------------------------------------------------------------------------------------
def change_speed(x: torch.Tensor, percent: torch.Tensor) -> torch.Tensor:
    """Waveforms ``x`` (N, C, T) played at ``percent`` (N) integer % of their speed (110: 1.1x
    faster, shorter, higher-pitched), resampled with torchaudio (one call per distinct factor),
    then centre-cropped or zero-padded (equally on both sides) back to T samples."""
    import torchaudio  # slow to import; only audio runs need it

    T = x.shape[-1]
    out = x.clone()
    with torch.no_grad():
        for k in percent.unique().tolist():
            if k == SPEED_STEPS:
                continue
            chosen = percent == k  # (N)
            # read at k "Hz", written at SPEED_STEPS "Hz": T * SPEED_STEPS / k samples, frequencies * k / SPEED_STEPS
            y = torchaudio.functional.resample(x[chosen], int(k), SPEED_STEPS)  # (n C T')
            extra = y.shape[-1] - T
            if extra >= 0:
                y = y[..., extra // 2 : extra // 2 + T]  # (n C T): the middle
            else:
                y = F.pad(y, (-extra // 2, -extra - (-extra // 2)))  # (n C T): centred
            out[chosen] = y
    return out


def roll_each(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``torch.roll(x[i], shifts[i], -1)`` for each example: (N, C, T), (N) integer -> (N, C, T)."""
    T = x.shape[-1]
    index = (torch.arange(T, device=x.device) - shifts[:, None]) % T  # (N T): out[t] = x[t - s]
    return x.gather(-1, index[:, None, :].expand_as(x))


def noise_at_snr(x: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """``x`` (N, ...) plus white Gaussian noise at ``snr_db`` (N) dB below each example's RMS
    (``inf`` adds nothing)."""
    rms = x.flatten(1).pow(2).mean(1).sqrt()  # (N)
    sigma = rms * torch.pow(10.0, -snr_db / 20)  # (N)
    return x + _per_sample(sigma, x) * torch.randn_like(x)


def augment_audio(
    x: torch.Tensor,
    *,
    speed: float,
    max_shift: int,
    snr_db: tuple[float, float] | None,
    p: float,
    clip: tuple[float, float],
) -> torch.Tensor:
    """Speed-perturbed, circularly shifted (by up to ``max_shift`` samples) and noised (at an SNR in
    ``snr_db``) copy of waveforms ``x`` (N, 1, T), each drawn per example with probability ``p``
    (see the module docstring). Transforms that are off draw no random numbers. Returns a tensor in
    ``clip``."""
    n, device, dtype = len(x), x.device, x.dtype
    with torch.no_grad():
        if speed > 0:
            chosen = torch.rand(n, device=device) < p  # (N)
            K = math.floor(speed * SPEED_STEPS + 1e-9)
            percent = SPEED_STEPS + torch.randint(-K, K + 1, (n,), device=device) * chosen  # (N)
            x = change_speed(x, percent)
        if max_shift > 0:
            chosen = torch.rand(n, device=device) < p  # (N)
            x = roll_each(x, torch.randint(-max_shift, max_shift + 1, (n,), device=device) * chosen)
        if snr_db is not None:
            chosen = torch.rand(n, device=device) < p  # (N)
            lo, hi = snr_db
            snr = lo + (hi - lo) * torch.rand(n, device=device, dtype=dtype)  # (N) dB
            x = noise_at_snr(x, torch.where(chosen, snr, torch.full_like(snr, math.inf)))
        return x.clamp(*clip)


def mask_spectrogram(
    spec: torch.Tensor, *, freq_mask: int, time_mask: int, p: float, value: float = DB_REFERENCE
) -> torch.Tensor:
    """SpecAugment: log-mel spectrograms ``spec`` (N, C, n_mels, frames) with one band of mel bins
    (torchaudio ``FrequencyMasking(freq_mask, iid_masks=True)``) and one of frames
    (``TimeMasking(time_mask, iid_masks=True)``) set to ``value``, each per example with
    probability ``p``; 0 turns a mask off (and draws nothing). Differentiable."""
    import torchaudio  # slow to import; only audio runs need it

    n = len(spec)
    for size, masking in (
        (freq_mask, torchaudio.transforms.FrequencyMasking),
        (time_mask, torchaudio.transforms.TimeMasking),
    ):
        if size > 0:
            chosen = torch.rand(n, device=spec.device) < p  # (N)
            spec = torch.where(_per_sample(chosen, spec), masking(size, iid_masks=True)(spec, value), spec)
    return spec


def _input_kind(classifier) -> tuple[tuple, bool]:
    """(the classifier's input shape, whether it takes audio)."""
    return tuple(getattr(classifier, "input_shape", ()) or ()), bool(getattr(classifier, "is_audio", False))


class AugmentTrainer(WithBase):
    name = "augment"

    def __init__(
        self,
        classifier,
        *,
        base: TrainingLoop,
        noise: float | None = None,
        rotation: float | None = None,
        resize: float | None = None,
        snr_db=None,
        shift_ms: float = 0.0,
        speed: float = 0.0,
        freq_mask: int = 0,
        time_mask: int = 0,
        p: float = 0.5,
        **loop_params,
    ):
        _, audio = _input_kind(classifier)
        self.noise, self.snr_db, self.shift_ms, self.speed, self.p = noise, snr_db, shift_ms, speed, p
        # None: the image defaults, 0 (off) for audio, where _check_params refuses any other value
        self.rotation = (0.0 if audio else 30.0) if rotation is None else rotation
        self.resize = (0.0 if audio else 0.2) if resize is None else resize
        self.freq_mask, self.time_mask = freq_mask, time_mask
        super().__init__(classifier, base=base, **loop_params)  # stores the loop's parameters, checks them all
        lo, hi = self.clip
        self.noise = (0.0 if audio else 0.1 * (hi - lo)) if noise is None else float(noise)
        self.rotation, self.resize, self.p = float(self.rotation), float(self.resize), float(self.p)
        self.snr_db = _snr_range(snr_db)
        self.shift_ms, self.speed = float(shift_ms), float(speed)
        self.max_shift = self._max_shift()
        self._front_end_name = self._mask_target()

    def _check_params(self) -> None:
        super()._check_params()
        shape, audio = _input_kind(self._classifier)
        for key in ("rotation", "resize"):
            if audio and getattr(self, key) != 0:
                raise ValueError(
                    f"{key} is an image transform and this classifier takes audio: leave it "
                    f"out (it is 0 for audio); use snr_db, shift_ms, speed, freq_mask, time_mask"
                )
        number("rotation", self.rotation, 0.0, 180.0)
        number("resize", self.resize, 0.0)
        number("p", self.p, 0.0, 1.0)
        number("noise", self.noise, 0.0, optional=True)
        if len(shape) != 3 and (self.rotation > 0 or self.resize > 0):
            raise ValueError(
                f"rotation and resize need image input (C, H, W); this classifier takes {shape}: "
                f"pass rotation=0 and resize=0 to train with noise only"
            )
        _snr_range(self.snr_db)
        number("shift_ms", self.shift_ms, 0.0)
        number("speed", self.speed, 0.0)
        if not (self.speed == 0 or 1 / SPEED_STEPS <= self.speed < 1):
            raise ValueError(
                f"speed must be 0 (off) or a number in [{1 / SPEED_STEPS:g}, 1) (factors "
                f"1 +- speed in steps of {1 / SPEED_STEPS:g}); got {self.speed!r}"
            )
        for key in ("freq_mask", "time_mask"):
            integer(key, getattr(self, key), 0, hint="0 turns it off")
        self._max_shift()
        self._mask_target()

    def _max_shift(self) -> int:
        """The largest shift in samples; refuses the waveform transforms without waveform input."""
        shape, audio = _input_kind(self._classifier)
        wanted = [
            k
            for k, on in (
                ("snr_db", self.snr_db is not None),
                ("shift_ms", self.shift_ms > 0),
                ("speed", self.speed > 0),
            )
            if on
        ]
        if not wanted:
            return 0
        rate = getattr(self._classifier, "sample_rate", None)
        if not audio or rate is None or len(shape) != 2:
            what = "a spectrogram (attack_space='features')" if audio else f"input {shape} without a sample rate"
            raise ValueError(
                f"{', '.join(wanted)} transform(s) waveforms (1, T) with a sample rate; this classifier takes {what}"
            )
        if self.shift_ms == 0:
            return 0
        max_shift = math.floor(self.shift_ms * rate / 1000 + 1e-9)
        if not 1 <= max_shift < shape[-1]:
            raise ValueError(
                f"shift_ms={self.shift_ms:g} is {max_shift} samples at {rate} Hz; it must be at least "
                f"one sample and shorter than the clip ({shape[-1]} samples)"
            )
        return max_shift

    def _mask_target(self) -> str | None:
        """Where the masks go: None (off, or on the input spectrogram itself in the features space),
        or the name of the mel front end inside the classifier's model to hook."""
        if self.freq_mask == 0 and self.time_mask == 0:
            return None
        classifier = self._classifier
        serialiser = getattr(classifier, "serialiser", None)
        front_end = getattr(serialiser, "front_end", None)
        if front_end is None:
            sequence = getattr(classifier, "sequence", None)
            raise ValueError(
                f"freq_mask and time_mask mask a mel spectrogram: they need an audio classifier with "
                f"sequence='mel' (attack_space waveform or features); this one has sequence={sequence!r} "
                f"and input {_input_kind(classifier)[0]}"
            )
        n_mels, frames = int(serialiser.D), int(serialiser.L)
        for key, value, size, unit in (
            ("freq_mask", self.freq_mask, n_mels, "mel bins"),
            ("time_mask", self.time_mask, frames, "frames"),
        ):
            if value > size:
                raise ValueError(f"{key} must be at most the spectrogram's {size} {unit}; got {value}")
        if getattr(serialiser, "attack_space", "waveform") == "features":
            return None  # the classifier's input is the spectrogram: masked in transform()
        return next(name for name, module in classifier.model.named_modules() if module is front_end)

    @property
    def masks_input(self) -> bool:
        """Whether the masks apply to the input batch (features attack space)."""
        return (self.freq_mask > 0 or self.time_mask > 0) and self._front_end_name is None

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        x = (
            augment_audio(x, speed=self.speed, max_shift=self.max_shift, snr_db=self.snr_db, p=self.p, clip=self.clip)
            if self.max_shift or self.speed or self.snr_db
            else x
        )
        x = augment_batch(x, noise=self.noise, rotation=self.rotation, resize=self.resize, p=self.p, clip=self.clip)
        if self.masks_input:
            with torch.no_grad():
                x = mask_spectrogram(x, freq_mask=self.freq_mask, time_mask=self.time_mask, p=self.p).clamp(*self.clip)
        return x

    @contextmanager
    def spectrogram_masks(self, model: torch.nn.Module):
        """While open, training-mode forward passes of ``model``'s mel front end (found by its name
        in the classifier's model, or by its class when ``model`` wraps it) return masked
        spectrograms; eval-mode passes are untouched. A no-op unless masks are on and the front end
        is inside the model. The hook is removed on exit, also when the block raises."""
        if self._front_end_name is None:
            yield
            return
        reference = self._classifier.model.get_submodule(self._front_end_name)
        try:
            front_end = model.get_submodule(self._front_end_name)
        except AttributeError:
            front_end = None
        if type(front_end) is not type(reference):
            front_end = next((m for m in model.modules() if type(m) is type(reference)), None)
        if front_end is None:
            raise SSMDefenseError(f"the model has no {type(reference).__name__} front end to mask")
        freq_mask, time_mask, p = self.freq_mask, self.time_mask, self.p

        def mask(module, inputs, output):  # a plain function: deepcopies of the model stay independent
            if module.training:
                return mask_spectrogram(output, freq_mask=freq_mask, time_mask=time_mask, p=p)
            return None

        handle = front_end.register_forward_hook(mask)
        try:
            yield
        finally:
            handle.remove()

    def train_batch(self, model, optimizer, scheduler, x, y):
        with self.spectrogram_masks(model):
            return super().train_batch(model, optimizer, scheduler, x, y)

    def describe(self) -> dict:
        described = super().describe()
        described["snr_db"] = None if self.snr_db is None else list(self.snr_db)  # JSON's list, not (lo, hi)
        return described


def augment(classifier, *, base: str = "none", **params) -> AugmentTrainer:
    """The registered ``augment``: the transforms over the registered defense ``base`` (the
    transforms', the loop's and the base's parameters in ``params``)."""
    return with_base(AugmentTrainer, classifier, base, params)
