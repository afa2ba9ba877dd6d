"""The perceptual settings: steps and bounds weighted by local texture, on synthetic images with a known layout."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
import torch.nn.functional as F

import scenepriv
from conftest import make_tiny_classifier
from scenepriv import methods, metrics
from scenepriv.attack import Goal, goal_reached, quantise, shrink_to_goal, sign_step_loop, to_uint8
from scenepriv.perceptual import texture_weights
from scenepriv.settings import METHODS, Settings


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


@pytest.mark.parametrize("method", ["p-fgsm", "away", "n-fgsm"])
def test_shrink_keeps_the_goal_with_a_smaller_change_pixel_by_pixel(tiny_classifier, random_images, method):
    """The shrunk photo is the original plus a fraction of the change: no pixel moves further or the other way,
    the goal still holds on the 8-bit image returned, and at least one photo got smaller."""
    settings = {"eps": 2 / 255, "threshold": 0.3, "max_iter": 30}
    full = scenepriv.protect(random_images, tiny_classifier, method, seed=3, **settings)
    shrunk = scenepriv.protect(random_images, tiny_classifier, method, seed=3, shrink=5, **settings)
    assert torch.equal(full.success, shrunk.success) and torch.equal(full.goals, shrunk.goals)
    before, after = full.images - full.originals, shrunk.images - shrunk.originals
    assert bool((after.abs() <= before.abs() + 1e-6).all()) and bool((after * before >= 0).all())
    assert (after.abs().sum((1, 2, 3)) < before.abs().sum((1, 2, 3))).any()
    assert torch.equal(shrunk.images, quantise(shrunk.images))
    with torch.no_grad():  # the goal holds where it is judged: on the returned images
        logits = tiny_classifier(shrunk.images)
    reached = goal_reached(logits, shrunk.goals, targeted=METHODS[method].targeted, threshold=0.3)
    assert torch.equal(reached, shrunk.success)
    assert torch.allclose(shrunk.final_probabilities[0], logits.double().softmax(1), atol=1e-5)
    unprotected = ~full.success  # an image that did not reach its goal is left as the loop ended it
    assert torch.equal(shrunk.images[unprotected], full.images[unprotected])


def test_shrink_asks_the_confirmation_too(tiny_classifier, random_images):
    """With a confirmation (robust: the real re-encodings), every factor kept passed it: here a confirmation that
    accepts only changes of at least 95% of the loop's own (by their sum) stops the shrinking there."""
    full = sign_step_loop(random_images, tiny_classifier, Goal(lambda p: p[0].argmin(1), True, threshold=0.3),
                          eps=8 / 255, max_iter=30)
    kept = full.success
    assert bool(kept.any())
    originals, saved, goals = full.originals[kept], full.images[kept], full.labels[kept]
    size = (saved - originals).abs().sum((1, 2, 3))

    def at_least_95_percent(candidates, targets):  # each candidate's own row: the nearest protected image
        rows = torch.stack([(saved - image).abs().sum((1, 2, 3)).argmin() for image in candidates])
        return (candidates - originals[rows]).abs().sum((1, 2, 3)) >= 0.95 * size[rows] - 1e-6

    def shrunk(confirm):
        with torch.no_grad():
            before = tiny_classifier(saved)[None]
        images, logits = shrink_to_goal(originals, saved, before, [tiny_classifier], goals, targeted=True,
                                        threshold=0.3, confirm=confirm, steps=5)
        with torch.no_grad():
            assert torch.allclose(logits[0], tiny_classifier(images))
        return (images - originals).abs().sum((1, 2, 3))

    plain, guarded = shrunk(None), shrunk(at_least_95_percent)
    assert bool((guarded >= 0.95 * size - 1e-6).all()) and bool((guarded <= size + 1e-6).all())
    assert bool((plain < 0.95 * size).any())  # without it, some shrank further


