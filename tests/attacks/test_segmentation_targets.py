"""Target-mask generators: another image's mask, all background, class swap, dilation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medrobust.attacks.targets import (
    background_target,
    class_swap_target,
    dilation_target,
    list_targets,
    make_target,
    other_image_target,
)
from medrobust.registry import UnknownNameError


def masks(spatial_dims: int = 2) -> torch.Tensor:
    size = (12,) * spatial_dims
    m = torch.zeros((3, *size), dtype=torch.long)
    m[0][(slice(2, 5),) * spatial_dims] = 1
    m[0][(slice(7, 9),) * spatial_dims] = 2
    m[1][(slice(4, 8),) * spatial_dims] = 2
    return m  # sample 2 is all background


def test_registry_names() -> None:
    assert set(list_targets()) == {"other", "background", "swap", "dilate"}
    with pytest.raises(UnknownNameError, match="Did you mean 'dilate'"):
        make_target("dilation", masks())


def test_other_image_target_rolls_the_batch() -> None:
    m = masks()
    t = other_image_target(m)
    assert torch.equal(t[0], m[1]) and torch.equal(t[1], m[2]) and torch.equal(t[2], m[0])
    assert torch.equal(other_image_target(m, shift=2)[0], m[2])
    with pytest.raises(ValueError, match="at least 2 images"):
        other_image_target(m[:1])
    with pytest.raises(ValueError, match="multiple of the batch size"):
        other_image_target(m, shift=3)


def test_background_target() -> None:
    t = background_target(masks())
    assert t.shape == masks().shape and int(t.abs().sum()) == 0
    assert int(background_target(masks(), background=2).unique()) == 2


def test_class_swap_explicit_and_random() -> None:
    m = masks()
    t = class_swap_target(m, a=1, b=2)
    assert torch.equal(t == 2, m == 1) and torch.equal(t == 1, m == 2)
    assert torch.equal(t == 0, m == 0)
    gen = torch.Generator().manual_seed(0)
    r = class_swap_target(m, generator=gen)
    # sample 0 has classes 1 and 2: they swap; sample 1 has only class 2: it swaps with background
    assert torch.equal(r[0], t[0])
    assert torch.equal(r[1] == 0, m[1] == 2) and torch.equal(r[1] == 2, m[1] == 0)
    assert torch.equal(r[2], m[2])
    with pytest.raises(ValueError, match="both classes"):
        class_swap_target(m, a=1)
    with pytest.raises(ValueError, match="must differ"):
        class_swap_target(m, a=1, b=1)
    with pytest.raises(ValueError, match="not a class of a 2-class model"):
        class_swap_target(m[1:2] * 0, a=0, b=2, num_classes=2)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_dilation_matches_scipy(spatial_dims: int, connectivity: int) -> None:
    m = masks(spatial_dims)
    t = dilation_target(m, cls=1, iterations=2, connectivity=connectivity)
    structure = ndimage.generate_binary_structure(spatial_dims, connectivity)
    for i in range(m.shape[0]):
        grown = ndimage.binary_dilation((m[i] == 1).numpy(), structure, iterations=2)
        expected = np.where(grown, 1, m[i].numpy())
        assert np.array_equal(t[i].numpy(), expected)
    # overlaps are resolved in favour of the dilated class: class 2 lost pixels near class 1
    assert int((t == 1).sum()) > int((m == 1).sum())


def test_dilation_random_class_and_errors() -> None:
    m = masks()
    t = make_target("dilate", m, seed=3, iterations=1)
    assert torch.equal(t, make_target("dilate", m, seed=3, iterations=1))
    assert torch.equal(t[2], m[2])  # no foreground: unchanged
    grew = [(t[i] != m[i]).any().item() for i in range(2)]
    assert all(grew)
    with pytest.raises(ValueError, match="foreground class"):
        dilation_target(m, cls=0)
    with pytest.raises(ValueError, match="iterations"):
        dilation_target(m, cls=1, iterations=0)
    with pytest.raises(ValueError, match="connectivity"):
        dilation_target(m, cls=1, connectivity=3)
    with pytest.raises(ValueError, match="integer class indices"):
        dilation_target(m.float(), cls=1)


def test_make_target_passes_parameters() -> None:
    m = masks()
    assert torch.equal(make_target("swap", m, a=1, b=2), class_swap_target(m, a=1, b=2))
    with pytest.raises(TypeError, match="unexpected parameter"):
        make_target("background", m, cls=1)
