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


@dataclass(frozen=True)
class Goal:
    """What each image is pushed to and when it may stop: ``choose`` maps the clean probabilities (M, N, D) of the M
    models to the labels (N,) the loss uses (the true class for untargeted methods, the target for targeted ones),
    or a mask (N, D) of classes to move away from; the goal is reached when :func:`goal_reached` holds on every
    model at ``threshold``, on every judged view at ``view_threshold`` (a margin against unseen re-encodings), after
    at least ``min_iter`` steps, and ``confirm(saved, labels, rows)`` (rows: indices in the batch) accepts it."""

    choose: Callable[[torch.Tensor], torch.Tensor]
    targeted: bool
    threshold: float = 0.99
    view_threshold: float = 0.5
    min_iter: int | None = None
    confirm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def reached(self, logits: torch.Tensor, views: list[torch.Tensor], labels: torch.Tensor,
                iterations: torch.Tensor | None) -> torch.Tensor:
        """(n,): the goal on the models' logits (M, n, D) and on each view's, once ``iterations`` (None: the last
        step, no minimum) reach ``min_iter``."""
        reached = torch.stack([goal_reached(out, labels, targeted=self.targeted, threshold=self.threshold)
                               for out in logits]).all(0)
        for view in views:
            reached &= goal_reached(view.detach(), labels, targeted=self.targeted, threshold=self.view_threshold)
        if self.min_iter is not None and iterations is not None:  # not yet done: no need to confirm it either
            reached &= iterations >= self.min_iter
        return reached


class Direction:
    """Where each step moves each pixel (times eps): the sign of the gradient (the paper's steps), of the gradient
    smoothed by a Gaussian of ``smoothing`` pixels (TI) or of the accumulated normalised gradients (``momentum``
    mu, MI-FGSM, per image), or a fixed ``noise`` pattern's sign; each pixel's step scaled by ``weights``
    (N, 1 or 3, H, W; a perceptual mask). It keeps per-image state (momentum): one per run."""

    def __init__(self, weights: torch.Tensor | None = None, momentum: float | None = None,
                 smoothing: float | None = None, noise: torch.Tensor | None = None) -> None:
        self.weights, self.momentum, self.smoothing, self.noise = weights, momentum, smoothing, noise
        self.fixed: torch.Tensor | None = None  # a direction repeated every step (noise, or a fixed-step method's)
        self.velocity: torch.Tensor | None = None

    def start(self, x: torch.Tensor) -> None:
        if self.noise is not None:
            self.fixed = self.noise.to(x.device, x.dtype).sign()
        if self.weights is not None:
            self.weights = self.weights.to(x.device, x.dtype)
        if self.momentum is not None:
            self.velocity = torch.zeros_like(x)

    def of_gradient(self, gradient: torch.Tensor, index: torch.Tensor, stepping: torch.Tensor) -> torch.Tensor:
        """The direction for the gradient of the images ``index`` (the state of those ``stepping`` is updated)."""
        if self.smoothing is None and self.momentum is None:
            return gradient.sign_()
        if self.smoothing is not None:
            gradient = gaussian_smoothing(gradient, self.smoothing)
        if self.momentum is None:
            return gradient.sign_()
        rows = index[stepping]
        normalised = gradient[stepping] / gradient[stepping].abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-12)
        self.velocity[rows] = self.momentum * self.velocity[rows] + normalised
        direction = torch.zeros_like(gradient)
        direction[stepping] = self.velocity[rows].sign()
        return direction

    def step(self, computed: torch.Tensor | None, index: torch.Tensor, everyone: bool) -> torch.Tensor:
        """This step's direction for the images ``index`` (``everyone``: all of them, whole tensors), weighted."""
        if self.fixed is not None:
            computed = self.fixed if everyone else self.fixed[index]
        if self.weights is None:
            return computed
        return computed * (self.weights if everyone else self.weights[index])


@dataclass(frozen=True)
class Bound:
    """How far each pixel may move from the original: ``max_perturbation``, a number or a map (N, 1 or 3, H, W) per
    pixel, widened by its first size every ``budget_growth`` steps for an image still going (so each image gets the
    smallest of those budgets that reaches its goal). With ``tighten`` k, an image that reaches its goal within
    ``tighten_from`` sizes or more tries again within one size less, for ``budget_growth`` steps, up to k times; where
    it does not reach the goal there, the state that last reached it is what it ends with (:class:`Tightening`)."""

    max_perturbation: float | torch.Tensor
    budget_growth: int | None = None
    tighten: int | None = None
    tighten_from: int = 4

    def sizes(self, steps: torch.Tensor, ceiling: torch.Tensor | None) -> torch.Tensor:
        """(n,) how many first sizes the bound is at step ``steps`` (0: the first) of each image (its ``ceiling``)."""
        sizes = 1 + steps // self.budget_growth
        return sizes if ceiling is None else torch.minimum(sizes, ceiling)

    def project(self, moved: torch.Tensor, original: torch.Tensor, index: torch.Tensor, iterations: torch.Tensor,
                everyone: bool, ceiling: torch.Tensor | None = None) -> None:
        """Clip ``moved`` (the images ``index``) in place to their bound around ``original`` (``ceiling``: the most
        sizes each image's may have, :class:`Tightening`'s)."""
        bound = self.max_perturbation
        if isinstance(bound, torch.Tensor):
            bound = bound.to(moved.device, moved.dtype)
            bound = bound if everyone else bound[index]
        if self.budget_growth:
            sizes = self.sizes(iterations[index], None if ceiling is None else ceiling[index])
            bound = bound * sizes.view(-1, 1, 1, 1).to(moved.dtype)
        torch.minimum(torch.maximum(moved, original - bound), original + bound, out=moved)


