"""Plain torch modules: mixers, the shared classifier body, AdS and input serialisers.
Nothing here imports ART, pluggy or click."""

from .ads import ADS_ACTIVATIONS, AdaptiveScaling, check_ads
from .body import Block, SequenceClassifier
from .s4d import S4D
from .serialise import SEQUENCE_MODES, ImageToSequence, NaturalShapeModel, sequence_dims

__all__ = ["ADS_ACTIVATIONS", "AdaptiveScaling", "Block", "ImageToSequence", "NaturalShapeModel", "S4D",
           "SEQUENCE_MODES", "SequenceClassifier", "check_ads", "sequence_dims"]
