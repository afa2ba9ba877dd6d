"""The paper's methods (:mod:`scenepriv.settings`) run by the one loop in :mod:`scenepriv.attack`."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import metrics, targets
from .attack import goal_reached, quantise, sign_step_loop, to_uint8
from .perceptual import texture_weights
from .settings import METHODS, Settings
from .transforms import PlatformViews, diverse_views
from .verify import ROBUST_CHECKS, platform_version
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
    **overrides: Any,
) -> Protection:
    """Protect a batch of RGB images in [0, 1], shape (N, 3, H, W), against ``classifier``.

    ``classifier`` may be a list of classifiers with the same classes (an ensemble): one
    perturbation against all of them, targets allowed by every model, success only when every
    model is fooled on the saved image (each record's ``models`` says what each one sees).

    ``images`` is a float tensor or NumPy array in [0, 1]; uint8 values (0-255) are divided by 255.
    ``labels`` (N,) are the true classes for the untargeted methods (default: the clean top-1).
    Settings come from ``settings`` and/or keyword overrides (``eps=0.004``, ``sigma=0.9`` ...).
    The input is not modified; the returned images are 8-bit values, exactly what is saved.
    Images outside [0, 1], NaN pixels, an empty batch or a label count that differs raise ValueError.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    spec = METHODS[method]
    settings = dataclasses.replace(settings or Settings(), **overrides)
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

    views = confirm = None
    if settings.robust:
        view_generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)
        platform = PlatformViews(min_quality=settings.robust_quality)
        views = lambda saved: platform(saved, primary.input_size, view_generator)  # noqa: E731
        confirm = functools.partial(holds_on_reencodings, ensemble, targeted=spec.targeted)
    transfer = [name for name in ("diversity", "momentum", "smoothing", "min_iter", "shrink")
                if getattr(settings, name) is not None]
    if transfer and (fixed_steps is not None or noise is not None):
        raise ValueError(f"{', '.join(transfer)}: only for the iterative gradient methods; "
                         f"{spec.name} repeats one first step")
    diverse = None
    if settings.diversity is not None:  # drawn from their own stream, so the other draws stay as they were
        diverse_generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed + 1)
        diverse = lambda saved: diverse_views(  # noqa: E731
            saved, primary.input_size, diverse_generator, settings.diversity, settings.diversity_scale)
    smoothing = None  # in pixels of the classifier's input, brought to the photo's scale
    if settings.smoothing is not None:
        smoothing = settings.smoothing * images.shape[-2] / primary.input_size[0]
    weights = None if settings.texture_mask is None else texture_weights(quantise(images), settings.texture_mask)
    bound = settings.max_perturbation if settings.texture_budget is None else settings.texture_budget * weights
    result = sign_step_loop(
        images, ensemble, choose_labels, targeted=spec.targeted, eps=settings.eps,
        steps=settings.max_iter if fixed_steps is None else fixed_steps, iterative=fixed_steps is None,
        noise=noise, threshold=settings.threshold, max_perturbation=bound, views=views, confirm=confirm,
        step_weights=weights, grow_bound_every=settings.budget_growth,
        bucket=device.type == "cuda",  # GPU libraries plan per shape
        gradient_views=diverse, momentum=settings.momentum, smoothing=smoothing, min_steps=settings.min_iter,
        shrink_steps=settings.shrink,
    )
    return Protection(
        images=result.images, originals=result.originals, goals=result.labels,
        toward=spec.targeted and spec.target_rule != "away", iterations=result.iterations, success=result.success,
        clean_probabilities=result.clean_logits.double().softmax(2),
        final_probabilities=result.final_logits.double().softmax(2),
        fallback=fallback, method=spec.name, settings=settings, seed=seed, class_names=primary.labels,
        model_names=[model.name for model in ensemble])


def holds_on_reencodings(classifier: Classifier | Sequence[Classifier], saved: torch.Tensor, labels: torch.Tensor,
                         *, targeted: bool) -> torch.Tensor:
    """(N,) whether the goal holds on the top-1 of every real re-encoding of ``ROBUST_CHECKS`` (Pillow's JPEG,
    each resampler) for every model, in the model's own precision (a bf16 fast path decides the steps, not the
    verdict). ``--robust`` stops an image only then. The checks go by quality, harshest first, each only on the
    images that held so far (a candidate that fails JPEG 50 costs a third of the network's work)."""
    holds = torch.ones(len(saved), dtype=torch.bool, device=saved.device)
    qualities = dict.fromkeys(check.quality for check in ROBUST_CHECKS)  # in order, harshest first
    for model in (classifier if isinstance(classifier, Sequence) else [classifier]):
        for quality in qualities:
            rows = holds.nonzero().squeeze(1)
            if len(rows) == 0:
                return holds
            checks = [check for check in ROBUST_CHECKS if check.quality == quality]
            views = torch.stack([platform_version(saved[row], check, model.input_size)
                                 for row in rows for check in checks])  # the views of each image consecutive
            with torch.no_grad():
                reached = goal_reached(model.exact(views), labels[rows].repeat_interleave(len(checks), dim=0),
                                       targeted=targeted, threshold=0.0)
            holds[rows] = reached.view(len(rows), len(checks)).all(1)
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