class Tightening:
    """A run's state of :attr:`Bound.tighten`: per image, the most sizes its bound may have (``ceiling``), the tries
    left, the step by which a try must reach the goal, and the saved image (and logits) that last reached it (an
    image that used a try has one)."""

    def __init__(self, bound: Bound, x: torch.Tensor) -> None:
        count = len(x)
        self.bound = bound
        self.ceiling = torch.full((count,), torch.iinfo(torch.long).max, dtype=torch.long, device=x.device)
        self.tries = torch.full_like(self.ceiling, bound.tighten)
        self.until = torch.zeros_like(self.ceiling)
        self.best = torch.empty_like(x)
        self.best_logits: torch.Tensor | None = None

    def settle(self, reached: torch.Tensor, saved: torch.Tensor, logits: torch.Tensor, index: torch.Tensor,
               iterations: torch.Tensor, x: torch.Tensor, last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Of the images ``index`` this step, those that reached the goal and may try a narrower bound go on, their
        saved image kept; those whose try ran out (or the last step) end with it (``x`` and their ``logits`` set
        back). The goal reached after that, and the logits."""
        if self.best_logits is None:
            self.best_logits = logits.new_empty(len(logits), len(x), logits.shape[2])
        sizes = self.bound.sizes((iterations[index] - 1).clamp_min(0), self.ceiling[index])  # of the last step taken
        again = reached & (self.tries[index] > 0) & (sizes >= self.bound.tighten_from) & (not last)
        rows = index[again]
        self.best[rows], self.best_logits[:, rows] = saved[again], logits[:, again]
        self.ceiling[rows], self.tries[rows] = sizes[again] - 1, self.tries[rows] - 1
        self.until[rows] = iterations[rows] + self.bound.budget_growth
        reached = reached & ~again
        trying = self.tries[index] < self.bound.tighten
        back = ~reached & trying & ((iterations[index] >= self.until[index]) | last)
        if bool(back.any()):
            rows = index[back]
            x[rows] = self.best[rows]
            logits = logits.clone()
            logits[:, back] = self.best_logits[:, rows]
        return reached | back, logits


@dataclass(frozen=True)
class Views:
    """Transformed versions of the saved batch whose losses join each gradient: ``judged(saved, rows)`` (platform
    re-encodings: the goal must hold on them too) and ``diversity(saved)`` (input diversity: for the gradient only),
    each a list at the classifier's input size."""

    judged: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]] | None = None
    diversity: Callable[[torch.Tensor], list[torch.Tensor]] | None = None


@dataclass(frozen=True)
class LoopResult:
    originals: torch.Tensor  # (N, 3, H, W) the input rounded to 8 bits: what the perturbation is measured against
    images: torch.Tensor  # (N, 3, H, W) in [0, 1], 8-bit values: what is saved
    clean_logits: torch.Tensor  # (M, N, D) of each of the M models on the 8-bit original
    final_logits: torch.Tensor  # (M, N, D) on the saved images
    labels: torch.Tensor  # (N,) the class pushed towards (targeted) or away from (untargeted), or (N, D) a set
    iterations: torch.Tensor  # (N,) steps applied to each image
    success: torch.Tensor  # (N,) goal reached on the saved image


