"""The perceptual settings: steps and bounds weighted by local texture, on synthetic images with a known layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import scenepriv
from scenepriv.perceptual import texture_weights
from scenepriv.settings import Settings


def half_flat_half_textured(count: int = 4, size: int = 32) -> torch.Tensor:
    """Left half mid-grey and flat (a sky), right half random texture (foliage)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.full((count, 3, size, size), 128 / 255)  # an 8-bit value: nothing changes when saved
    images[..., size // 2:] = torch.randint(0, 256, (count, 3, size, size // 2), generator=generator) / 255
    return images


def test_texture_weights_are_near_zero_on_flat_regions_and_high_in_texture():
    weights = texture_weights(half_flat_half_textured(), softness=0.02)
    assert weights.shape == (4, 1, 32, 32)
    assert float(weights[..., :12].max()) == 0.0  # flat: no luminance variation in any 7x7 window
    assert float(weights[..., 20:].min()) > 0.8
    assert float(weights.min()) >= 0 and float(weights.max()) < 1


def test_a_flat_region_gets_no_perturbation_and_a_textured_one_does(tiny_classifier):
    images = half_flat_half_textured()
    result = scenepriv.protect(images, tiny_classifier, "p-fgsm", seed=0, sigma=0.5, eps=2 / 255,
                               texture_mask=0.02, max_iter=10)
    change = (result.images - images).abs()
    assert float(result.images.min()) >= 0 and float(result.images.max()) <= 1
    assert float(change[..., :12].max()) == 0.0
    assert float(change[..., 20:].mean()) > 1 / 255
    uniform = scenepriv.protect(images, tiny_classifier, "p-fgsm", seed=0, sigma=0.5, eps=2 / 255, max_iter=10)
    assert float((uniform.images - images).abs()[..., :12].mean()) > 1 / 255  # without the mask, the sky moves


def test_the_texture_budget_bounds_each_pixel_by_its_weight(tiny_classifier):
    images = half_flat_half_textured()
    budget = 3 / 255
    result = scenepriv.protect(images, tiny_classifier, "p-fgsm", seed=0, sigma=0.5, eps=1 / 255,
                               texture_mask=0.02, texture_budget=budget, max_iter=20, threshold=1.0)
    weights = texture_weights(images, 0.02)
    assert bool(((result.images - images).abs() <= budget * weights + 0.5 / 255 + 1e-7).all())


def test_a_growing_budget_lets_an_image_that_needs_more_get_more(tiny_classifier):
    images = half_flat_half_textured()
    fixed = dict(sigma=0.5, eps=1 / 255, texture_mask=0.02, texture_budget=1 / 255, max_iter=20, threshold=1.0)
    still = scenepriv.protect(images, tiny_classifier, "p-fgsm", seed=0, **fixed)
    grown = scenepriv.protect(images, tiny_classifier, "p-fgsm", seed=0, budget_growth=5, **fixed)
    assert float((still.images - images).abs().max()) <= 1.5 / 255
    assert float((grown.images - images).abs().max()) > 2.5 / 255  # threshold 1.0: never stops, so it grows


def test_the_paper_settings_are_untouched_by_the_perceptual_options(tiny_classifier, random_images):
    paper = Settings()
    assert (paper.eps, paper.max_iter, paper.threshold, paper.sigma) == (0.007, 50, 0.99, 0.99)
    assert paper.texture_mask is None and paper.texture_budget is None and paper.budget_growth is None
    explicit = dataclasses.replace(paper, texture_mask=None, texture_budget=None, budget_growth=None)
    a = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=0, settings=paper)
    b = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=0, settings=explicit)
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("fields, message", [({"texture_budget": 0.01}, "texture_mask"),
                                             ({"budget_growth": 5}, "bound"),
                                             ({"texture_mask": 0.02, "texture_budget": 0.01,
                                               "max_perturbation": 0.02}, "one bound")])
def test_perceptual_options_that_do_not_fit_together_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Settings(**fields)
