"""Plain torch modules: mixers, the shared classifier body, baselines, AdS and input serialisers.
Nothing here imports ART, pluggy or click."""

from .ads import ADS_ACTIVATIONS, AdaptiveScaling, check_ads
from .body import Block, SequenceClassifier
from .dss import DSS
from .mamba import MambaMixer
from .mega import MegaLayer
from .mlp import MLPClassifier
from .rnn import RNNClassifier
from .s4 import S4
from .s4d import S4D
from .s5 import S5
from .serialise import SEQUENCE_MODES, ImageToSequence, NaturalShapeModel, sequence_dims

__all__ = ["ADS_ACTIVATIONS", "AdaptiveScaling", "Block", "DSS", "ImageToSequence", "MLPClassifier",
           "MambaMixer", "MegaLayer", "NaturalShapeModel", "RNNClassifier", "S4", "S4D", "S5",
           "SEQUENCE_MODES", "SequenceClassifier", "check_ads", "sequence_dims"]
