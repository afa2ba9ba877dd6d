"""What a platform does to an upload, as differentiable tensor operations: resizing and JPEG.

Used two ways: as views during the iterations (``--robust``: expectation over random
transformations, so the perturbation survives them, and the re-encoding a photo was found to fail),
and as the resize pipelines a classifier may use to bring a photo to its input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .settings import RESAMPLERS, RESIZE_POLICIES

if TYPE_CHECKING:  # reencode builds on this module
    from .reencode import Check


def resize(x: torch.Tensor, size: tuple[int, int], resampler: str, top: float = 1.0) -> torch.Tensor:
    """Resize a batch (N, C, H, W) of values in [0, ``top``] to ``size`` with one of :data:`RESAMPLERS`,
    differentiably."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if resampler == "area":
        return F.interpolate(x, size=size, mode="area")
    if resampler == "bicubic":
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, top)
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


# The IJG tables of the JPEG standard (Annex K) for quality 50, scaled for other qualities as libjpeg does.
_LUMA_TABLE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
               14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
               49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMA_TABLE = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                 47, 66, 99, 99, 99, 99, 99, 99, *[99] * 32)
_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))  # JFIF
_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def _dct_basis(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(64, 64): the orthonormal 8x8 DCT-II of a flattened block, as one matrix (the Kronecker product of 1-D ones)."""
    k = torch.arange(8, device=device, dtype=torch.float64)
    basis = torch.cos((2 * k[None] + 1) * k[:, None] * torch.pi / 16) * (2 / 8) ** 0.5
    basis[0] /= 2**0.5
    return torch.kron(basis, basis).to(dtype)


def _quantisation_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 64) luminance and chrominance tables for each image's quality (libjpeg's scaling, baseline: 1-255)."""
    quality = quality.clamp(1, 100)[:, None]
    scale = torch.where(quality < 50, 5000 / quality, 200 - 2 * quality)
    tables = [((quality.new_tensor(base) * scale + 50) / 100).floor().clamp(1, 255)
              for base in (_LUMA_TABLE, _CHROMA_TABLE)]
    return tables[0], tables[1]


def _code_blocks(plane: torch.Tensor, table: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """A plane (N, H, W) of levels, H and W multiples of 8, through each 8x8 block's DCT, quantisation by ``table``
    (N, 64) and back. Rounding is x_r + (x - x_r)^3 (Shin and Song, 2017): close to rounding, with a gradient."""
    n, height, width = plane.shape
    blocks = plane.view(n, height // 8, 8, width // 8, 8).transpose(2, 3).reshape(n, -1, 64)
    table = table[:, None]
    coefficients = (blocks - 128) @ basis.T / table
    rounded = coefficients.round()
    coefficients = (rounded + (coefficients - rounded) ** 3) * table
    blocks = coefficients @ basis + 128
    return blocks.view(n, height // 8, width // 8, 8, 8).transpose(2, 3).reshape(n, height, width)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Differentiable JPEG encoding and decoding of a batch (N, 3, H, W) in [0, 1], one quality per image: what
    libjpeg does at 4:2:0 (JFIF colours, 2x2 chroma averages, 8x8 DCT, the standard tables scaled by quality, the
    edges replicated to whole blocks), the rounding smoothed so that gradients flow."""
    n, _, height, width = x.shape
    basis = _dct_basis(x.device, x.dtype)
    levels = F.pad(x * 255, [0, -width % 16, 0, -height % 16], mode="replicate")
    offset = x.new_tensor([0.0, 128.0, 128.0]).view(1, 3, 1, 1)
    ycbcr = torch.einsum("ij,njhw->nihw", x.new_tensor(_TO_YCBCR), levels) + offset
    luma_table, chroma_table = (t.to(x.dtype) for t in _quantisation_tables(quality.to(x.device, torch.float64)))
    luma = _code_blocks(ycbcr[:, 0], luma_table, basis)[:, None]
    chroma = F.avg_pool2d(ycbcr[:, 1:], 2)
    chroma = torch.stack([_code_blocks(chroma[:, c], chroma_table, basis) for c in (0, 1)], 1)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    rgb = torch.einsum("ij,njhw->nihw", x.new_tensor(_TO_RGB), torch.cat([luma, chroma], 1) - offset)
    return (rgb[..., :height, :width] / 255).clamp(0, 1)


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
    ``factor`` k > 1: the batch is the photo shrunk k times (:mod:`scenepriv.resolution`); scales are of the photo
    and a view is never larger than the batch (the JPEG of a larger view is approximated by the batch's own).
    """

    count: int = 2
    min_quality: int = 25
    max_quality: int = 95
    min_scale: float = 0.5
    long_sides: tuple[int, ...] = (1080, 2048)
    factor: int = 1

    def __call__(self, x: torch.Tensor, input_size: tuple[int, int], generator: torch.Generator,
                 focus: Sequence[Check | None] | None = None) -> list[torch.Tensor]:
        """The first view is the harshest kind (smallest scale, low quality); the others are random. ``focus`` (one
        entry per image, or None): a re-encoding the image is known to fail (scale of ``x``), which takes the place of
        that image's last view, so the steps aim at what still fails rather than at a random draw."""
        if focus is None or not any(focus):
            return [self.view(x, input_size, generator, harsh=i == 0) for i in range(self.count)]
        views = [self.view(x, input_size, generator, harsh=i == 0) for i in range(self.count - 1)]
        drawn = [row for row, aim in enumerate(focus) if aim is None]
        parts = [(drawn, self.view(x[drawn], input_size, generator, harsh=self.count == 1))] if drawn else []
        for aim in dict.fromkeys(aim for aim in focus if aim is not None):
            rows = [row for row, other in enumerate(focus) if other == aim]
            size = (max(1, round(x.shape[-2] * aim.scale)), max(1, round(x.shape[-1] * aim.scale)))
            quality = None if aim.quality is None else torch.full((len(rows),), float(aim.quality))
            parts.append((rows, _reencode(x[rows], size, aim.resampler, quality, input_size, aim.resampler)))
        order = torch.tensor([row for rows, _ in parts for row in rows], device=x.device)
        return [*views, torch.cat([view for _, view in parts])[order.argsort()]]

    def view(self, x: torch.Tensor, input_size: tuple[int, int], generator: torch.Generator,
             harsh: bool = False) -> torch.Tensor:
        def pick(options):
            return options[int(torch.randint(len(options), (1,), generator=generator))]

        height, width = x.shape[-2:]
        long_side = max(height, width) * self.factor
        fixed = [side / long_side for side in self.long_sides if side < long_side]
        random_scale = self.min_scale + (1 - self.min_scale) * float(torch.rand(1, generator=generator))
        scale = min(1.0, self.factor * (min([self.min_scale, *fixed]) if harsh else pick([random_scale, *fixed])))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        top_quality = self.min_quality if harsh else self.max_quality
        quality = torch.randint(self.min_quality, top_quality + 1, (len(x),), generator=generator)
        return _reencode(x, size, pick(RESAMPLERS), quality.float(), input_size, pick(RESAMPLERS))


def _reencode(x: torch.Tensor, size: tuple[int, int], resampler: str, quality: torch.Tensor | None,
              input_size: tuple[int, int], input_resampler: str) -> torch.Tensor:
    """A batch resized to ``size`` with ``resampler``, through JPEG at ``quality`` (one per image; None: no JPEG),
    then to the classifier's ``input_size`` with ``input_resampler``."""
    x = resize(x, size, resampler)
    return resize(x if quality is None else jpeg(x, quality), input_size, input_resampler)
