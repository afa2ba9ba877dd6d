"""Target-class rules of the paper as pure tensor functions over clean probabilities (N, D).

Each rule returns a boolean mask (N, D) of the classes a target may be drawn from; the engine
draws uniformly within the mask (the function R of Eq. 10). Ties in probability are ranked by
class index, the same order ``argmax`` uses, so "the top-1" is one well-defined class.
"""

from __future__ import annotations

import torch


def descending_order(probabilities: torch.Tensor) -> torch.Tensor:
    """Class indices sorted by decreasing probability; ties keep the lower index first."""
    return torch.sort(probabilities, dim=1, descending=True, stable=True).indices


def mass_ranked_above(probabilities: torch.Tensor) -> torch.Tensor:
    """For every class, the total probability of the classes ranked above it (sum_{i<j} p'_i)."""
    probabilities = probabilities.double()
    order = descending_order(probabilities)
    sorted_probabilities = probabilities.gather(1, order)
    exclusive_cumsum = sorted_probabilities.cumsum(1) - sorted_probabilities
    return torch.empty_like(probabilities).scatter_(1, order, exclusive_cumsum)


def rank_of(probabilities: torch.Tensor) -> torch.Tensor:
    """Rank of every class in the clean ranking: 0 for the top-1, D-1 for the least likely."""
    order = descending_order(probabilities)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def top1_mask(probabilities: torch.Tensor) -> torch.Tensor:
    return rank_of(probabilities) == 0


def least_likely_set(probabilities: torch.Tensor) -> torch.Tensor:
    """L-FGSM (Eq. 8): the single least-likely class."""
    return rank_of(probabilities) == probabilities.shape[1] - 1


def random_set(probabilities: torch.Tensor) -> torch.Tensor:
    """R-FGSM: every class but the clean top-1."""
    return ~top1_mask(probabilities)


def private_target_set(probabilities: torch.Tensor, sigma: float) -> torch.Tensor:
    """P-FGSM, Eq. 10: the classes whose higher-ranked classes already hold more than sigma.

    S = { y_j : sum_{i<j} p'_i > sigma }. The top-1 has nothing ranked above it, so it is never in S
    (for sigma >= 0); when p'_1 > sigma alone, S is every class but the top-1. S can be empty when
    sigma is at least the mass of all classes but the last: callers fall back to the least likely.
    """
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma must lie in [0, 1], got {sigma}")
    return mass_ranked_above(probabilities) > sigma


def likely_set(probabilities: torch.Tensor, sigma: float) -> torch.Tensor:
    """The classes a photo likely shows: those ranked within its top sigma of probability, the complement of
    Eq. 10's set (the top-1 always). For an ensemble (M, N, D), a class likely for any model."""
    per_model = probabilities if probabilities.ndim == 3 else probabilities[None]
    return torch.stack([~private_target_set(p, sigma) for p in per_model]).any(0)


def target_mask(rule: str, probabilities: torch.Tensor, sigma: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """The classes to draw a target from under ``rule``, and which rows fell back to the least likely.

    Rules: ``least-likely`` (L-FGSM), ``random`` (R-FGSM), ``private`` (P-FGSM, Eq. 10). A row whose
    set is empty (Eq. 10 with sigma at or above the mass of all classes but the last) falls back
    to the least-likely class and is flagged, so a report can say so. ``probabilities`` (N, D), or
    (M, N, D) for an ensemble of M models: a class is allowed only if it is for every model (as in
    RP-FGSM), and the fallback is the least likely class of the models' mean.
    """
    rules = {"least-likely": least_likely_set, "random": random_set,
             "private": lambda p: private_target_set(p, sigma)}
    if rule not in rules:
        raise ValueError(f"unknown target rule {rule!r}; choose one of {', '.join(rules)}")
    per_model = probabilities if probabilities.ndim == 3 else probabilities[None]
    mask = torch.stack([rules[rule](p) for p in per_model]).all(0)
    empty = ~mask.any(1)
    return torch.where(empty[:, None], least_likely_set(per_model.mean(0)), mask), empty


def draw_uniform(mask: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One class per row, uniformly among the True entries, each row with its own generator.

    Rows are drawn independently of one another, so a batch draws what its images would draw
    one by one. Every row must have at least one True entry.
    """
    choices = []
    for row, generator in zip(mask.cpu(), generators, strict=True):
        members = row.nonzero().squeeze(1)
        pick = torch.randint(len(members), (1,), generator=generator)
        choices.append(members[pick])
    return torch.cat(choices).to(mask.device)
