"""Eq. 10 and the other target rules, on hand-made probability vectors."""

import pytest
import torch

from scenepriv import targets


def members(mask_row: torch.Tensor) -> set[int]:
    return set(mask_row.nonzero().squeeze(1).tolist())


def p(*values: float) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


def test_private_set_takes_classes_whose_higher_ranked_mass_exceeds_sigma():
    # sorted: 0 (0.5), 1 (0.3), 2 (0.2); mass above: 0, 0.5, 0.8
    assert members(targets.private_target_set(p(0.5, 0.3, 0.2), 0.6)[0]) == {2}
    assert members(targets.private_target_set(p(0.5, 0.3, 0.2), 0.4)[0]) == {1, 2}
    # unsorted input: ranking is by probability, not by index
    assert members(targets.private_target_set(p(0.2, 0.5, 0.3), 0.6)[0]) == {0}


def test_private_set_never_contains_the_top1_even_with_sigma_zero():
    assert members(targets.private_target_set(p(1.0, 0.0, 0.0), 0.0)[0]) == {1, 2}
    assert members(targets.private_target_set(p(0.4, 0.3, 0.2, 0.1), 0.0)[0]) == {1, 2, 3}


def test_peaked_distribution_gives_every_class_but_the_top1():
    probabilities = torch.full((1, 365), 0.004 / 364, dtype=torch.float64)
    probabilities[0, 42] = 0.996
    mask = targets.private_target_set(probabilities, 0.99)[0]
    assert members(mask) == set(range(365)) - {42}
    assert torch.equal(mask, targets.random_set(probabilities)[0])


def test_ties_are_ranked_by_index_like_argmax():
    # 0 and 1 tie for the top: class 0 is the top-1 (as argmax says), class 1 has 0.3 above it
    probabilities = p(0.3, 0.3, 0.2, 0.2)
    assert int(probabilities.argmax()) == 0
    assert targets.rank_of(probabilities)[0].tolist() == [0, 1, 2, 3]
    assert members(targets.private_target_set(probabilities, 0.5)[0]) == {2, 3}
    assert members(targets.private_target_set(probabilities, 0.25)[0]) == {1, 2, 3}
    assert members(targets.random_set(probabilities)[0]) == {1, 2, 3}
    assert members(targets.least_likely_set(probabilities)[0]) == {3}


def test_sigma_near_one_can_empty_the_set_and_falls_back_to_least_likely():
    probabilities = p(0.25, 0.25, 0.25, 0.25)
    assert not targets.private_target_set(probabilities, 0.99).any()
    mask, fallback = targets.target_mask("private", probabilities, 0.99)
    assert fallback.tolist() == [True]
    assert members(mask[0]) == {3}
    mask, fallback = targets.target_mask("private", p(0.7, 0.2, 0.1), 0.8)
    assert fallback.tolist() == [False] and members(mask[0]) == {2}


def test_mass_ranked_above_is_exact_for_each_class():
    mass = targets.mass_ranked_above(p(0.1, 0.6, 0.3))[0]
    assert mass.tolist() == pytest.approx([0.9, 0.0, 0.6])


def test_sigma_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError):
        targets.private_target_set(p(0.5, 0.5), 1.5)


def test_draw_uniform_stays_in_the_set_and_covers_it():
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, [2, 5, 7]] = True
    generator = torch.Generator().manual_seed(0)
    draws = [int(targets.draw_uniform(mask, [generator])) for _ in range(300)]
    assert set(draws) == {2, 5, 7}
    assert min(draws.count(c) for c in (2, 5, 7)) > 60  # roughly uniform: 100 expected each


def test_draw_uniform_rows_do_not_depend_on_their_batch():
    probabilities = torch.rand(4, 50, dtype=torch.float64).softmax(1)
    mask, _ = targets.target_mask("random", probabilities)
    together = targets.draw_uniform(mask, [torch.Generator().manual_seed(s) for s in range(4)])
    alone = [int(targets.draw_uniform(mask[i : i + 1], [torch.Generator().manual_seed(i)])) for i in range(4)]
    assert together.tolist() == alone
