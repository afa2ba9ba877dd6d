"""Image-quality and perturbation measures, on 8-bit images as saved (H, W, 3) uint8."""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, data range 255; infinite for identical images."""
    if np.array_equal(reference, test):
        return math.inf
    return float(peak_signal_noise_ratio(reference, test, data_range=255))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM of Wang et al. (2004): Gaussian window sigma 1.5, population covariance, over colour channels."""
    return float(
        structural_similarity(
            reference, test, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
    )


def perturbation_norms(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """L-infinity and L2 norms of the perturbation, in [0, 1] pixel units."""
    delta = (test.astype(np.float64) - reference.astype(np.float64)) / 255
    return float(np.abs(delta).max(initial=0.0)), float(np.sqrt((delta**2).sum()))
