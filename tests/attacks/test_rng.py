"""Random numbers per sample (the audit's seeding): a sample's draws depend on its key only."""

from __future__ import annotations

import torch

from medrobust.attacks.rng import (
    SampleGenerator,
    attack_generator,
    rand,
    randint,
    randn,
    restrict,
    sample_keys,
)


def test_a_sample_draws_the_same_numbers_in_any_batch() -> None:
    a = rand(SampleGenerator.seeded(7, [3, 5, 9]), (3, 2, 4))
    b = rand(SampleGenerator.seeded(7, [9, 3]), (2, 2, 4))
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])  # other keys, other numbers
    c = rand(SampleGenerator.seeded(8, [3]), (1, 2, 4))
    assert not torch.equal(a[0], c[0])  # another run seed, other numbers


def test_a_subset_continues_the_samples_own_streams() -> None:
    gen = SampleGenerator.seeded(1, [10, 11, 12])
    first = randn(gen, (3, 5))
    later = randint(restrict(gen, torch.tensor([2])), 0, 100, (1, 6))
    alone = SampleGenerator.seeded(1, [12])
    assert torch.equal(randn(alone, (1, 5))[0], first[2])
    assert torch.equal(randint(alone, 0, 100, (1, 6)), later)


def test_draws_of_another_first_axis_come_from_the_joint_generator() -> None:
    x = rand(SampleGenerator.seeded(2, [0, 1]), (5,))
    y = rand(SampleGenerator.seeded(2, [0, 1]), (5,))
    assert x.shape == (5,) and torch.equal(x, y)


def test_outside_an_audit_attacks_draw_as_torch_does() -> None:
    gen = attack_generator(4, torch.device("cpu"))
    assert isinstance(gen, torch.Generator)
    want = torch.rand((2, 3), generator=torch.Generator().manual_seed(4))
    assert torch.equal(rand(gen, (2, 3)), want)
    with sample_keys(torch.tensor([5, 6])):
        keyed = attack_generator(4, torch.device("cpu"))
    assert isinstance(keyed, SampleGenerator) and len(keyed) == 2
    assert isinstance(attack_generator(4, torch.device("cpu")), torch.Generator)  # reset
