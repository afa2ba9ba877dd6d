"""Image-quality and perturbation measures, on 8-bit images as saved (H, W, 3) uint8."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np


def _difference(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, int]:
    """test - reference of two uint8 images as int16, and its exact sum of squares.

    Integer arithmetic: exact, and a 24-megapixel photo needs ~0.4 GB instead of the ~1.7 GB of
    float64 copies that scikit-image's PSNR makes.
    """
    delta = np.subtract(test, reference, dtype=np.int16)
    return delta, int(np.square(delta, dtype=np.int32).sum(dtype=np.int64))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of 8-bit images, data range 255; infinite for identical images."""
    delta, squares = _difference(reference, test)
    if squares == 0:
        return math.inf
    return 10 * math.log10(255**2 * delta.size / squares)


SSIM_RADIUS = 5  # Gaussian window sigma 1.5 truncated at 3.5 sigma: 11 taps, as scikit-image builds it
SSIM_SIGMA = 1.5


@functools.cache
def _ssim_window() -> np.ndarray:
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return (weights / weights.sum()).astype(np.float32)


def ssim(reference: np.ndarray, test: np.ndarray, rows_per_strip: int = 64) -> float | None:
    """SSIM of Wang et al. (2004): Gaussian window sigma 1.5, population covariance, mean over colour channels.

    scikit-image's ``structural_similarity(..., channel_axis=-1, gaussian_weights=True,
    use_sample_covariance=False)``, which averages the map without its 5-pixel border (so only
    pixels whose whole window lies inside the image count), to within 1e-6: the window is applied
    along rows, then columns, over the valid region only, as float32 sums of shifted planes (PyTorch;
    measured 30x faster than its conv2d for one 11-tap channel), one strip of rows at a time, the
    second moments taken about mid-grey to keep E[x^2] - E[x]^2 accurate. A 12-megapixel photo
    takes under a second (strips of 64 rows stay in the cache: 6x faster than 1024) and a few tens of
    megabytes. None for an image with no whole 11x11 window.
    """
    import torch

    height, width = reference.shape[:2]
    if min(height, width) <= 2 * SSIM_RADIUS:
        return None
    taps = _ssim_window().tolist()

    def window(planes: torch.Tensor, dim: int) -> torch.Tensor:  # the valid part of a 1-D filter along dim
        length = planes.shape[dim] - 2 * SSIM_RADIUS
        out = planes.narrow(dim, 0, length) * taps[0]
        for offset in range(1, len(taps)):
            out.add_(planes.narrow(dim, offset, length), alpha=taps[offset])
        return out

    mid = 127.5
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    total, count = 0.0, 0
    with torch.inference_mode():
        for first in range(SSIM_RADIUS, height - SSIM_RADIUS, rows_per_strip):  # output rows [first, last)
            rows = slice(first - SSIM_RADIUS, min(first + rows_per_strip, height - SSIM_RADIUS) + SSIM_RADIUS)
            # (channels, rows, width), minus mid-grey
            x, y = (torch.from_numpy(np.ascontiguousarray(image[rows].transpose(2, 0, 1))).float().sub_(mid)
                    for image in (reference, test))
            planes = torch.stack([x, y, x * x, y * y, x * y])
            mean_x, mean_y, xx, yy, xy = window(window(planes, 3), 2)
            xx -= mean_x * mean_x  # the (co)variances, in place
            yy -= mean_y * mean_y
            xy -= mean_x * mean_y
            mean_x += mid  # back to the means of the 8-bit values
            mean_y += mid
            numerator = (2 * mean_x * mean_y + c1) * (2 * xy + c2)
            denominator = (mean_x * mean_x + mean_y * mean_y + c1) * (xx + yy + c2)
            total += float((numerator / denominator).double().sum())
            count += numerator.numel()
    return total / count


BUTTERAUGLI = "butteraugli"  # Debian's package of Google's reference implementation


@functools.cache
def _butteraugli_program() -> str | None:
    import shutil
    import sys

    found = shutil.which(BUTTERAUGLI)
    if found is None:
        print("note: butteraugli (perceptual distance) is not installed, so it is not measured; on Debian or "
              "Ubuntu: apt-get install butteraugli", file=sys.stderr)
    return found


BUTTERAUGLI_MAX_PIXELS = 4_000_000  # above this, tiles spread over the photo (a 12-MP pair: ~20 s and 2 GB whole)
BUTTERAUGLI_TILE, BUTTERAUGLI_TILES = 512, 8


