"""The classifier wrapper every attack sees: pixel-space RGB in [0, 1] at any size, logits out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

RESIZE_POLICIES = ("bilinear", "bilinear-antialias", "resize-crop")


def resize_to_input(x: torch.Tensor, size: tuple[int, int], policy: str) -> torch.Tensor:
    """Differentiably bring a batch (N, 3, H, W) to the model's input size.

    ``bilinear`` is the paper's setting (the whole image downsized bilinearly, no crop);
    ``bilinear-antialias`` is the same with an antialiasing filter when shrinking;
    ``resize-crop`` is torchvision's evaluation transform (short side to 256/224 of the
    input size, then a centre crop).
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(RESIZE_POLICIES)}")
    height, width = size
    if policy == "resize-crop":
        short = round(min(height, width) * 256 / 224)
        scale = short / min(x.shape[-2:])
        resized = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
        if resized != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=resized, mode="bilinear", align_corners=False, antialias=True)
        top, left = (resized[0] - height) // 2, (resized[1] - width) // 2
        return x[..., top : top + height, left : left + width]
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(
        x, size=(height, width), mode="bilinear", align_corners=False, antialias=policy == "bilinear-antialias"
    )


class Classifier(nn.Module):
    """A frozen image classifier in pixel space: resizing and normalisation happen inside.

    Input: float RGB batches in [0, 1], shape (N, 3, H, W), any H and W. Output: logits.
    Parameters never require gradients, so attacks differentiate with respect to the input only.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        labels: Sequence[str],
        input_size: tuple[int, int] = (224, 224),
        mean: Sequence[float],
        std: Sequence[float],
        resize: str = "bilinear",
    ) -> None:
        super().__init__()
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
        self.network = network.eval().requires_grad_(False)
        self.name = name
        self.labels = list(labels)
        self.input_size = tuple(input_size)
        self.resize = resize
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def train(self, mode: bool = True) -> Classifier:
        """Stay in evaluation mode: batch-norm statistics must never change under an attack."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_to_input(images, self.input_size, self.resize)
        return self.network((x - self.mean) / self.std)
