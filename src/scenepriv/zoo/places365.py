"""Places365-Standard scene classifiers: torchvision networks with the official CSAIL checkpoints."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .cache import WeightsUnavailable, cache_dir, fetch, read_checkpoint

if TYPE_CHECKING:
    import torch
    from torch import nn

ARCHITECTURES = {"resnet50": "ResNet-50", "resnet18": "ResNet-18", "alexnet": "AlexNet",
                 "densenet161": "DenseNet-161"}

URL_BASE = "http://places2.csail.mit.edu/models_places365/"
URL_ENV = "SCENEPRIV_PLACES365_URL"
NUM_CLASSES = 365

# SHA-256 of the official files where a published one is known; the others are recorded on first download.
KNOWN_SHA256: dict[str, str | None] = {
    "resnet50": "46529c86902bd0cfb0ea562a30b2850c28d2620d96282b3db9c318e1d774f6c5",
    "resnet18": None,
    "alexnet": None,
    "densenet161": None,
}

_MODULE = re.compile(r"(^|\.)module\.")
_DENSENET_OLD = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")
_LETTER = re.compile(r"^/[a-z]/")


def filename(arch: str) -> str:
    """Name of the official checkpoint file of ``arch``."""
    return f"{arch}_places365.pth.tar"


def url(arch: str) -> str:
    """Where the checkpoint of ``arch`` is downloaded from; ``$SCENEPRIV_PLACES365_URL`` overrides the host."""
    base = os.environ.get(URL_ENV) or URL_BASE
    return base.rstrip("/") + "/" + filename(arch)


def labels() -> list[str]:
    """The 365 scene names in index order, without the ``/a/`` letter prefix (``bus_station/indoor``)."""
    text = (resources.files("scenepriv") / "data" / "categories_places365.txt").read_text(encoding="utf-8")
    names: dict[int, str] = {}
    for line in text.splitlines():
        if line.strip():
            name, index = line.rsplit(maxsplit=1)
            names[int(index)] = _LETTER.sub("", name)
    if sorted(names) != list(range(NUM_CLASSES)):
        raise RuntimeError(f"categories_places365.txt lists {len(names)} classes, not indices 0-364")
    return [names[i] for i in range(NUM_CLASSES)]


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official-checkpoint keys to torchvision's: drop DataParallel's ``module.``, fix old DenseNet names."""
    return {_DENSENET_OLD.sub(r"\1\2.", _MODULE.sub(r"\1", key)): value for key, value in state.items()}


def _state_dict(checkpoint: object, path: Path) -> Mapping[str, torch.Tensor]:
    """The tensors of a checkpoint: ``checkpoint["state_dict"]`` for the official files, else the plain dict."""
    import torch

    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path}: not a state dict nor a checkpoint with a 'state_dict' entry")
    return checkpoint


def _mismatch(network: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """A short account of why ``state`` does not fit ``network`` (the full PyTorch list can be huge)."""
    target = network.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
              for k, v in state.items() if k in target and v.shape != target[k].shape]
    parts = [f"{len(items)} {what} (e.g. {', '.join(items[:3])})"
             for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", shapes)) if items]
    return "; ".join(parts)


def build(arch: str, weights: str | None = None) -> nn.Module:
    """The torchvision ``arch`` with 365 outputs and the Places365 weights, from ``weights`` or the cache."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown Places365 architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if weights is None:
        path = fetch(url(arch), filename(arch), KNOWN_SHA256[arch])
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"weights file {path} not found (or not a regular file)")
    checkpoint = read_checkpoint(path)
    import torchvision

    state = convert_state_dict(_state_dict(checkpoint, path))
    network = getattr(torchvision.models, arch)(weights=None, num_classes=NUM_CLASSES)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        reason = _mismatch(network, state) or (str(error).splitlines() or [repr(error)])[0]
        raise ValueError(f"{path}: not a Places365 {ARCHITECTURES[arch]} checkpoint: {reason}") from error
    return network


def weights_status(arch: str) -> tuple[str, bool]:
    """Where the weights of ``arch`` are (or will be downloaded to) and whether they are available offline."""
    path = cache_dir() / filename(arch)
    if path.is_file():
        return str(path), True
    return f"{path} (downloaded on first use from {url(arch)})", False
