"""The one batched sign-gradient loop that every method of the paper is a setting of.

Every iteration classifies the 8-bit image that would be saved (round(255 x) / 255) and, through
a straight-through rounding, takes the gradient of that same forward pass: one forward and one
backward per active image per iteration, and success is judged on exactly what is written to disk.
Images that reach their goal leave the batch; the rest go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def quantise(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit image as saved, back in [0, 1]."""
    return x.clamp(0, 1).mul_(255).round_().div_(255)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8, the pixels as saved."""
    return images.clamp(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class _StraightThroughQuantise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return quantise(x)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        return gradient


def straight_through_quantise(x: torch.Tensor) -> torch.Tensor:
    """Forward: the 8-bit image; backward: identity, so the gradient reaches the continuous iterate."""
    return _StraightThroughQuantise.apply(x)


def goal_reached(logits: torch.Tensor, labels: torch.Tensor, *, targeted: bool, threshold: float) -> torch.Tensor:
    """Targeted: the top-1 is the target with probability >= threshold. Untargeted: the top-1 is not y.

    ``labels`` may also be a mask (N, D) of classes to move away from: the top-1 is outside the mask and
    the classes outside it hold at least ``threshold`` of the probability.
    """
    top1 = logits.argmax(1)
    if labels.ndim == 2:
        outside = logits.float().softmax(1).masked_fill(labels, 0).sum(1)
        return ~labels.gather(1, top1[:, None]).squeeze(1) & (outside >= threshold)
    if not targeted:
        return top1 != labels
    probability = logits.float().softmax(1).gather(1, labels[:, None]).squeeze(1)
    return (top1 == labels) & (probability >= threshold)


def _bucket(index: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``index`` (the images still going) followed by finished images, up to the next power of two or all."""
    size = min(len(active), 1 << (len(index) - 1).bit_length())
    return torch.cat([index, (~active).nonzero().squeeze(1)[: size - len(index)]])


