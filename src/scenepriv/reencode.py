"""What a platform does to an uploaded photo, for real: a resize by a scale with one resampler, a JPEG round trip
through Pillow at one quality (or none), then the classifier's own downsizing to its input size. The protection's
confirmation (:mod:`scenepriv.methods`) and its verdicts (:mod:`scenepriv.verify`) both judge photos this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch

from .attack import to_uint8
from .images import JpegFormat, jpeg_pixels
from .settings import RESAMPLERS
from .transforms import resize


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


def jpeg_round_trip(pixels: torch.Tensor, jpeg: int | JpegFormat) -> torch.Tensor:
    """Encode (3, H, W) in [0, 1] as a real JPEG with Pillow (at a quality, 4:2:0, or as a :class:`JpegFormat` says)
    and decode it again (as a saved JPEG decodes)."""
    jpeg = jpeg if isinstance(jpeg, JpegFormat) else JpegFormat(jpeg)
    decoded = jpeg_pixels(to_uint8(pixels[None])[0], jpeg.quality, jpeg.subsampling)
    return _floats(decoded).to(pixels.device)


def _resized_levels(pixels: torch.Tensor, size: tuple[int, int], resampler: str) -> np.ndarray:
    """(h, w, 3) uint8: an 8-bit photo (3, H, W) resized on its whole grey levels, channel by channel. On levels a
    resize whose weights are powers of two (plain bilinear to half size: the mean of 2x2 pixels) is exact, so its
    many ties at half a level round alike however many cores compute it; on [0, 1] a last bit decided them, and
    ``verify`` on two cores could see a re-encoding other than the confirmation's on one."""
    channels = [resize(channel.mul(255).round_()[None, None], size, resampler, top=255.0)[0, 0].round_()
                .to(torch.uint8) for channel in pixels]  # one channel's floats at a time; no resampler leaves [0, 255]
    return torch.stack(channels, 2).cpu().numpy()


def _floats(pixels: np.ndarray) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] of an (H, W, 3) uint8 array, with one float allocation."""
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)


def platform_version(pixels: torch.Tensor, check: Check, input_size: tuple[int, int]) -> torch.Tensor:
    """What the classifier sees of (3, H, W) after ``check``: at its input size, 8-bit steps on the way."""
    return platform_versions(pixels, [check], input_size)[0]


def platform_versions(pixels: torch.Tensor, all_checks: Sequence[Check], input_size: tuple[int, int],
                      cache: dict | None = None) -> torch.Tensor:
    """(C, 3, *input_size): :func:`platform_version` for each check of an 8-bit photo (3, H, W). Each resize and
    re-encoding is made once for all the checks that share it (at scale 1 the JPEG does not depend on the
    resampler), and kept in ``cache`` (one dict per photo) for later calls on the same photo."""
    cache = {} if cache is None else cache  # 8-bit arrays (H, W, 3), a quarter of the memory of floats
    floats: dict[tuple, torch.Tensor] = {}  # the decoded photo as floats, kept only until its last check
    height, width = pixels.shape[-2:]
    keys = [_key(check) for check in all_checks]
    last_use = {coded: i for i, coded in enumerate(keys)}
    views = []
    for i, (check, coded) in enumerate(zip(all_checks, keys, strict=True)):
        resized = coded[1:]
        if resized not in cache:  # the 8-bit photo the platform encodes
            size = (max(1, round(height * check.scale)), max(1, round(width * check.scale)))
            cache[resized] = _resized_levels(pixels, size, check.resampler)
        if coded not in cache:
            cache[coded] = cache[resized] if check.quality is None else jpeg_pixels(cache[resized], check.quality)
        if coded not in floats:
            floats[coded] = _floats(cache[coded]).to(pixels.device)
        views.append(resize(floats[coded][None], input_size, check.resampler)[0])
        if last_use[coded] == i:
            del floats[coded]
    return torch.stack(views)


def forget(cache: dict, done: Sequence[Check], later: Sequence[Check] = ()) -> None:
    """Drop from a photo's ``cache`` of :func:`platform_versions` the re-encodings of the checks ``done`` that no
    check ``later`` shares (the resized photos stay)."""
    needed = {_key(check) for check in later}
    for check in done:
        if check.quality is not None and _key(check) not in needed:
            cache.pop(_key(check), None)


def _key(check: Check) -> tuple:
    """A check's re-encoding in a cache of :func:`platform_versions`: (quality, scale, resampler); its last two, the
    resized photo. At scale 1 the resampler plays no part."""
    return check.quality, check.scale, None if check.scale == 1 else check.resampler


# What ``--robust`` confirms on the saved image before it stops: real JPEG at quality 50, 75 and 95 and the file as
# saved, at full and half size, through every resampler: all that medium promises (the top-1 does not always hold
# on a milder JPEG, or on none, where it holds on a harsher one; differentiable views of re-encodings guide the
# steps, see transforms.py).
ROBUST_CHECKS = [Check(quality, scale, resampler) for quality in (50, 75, 95, None) for scale in (0.5, 1.0)
                 for resampler in RESAMPLERS]  # harshest first: the plain bilinear resize at half size fails most
