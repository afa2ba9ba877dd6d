"""Does the protection hold on the file as saved, and after a platform re-encodes it?

Each check is a resize of the saved photo by a scale with one resampler, a real JPEG round trip
through Pillow at one quality (or none), then the classifier's downsizing to its input size with
the same resampler. The protection holds when the top-1 differs from the original's top-1 under
the same check; the target still wins when the top-1 is the one of the protected file as saved.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from PIL import Image

from .attack import quantise
from .settings import RESAMPLERS
from .transforms import resize
from .zoo import Classifier


@dataclass(frozen=True)
class Check:
    quality: int | None  # JPEG quality, None for the file as saved
    scale: float
    resampler: str

    @property
    def name(self) -> str:
        jpeg = "saved" if self.quality is None else f"jpeg{self.quality}"
        return f"{jpeg}/x{self.scale:g}/{self.resampler}"


def checks(qualities: list[int], scales: list[float], resamplers: list[str] | None = None) -> list[Check]:
    """Every combination, the file as saved included (quality None)."""
    return [Check(q, s, r) for q, s, r in product([None, *qualities], scales, resamplers or list(RESAMPLERS))]


def jpeg_round_trip(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode (3, H, W) in [0, 1] as a real JPEG with Pillow and decode it again."""
    array = quantise(pixels).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float().div(255).to(pixels.device)


def platform_version(pixels: torch.Tensor, check: Check, input_size: tuple[int, int]) -> torch.Tensor:
    """What the classifier sees of (3, H, W) after ``check``: at its input size, 8-bit steps on the way."""
    height, width = pixels.shape[-2:]
    size = (max(1, round(height * check.scale)), max(1, round(width * check.scale)))
    x = quantise(resize(pixels[None], size, check.resampler))[0]
    if check.quality is not None:
        x = jpeg_round_trip(x, check.quality)
    return resize(x[None], input_size, check.resampler)[0]


# What ``--robust`` confirms on the saved image before it stops: real JPEG at quality 50, at full and half size,
# through every resampler (differentiable views of harsher re-encodings guide the steps; see transforms.py).
ROBUST_CHECKS = [Check(50, scale, resampler) for scale in (1.0, 0.5) for resampler in RESAMPLERS]


def top1_under_checks(classifier: Classifier, pixels: torch.Tensor, all_checks: list[Check]) -> list[int]:
    """The classifier's top-1 for the photo under every check, in one batch."""
    device = classifier.device
    views = torch.stack([platform_version(pixels.to(device), c, classifier.input_size) for c in all_checks])
    with torch.inference_mode():
        return classifier(views).argmax(1).tolist()