def gaussian_smoothing(gradient: torch.Tensor, sigma: float) -> torch.Tensor:
    """``gradient`` (N, C, H, W) convolved with a Gaussian of standard deviation ``sigma`` pixels, channel by
    channel, edges replicated: translation invariance (TI), a step that does not depend on exact positions."""
    radius = max(1, round(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=gradient.device, dtype=gradient.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = gradient.shape[1]
    padded = F.pad(gradient, [radius] * 4, mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the labels (N,); with a mask (N, D) of classes to move away from, -log of the
    probability outside the mask (descending it moves the whole likely set down, not one class)."""
    if labels.ndim == 2:
        logits = logits.float()
        return (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(labels, float("-inf")), 1)).sum()
    return F.cross_entropy(logits, labels, reduction="sum")


def _transfer_direction(gradient: torch.Tensor, index: torch.Tensor, going: torch.Tensor,
                        velocity: torch.Tensor | None, momentum: float | None, smoothing: float | None) -> torch.Tensor:
    """The sign of the smoothed (TI) gradient, or with ``momentum`` of the accumulated normalised gradients
    (MI), whose state ``velocity`` is updated for the images ``index[going]`` (those that step)."""
    if smoothing is not None:
        gradient = gaussian_smoothing(gradient, smoothing)
    if momentum is None:
        return gradient.sign_()
    rows = index[going]
    normalised = gradient[going] / gradient[going].abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-12)
    velocity[rows] = momentum * velocity[rows] + normalised
    direction = torch.zeros_like(gradient)
    direction[going] = velocity[rows].sign()
    return direction


@dataclass(frozen=True)
class LoopResult:
    originals: torch.Tensor  # (N, 3, H, W) the input rounded to 8 bits: what the perturbation is measured against
    images: torch.Tensor  # (N, 3, H, W) in [0, 1], 8-bit values: what is saved
    clean_logits: torch.Tensor  # (M, N, D) of each of the M models on the 8-bit original
    final_logits: torch.Tensor  # (M, N, D) on the saved images
    labels: torch.Tensor  # (N,) the class pushed towards (targeted) or away from (untargeted), or (N, D) a set
    iterations: torch.Tensor  # (N,) steps applied to each image
    success: torch.Tensor  # (N,) goal reached on the saved image


def sign_step_loop(
    images: torch.Tensor,
    classifier: nn.Module | Sequence[nn.Module],
    choose_labels: Callable[[torch.Tensor], torch.Tensor],
    *,
    targeted: bool,
    eps: float,
    steps: int,
    iterative: bool = True,
    noise: torch.Tensor | None = None,
    threshold: float = 0.99,
    max_perturbation: float | torch.Tensor | None = None,
    views: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]] | None = None,
    view_threshold: float = 0.5,
    confirm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    step_weights: torch.Tensor | None = None,
    grow_bound_every: int | None = None,
    bucket: bool = False,
    gradient_views: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
    momentum: float | None = None,
    smoothing: float | None = None,
    min_steps: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> LoopResult:
    """x_n = clip(x_{n-1} -/+ eps * d_n): d_n = sign(grad J) (or a fixed ``noise`` pattern).

    ``classifier`` is one model or an ensemble (a sequence of models with the same classes): the
    loss is the sum over the models, and an image reaches its goal only when it does on every model.
    ``choose_labels`` maps the clean probabilities (M, N, D) of the M models to the labels (N,) the
    loss uses: the true class for untargeted methods, the target for targeted ones (descent).
    ``iterative`` recomputes the direction every step and ends an image's iterations as soon as its saved
    version reaches the goal; ``iterative=False`` repeats the first direction ``steps`` times (the paper's
    "(kI)" baselines).
    ``views(saved, rows)`` maps the saved batch (the images of ``rows``) to transformed versions at the
    classifier's input size (e.g. JPEG re-encodings): their losses join the gradient, and the goal must then
    hold on each of them too, with the target's probability at least ``view_threshold`` (a margin against unseen
    re-encodings).
    ``confirm(saved, labels, rows)`` has the last word on the images that reached the goal (``rows``: their
    indices in the batch): a boolean mask (e.g. the goal on real, non-differentiable re-encodings); the images it
    rejects go on.
    ``step_weights`` (N, 1 or 3, H, W) scales each pixel's step: eps * weight * d_n (a perceptual mask).
    ``max_perturbation`` bounds |x - x_original|: a number, or a map (N, 1 or 3, H, W) per pixel; with
    ``grow_bound_every`` the bound of an image still going grows by its first size every that many
    iterations, so each image gets the smallest of those budgets that reaches its goal.
    ``bucket`` pads the batch of images still going to a power of two (or the whole batch) with finished
    images, whose results are discarded, so the networks see a handful of batch shapes instead of every
    size (a GPU library plans each new shape anew). The results are the same; the views of ``views`` are
    drawn for the images still going only.

    Three options help a perturbation carry to models it was not computed on; None (the default) leaves
    each out, and the steps are then exactly the paper's:
    ``gradient_views`` maps the saved batch to transformed versions (input diversity, DI: random
    resizing and padding) whose losses join the gradient; unlike ``views``, the goal is not checked on them.
    ``smoothing`` convolves each gradient with a Gaussian of that many pixels (translation invariance, TI).
    ``momentum`` mu steps along the sign of g_n = mu g_{n-1} + grad_n / mean|grad_n| (MI-FGSM), per image.
    ``min_steps`` keeps an image going that many steps even once it reaches its goal (a margin), and its
    success is then judged on where it ends.
    ``on_step(step)`` is called before each step (progress on long work).
    """
    models = list(classifier) if isinstance(classifier, Sequence) else [classifier]
    x_original = quantise(images.detach().float())
    x = x_original.clone()
    count = len(x)
    active = torch.ones(count, dtype=torch.bool, device=x.device)
    iterations = torch.zeros(count, dtype=torch.long, device=x.device)
    direction = None if noise is None else noise.to(x.device, x.dtype).sign()
    if step_weights is not None:
        step_weights = step_weights.to(x.device, x.dtype)
    if isinstance(max_perturbation, torch.Tensor):
        max_perturbation = max_perturbation.to(x.device, x.dtype)
    ascent = 1.0 if (noise is not None or not targeted) else -1.0
    success = torch.zeros(count, dtype=torch.bool, device=x.device)
    clean_logits = final_logits = labels = None
    velocity = None if momentum is None else torch.zeros_like(x)

    for step in range(steps + 1):
        index = active.nonzero().squeeze(1)
        if len(index) == 0:
            break
        if on_step is not None:
            on_step(step)
        last = step == steps
        if step == 0 or last or iterative:
            wants_gradient = noise is None and not last and (step == 0 or iterative)
            going = len(index)
            rows = _bucket(index, active) if bucket and going < count else index
            batch = (x if going == count else x[rows]).detach().requires_grad_(wants_gradient)
            with torch.set_grad_enabled(wants_gradient):
                saved = straight_through_quantise(batch)
                model_logits = [model(saved)[:going] for model in models]
                view_logits = [] if views is None else [model(view) for view in views(saved[:going], index)
                                                        for model in models]
                diverse_logits = [] if gradient_views is None or not wants_gradient else [
                    model(view) for view in gradient_views(saved[:going]) for model in models]
            logits = torch.stack([out.detach() for out in model_logits])  # (M, n, D)
            if step == 0:
                clean_logits = logits
                labels = choose_labels(clean_logits.double().softmax(2)).to(x.device)
                final_logits = torch.empty_like(clean_logits)
            reached = torch.stack([goal_reached(out, labels[index], targeted=targeted, threshold=threshold)
                                   for out in logits]).all(0)
            for view in view_logits:
                reached &= goal_reached(view.detach(), labels[index], targeted=targeted, threshold=view_threshold)
            if min_steps is not None and iterative and not last:  # not yet done: no need to confirm it either
                reached &= iterations[index] >= min_steps
            if confirm is not None and iterative and bool(reached.any()):
                candidates = reached.nonzero().squeeze(1)
                reached[candidates] = confirm(saved.detach()[candidates], labels[index[candidates]],
                                              index[candidates])
            done = reached | last if iterative else torch.full_like(reached, last)
            final_logits[:, index[done]] = logits[:, done]
            success[index[done]] = reached[done]
            active[index[done]] = False
            if last:
                break
            if wants_gradient:
                loss = sum(_loss(out[~done], labels[index[~done]])
                           for out in [*model_logits, *view_logits, *diverse_logits])
                (gradient,) = torch.autograd.grad(loss, batch)
                if smoothing is None and momentum is None:
                    step_direction = gradient[:going].sign_()
                else:
                    step_direction = _transfer_direction(gradient[:going], index, ~done, velocity, momentum,
                                                         smoothing)
                if not iterative:
                    direction = step_direction  # step 0 of a fixed-direction method: all images are here
                if done.any():
                    step_direction = step_direction[~done]
            index = index[~done]
        everyone = len(index) == count  # then whole tensors are used in place of gathered copies
        if direction is not None:
            step_direction = direction if everyone else direction[index]
        moved = x if everyone else x[index]  # x itself (no graph holds it) or a gathered copy: stepped in place
        if step_weights is not None:
            step_direction = step_direction * (step_weights if everyone else step_weights[index])
        moved.add_(step_direction, alpha=ascent * eps)
        if max_perturbation is not None:
            original = x_original if everyone else x_original[index]
            bound = max_perturbation
            if isinstance(bound, torch.Tensor) and not everyone:
                bound = bound[index]
            if grow_bound_every:  # the bound widens by its first size every grow_bound_every iterations
                bound = bound * (1 + iterations[index] // grow_bound_every).view(-1, 1, 1, 1).to(x.dtype)
            torch.minimum(torch.maximum(moved, original - bound), original + bound, out=moved)
        moved.clamp_(0, 1)
        if not everyone:
            x[index] = moved
        iterations[index] += 1

    return LoopResult(x_original, quantise(x), clean_logits, final_logits, labels, iterations, success)


def shrink_to_goal(originals: torch.Tensor, saved: torch.Tensor, logits: torch.Tensor, models: Sequence[nn.Module],
                   labels: torch.Tensor, *, targeted: bool, threshold: float,
                   confirm: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, steps: int,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8-bit ``originals + a (saved - originals)`` with the smallest factor a in (0, 1] found by ``steps``
    halvings of [0, 1] at which the goal holds on every model (and ``confirm(candidates, indices)``, given the
    candidates that reach it and their indices in this batch), and its logits (M, N, D).
    ``logits`` are the models' on ``saved``, which must reach the goal (it is not judged again).

    A sign-gradient loop stops at its first success, usually with room to spare: on real photos a scaled
    perturbation (a of 0.8-0.9) still reaches the goal and is visibly weaker. Every factor kept was judged on
    exactly the 8-bit image returned, so the goal still holds.
    """
    change = saved - originals
    low = torch.zeros(len(saved), 1, 1, 1, dtype=saved.dtype, device=saved.device)
    high = torch.ones_like(low)

    best, best_logits = saved, logits.clone()
    for _ in range(steps):
        middle = (low + high) / 2
        candidate = quantise(originals + middle * change)
        with torch.no_grad():
            logits = torch.stack([model(candidate) for model in models])
        reached = torch.stack([goal_reached(out, labels, targeted=targeted, threshold=threshold)
                               for out in logits]).all(0)
        if confirm is not None and bool(reached.any()):
            candidates = reached.nonzero().squeeze(1)
            reached[candidates] = confirm(candidate[candidates], candidates)
        high = torch.where(reached.view(-1, 1, 1, 1), middle, high)
        low = torch.where(reached.view(-1, 1, 1, 1), low, middle)
        best = torch.where(reached.view(-1, 1, 1, 1), candidate, best)
        best_logits[:, reached] = logits[:, reached]
    return best, best_logits