def butteraugli(reference: np.ndarray, test: np.ndarray, max_pixels: int = BUTTERAUGLI_MAX_PIXELS) -> float | None:
    """Butteraugli distance of two 8-bit RGB images (H, W, 3): how visible the difference is, by a model of
    the eye (about 1.0: just noticeable; JPEG quality 85 of a typical photo scores 1.1-1.6).

    Runs the ``butteraugli`` program on two temporary PNGs; None, with a one-time note on stderr, where it
    is not installed, and for an image smaller than its 8x8 block. Butteraugli scores the worst region, so a pair
    larger than ``max_pixels`` is scored on 8 tiles of 512 x 512 spread evenly over it (the largest of their
    scores): an estimate (on a 12-megapixel test photo 5.05 against 5.11 for the whole pair, in 2.8 s instead of
    27 s), the tiles scored side by side, one program per core.
    """
    program = _butteraugli_program()
    if program is None or min(reference.shape[:2]) < 8:
        return None
    if reference.shape[0] * reference.shape[1] <= max_pixels:
        return _butteraugli(program, reference, test)
    size = min(BUTTERAUGLI_TILE, *reference.shape[:2])
    rows, columns = reference.shape[0] // size, reference.shape[1] // size  # whole tiles only
    picked = np.unique(np.linspace(0, rows * columns - 1, BUTTERAUGLI_TILES).round().astype(int))
    tiles = [divmod(int(i), columns) for i in picked]

    def tile_score(tile: tuple[int, int]) -> float | None:
        r, c = tile
        return _butteraugli(program, reference[r * size:(r + 1) * size, c * size:(c + 1) * size],
                            test[r * size:(r + 1) * size, c * size:(c + 1) * size])

    with ThreadPoolExecutor(max_workers=min(len(tiles), os.cpu_count() or 1)) as programs:  # each waits on its own
        scores = list(programs.map(tile_score, tiles))
    return max((score for score in scores if score is not None), default=None)


def _butteraugli(program: str, reference: np.ndarray, test: np.ndarray, heat: bool = False):
    """The score of a pair (None below the 8x8 block); with ``heat``, (score, the program's heat map (H, W, 3))."""
    import subprocess
    import tempfile
    from pathlib import Path

    from PIL import Image

    if min(reference.shape[:2]) < 8:
        return None
    with tempfile.TemporaryDirectory(prefix="scenepriv-") as folder:
        paths = [Path(folder, name) for name in ("reference.png", "test.png", "heat.ppm")]
        for path, image in zip(paths, (reference, test), strict=False):
            Image.fromarray(np.ascontiguousarray(image)).save(path, compress_level=1)
        done = subprocess.run([program, *map(str, paths[:3 if heat else 2])], capture_output=True, text=True,
                              check=True)
        score = float(done.stdout.split()[0])
        return (score, np.asarray(Image.open(paths[2]).convert("RGB"))) if heat else score


# The colours of butteraugli's heat map from its "good" level up, in linear light (the program writes the square root
# of each, on 0-255): a pixel's place along them grows with the local difference.
_HEAT_COLOURS = np.array([(0, 1, 0), (1, 1, 0), (1, 0, 0), (1, 0, 1), (0.5, 0.5, 1), (1, 0.5, 0.5), (1, 1, 0.5),
                          (1, 1, 1)])


def _heat(heat_map: np.ndarray) -> np.ndarray:
    """(H, W) float32: where each pixel of a heat map (H, W, 3) lies along :data:`_HEAT_COLOURS` (0 at "good" and
    below, 1 a colour further each), by the nearest of 512 points on each stretch, colour by distinct colour."""
    steps = np.linspace(0, 1, 512, endpoint=False)[:, None]
    path = np.concatenate([a + steps * (b - a) for a, b in zip(_HEAT_COLOURS[:-1], _HEAT_COLOURS[1:], strict=True)])
    places = np.arange(len(path), dtype=np.float32) / 512
    keys = heat_map.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    distinct, pixels = np.unique(keys, return_inverse=True)
    linear = ((distinct[:, None] >> np.array([16, 8, 0])) & 255).astype(np.float32) ** 2 / 255**2
    nearest = np.concatenate([((linear[i:i + 64, None] - path[None]) ** 2).sum(2).argmin(1)
                              for i in range(0, len(linear), 64)])
    return places[nearest][pixels.reshape(-1)].reshape(heat_map.shape[:2])


