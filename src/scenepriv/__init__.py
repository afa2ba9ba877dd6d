"""scenepriv: protect the scene of a photo from automatic classifiers (Private FGSM and its baselines).

The names below are imported on first use, so that ``import scenepriv`` (and the command line's
``--help``) does not load PyTorch.
"""

from typing import Any

__version__ = "0.4.0"
__all__ = ["METHODS", "MODELS", "STRENGTHS", "Classifier", "Method", "Protection", "ScenePrivError", "Settings",
           "load_classifier", "protect"]

_HOMES = {"METHODS": "settings", "Method": "settings", "Settings": "settings", "STRENGTHS": "settings",
          "ScenePrivError": "settings",
          "Protection": "methods",
          "protect": "methods", "MODELS": "zoo", "Classifier": "zoo", "load_classifier": "zoo"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