@pytest.mark.skipif(shutil.which("butteraugli") is None, reason="needs butteraugli: apt-get install butteraugli")
def test_easing_makes_the_change_less_visible_where_the_goal_still_holds(tiny_classifier, random_images,
                                                                         monkeypatch):
    """ease_above: the change is cut where butteraugli sees it most, never moved further or the other way, the
    goal and target kept; at least one photo gets a lower score, which protect reports; above every score, nothing
    changes."""
    settings = {"eps": 4 / 255, "threshold": 0.3, "max_iter": 30, "seed": 3}
    images = F.interpolate(random_images, scale_factor=2, mode="bilinear")  # smoother, photo-like at 64 px
    plain = scenepriv.protect(images, tiny_classifier, "p-fgsm", **settings)
    eased = scenepriv.protect(images, tiny_classifier, "p-fgsm", ease_above=0.01, **settings)
    assert torch.equal(plain.success, eased.success) and torch.equal(plain.goals, eased.goals)
    before, after = plain.images - plain.originals, eased.images - eased.originals
    assert bool((after.abs() <= before.abs() + 1e-6).all()) and bool((after * before >= 0).all())
    with torch.no_grad():
        logits = tiny_classifier(eased.images)
    assert torch.equal(goal_reached(logits, eased.goals, targeted=True, threshold=0.3), eased.success)
    originals = to_uint8(plain.originals)
    scores = [[metrics.butteraugli(original, image)
               for original, image in zip(originals, to_uint8(run.images), strict=True)] for run in (plain, eased)]
    assert any(after < before for before, after in zip(*scores, strict=True))
    assert plain.butteraugli == (None,) * len(images)  # measured only where easing is asked for: the last state's
    assert eased.butteraugli == tuple(score if done else None
                                      for score, done in zip(scores[1], eased.success, strict=True))
    monkeypatch.setattr(methods, "EASE_ROUNDS", 1)  # the rounds run out after a cut: the score is still the last's
    once = scenepriv.protect(images, tiny_classifier, "p-fgsm", ease_above=0.01, **settings)
    assert not torch.equal(once.images, plain.images)
    assert once.butteraugli == tuple(metrics.butteraugli(original, image) if done else None for original, image, done
                                     in zip(originals, to_uint8(once.images), once.success, strict=True))
    untouched = scenepriv.protect(images, tiny_classifier, "p-fgsm", ease_above=100.0, **settings)
    assert torch.equal(untouched.images, plain.images)
    with pytest.raises(ValueError, match="ease_above"):
        Settings(ease_above=0)


def test_robust_views_start_at_the_robust_quality():
    """robust_quality is validated as a JPEG quality and sets the harshest view's quality (the same draws differ)."""
    from scenepriv.transforms import PlatformViews

    assert Settings().robust_quality == 25 and Settings(**scenepriv.STRENGTHS["high"]).robust_quality == 25
    with pytest.raises(ValueError, match="robust_quality"):
        Settings(robust_quality=0)
    with pytest.raises(ValueError, match="robust_quality"):
        Settings(robust_quality=101)
    with pytest.raises(ValueError, match="shrink"):
        scenepriv.protect(torch.rand(1, 3, 16, 16), make_tiny_classifier(), "fgsm", shrink=3)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    harsh = {quality: PlatformViews(min_quality=quality).view(image, (32, 32), torch.Generator().manual_seed(5),
                                                              harsh=True) for quality in (25, 50)}
    assert not torch.equal(harsh[25], harsh[50])  # the same draws, another quality


def test_robust_views_sets_how_many_reencodings_join_each_gradient(tiny_classifier, random_images):
    """The network's passes that take a gradient see the photos and robust_views re-encodings of each."""
    sizes = []
    hook = tiny_classifier.network.register_forward_pre_hook(
        lambda module, inputs: sizes.append(len(inputs[0])) if inputs[0].requires_grad else None)
    try:
        for views in (1, 3):
            sizes.clear()
            scenepriv.protect(random_images[:2], tiny_classifier, "p-fgsm", seed=0, robust=True, max_iter=2,
                              threshold=1.0, robust_views=views)
            assert sizes == [2 * (1 + views)] * 2, sizes  # two steps, each one pass
    finally:
        hook.remove()
    assert Settings().robust_views == 2
    with pytest.raises(ValueError, match="robust_views"):
        Settings(robust_views=0)


def test_protect_trains_on_views_at_the_robust_quality(tiny_classifier, random_images):
    """The same seed and steps, the harshest view at JPEG 25 or 50: the gradients, so the images, differ."""
    runs = [scenepriv.protect(random_images[:2], tiny_classifier, "p-fgsm", seed=0, robust=True, max_iter=3,
                              threshold=1.0, robust_quality=quality) for quality in (25, 50)]
    assert not torch.equal(runs[0].images, runs[1].images)
    assert runs[1].records[0]["settings"]["robust_quality"] == 50


def test_a_view_aimed_at_a_reencoding_is_that_reencoding_and_the_others_stay_random():
    """``focus`` puts in an image's last view the re-encoding it names (close to Pillow's real one, with gradients);
    the images without one keep their random views, and a focus of Nones draws exactly the random views."""
    from scenepriv.reencode import Check, platform_version
    from scenepriv.transforms import PlatformViews

    image = quantise(torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0)))
    aim = Check(50, 0.5, "bilinear")
    platform = PlatformViews(count=2, min_quality=50)
    drawn = platform(image, (32, 32), torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(drawn, platform(image, (32, 32), torch.Generator().manual_seed(3),
                                                                  [None, None]), strict=True))
    leaf = image.clone().requires_grad_()
    aimed = platform(leaf, (32, 32), torch.Generator().manual_seed(3), [None, aim])
    assert len(aimed) == 2 and aimed[-1].shape == (2, 3, 32, 32)
    assert torch.equal(aimed[0][0], drawn[0][0])  # the harshest view and the image without an aim: as drawn
    real = platform_version(image[1], aim, (32, 32))
    error = (aimed[-1][1].detach() - real).abs().mean()
    assert float(error) < 0.5 * float((drawn[-1][1] - real).abs().mean()) and float(error) < 2 / 255
    aimed[-1][1].sum().backward()
    assert float(leaf.grad[1].abs().sum()) > 0 and float(leaf.grad[0].abs().sum()) == 0


