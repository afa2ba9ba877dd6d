"""Large photos protected at a smaller size: the photo shrunk by a whole factor k, the change computed there, and
that change carried back to full size exactly.

A classifier sees a 12-megapixel photo at 224 x 224 px, and a platform shrinks a photo before it classifies it: the
change that matters is the one that survives averaging over blocks of many pixels. So a large photo is protected
on its k x k block means (at half size, the size of the harshest re-encoding the protection promises to survive,
for a 12-megapixel photo: a quarter of the work per step) and the change is carried to full size so that the block
means of the protected photo change by exactly the computed change: within each block the change goes where the
texture mask w allows it (in proportion to w), within w x the bound per pixel (plus the working image's rounding,
carried the same way). A resize without antialiasing reads single pixels, not block means: :class:`PointViews`
shows the classifier exactly what such a resize makes of the full-size photo. The confirmation on real
re-encodings then judges the full-size file as saved.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def factor(size: tuple[int, int], work_size: int | None) -> int:
    """The whole factor k by which a photo of ``size`` (height, width) is shrunk to about ``work_size`` px on its
    long side, at least 1 (None: 1, full size)."""
    return 1 if work_size is None else max(1, max(size) // work_size)


def block_means(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, ceil(H / k), ceil(W / k)): the mean of each k x k block of ``x`` (N, C, H, W), edges replicated."""
    if k == 1:
        return x
    height, width = x.shape[-2:]
    return F.avg_pool2d(F.pad(x, [0, -width % k, 0, -height % k], mode="replicate"), k)


def spread(weights: torch.Tensor | None, k: int, size: tuple[int, int]) -> torch.Tensor | None:
    """(N, 1, *size): how much of its k x k block's change each pixel takes, in proportion to ``weights``
    (N, 1, *size), the texture mask (block mean 1); evenly (None) where a block has no weight or there is no mask."""
    if weights is None:
        return None
    height, width = size
    padded = F.pad(weights, [0, -width % k, 0, -height % k], mode="replicate")
    means = F.interpolate(F.avg_pool2d(padded, k), scale_factor=k, mode="nearest")
    return torch.where(means > 0, padded / means.clamp_min(1e-12), 1.0)[..., :height, :width]


def carry(change: torch.Tensor, spread: torch.Tensor | None, k: int, size: tuple[int, int]) -> torch.Tensor:
    """The full-size change (N, C, *size) whose k x k block means are ``change`` (N, C, h, w), each pixel taking
    its ``spread`` (:func:`spread`) of its block's."""
    if k == 1:
        return change
    height, width = size
    change = F.interpolate(change, scale_factor=k, mode="nearest")[..., :height, :width]
    return change if spread is None else change.mul_(spread)


def _bilinear_weights(size_out: int, size_in: int) -> torch.Tensor:
    """(size_out, size_in): torch's bilinear resize without antialiasing (align_corners=False) along one axis."""
    position = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * size_in / size_out - 0.5).clamp(min=0)
    low = position.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    weights[torch.arange(size_out), low] += 1 - (position - low)
    weights[torch.arange(size_out), high] += position - low
    return weights


