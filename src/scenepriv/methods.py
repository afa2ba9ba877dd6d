"""The paper's methods (:mod:`scenepriv.settings`) run by the one loop in :mod:`scenepriv.attack`."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import metrics, resolution, targets
from .attack import (
    Bound,
    Direction,
    Goal,
    Views,
    gaussian_smoothing,
    goal_reached,
    quantise,
    shrink_to_goal,
    sign_step_loop,
    to_uint8,
)
from .images import JpegFormat
from .reencode import ROBUST_CHECKS, Check, forget, platform_versions
from .settings import METHODS, Settings
from .transforms import PlatformViews, diverse_views
from .zoo import Classifier


@dataclass(frozen=True)
class Protection:
    """What :func:`protect` did to a batch of N images against M models (D classes), as tensors; ``records``
    gives the same facts as one JSON-ready dict per image, built when first asked for.

    The goal of image i is ``goals[i]``: the class pushed towards (``toward``: the targeted methods), or
    pushed away from (the untargeted methods: the label), or for ``away`` a mask (N, D) of the classes
    pushed away from.
    """

    images: torch.Tensor  # (N, 3, H, W) 8-bit values in [0, 1]: exactly what is saved
    originals: torch.Tensor  # (N, 3, H, W) the input rounded to 8 bits: what the change is measured against
    goals: torch.Tensor  # (N,) class indices, or (N, D) a mask of classes for ``away``
    toward: bool  # True: towards the goal class (targeted); False: away from the goal class(es)
    iterations: torch.Tensor  # (N,) steps applied
    success: torch.Tensor  # (N,) goal reached on the saved image, by every model
    clean_probabilities: torch.Tensor  # (M, N, D) float64, of each model on the 8-bit original
    final_probabilities: torch.Tensor  # (M, N, D) float64, on the saved image
    fallback: torch.Tensor  # (N,) the target set was empty and the least likely class was taken instead
    method: str
    settings: Settings
    seed: int | None
    class_names: list[str]
    model_names: list[str]
    butteraugli: tuple[float | None, ...]  # of each image as its file will show it, where measured (ease_above)

    @functools.cached_property
    def records(self) -> list[dict[str, Any]]:
        return _records(self)


def image_generators(images: torch.Tensor, seed: int | None) -> list[torch.Generator]:
    """One random generator per image, independent of the batch it is in.

    With a seed, each image's stream comes from the seed and the image's own pixels, so the same
    photo gets the same target however it is batched. Without one, every stream is seeded from the
    operating system's entropy: a predictable target would let anyone recompute the mapping.
    """
    generators = []
    for image in images:
        if seed is None:
            state = secrets.randbits(63)
        else:
            digest = hashlib.sha256(quantise(image).mul(255).to(torch.uint8).cpu().numpy().tobytes()).digest()
            words = np.frombuffer(digest, dtype=np.uint32).tolist()
            state = int(np.random.SeedSequence([seed, *words]).generate_state(1, np.uint64)[0]) >> 1
        generators.append(torch.Generator().manual_seed(state))
    return generators


def _top(probabilities: torch.Tensor, labels: list[str], k: int = 5) -> list[dict[str, Any]]:
    values, indices = probabilities.topk(min(k, len(probabilities)))
    return [
        {"index": int(i), "name": labels[int(i)], "probability": round(float(v), 6)}
        for v, i in zip(values, indices, strict=True)
    ]


def protect(
    images: torch.Tensor,
    classifier: Classifier | Sequence[Classifier],
    method: str = "p-fgsm",
    *,
    labels: torch.Tensor | None = None,
    seed: int | None = None,
    settings: Settings | None = None,
    saved_as: Sequence[int | JpegFormat | None] | None = None,
    progress: Callable[[str, int], None] | None = None,
    **overrides: Any,
) -> Protection:
    """Protect a batch of RGB images in [0, 1], shape (N, 3, H, W), against ``classifier``.

    ``classifier`` may be a list of classifiers with the same classes (an ensemble): one
    perturbation against all of them, targets allowed by every model, success only when every
    model is fooled on the saved image (each record's ``models`` says what each one sees).

    ``images`` is a float tensor or NumPy array in [0, 1]; uint8 values (0-255) are divided by 255.
    ``labels`` (N,) are the true classes for the untargeted methods (default: the clean top-1).
    Settings come from ``settings`` and/or keyword overrides (``eps=0.004``, ``sigma=0.9`` ...).
    ``saved_as`` says how each image will be saved: as a JPEG (its quality, 4:2:0, or a
    :class:`scenepriv.images.JpegFormat`) or losslessly (None); the goal is judged on the file as it will show it.
    ``progress(stage, step)`` is called as the work goes: ``("step", n)`` before each step of the loop,
    ``("shrink", n)`` once before the change is scaled down (``n``: the steps taken).
    The input is not modified; the returned images are 8-bit values, exactly what is saved.
    Images outside [0, 1], NaN pixels, an empty batch or a label count that differs raise ValueError.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    spec = METHODS[method]
    settings = dataclasses.replace(settings or Settings(), **overrides)
    was_8bit = isinstance(images, torch.Tensor | np.ndarray) and images.dtype in (torch.uint8, np.uint8)
    images = _checked_images(images)
    if labels is not None and (len(torch.as_tensor(labels).reshape(-1)) != len(images)):
        raise ValueError(f"{len(torch.as_tensor(labels).reshape(-1))} labels for {len(images)} images")
    ensemble = list(classifier) if isinstance(classifier, Sequence) else [classifier]
    if not ensemble or any(model.labels != ensemble[0].labels for model in ensemble):
        raise ValueError("an ensemble needs at least one classifier, all with the same classes in the same order")
    primary = ensemble[0]
    device = primary.device
    images = images.to(device)
    generators = image_generators(images, seed)
    fixed_steps = spec.fixed_steps(settings.iterations)
    noise = None
    if spec.direction == "noise":
        noise = torch.stack([torch.randn(images.shape[1:], generator=g) for g in generators])
    fallback = torch.zeros(len(images), dtype=torch.bool)

    def choose_labels(probabilities: torch.Tensor) -> torch.Tensor:  # (M, N, D), one row of each model
        if not spec.targeted:
            return probabilities.mean(0).argmax(1) if labels is None else torch.as_tensor(labels, device=device)
        if spec.target_rule == "away":
            return targets.likely_set(probabilities, settings.sigma)
        mask, empty = targets.target_mask(spec.target_rule, probabilities, settings.sigma)
        fallback.copy_(empty.cpu())
        return targets.draw_uniform(mask, generators)

    originals = images if was_8bit else quantise(images)
    copy = resolution.WorkingCopy(originals, settings.texture_mask, settings.work_size,
                                  list(saved_as or [None] * len(images)))
    confirm = _Confirmation(ensemble, spec.targeted, settings, copy)
    transfer = [name for name in ("diversity", "momentum", "smoothing", "min_iter", "shrink", "work_size", "ease_above")
                if getattr(settings, name) is not None]
    if transfer and (fixed_steps is not None or noise is not None):
        raise ValueError(f"{', '.join(transfer)}: only for the iterative gradient methods; "
                         f"{spec.name} repeats one first step")
    smoothing = None  # in pixels of the classifier's input, brought to the photo's scale
    if settings.smoothing is not None:
        smoothing = settings.smoothing * copy.work.shape[-2] / primary.input_size[0]
    bound = settings.max_perturbation if settings.texture_budget is None else settings.texture_budget * copy.weights
    clean_logits = None
    if copy.factor > 1:  # the goal is chosen on what the classifier sees of the photo itself, not of its working copy
        with torch.no_grad():
            clean_logits = torch.stack([model(originals) for model in ensemble])
        clean, chosen = clean_logits.double().softmax(2), choose_labels
        choose_labels = lambda probabilities: chosen(clean)  # noqa: E731
    goal = Goal(choose_labels, spec.targeted, threshold=settings.threshold, min_iter=settings.min_iter,
                confirm=confirm if confirm.needed else None)
    result = sign_step_loop(
        copy.work, ensemble, goal, eps=settings.eps,
        max_iter=settings.max_iter if fixed_steps is None else fixed_steps,
        direction=Direction(copy.weights, settings.momentum, smoothing, noise),
        bound=None if bound is None else Bound(bound, settings.budget_growth, settings.tighten),
        views=_views(settings, seed, primary.input_size, copy, confirm.refused), iterative=fixed_steps is None,
        bucket=device.type == "cuda",  # GPU libraries plan per shape
        on_step=None if progress is None else functools.partial(progress, "step"))
    protected, final_logits, success = result.images, result.final_logits, result.success
    if settings.shrink and bool(success.any()):
        if progress is not None:
            progress("shrink", int(result.iterations.max()))
        _shrink(result, protected, final_logits, ensemble, goal, confirm, settings.shrink)
    measured: dict[int, float] = {}
    if settings.ease_above is not None and bool(success.any()):
        measured = _ease(result, protected, final_logits, ensemble, goal, confirm, settings.ease_above)
    if copy.judged_as_saved:  # the records report what the files show, and the goal is judged there
        everyone = torch.arange(len(images), device=device)
        with torch.no_grad():
            final_logits = torch.stack([model(copy.as_saved(protected, everyone)) for model in ensemble])
        protected = copy.full_size(protected, everyone)
        success = success & torch.stack([goal_reached(logits, result.labels, targeted=spec.targeted,
                                                      threshold=settings.threshold) for logits in final_logits]).all(0)
    return Protection(
        images=protected, originals=originals, goals=result.labels,
        toward=spec.targeted and spec.target_rule != "away", iterations=result.iterations, success=success,
        clean_probabilities=(result.clean_logits if clean_logits is None else clean_logits).double().softmax(2),
        final_probabilities=final_logits.double().softmax(2),
        fallback=fallback, method=spec.name, settings=settings, seed=seed, class_names=primary.labels,
        model_names=[model.name for model in ensemble], butteraugli=tuple(map(measured.get, range(len(images)))))


def _views(settings: Settings, seed: int | None, input_size: tuple[int, int], copy: resolution.WorkingCopy,
           refused: dict[int, Check]) -> Views:
    """The loop's views: with ``robust``, platform re-encodings (and, for a photo worked on smaller, what a plain
    bilinear resize makes of the full-size one), judged: random, but for a photo in ``refused`` (its row: the real
    re-encoding it last failed) the last is that one; with ``diversity``, randomly shrunk and shifted views for the
    gradient only. Each kind draws from its own stream (seeded by ``seed``), so the others stay."""
    judged = diverse = None
    if settings.robust:
        generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)
        platform = PlatformViews(settings.robust_views, min_quality=settings.robust_quality, factor=copy.factor)
        points = copy.point_views(input_size)

        def judged(saved: torch.Tensor, rows: torch.Tensor) -> list[torch.Tensor]:
            seen = platform(saved, input_size, generator, [refused.get(int(row)) for row in rows])
            return seen if points is None else seen + points(saved - copy.work_originals[rows], rows)
    if settings.diversity is not None:
        diverse_generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed + 1)
        diverse = lambda saved: diverse_views(  # noqa: E731
            saved, input_size, diverse_generator, settings.diversity, settings.diversity_scale)
    return Views(judged, diverse)


