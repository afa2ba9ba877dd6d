"""Large photos protected at a smaller size (scenepriv.resolution): the change carried to full size exactly, the
plain bilinear views of the full-size photo, and protect() judging the goal on the full-size photo as saved."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import scenepriv
from scenepriv import resolution, verify
from scenepriv.attack import goal_reached, quantise
from scenepriv.images import JpegFormat, jpeg_quality, jpeg_subsampling
from scenepriv.perceptual import texture_weights


def smooth_photos(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """8-bit photos with texture at several scales (random noise upsampled), so the texture mask varies."""
    generator = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(count, 3, height // 8, width // 8, generator=generator), size=(height, width),
                           mode="bilinear")
    fine = torch.rand(count, 3, height, width, generator=generator) * 0.15
    return quantise((coarse * 0.85 + fine).clamp(0, 1))


@pytest.mark.parametrize("size", [(37, 53), (64, 48)])
def test_the_carried_change_has_the_computed_block_means_and_keeps_the_texture_bound(size):
    photos, k, budget = smooth_photos(2, 64, 64)[..., : size[0], : size[1]], 2, 3 / 255
    weights = texture_weights(photos, 0.02)
    block_weights = resolution.block_means(weights, k)
    change = (torch.rand(block_weights.shape[0], 3, *block_weights.shape[-2:], generator=torch.Generator()
                         .manual_seed(1)) * 2 - 1) * budget * block_weights
    full = resolution.carry(change, resolution.spread(weights, k, size), k, size)
    assert full.shape == photos.shape
    whole = (size[0] // k, size[1] // k)  # blocks that lie whole inside the photo
    assert torch.allclose(resolution.block_means(full, k)[..., : whole[0], : whole[1]],
                          change[..., : whole[0], : whole[1]], atol=1e-6)
    assert bool((full.abs() <= budget * weights + 1e-6).all())  # where texture allows it, as at full size
    flat = torch.zeros(1, 1, *size)  # no texture anywhere: the block's change goes evenly to its pixels
    evenly = resolution.carry(change[:1], resolution.spread(flat, k, size), k, size)
    assert torch.equal(evenly, F.interpolate(change[:1], scale_factor=k, mode="nearest")[..., : size[0], : size[1]])


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_point_views_are_the_plain_bilinear_resize_of_the_full_size_photo(scale):
    """What a classifier resizing without antialiasing sees (the photo shrunk by ``scale`` first, as a platform
    does, then to its input), computed from the change at the smaller size: exactly, rounding and clipping aside."""
    photos, k = 0.1 + 0.8 * smooth_photos(2, 101, 75), 2  # no pixel pushed out of [0, 1]
    spread = resolution.spread(texture_weights(photos, 0.02), k, (101, 75))
    change = torch.randn(2, 3, 51, 38, generator=torch.Generator().manual_seed(2)) * 0.01
    views = resolution.PointViews(photos, spread, k, (32, 32), scales=(scale,))(change[[1, 0]], torch.tensor([1, 0]))[0]
    full = photos + resolution.carry(change, spread, k, (101, 75))
    if scale != 1:
        full = F.interpolate(full, size=(round(101 * scale), round(75 * scale)), mode="bilinear", align_corners=False)
    expected = F.interpolate(full, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    assert torch.allclose(views, expected[[1, 0]], atol=1e-5)


def test_a_large_photo_is_protected_at_half_size_and_judged_at_full_size(tiny_classifier):
    photos = smooth_photos(2, 96, 128)
    settings = {"eps": 4 / 255, "texture_mask": 0.02, "texture_budget": 8 / 255, "budget_growth": 5,
                "threshold": 0.3, "max_iter": 40}
    result = scenepriv.protect(photos, tiny_classifier, seed=0, work_size=64, **settings)  # 128 // 64: half size
    assert result.images.shape == photos.shape and torch.equal(result.images, quantise(result.images))
    # the full-size bound (w x 8/255, widened every 5 steps), the rounding at the working size carried the same way,
    # the final rounding
    weights = texture_weights(photos, 0.02)
    spread = resolution.spread(weights, 2, (96, 128))
    widened = (1 + (result.iterations - 1) // 5).view(-1, 1, 1, 1)
    bound = 8 / 255 * widened * weights + 0.5 / 255 * spread + 0.5 / 255
    assert bool(((result.images - photos).abs() <= bound + 1e-6).all())
    with torch.no_grad():
        logits = tiny_classifier(result.images)
    assert torch.allclose(result.final_probabilities[0], logits.double().softmax(1), atol=1e-6)
    assert torch.equal(result.success, goal_reached(logits, result.goals, targeted=True, threshold=0.3))
    assert bool(result.success.any())
    full_size = scenepriv.protect(photos, tiny_classifier, seed=0, **settings)  # the same targets either way
    assert torch.equal(full_size.goals, result.goals)


@pytest.mark.parametrize("jpeg", [80, JpegFormat(80, "4:4:4")])
def test_a_photo_saved_as_jpeg_is_judged_as_its_file_decodes(tiny_classifier, jpeg):
    photos = smooth_photos(2, 64, 64, seed=3)
    result = scenepriv.protect(photos, tiny_classifier, seed=0, eps=4 / 255, threshold=0.3, max_iter=20,
                               saved_as=[jpeg, None])
    shown = torch.stack([verify.jpeg_round_trip(result.images[0], jpeg), result.images[1]])
    other = JpegFormat(80, "4:2:0" if isinstance(jpeg, JpegFormat) else "4:4:4")
    assert not torch.equal(shown[0], verify.jpeg_round_trip(result.images[0], other))  # the subsampling matters
    with torch.no_grad():
        logits = tiny_classifier(shown)
    assert torch.allclose(result.final_probabilities[0], logits.double().softmax(1), atol=1e-6)
    assert torch.equal(result.success, goal_reached(logits, result.goals, targeted=True, threshold=0.3))
    with pytest.raises(ValueError, match="saved formats"):
        scenepriv.protect(photos, tiny_classifier, saved_as=[80])


@pytest.mark.parametrize("quality", [30, 50, 75, 85, 92, 95, 100])
def test_a_jpegs_quality_is_read_from_its_tables(quality):
    pixels = np.random.default_rng(quality).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    assert jpeg_quality(Image.open(buffer)) == quality
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    assert jpeg_quality(Image.open(png)) is None


@pytest.mark.parametrize(("subsampling", "orientation", "read"), [
    (0, 1, "4:4:4"), (1, 1, "4:2:2"), (2, 1, "4:2:0"), (1, 6, "4:4:4"), (2, 8, "4:2:0")])
def test_a_jpegs_chroma_subsampling_is_read_as_the_upright_photo_has_it(subsampling, orientation, read):
    """4:2:2 halves the columns of the chroma; turned a quarter (orientations 5-8) they are the upright photo's
    rows, which no subsampling Pillow writes halves alone: kept whole (4:4:4)."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, subsampling=subsampling, exif=exif)
    assert jpeg_subsampling(Image.open(buffer)) == read
    png = io.BytesIO()
    image.save(png, format="PNG")
    assert jpeg_subsampling(Image.open(png)) is None


def test_the_checks_share_their_reencodings_and_give_what_each_check_alone_gives(tiny_classifier):
    photo = smooth_photos(1, 80, 60)[0]
    cache: dict = {}
    together = verify.platform_versions(photo, verify.ROBUST_CHECKS, (32, 32), cache)
    alone = torch.stack([verify.platform_version(photo, check, (32, 32)) for check in verify.ROBUST_CHECKS])
    assert torch.equal(together, alone)
    # the cache holds each resize and re-encoding once: the scale-1 JPEG once per quality, whatever the resampler
    assert len([key for key in cache if key[1:] == (1.0, None) and key[0] is not None]) == 3
