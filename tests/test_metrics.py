"""Metric functions against known answers: PSNR, SSIM, BRISQUE, top-k accuracy, irreversibility, mapping shares."""

from __future__ import annotations

import io
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES
from scenepriv import metrics


def random_image(seed: int = 0, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (48, 64, 3), dtype=np.uint8)


def test_identical_images_have_infinite_psnr_and_unit_ssim():
    image = random_image()
    assert metrics.psnr(image, image.copy()) == math.inf
    assert metrics.ssim(image, image.copy()) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 2, 5, 20])
def test_psnr_of_a_constant_plus_minus_k_offset(k):
    reference = random_image(low=k, high=256 - k)
    signs = np.where(np.random.default_rng(1).random(reference.shape) < 0.5, -1, 1)
    test = (reference.astype(int) + k * signs).astype(np.uint8)
    assert metrics.psnr(reference, test) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)
    assert metrics.perturbation_norms(reference, test)[0] == pytest.approx(k / 255)


@pytest.mark.parametrize("rows_per_strip", [1024, 7])
def test_ssim_is_scikit_images_value(rows_per_strip):
    """Within 1e-6 of structural_similarity with the paper-standard settings, on a photo with a one-level
    perturbation (nearly flat differences: where float32 cancellation would show) and on noise, strips or not."""
    from skimage.metrics import structural_similarity

    with Image.open(EXAMPLES / "leuvenA.jpg") as photo:
        reference = np.asarray(photo.convert("RGB"))
    rng = np.random.default_rng(4)
    for test in (np.clip(reference + rng.integers(-1, 2, reference.shape), 0, 255).astype(np.uint8),
                 rng.integers(0, 256, reference.shape, dtype=np.uint8)):
        expected = structural_similarity(reference, test, channel_axis=-1, data_range=255, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False)
        assert metrics.ssim(reference, test, rows_per_strip=rows_per_strip) == pytest.approx(expected, abs=1e-6)


def test_ssim_is_undefined_for_images_smaller_than_its_window():
    assert metrics.ssim(random_image()[:10], random_image()[:10]) is None
    assert metrics.ssim(random_image()[:11, :11], random_image()[:11, :11]) is not None  # one whole window


def test_ssim_drops_as_noise_grows():
    reference = random_image(low=50, high=200)
    noise = np.random.default_rng(2).normal(size=reference.shape)
    values = [metrics.ssim(reference, np.clip(reference + s * noise, 0, 255).astype(np.uint8)) for s in (1, 5, 25)]
    assert 1 > values[0] > values[1] > values[2]


def test_brisque_is_higher_for_a_noisy_image_than_for_a_natural_photo():
    with Image.open(EXAMPLES / "home.jpg") as photo:
        smooth = np.asarray(photo.convert("RGB").resize((224, 168), Image.BILINEAR))
    noisy = np.clip(smooth + np.random.default_rng(3).normal(0, 25, smooth.shape), 0, 255).astype(np.uint8)
    clean_score, noisy_score = metrics.brisque(smooth), metrics.brisque(noisy)
    assert math.isfinite(clean_score) and clean_score == metrics.brisque(smooth.copy())
    assert noisy_score > clean_score + 15


def test_top_k_accuracy():
    labels = [3, 1, 4, 1]
    ranked = [[3, 0, 1], [0, 1, 2], [2, 0, 9], [1, 2, 3]]
    assert metrics.top_k_accuracy(labels, ranked, 1) == 50.0
    assert metrics.top_k_accuracy(labels, ranked, 2) == 75.0
    assert metrics.top_k_accuracy(labels, ranked, 5) == 75.0


def test_irreversibility_of_uniform_random_targets_matches_the_papers_r_fgsm():
    """60 classes x 50 images, each assigned uniformly among the 364 other classes: the paper's 0.1414."""
    rng = np.random.default_rng(0)
    num_classes = 365
    true = np.repeat(rng.choice(num_classes, 60, replace=False), 50)
    offsets = rng.integers(1, num_classes, len(true))  # any class but the true one, uniformly
    assigned = (true + offsets) % num_classes
    assert metrics.irreversibility(true, assigned, num_classes) == pytest.approx(0.1414, abs=0.003)


@pytest.mark.parametrize("num_classes", [10, 365])
def test_all_images_of_a_class_mapped_to_one_class(num_classes):
    true = np.repeat([0, 1, 2], 7)
    assigned = np.array([5] * 7 + [0] * 7 + [9] * 7)
    expected = math.sqrt(1 - 2 / num_classes + 1 / num_classes)  # (1 - 1/D)^2 + (D - 1)/D^2
    assert metrics.irreversibility(true, assigned, num_classes) == pytest.approx(expected)
    assert metrics.max_mapping_share(true, assigned) == (1.0, 0, 5)