class _Confirmation:
    """Whether the goal holds on the files of a batch's ``rows`` and, with ``robust``, on their real re-encodings,
    in stages, cheapest first: the re-encodings of the working-size photo judged by the fast path (only when working
    smaller: at full size the file's own cost as much), then the photo as its file shows it (full size, through its
    JPEG) judged by the fast path, its re-encodings by the fast path then in the model's own precision.
    ``exact=False`` is a search's guide (shrink), not a verdict: working smaller, the first stage alone; at full
    size, the file's re-encodings by the fast path (the file's own JPEG is part of what a platform re-encodes: a
    search that left it out chose factors that the verdict then refused)."""

    def __init__(self, ensemble: list[Classifier], targeted: bool, settings: Settings,
                 copy: resolution.WorkingCopy) -> None:
        self.ensemble, self.targeted, self.settings, self.copy = ensemble, targeted, settings, copy
        self.needed = settings.robust or copy.judged_as_saved
        self.failed: dict[tuple[str, int], Check] = {}  # per stage and photo, the check that last failed: tried first
        self.refused: dict[int, Check] = {}  # per photo, the re-encoding it last failed, at the working copy's scale

    def __call__(self, saved: torch.Tensor, goals: torch.Tensor, rows: torch.Tensor,
                 exact: bool = True) -> torch.Tensor:
        robust, proxy = self.settings.robust, self.copy.judged_as_saved
        holds = torch.ones(len(saved), dtype=torch.bool, device=saved.device)
        if robust and self.copy.factor > 1:
            holds = self._reencoded("work", rows, saved, goals, judge="fast", factor=self.copy.factor)
            if not exact:
                return holds
        if not proxy and not robust or not bool(holds.any()):
            return holds
        rows, kept = rows[holds], holds.nonzero().squeeze(1)
        photos = self.copy.as_saved(saved[kept], rows)
        if proxy:
            with torch.no_grad():
                holds[kept] = torch.stack([
                    goal_reached(model(photos), goals[kept], targeted=self.targeted,
                                 threshold=self.settings.threshold) for model in self.ensemble]).all(0)
        if robust and bool(holds.any()):
            still = holds[kept]
            photos = photos if bool(still.all()) else photos[still]  # a full-size copy only where some failed
            holds[kept[still]] = self._reencoded("saved", rows[still], photos, goals[kept[still]],
                                                 judge="fast" if not exact else "exact" if proxy else "both")
        return holds

    def _reencoded(self, stage: str, rows: torch.Tensor, photos: torch.Tensor, goals: torch.Tensor,
                   **options: Any) -> torch.Tensor:
        """:func:`holds_on_reencodings` of ``photos`` (the batch's ``rows``), each photo's check that failed last time
        at this ``stage`` tried first: after one more step it is the likeliest to fail again."""
        failed = [self.failed.get((stage, int(row))) for row in rows]
        holds = holds_on_reencodings(self.ensemble, photos, goals, targeted=self.targeted, failed=failed, **options)
        self.failed.update({(stage, int(row)): check for row, check in zip(rows, failed, strict=True) if check})
        factor = 1 if stage == "work" else self.copy.factor  # "work": checks already at the working copy's scale
        for row, check, held in zip(rows.tolist(), failed, holds.tolist(), strict=True):
            if not held:
                self.refused[row] = dataclasses.replace(check, scale=min(1.0, check.scale * factor))
        return holds


