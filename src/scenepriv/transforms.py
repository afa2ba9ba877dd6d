"""What a platform does to an upload, as differentiable tensor operations: resizing and JPEG.

Used two ways: as random views during the iterations (``--robust``: expectation over
transformations, so the perturbation survives them), and as the resize pipelines a classifier
may use to bring a photo to its input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .settings import RESAMPLERS, RESIZE_POLICIES


def resize(x: torch.Tensor, size: tuple[int, int], resampler: str) -> torch.Tensor:
    """Resize a batch (N, 3, H, W) to ``size`` with one of :data:`RESAMPLERS`, differentiably."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if resampler == "area":
        return F.interpolate(x, size=size, mode="area")
    if resampler == "bicubic":
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    if resampler in ("bilinear", "bilinear-antialias"):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                             antialias=resampler == "bilinear-antialias")
    raise ValueError(f"unknown resampler {resampler!r}; choose one of {', '.join(RESAMPLERS)}")


def resize_to_input(x: torch.Tensor, size: tuple[int, int], policy: str) -> torch.Tensor:
    """Differentiably bring a batch (N, 3, H, W) to the model's input size.

    ``bilinear`` is the paper's setting (the whole image downsized bilinearly, no crop);
    ``bilinear-antialias``, ``bicubic`` and ``area`` are the other resamplers of :func:`resize`;
    ``resize-crop`` is torchvision's evaluation transform (short side to 256/224 of the input
    size, antialiased bilinear, then a centre crop).
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(RESIZE_POLICIES)}")
    if policy != "resize-crop":
        return resize(x, size, policy)
    height, width = size
    scale = round(min(height, width) * 256 / 224) / min(x.shape[-2:])
    resized = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
    x = resize(x, resized, "bilinear-antialias")
    top, left = (resized[0] - height) // 2, (resized[1] - width) // 2
    return x[..., top : top + height, left : left + width]


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Differentiable JPEG encoding and decoding (kornia), one quality per image."""
    from kornia.enhance import jpeg_codec_differentiable

    return jpeg_codec_differentiable(x, quality.to(x.device, x.dtype)).clamp(0, 1)


def diverse_views(x: torch.Tensor, input_size: tuple[int, int], generator: torch.Generator, count: int,
                  min_scale: float) -> list[torch.Tensor]:
    """Input diversity (DI): ``count`` views of a batch at the classifier's input size, each shrunk by a random
    factor in [min_scale, 1] and placed at a random position on a black canvas of that size (one draw per view
    for the whole batch, from ``generator``), so a step cannot rely on one exact scale and position."""
    height, width = input_size
    x = resize(x, input_size, "bilinear-antialias")
    views = []
    for _ in range(count):
        scale = min_scale + (1 - min_scale) * float(torch.rand(1, generator=generator))
        small_height, small_width = max(1, round(height * scale)), max(1, round(width * scale))
        top = int(torch.randint(height - small_height + 1, (1,), generator=generator))
        left = int(torch.randint(width - small_width + 1, (1,), generator=generator))
        small = resize(x, (small_height, small_width), "bilinear")
        views.append(F.pad(small, [left, width - small_width - left, top, height - small_height - top]))
    return views


@dataclass(frozen=True)
class PlatformViews:
    """Random re-encodings of a batch, the way a platform may process an upload.

    Each view: resize to a random scale in [min_scale, 1] (or to 1080 or 2048 px on the long side
    when the photo is larger) with a random resampler, JPEG at a random quality in
    [min_quality, max_quality], then down to the classifier's input size with a random resampler.
    The first view of each call is the harshest: the smallest of those scales and the lowest quality.
    """

    count: int = 2
    min_quality: int = 25
    max_quality: int = 95
    min_scale: float = 0.5
    long_sides: tuple[int, ...] = (1080, 2048)

    def __call__(self, x: torch.Tensor, input_size: tuple[int, int], generator: torch.Generator) -> list[torch.Tensor]:
        """The first view is the harshest kind (smallest scale, low quality); the others are random."""
        return [self.view(x, input_size, generator, harsh=i == 0) for i in range(self.count)]

    def view(
        self, x: torch.Tensor, input_size: tuple[int, int], generator: torch.Generator, harsh: bool = False
    ) -> torch.Tensor:
        def pick(options):
            return options[int(torch.randint(len(options), (1,), generator=generator))]

        height, width = x.shape[-2:]
        fixed = [side / max(height, width) for side in self.long_sides if side < max(height, width)]
        random_scale = self.min_scale + (1 - self.min_scale) * float(torch.rand(1, generator=generator))
        scale = min([self.min_scale, *fixed]) if harsh else pick([random_scale, *fixed])
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        top_quality = self.min_quality if harsh else self.max_quality
        quality = torch.randint(self.min_quality, top_quality + 1, (len(x),), generator=generator)
        platform = jpeg(resize(x, size, pick(RESAMPLERS)), quality.float())
        return resize(platform, input_size, pick(RESAMPLERS))