def butteraugli_heat(reference: np.ndarray, test: np.ndarray) -> tuple[float, np.ndarray] | None:
    """:func:`butteraugli` of a pair, whole, and where the difference is most visible: (score, (H, W) float32 that
    grows with the local difference, from the program's heat map). None where butteraugli is not installed or the
    image is below its 8x8 block."""
    program = _butteraugli_program()
    if program is None:
        return None
    measured = _butteraugli(program, reference, test, heat=True)
    return None if measured is None else (measured[0], _heat(measured[1]))


def perturbation_norms(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """L-infinity and L2 norms of the perturbation between two 8-bit images, in [0, 1] pixel units."""
    delta, squares = _difference(reference, test)
    return int(np.abs(delta).max(initial=0)) / 255, math.sqrt(squares) / 255


@functools.cache
def brisque_model():
    """OpenCV's BRISQUE with the LIVE model files shipped as package data (loaded once).

    BRISQUE is in OpenCV's contrib modules: if ``opencv-python-headless`` (or another OpenCV wheel
    without them) is installed beside ``opencv-contrib-python-headless``, ``cv2`` comes from either
    and may lack ``cv2.quality`` while ``pip check`` is clean, so that case is named with its fix.
    """
    try:
        import cv2
    except ImportError:
        raise ImportError("BRISQUE needs OpenCV's contrib modules: pip install 'scenepriv[eval]'") from None
    if not hasattr(cv2, "quality"):
        raise ImportError(
            "this OpenCV has no contrib modules (cv2.quality), which BRISQUE needs; another OpenCV wheel is "
            "installed beside opencv-contrib-python-headless: pip uninstall -y opencv-python opencv-python-headless "
            "opencv-contrib-python-headless && pip install opencv-contrib-python-headless")
    data = resources.files("scenepriv") / "data"
    return cv2.quality.QualityBRISQUE_create(str(data / "brisque_model_live.yml"), str(data / "brisque_range_live.yml"))


def brisque(image: np.ndarray) -> float:
    """BRISQUE no-reference quality of an (H, W, 3) uint8 RGB image: lower is more natural."""
    bgr = np.ascontiguousarray(image[..., ::-1])
    return float(brisque_model().compute(bgr)[0])


def top_k_accuracy(labels: Sequence[int], ranked: Sequence[Sequence[int]], k: int) -> float:
    """Percentage of images whose label is among the first ``k`` classes of their ranking (best first)."""
    if len(labels) == 0:
        return math.nan
    hits = [label in list(ranking)[:k] for label, ranking in zip(labels, ranked, strict=True)]
    return 100.0 * sum(hits) / len(hits)


def _mapping_histograms(true_labels: Sequence[int], assigned_labels: Sequence[int], num_classes: int):
    """For each true class present: its class and the empirical distribution (D,) of the classes assigned to it."""
    true, assigned = np.asarray(true_labels, dtype=np.int64), np.asarray(assigned_labels, dtype=np.int64)
    if true.shape != assigned.shape:
        raise ValueError(f"{len(true)} true labels but {len(assigned)} assigned labels")
    for label in np.unique(true):
        counts = np.bincount(assigned[true == label], minlength=num_classes)
        yield int(label), counts / counts.sum()


def irreversibility(true_labels: Sequence[int], assigned_labels: Sequence[int], num_classes: int) -> float:
    """Table 2 of the paper: mean over true classes c of || h_c - uniform(D) ||_2, lower = more irreversible.

    h_c is the distribution over all D classes of the class assigned to the protected images of class c.
    """
    uniform = 1.0 / num_classes
    distances = [np.linalg.norm(h - uniform) for _, h in _mapping_histograms(true_labels, assigned_labels, num_classes)]
    return float(np.mean(distances)) if distances else math.nan


def max_mapping_share(true_labels: Sequence[int], assigned_labels: Sequence[int]) -> tuple[float, int, int]:
    """The largest share of one true class mapped to one single class: (share in [0, 1], true class, assigned class)."""
    num_classes = int(max([*true_labels, *assigned_labels], default=0)) + 1
    best = (math.nan, -1, -1)
    for label, h in _mapping_histograms(true_labels, assigned_labels, num_classes):
        if not best[0] >= h.max():  # also replaces the initial NaN
            best = (float(h.max()), label, int(h.argmax()))
    return best