def _shrink(result: Any, protected: torch.Tensor, final_logits: torch.Tensor, ensemble: list[Classifier],
            goal: Goal, confirm: _Confirmation, steps: int) -> None:
    """Scale down the change of each image that reached its goal (``protected``, ``final_logits`` updated in place):
    searched with the confirmation's cheap stage (:func:`scenepriv.attack.shrink_to_goal`), then judged in full;
    where refused, twice halfway back to the loop's own change, else the loop's own change stays."""
    rows = result.success.nonzero().squeeze(1)
    goals, loop_saved = result.labels[rows], protected[rows]
    search = None if not confirm.settings.robust else (
        lambda candidates, indices: confirm(candidates, goals[indices], rows[indices], exact=False))
    shrunk, shrunk_logits = shrink_to_goal(result.originals[rows], loop_saved, final_logits[:, rows], ensemble, goals,
                                           targeted=goal.targeted, threshold=goal.threshold, confirm=search,
                                           steps=steps)
    judged = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
    for _ in range(3):  # the factor found, then twice halfway back where refused
        trying = (shrunk != loop_saved).flatten(1).any(1) & ~judged
        if not bool(trying.any()):
            break
        accepted = torch.zeros_like(trying)
        accepted[trying] = confirm(shrunk[trying], goals[trying], rows[trying]) if confirm.needed else True
        judged |= accepted
        refused = trying & ~accepted
        shrunk[refused] = quantise((shrunk[refused] + loop_saved[refused]) / 2)
        with torch.no_grad():
            shrunk_logits[:, refused] = torch.stack([model(shrunk[refused]) for model in ensemble])
        lost = refused.clone()
        lost[refused] = ~goal.reached(shrunk_logits[:, refused], [], goals[refused], None)
        shrunk[lost] = loop_saved[lost]  # the goal lost halfway back: the loop's own change stays
    protected[rows[judged]], final_logits[:, rows[judged]] = shrunk[judged], shrunk_logits[:, judged]