def test_irreversibility_is_zero_for_a_perfectly_uniform_mapping_and_averages_over_classes():
    num_classes = 4
    true = [0] * 4 + [1] * 2
    assigned = [0, 1, 2, 3] + [2, 2]  # class 0: uniform (distance 0); class 1: all to one class
    assert metrics.irreversibility(true[:4], assigned[:4], num_classes) == pytest.approx(0.0)
    assert metrics.irreversibility(true, assigned, num_classes) == pytest.approx(math.sqrt(1 - 1 / 4) / 2)


def test_max_mapping_share_names_the_class_pair():
    true = [7, 7, 7, 7, 2, 2]
    assigned = [1, 3, 3, 3, 4, 5]
    assert metrics.max_mapping_share(true, assigned) == (0.75, 7, 3)


def test_psnr_and_norms_match_scikit_image_and_numpy_on_random_images():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(5)
    reference = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    test = np.clip(reference.astype(int) + rng.integers(-7, 8, reference.shape), 0, 255).astype(np.uint8)
    assert metrics.psnr(reference, test) == pytest.approx(peak_signal_noise_ratio(reference, test, data_range=255))
    delta = (test.astype(float) - reference) / 255
    linf, l2 = metrics.perturbation_norms(reference, test)
    assert linf == pytest.approx(np.abs(delta).max()) and l2 == pytest.approx(np.sqrt((delta**2).sum()))


@pytest.mark.skipif(shutil.which("butteraugli") is None, reason="needs butteraugli: apt-get install butteraugli")
def test_butteraugli_ranks_visible_changes_above_invisible_ones():
    reference = np.asarray(Image.open(EXAMPLES / "home.jpg").convert("RGB"))

    def jpeg(quality: int) -> np.ndarray:
        stream = io.BytesIO()
        Image.fromarray(reference).save(stream, format="JPEG", quality=quality)
        return np.asarray(Image.open(stream).convert("RGB"))

    assert metrics.butteraugli(reference, reference.copy()) == 0.0
    assert 0 < metrics.butteraugli(reference, jpeg(95)) < metrics.butteraugli(reference, jpeg(50))
    assert metrics.butteraugli(reference[:6, :6], reference[:6, :6]) is None  # below its 8x8 block


@pytest.mark.skipif(shutil.which("butteraugli") is None, reason="needs butteraugli: apt-get install butteraugli")
def test_butteraugli_heat_finds_where_a_change_is_most_visible():
    """A faint change all over a photo and a stronger one in a square: the score is butteraugli's, and the hottest
    half percent of the heat map lies on the square (its 32 x 32 px, a few pixels around)."""
    reference = np.asarray(Image.open(EXAMPLES / "home.jpg").convert("RGB"))[:256, :256]
    noise = np.random.default_rng(0).integers(-2, 3, reference.shape)
    noise[100:132, 150:182] *= 6
    test = np.clip(reference.astype(int) + noise, 0, 255).astype(np.uint8)
    score, heat = metrics.butteraugli_heat(reference, test)
    assert score == metrics.butteraugli(reference, test) and heat.shape == reference.shape[:2]
    rows, columns = np.nonzero(heat >= np.quantile(heat, 0.995))
    assert rows.min() >= 92 and rows.max() < 140 and columns.min() >= 142 and columns.max() < 190
    assert heat[100:132, 150:182].mean() > heat[:90].mean()
    assert metrics.butteraugli_heat(reference[:6, :6], reference[:6, :6]) is None  # below its 8x8 block


def test_butteraugli_is_none_with_a_note_where_it_is_not_installed(monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    metrics._butteraugli_program.cache_clear()
    try:
        assert metrics.butteraugli(random_image(), random_image()) is None
        assert metrics.butteraugli_heat(random_image(), random_image()) is None
        assert "apt-get install butteraugli" in capsys.readouterr().err
    finally:
        metrics._butteraugli_program.cache_clear()


@pytest.mark.skipif(shutil.which("butteraugli") is None, reason="needs butteraugli: apt-get install butteraugli")
def test_butteraugli_scores_tiles_of_photos_above_its_pixel_limit():
    """Above the limit, tiles spread over the pair are scored: for a change spread evenly over the photo, about the
    whole pair's score (the worst region is everywhere); identical photos score 0 either way."""
    image = np.random.default_rng(0).integers(0, 256, (600, 700, 3), dtype=np.uint8)
    noisy = np.clip(image.astype(int) + np.random.default_rng(1).integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    whole = metrics.butteraugli(image, noisy, max_pixels=image.shape[0] * image.shape[1])
    tiled = metrics.butteraugli(image, noisy, max_pixels=image.shape[0] * image.shape[1] - 1)
    assert whole > 0 and 0.8 * whole <= tiled <= 1.1 * whole
    assert metrics.butteraugli(image, image, max_pixels=1) == 0.0
