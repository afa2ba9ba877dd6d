"""The transfer options of the engine (input diversity, momentum, translation invariance): off, they leave the
paper's steps exactly as they were; on, they change the steps, stay within the bounds and stay reproducible."""

import pytest
import torch
import torch.nn.functional as F

import scenepriv
from scenepriv.attack import gaussian_smoothing, quantise
from scenepriv.settings import Settings
from scenepriv.transforms import diverse_views

TRANSFER_OPTIONS = [{"momentum": 1.0}, {"diversity": 2}, {"smoothing": 1.5},
                    {"momentum": 0.8, "diversity": 1, "smoothing": 1.0}]


def _gradient(classifier, x, target):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(classifier(quantise(x.detach()) + (x - x.detach())), torch.tensor([target]))
    (gradient,) = torch.autograd.grad(loss, x)
    return gradient


def test_options_off_give_the_paper_steps_bit_for_bit(tiny_classifier, random_images):
    """Plain P-FGSM written out step by step (Eq. 9 with the 8-bit forward) equals the engine with the options off."""
    x = random_images[:1]
    plain = scenepriv.protect(x, tiny_classifier, "p-fgsm", seed=2, max_iter=6, threshold=1.0)
    explicit = scenepriv.protect(x, tiny_classifier, "p-fgsm", seed=2, max_iter=6, threshold=1.0,
                                 momentum=None, diversity=None, smoothing=None)
    target = int(plain.goals[0])
    expected = x.clone()
    for _ in range(6):
        expected = (expected - 0.007 * _gradient(tiny_classifier, expected, target).sign()).clamp(0, 1)
    assert torch.equal(plain.images, quantise(expected)) and torch.equal(explicit.images, plain.images)
    assert plain.records == explicit.records
    assert Settings().momentum is None and Settings().diversity is None and Settings().smoothing is None


def test_momentum_steps_along_the_accumulated_normalised_gradients(tiny_classifier, random_images):
    x = random_images[:1]
    mu = 0.7
    result = scenepriv.protect(x, tiny_classifier, "p-fgsm", seed=2, max_iter=4, threshold=1.0, momentum=mu)
    target = int(result.goals[0])
    expected, velocity = x.clone(), torch.zeros_like(x)
    for _ in range(4):  # MI-FGSM: g = mu g + grad / mean|grad|, x = x - eps sign(g)
        gradient = _gradient(tiny_classifier, expected, target)
        velocity = mu * velocity + gradient / gradient.abs().mean((1, 2, 3), keepdim=True)
        expected = (expected - 0.007 * velocity.sign()).clamp(0, 1)
    assert torch.equal(result.images, quantise(expected))


def test_momentum_zero_is_the_plain_sign_step(tiny_classifier, random_images):
    plain = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=4, max_iter=10)
    zero = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=4, max_iter=10, momentum=0.0)
    assert torch.equal(plain.images, zero.images) and torch.equal(plain.iterations, zero.iterations)


@pytest.mark.parametrize("options", TRANSFER_OPTIONS)
def test_each_option_changes_the_steps_and_stays_within_the_bound(tiny_classifier, random_images, options):
    bound = 3 / 255
    plain = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=1, max_iter=8, threshold=1.0,
                              eps=1 / 255, max_perturbation=bound)
    result = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=1, max_iter=8, threshold=1.0,
                               eps=1 / 255, max_perturbation=bound, **options)
    assert not torch.equal(result.images, plain.images)
    assert torch.equal(result.goals, plain.goals)  # the same targets: the options change the steps only
    assert result.images.min() >= 0 and result.images.max() <= 1 and torch.equal(quantise(result.images),
                                                                                result.images)
    assert (result.images - quantise(random_images)).abs().max() <= bound + 1e-6


@pytest.mark.parametrize("options", TRANSFER_OPTIONS)
def test_each_option_keeps_the_texture_budget(tiny_classifier, random_images, options):
    from scenepriv.perceptual import texture_weights

    settings = {"eps": 1 / 255, "texture_mask": 0.05, "texture_budget": 2 / 255, "max_iter": 6, "threshold": 1.0}
    result = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=0, **settings, **options)
    weights = texture_weights(quantise(random_images), 0.05)
    assert ((result.images - quantise(random_images)).abs() <= 2 / 255 * weights + 0.5 / 255 + 1e-6).all()


@pytest.mark.parametrize("options", TRANSFER_OPTIONS)
def test_seeded_runs_are_reproducible(tiny_classifier, random_images, options):
    first = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=5, max_iter=6, **options)
    again = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=5, max_iter=6, **options)
    assert torch.equal(first.images, again.images) and first.records == again.records


def test_momentum_and_smoothing_batched_equal_one_by_one(tiny_classifier, random_images):
    """Each image keeps its own momentum, whatever else is in the batch and whenever the others stop."""
    options = {"momentum": 1.0, "smoothing": 0.7, "sigma": 0.5, "threshold": 0.6, "seed": 7, "max_iter": 30}
    batched = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", **options)
    assert len(set(batched.iterations.tolist())) > 1
    for i in range(len(random_images)):
        alone = scenepriv.protect(random_images[i : i + 1], tiny_classifier, "p-fgsm", **options)
        assert torch.equal(alone.images[0], batched.images[i]) and alone.iterations[0] == batched.iterations[i]