def sign_step_loop(images: torch.Tensor, classifier: nn.Module | Sequence[nn.Module], goal: Goal, *, eps: float,
                   max_iter: int, direction: Direction | None = None, bound: Bound | None = None,
                   views: Views = Views(), iterative: bool = True, bucket: bool = False,
                   on_step: Callable[[int], None] | None = None) -> LoopResult:
    """x_n = clip(x_{n-1} -/+ eps * d_n), d_n the :class:`Direction` (sign(grad J), the paper's), within the
    :class:`Bound`, until the :class:`Goal` is reached on the saved image or ``max_iter`` steps.

    ``classifier`` is one model or an ensemble (a sequence of models with the same classes): the loss is the sum
    over the models (and the :class:`Views`), and the goal must hold on every model. ``iterative`` recomputes the
    direction every step and ends an image's steps once its saved version reaches the goal; ``iterative=False``
    repeats the first direction ``max_iter`` times (the paper's "(kI)" baselines). ``bucket`` pads the batch of
    images still going to a power of two (or the whole batch) with finished images, whose results are discarded, so
    the networks see a handful of batch shapes (a GPU library plans each new shape anew); the results are the same.
    ``on_step(step)`` is called before each step (progress on long work).
    """
    models = list(classifier) if isinstance(classifier, Sequence) else [classifier]
    direction = direction or Direction()
    x_original = quantise(images.detach().float())
    x, count = x_original.clone(), len(images)
    active = torch.ones(count, dtype=torch.bool, device=x.device)
    iterations = torch.zeros(count, dtype=torch.long, device=x.device)
    success = torch.zeros_like(active)
    direction.start(x)
    tightening = Tightening(bound, x) if bound is not None and bound.budget_growth and bound.tighten else None
    ascent = 1.0 if (direction.noise is not None or not goal.targeted) else -1.0
    clean_logits = final_logits = labels = computed = None
    for step in range(max_iter + 1):
        index = active.nonzero().squeeze(1)
        if len(index) == 0:
            break
        if on_step is not None:
            on_step(step)
        last = step == max_iter
        if step == 0 or last or iterative:
            wants_gradient = direction.noise is None and not last and (step == 0 or iterative)
            batch, saved, outputs, judged = _passes(x, index, active, models, views, wants_gradient, bucket)
            logits = torch.stack([out.detach() for out in outputs[:len(models)]])  # (M, n, D)
            if step == 0:
                clean_logits, final_logits = logits, torch.empty_like(logits)
                labels = goal.choose(clean_logits.double().softmax(2)).to(x.device)
            reached = goal.reached(logits, judged, labels[index], None if last or not iterative else iterations[index])
            if goal.confirm is not None and iterative and bool(reached.any()):
                candidates = reached.nonzero().squeeze(1)
                reached[candidates] = goal.confirm(saved[candidates], labels[index[candidates]], index[candidates])
            if tightening is not None and iterative:
                reached, logits = tightening.settle(reached, saved, logits, index, iterations, x, last)
            done = reached | last if iterative else torch.full_like(reached, last)
            final_logits[:, index[done]] = logits[:, done]
            success[index[done]] = reached[done]
            active[index[done]] = False
            if last:
                break
            if wants_gradient:
                (gradient,) = torch.autograd.grad(sum(_loss(out[~done], labels[index[~done]]) for out in outputs),
                                                  batch)
                computed = direction.of_gradient(gradient[:len(index)], index, ~done)
                if not iterative:
                    direction.fixed = computed  # step 0 of a fixed-direction method: all images are here
                computed = computed[~done] if done.any() else computed
            index = index[~done]
        everyone = len(index) == count  # then whole tensors are used in place of gathered copies
        moved = x if everyone else x[index]  # x itself (no graph holds it) or a gathered copy: stepped in place
        moved.add_(direction.step(computed, index, everyone), alpha=ascent * eps)
        if bound is not None:
            bound.project(moved, x_original if everyone else x_original[index], index, iterations, everyone,
                          None if tightening is None else tightening.ceiling)
        moved.clamp_(0, 1)
        if not everyone:
            x[index] = moved
        iterations[index] += 1
    return LoopResult(x_original, quantise(x), clean_logits, final_logits, labels, iterations, success)


def _passes(x: torch.Tensor, index: torch.Tensor, active: torch.Tensor, models: list[nn.Module], views: Views,
            wants_gradient: bool, bucket: bool) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    """One forward pass of the images ``index`` (padded by finished ones with ``bucket``) through the models and
    views: the leaf the gradient is taken for, the saved 8-bit images (detached), every output for the loss (the
    models' first, cut to the images going) and the judged views' outputs."""
    going = len(index)
    rows = _bucket(index, active) if bucket and going < len(x) else index
    batch = (x if going == len(x) else x[rows]).detach().requires_grad_(wants_gradient)
    with torch.set_grad_enabled(wants_gradient):
        saved = straight_through_quantise(batch)
        judged_views = [] if views.judged is None else views.judged(saved[:going], index)
        diverse_views = [] if views.diversity is None or not wants_gradient else views.diversity(saved[:going])
        parts = [saved, *judged_views, *diverse_views]
        # each model sees the images and their views in one pass where it can (a Classifier's forward_many)
        each = [model.forward_many(parts) if hasattr(model, "forward_many") else [model(part) for part in parts]
                for model in models]
    on_views = [logits[view] for view in range(1, len(parts)) for logits in each]  # view by view, model by model
    outputs = [logits[0][:going] for logits in each] + on_views
    return batch, saved.detach()[:going], outputs, on_views[:len(judged_views) * len(models)]


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