class PointViews:
    """What a classifier that resizes without antialiasing (torch's plain bilinear, the paper's) sees of the full-size
    photo, computed from the change at the working size: such a resize reads a few full-size pixels per input pixel,
    which the block means of the working image do not show. Exactly linear in the change (rounding aside): each
    view is the original's view plus, per input pixel, its taps' weights x the carried change at those pixels.
    ``scales``: the photo shrunk first by this factor with the same resampler (a platform), then to the input."""

    def __init__(self, originals: torch.Tensor, spread: torch.Tensor | None, k: int, input_size: tuple[int, int],
                 scales: tuple[float, ...] = (1.0, 0.5)) -> None:
        height, width = originals.shape[-2:]
        if spread is None:
            spread = originals.new_ones(len(originals), 1, height, width)
        self.views = []
        for scale in scales:
            axes = []
            for size_in, size_out in ((height, input_size[0]), (width, input_size[1])):
                matrix = _bilinear_weights(size_out, size_in)
                if scale != 1:
                    middle = max(1, round(size_in * scale))
                    matrix = _bilinear_weights(size_out, middle) @ _bilinear_weights(middle, size_in)
                values, taps = matrix.topk(min(4, size_in), dim=1)  # at most 4 pixels per output row/column
                axes.append((values.to(originals.dtype), taps))
            (row_weights, rows), (column_weights, columns) = axes
            taps = row_weights[:, None, :, None] * column_weights[None, :, None, :]  # (I, J, A, B)
            base = (taps * self._gather(originals, rows, columns)).sum((-2, -1))
            coefficients = taps * self._gather(spread, rows, columns)[:, 0]  # (N, I, J, A, B)
            self.views.append((base, coefficients, rows // k, columns // k))

    @staticmethod
    def _gather(x: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """(N, C, I, J, A, B): x[n, c, rows[i, a], columns[j, b]]."""
        return x[:, :, rows[:, None, :, None], columns[None, :, None, :]]

    def __call__(self, change: torch.Tensor, images: torch.Tensor) -> list[torch.Tensor]:
        """The views (n, 3, *input_size) of the originals ``images`` (n indices) plus ``change`` (n, 3, h, w) carried
        to full size."""
        return [(base[images] + (coefficients[images, None] * self._gather(change, rows, columns)).sum((-2, -1)))
                .clamp(0, 1) for base, coefficients, rows, columns in self.views]


class WorkingCopy:
    """The photos protect() works on and what their files will show. ``originals`` (N, 3, H, W) are the 8-bit
    photos; with ``work_size`` a photo whose long side is at least that is worked on shrunk by :func:`factor`
    (``work``, its texture ``weights`` the block means of the full-size ones); ``saved_as`` says how each file will
    be saved: a JPEG quality (4:2:0), a :class:`scenepriv.images.JpegFormat`, or None (a lossless file)."""

    def __init__(self, originals: torch.Tensor, texture_mask: float | None, work_size: int | None,
                 saved_as: list[Any]) -> None:
        from .perceptual import texture_weights

        if len(saved_as) != len(originals):
            raise ValueError(f"{len(saved_as)} saved formats for {len(originals)} images")
        self.originals, self.saved_as = originals, saved_as
        self.size = tuple(originals.shape[-2:])
        self.factor = factor(self.size, work_size)
        weights = None if texture_mask is None else texture_weights(originals, texture_mask)
        self.work = block_means(originals, self.factor)
        self.work_originals = self.work.clamp(0, 1).mul(255).round_().div_(255)  # what the loop measures against
        self.weights = None if weights is None else block_means(weights, self.factor)
        self.spread = None if self.factor == 1 else spread(weights, self.factor, self.size)
        self.judged_as_saved = self.factor > 1 or any(jpeg is not None for jpeg in saved_as)

    def full_size(self, saved: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The photos of ``rows`` with the change of ``saved`` (at the working size) carried to full size."""
        if self.factor == 1:
            return saved
        change = carry(saved - self.work_originals[rows], None if self.spread is None else self.spread[rows],
                       self.factor, self.size)
        return change.add_(self.originals[rows]).clamp_(0, 1).mul_(255).round_().div_(255)  # quantised, in place

    def as_saved(self, saved: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The photos of ``rows`` as their files will show them: at full size, through their JPEG if saved so."""
        from .reencode import jpeg_round_trip

        photos = self.full_size(saved, rows)
        if all(jpeg is None for jpeg in self.saved_as) or len(rows) == 0:
            return photos
        return torch.stack([photo if self.saved_as[row] is None else jpeg_round_trip(photo, self.saved_as[row])
                            for photo, row in zip(photos, rows.tolist(), strict=True)])

    def point_views(self, input_size: tuple[int, int]) -> PointViews | None:
        """The plain bilinear views of the full-size photos (:class:`PointViews`), where the work is smaller."""
        return None if self.factor == 1 else PointViews(self.originals, self.spread, self.factor, input_size)