@pytest.mark.parametrize("work_size", [None, 32])
def test_the_loop_aims_at_the_reencoding_the_confirmation_refused(tiny_classifier, random_images, monkeypatch,
                                                                   work_size):
    """Once the real re-encodings of the photo refuse it, its next steps' last view is the re-encoding it failed, at
    the scale of the copy worked on (work_size 32: half the photo's, so half size there is the copy's own)."""
    from scenepriv import methods
    from scenepriv.reencode import Check
    from scenepriv.transforms import PlatformViews

    refused, aims, confirmations = Check(75, 0.5, "area"), [], []

    def refuse_once(classifier, saved, labels, *, targeted, failed=None, factor=1, **options):
        if factor > 1:  # the working copy's own re-encodings (a guide): passed, so the photo's are asked
            return torch.ones(len(saved), dtype=torch.bool)
        confirmations.append(len(saved))
        if len(confirmations) > 1:
            return torch.ones(len(saved), dtype=torch.bool)
        failed[:] = [refused] * len(saved)
        return torch.zeros(len(saved), dtype=torch.bool)

    drawn = PlatformViews.__call__

    def record(self, x, input_size, generator, focus=None):
        aims.append([None] * len(x) if focus is None else list(focus))
        return drawn(self, x, input_size, generator, focus)

    monkeypatch.setattr(methods, "holds_on_reencodings", refuse_once)
    monkeypatch.setattr(PlatformViews, "__call__", record)
    photos = quantise(F.interpolate(random_images[:2], size=64, mode="bilinear"))  # 32 px: the views lose it all
    result = scenepriv.protect(photos, tiny_classifier, "p-fgsm", seed=0, robust=True, robust_quality=50,
                               eps=4 / 255, threshold=0.3, max_iter=40, work_size=work_size)
    assert len(confirmations) >= 2 and bool(result.success.any())
    aim = Check(75, 0.5 if work_size is None else 1.0, "area")
    first = next(i for i, seen in enumerate(aims) if aim in seen)
    assert all(seen == [None] * len(seen) for seen in aims[:first])  # no aim before the first refusal
    assert aims[first].count(aim) == confirmations[0]  # then every photo refused aims at what it failed


def test_tightening_ends_each_image_within_a_narrower_bound_or_as_it_first_reached_its_goal(tiny_classifier,
                                                                                          random_images):
    """With tighten, an image that reached its goal with a widened bound tries again within one size less: it ends
    either exactly as without tightening (the try did not reach the goal: the state that did stays) or within a
    bound narrower than the one it first reached the goal with, the goal holding on the saved image either way."""
    growth, budget = 2, 2 / 255
    settings = dict(sigma=0.5, eps=2 / 255, texture_mask=0.02, texture_budget=budget, budget_growth=growth,
                    threshold=0.5, max_iter=80)
    plain = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=0, **settings)
    tight = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=0, tighten=2, **settings)
    assert torch.equal(plain.success, tight.success) and torch.equal(plain.goals, tight.goals)
    assert bool(plain.success.all())
    with torch.no_grad():
        logits = tiny_classifier(tight.images)
    assert bool(goal_reached(logits, tight.goals, targeted=True, threshold=0.5).all())
    assert torch.allclose(tight.final_probabilities[0], logits.double().softmax(1), atol=1e-5)  # what each shows
    weights = texture_weights(quantise(random_images.clone()), 0.02)
    first_sizes = 1 + (plain.iterations - 1) // growth  # the bound the plain run's last step was within
    changed = restored = 0
    for i in range(len(random_images)):
        if torch.equal(tight.images[i], plain.images[i]):
            restored += int(tight.iterations[i]) > int(plain.iterations[i])  # tried, did not reach it: set back
            continue
        changed += 1
        narrower = (first_sizes[i] - 1) * budget * weights[i] + 0.5 / 255 + 1e-6
        assert bool(((tight.images[i] - tight.originals[i]).abs() <= narrower).all()), i
        assert int(tight.iterations[i]) > int(plain.iterations[i])
    assert changed > 0 and restored > 0  # some reached their goal within a narrower bound, some were set back
    with pytest.raises(ValueError, match="tighten"):
        Settings(tighten=0, texture_mask=0.02, texture_budget=budget, budget_growth=growth)
    with pytest.raises(ValueError, match="budget_growth"):
        Settings(tighten=1)