def test_options_that_do_not_apply_or_bad_values_are_refused(tiny_classifier, random_images):
    with pytest.raises(ValueError, match="momentum"):
        scenepriv.protect(random_images, tiny_classifier, "fgsm", momentum=1.0)
    with pytest.raises(ValueError, match="diversity"):
        scenepriv.protect(random_images, tiny_classifier, "sog", diversity=1)
    with pytest.raises(ValueError, match="smoothing"):
        scenepriv.protect(random_images, tiny_classifier, "r-fgsm", iterations=2, smoothing=1.0)
    for bad in ({"momentum": -0.5}, {"momentum": float("nan")}, {"diversity": 0}, {"diversity": 1.5},
                {"diversity_scale": 0.0}, {"smoothing": 0.0}, {"smoothing": -1.0}, {"smoothing": True}):
        with pytest.raises(ValueError):
            Settings(**bad)


def test_gaussian_smoothing_spreads_an_impulse_and_keeps_a_constant():
    constant = torch.full((1, 3, 9, 11), 0.25, dtype=torch.float64)
    assert torch.allclose(gaussian_smoothing(constant, 1.5), constant)
    impulse = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    impulse[0, 0, 10, 10] = 1
    smooth = gaussian_smoothing(impulse, 2.0)[0, 0]
    assert smooth.shape == (21, 21) and float(smooth.sum()) == pytest.approx(1.0)
    assert torch.allclose(smooth, smooth.T) and torch.allclose(smooth, smooth.flip(0))
    assert int(smooth.argmax()) == 10 * 21 + 10 and float(smooth[10, 12]) < float(smooth[10, 11])


def test_diverse_views_are_shrunk_copies_on_a_black_canvas_at_the_input_size():
    images = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5
    views = diverse_views(images, (32, 32), torch.Generator().manual_seed(1), count=3, min_scale=0.6)
    assert len(views) == 3
    for view in views:
        assert view.shape == (2, 3, 32, 32)
        inside = view.amin(1) > 0  # the picture (all pixels above 0.5); the padding is black
        rows, columns = inside.any(2).sum(1), inside.any(1).sum(1)
        assert ((rows >= 19) & (rows <= 32)).all() and ((columns >= 19) & (columns <= 32)).all()
        assert int(inside[0].sum()) == int(rows[0] * columns[0]) and (view[~inside[:, None].expand_as(view)] == 0).all()
    again = diverse_views(images, (32, 32), torch.Generator().manual_seed(1), count=3, min_scale=0.6)
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True))


def test_min_iter_goes_on_past_the_goal_and_judges_where_it_ends(tiny_classifier, random_images):
    options = {"seed": 7, "sigma": 0.5, "threshold": 0.6, "max_iter": 30}
    plain = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", **options)
    longer = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", min_iter=10, **options)
    assert torch.equal(plain.goals, longer.goals) and (plain.iterations < 10).any()
    for i in range(len(random_images)):
        if plain.iterations[i] >= 10:  # it reached its goal at 10 or later: the same steps, the same stop
            assert torch.equal(plain.images[i], longer.images[i]) and plain.iterations[i] == longer.iterations[i]
        else:
            assert longer.iterations[i] >= 10
        with torch.no_grad():
            probabilities = tiny_classifier(longer.images[i : i + 1]).double().softmax(1)[0]
        goal = int(longer.goals[i])
        reached = int(probabilities.argmax()) == goal and float(probabilities[goal]) >= 0.6
        assert bool(longer.success[i]) == reached
    with pytest.raises(ValueError, match="min_iter"):
        scenepriv.protect(random_images, tiny_classifier, "fgsm", min_iter=3)


def test_the_transfer_preset_takes_its_fixed_steps_within_its_texture_bound(random_images, tiny_classifier):
    from scenepriv.perceptual import texture_weights
    from scenepriv.settings import STRENGTHS

    preset = STRENGTHS["transfer"]
    bound = preset["texture_budget"] * texture_weights(quantise(random_images), preset["texture_mask"])
    # on the tiny network every image leaves its top-1 within the first bound, none reaches a target's p >= 0.5
    for method, steps, reached, widened in (("n-fgsm", "min_iter", True, 1), ("p-fgsm", "max_iter", False, 2)):
        result = scenepriv.protect(random_images, tiny_classifier, method, seed=0, **preset)
        assert (result.iterations == preset[steps]).all() and (result.success == reached).all()
        change = (result.images - result.originals).abs()
        assert (change <= widened * bound + 0.5 / 255).all()  # + the rounding to 8 bits
        assert (change > bound + 0.5 / 255).any() == (widened > 1)  # those still going took the wider bound
