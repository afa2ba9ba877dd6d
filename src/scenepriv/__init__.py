"""scenepriv: protect the scene of a photo from automatic classifiers (Private FGSM and its baselines)."""

from .methods import METHODS, Method, Protection, Settings, protect
from .zoo import MODELS, Classifier, load_classifier

__all__ = ["METHODS", "MODELS", "Classifier", "Method", "Protection", "Settings", "load_classifier", "protect"]
__version__ = "0.1.0"
