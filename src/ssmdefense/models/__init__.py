"""Plain torch modules: mixers, the shared classifier body, baselines, AdS and input serialisers.
Nothing here imports ART, pluggy or click."""

from .ads import ADS_ACTIVATIONS, AdaptiveScaling, check_ads
from .audio import LogMel, MelSequence, WaveformFrames, WaveformSamples
from .body import Block, SequenceClassifier
from .dss import DSS
from .mamba import MambaMixer
from .mega import MegaLayer
from .mlp import MLPClassifier
from .rnn import RNNClassifier
from .s4 import S4
from .s4d import S4D
from .s5 import S5
from .serialise import ImageToSequence, NaturalShapeModel

__all__ = [
    "ADS_ACTIVATIONS",
    "AdaptiveScaling",
    "Block",
    "DSS",
    "ImageToSequence",
    "LogMel",
    "MLPClassifier",
    "MambaMixer",
    "MegaLayer",
    "MelSequence",
    "NaturalShapeModel",
    "RNNClassifier",
    "S4",
    "S4D",
    "S5",
    "SequenceClassifier",
    "WaveformFrames",
    "WaveformSamples",
    "check_ads",
]