EASE_ROUNDS = 6  # at most this many heat maps a photo
EASE_SHARE = 0.002  # the hottest share of its pixels is eased, with a few pixels around them
EASE_BY = (0.5, 0.25, 0.125)  # the change there is cut by the first of these with which the goal still holds


def _ease(result: Any, protected: torch.Tensor, final_logits: torch.Tensor, ensemble: list[Classifier], goal: Goal,
          confirm: _Confirmation, above: float) -> dict[int, float]:
    """Where butteraugli scores a protected photo as its file shows it above ``above``, ease its change where the eye
    sees it most (``protected``, ``final_logits`` updated in place): butteraugli scores the most visible region, so
    the change in the hottest :data:`EASE_SHARE` of its heat map (blurred by 4 pixels) is cut by the first of
    :data:`EASE_BY` with which the goal and the confirmation still hold; again on the new heat map, up to
    :data:`EASE_ROUNDS` times, until the score is ``above`` or less or no cut holds. The target stays. Left as they
    are: photos worked on at a smaller size or over butteraugli's pixel limit (a whole 12-megapixel pair takes 20 s),
    and all where butteraugli is not installed. Returns the score of each photo measured, as it ends (row: score)."""
    copy = confirm.copy
    scores: dict[int, float] = {}
    if copy.factor > 1 or copy.size[0] * copy.size[1] > metrics.BUTTERAUGLI_MAX_PIXELS:
        return scores
    originals = result.originals
    for row in result.success.nonzero().squeeze(1).tolist():
        rows = torch.tensor([row], device=protected.device)
        for rounds in range(EASE_ROUNDS + 1):  # the last measures what the last cut left
            measured = metrics.butteraugli_heat(to_uint8(originals[rows])[0],
                                                to_uint8(copy.as_saved(protected[rows], rows))[0])
            if measured is None:
                return scores
            scores[row] = measured[0]
            if measured[0] <= above or rounds == EASE_ROUNDS:
                break
            heat = torch.from_numpy(measured[1]).to(protected.device)
            hottest = (heat >= heat.quantile(1 - EASE_SHARE)).to(protected.dtype)[None, None]
            where = (gaussian_smoothing(hottest, 4.0) * (2 * torch.pi * 4.0**2)).clamp_(max=1)[0]  # 1 on the region
            change = protected[row] - originals[row]
            for cut in EASE_BY:
                candidate = quantise(originals[row] + change * (1 - cut * where))[None]
                with torch.no_grad():
                    logits = torch.stack([model(candidate) for model in ensemble])
                if bool(goal.reached(logits, [], result.labels[rows], None)[0]) and (
                        not confirm.needed or bool(confirm(candidate, result.labels[rows], rows)[0])):
                    protected[row], final_logits[:, row] = candidate[0], logits[:, 0]
                    break
            else:
                break
    return scores


