"""Where a perturbation is seen: per-pixel weights that keep the steps out of flat regions.

The eye (and butteraugli, which models it) notices a change of one grey level on a clear sky,
fog or a painted wall, but not the same change inside grass, foliage or gravel: texture masks it.
:func:`texture_weights` measures texture as the local standard deviation s of luminance and weighs
each pixel's step by s / (s + c): close to 0 on flat regions, close to 1 in texture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance weights


def texture_weights(images: torch.Tensor, softness: float, window: int = 7) -> torch.Tensor:
    """(N, 1, H, W) weights in [0, 1) for images (N, 3, H, W) in [0, 1]: s / (s + softness), s the standard
    deviation of luminance over a ``window`` x ``window`` neighbourhood (edges replicated)."""
    if softness <= 0:
        raise ValueError(f"softness must be > 0, got {softness}")
    luma = (images * images.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    padded = F.pad(luma, [window // 2] * 4, mode="replicate")

    def box(x: torch.Tensor) -> torch.Tensor:  # the window's mean, as two 1-D means (7x fewer operations)
        return F.avg_pool2d(F.avg_pool2d(x, (window, 1), stride=1), (1, window), stride=1)

    mean = box(padded)
    variance = (box(padded * padded) - mean * mean).clamp_(min=0)
    deviation = variance.sqrt_()
    return deviation / (deviation + softness)