# Logits by which the top-1 of a re-encoding must lead the runner-up for the confirmation to count it: fp32 results
# differ in their last bits with the cores that compute them (verify's may use more than the confirmation's), which
# can swap two classes tied that closely.
LEAD = 0.01


def leads(logits: torch.Tensor) -> torch.Tensor:
    """(N,): whether each row's top-1 leads the runner-up by :data:`LEAD` logits or more."""
    top = logits.float().topk(2, dim=1).values
    return top[:, 0] - top[:, 1] >= LEAD


def holds_on_reencodings(classifier: Classifier | Sequence[Classifier], saved: torch.Tensor, labels: torch.Tensor,
                         *, targeted: bool, judge: str = "both", factor: int = 1,
                         failed: list[Check | None] | None = None) -> torch.Tensor:
    """(N,) whether the goal holds on the top-1 of every real re-encoding of ``ROBUST_CHECKS`` (Pillow's JPEG,
    each resampler) for every model, that top-1 leading by :data:`LEAD` logits. ``judge``: ``"exact"``, in the
    model's own precision (what a verdict on a saved photo is judged by); ``"fast"``, by its fast path (bf16 where it
    pays: a guide, not a verdict); ``"both"``, the fast path rules out the images that fail there and the others are
    judged exactly. The checks go in stages,
    the one that fails most first, then quality by quality, harshest first, each stage only on the images that held
    so far (a candidate that fails at once costs one re-encoding). ``factor`` k: ``saved`` is the photo shrunk k
    times, the scales of the checks are the photo's (a check whose scale would enlarge it is made at its own
    size). ``failed`` (one entry per photo, or None): checks to try before all others, and where a photo fails,
    the check it failed is written there."""
    holds = torch.ones(len(saved), dtype=torch.bool, device=saved.device)
    all_checks = list(dict.fromkeys(Check(check.quality, min(1.0, check.scale * factor), check.resampler)
                                    for check in ROBUST_CHECKS))
    # The checks that failed last time, then those that fail most (the harshest, on their own), then quality by quality
    first = list(dict.fromkeys(check for check in failed or [] if check in all_checks)) or all_checks[:1]
    stages = [first] + [[check for check in all_checks if check.quality == quality and check not in first]
                        for quality in dict.fromkeys(check.quality for check in all_checks)]
    stages = [checks for checks in stages if checks]
    caches: list[dict] = [{} for _ in range(len(saved))]  # the re-encoded photos, shared by stages and models
    models = list(classifier) if isinstance(classifier, Sequence) else [classifier]
    for model in models:
        passes = {"fast": [model], "exact": [model.exact], "both": [model, model.exact]}[judge]
        if model.autocast_dtype(saved.device) is None:  # no faster path: the fast one is the exact one
            passes = passes[:1]
        for stage, checks in enumerate(stages):
            rows = holds.nonzero().squeeze(1)
            if len(rows) == 0:
                return holds
            views = torch.stack([platform_versions(saved[row], checks, model.input_size, caches[row])
                                 for row in rows])
            for network in passes:
                with torch.no_grad():
                    logits = network(views.flatten(0, 1))
                each = (goal_reached(logits, labels[rows].repeat_interleave(len(checks), dim=0), targeted=targeted,
                                     threshold=0.0) & leads(logits)).view(len(rows), len(checks))
                reached = each.all(1)
                holds[rows[~reached]] = False
                if failed is not None:
                    first_failed = each[~reached].int().argmin(1).tolist()
                    for row, check in zip(rows[~reached].tolist(), first_failed, strict=True):
                        failed[row] = checks[check]
                rows, views = rows[reached], views[reached]
                if len(rows) == 0:
                    break
            if model is models[-1]:  # no other model needs this stage's re-encodings: their memory goes
                for cache in caches:
                    forget(cache, checks, later=[check for later in stages[stage + 1:] for check in later])
    return holds


def _checked_images(images: Any) -> torch.Tensor:
    """``images`` as a float tensor in [0, 1] of shape (N, 3, H, W), or a ValueError saying what is wrong."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor or numpy.ndarray, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if len(images) == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images must hold at least one image of at least 1x1 pixels, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0, 1] or uint8, got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    slack = 0.5 / 255  # a resampler's overshoot below half a grey level is rounding, not a wrong range
    if low < -slack or high > 1 + slack:
        hint = "; divide 0-255 values by 255" if high > 1 else ""
        raise ValueError(f"images must lie in [0, 1], got values from {low:g} to {high:g}{hint}")
    return images.clamp(0, 1) if low < 0 or high > 1 else images


def _records(result: Protection) -> list[dict[str, Any]]:
    """One record per image. ``goal`` says what the image was pushed towards or away from (``toward``) and
    the goal classes with their rank and the probability mass ranked above them on the clean image; top-5s
    are the first model's, and with an ensemble ``models`` gives each model's top-1s and the probability of
    the goal (away: the probability outside the classes moved away from)."""
    names = result.class_names
    everyone_clean, everyone_final = result.clean_probabilities.cpu(), result.final_probabilities.cpu()
    clean, final = everyone_clean[0], everyone_final[0]
    ranks = targets.rank_of(clean)
    mass_above = targets.mass_ranked_above(clean)
    originals, protected = to_uint8(result.originals), to_uint8(result.images)
    goals = result.goals.cpu()
    records = []
    for i in range(len(clean)):
        classes = goals[i].nonzero().squeeze(1).tolist() if goals.ndim == 2 else [int(goals[i])]
        if goals.ndim == 2:
            probabilities = [1 - float(f[i][goals[i]].sum()) for f in everyone_final]
        else:
            probabilities = [float(f[i, classes[0]]) for f in everyone_final]
        goal: dict[str, Any] = {"toward": result.toward, "classes": [
            {"index": c, "name": names[c], "rank": int(ranks[i, c]), "mass_above": round(float(mass_above[i, c]), 6)}
            for c in classes]}
        if result.toward:
            goal["fallback_least_likely"] = bool(result.fallback[i])
        record: dict[str, Any] = {
            "method": result.method,
            "settings": {**dataclasses.asdict(result.settings), "seed": result.seed},
            "clean_top5": _top(clean[i], names),
            "goal": goal,
            "iterations": int(result.iterations[i]),
            "success": bool(result.success[i]),
            "top1_changed": bool(final[i].argmax() != clean[i].argmax()),
            "final_top5": _top(final[i], names),
        }
        if len(result.model_names) > 1:
            record["models"] = [{"model": model, "clean_top1": names[int(c[i].argmax())],
                                 "final_top1": names[int(f[i].argmax())], "probability": round(p, 6)}
                                for model, c, f, p in zip(result.model_names, everyone_clean, everyone_final,
                                                          probabilities, strict=True)]
        linf, l2 = metrics.perturbation_norms(originals[i], protected[i])
        psnr = metrics.psnr(originals[i], protected[i])
        record.update(linf=linf, l2=l2, psnr=None if psnr == float("inf") else psnr,
                      ssim=metrics.ssim(originals[i], protected[i]))
        records.append(record)
    return records
