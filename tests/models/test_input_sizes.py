"""The size rule of the U-Nets and SegResNet (models/sizes.py): a clear error instead of a raw
crash, and no refusal of a size the network takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medrobust.models import create_model
from medrobust.models.sizes import SizeRule, size_rule

#: (name, architecture parameters, multiple, minimum, sizes tried per spatial dims)
CASES: list[tuple[str, dict[str, Any], int, int, dict[int, list[int]]]] = [
    ("unet", {}, 8, 16, {2: [8, 12, 16, 24, 30], 3: [8, 12, 16]}),
    ("unet", {"norm": "batch"}, 8, 8, {2: [8, 12, 16], 3: [8, 12]}),
    ("basicunet", {}, 16, 32, {2: [16, 24, 30, 32, 48], 3: [16, 32]}),
    ("attentionunet", {}, 8, 8, {2: [8, 12, 16, 30], 3: [8, 12]}),
    ("segresnet", {}, 8, 8, {2: [8, 12, 16, 30], 3: [8, 12]}),
]


def _raw_forward_works(net: torch.nn.Module, x: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            out = net(x)
    except (RuntimeError, ValueError):
        return False
    return tuple(out.shape[2:]) == tuple(x.shape[2:])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("name", "params", "multiple", "minimum", "sizes"), CASES)
def test_the_rule_matches_what_the_network_takes(
    name: str,
    params: dict[str, Any],
    multiple: int,
    minimum: int,
    sizes: dict[int, list[int]],
    dims: int,
) -> None:
    model = create_model(name, num_classes=2, spatial_dims=dims, seed=0, **params)
    model.eval()
    rule = model.size_rule
    assert rule is not None
    assert set(rule.multiple) == {multiple} and set(rule.minimum) == {minimum}
    for s in sizes[dims]:
        x = torch.rand(2, 1, *([s] * dims))
        accepted = rule.nearest(x.shape[2:]) == tuple(x.shape[2:])
        assert accepted == _raw_forward_works(model.net, x), (name, dims, s)
        if accepted:
            assert model(x).shape == (2, 2, *x.shape[2:])
        else:
            with pytest.raises(ValueError, match=f"a multiple of {multiple} and at least"):
                model(x)
            fit = rule.nearest(x.shape[2:])
            assert all(f % multiple == 0 and f >= max(s, minimum) for f in fit)


def test_the_message_names_the_size_the_multiple_and_the_fix() -> None:
    model = create_model("unet", num_classes=2, seed=0)
    with pytest.raises(ValueError) as info:
        model.check_input(torch.rand(1, 1, 30, 17), "images of the train batch 1 of epoch 1")
    text = str(info.value)
    assert "images of the train batch 1 of epoch 1 have spatial size 30x17" in text
    assert "MONAI UNet needs every side a multiple of 8 and at least 16" in text
    assert "instance normalisation" in text
    assert "to 32x24" in text and "--data-param size=32" in text and "--roi-size" in text


def test_per_dimension_strides_and_other_networks() -> None:
    from monai.networks.nets import UNet

    net = UNet(2, 1, 2, channels=(4, 8, 16), strides=((2, 1), (2, 2)), norm="batch")
    rule = size_rule(net)
    assert rule == SizeRule("MONAI UNet", (4, 2), (4, 2))
    assert rule.nearest((10, 5)) == (12, 6)
    rule.check((8, 6))
    assert size_rule(torch.nn.Conv2d(1, 1, 3)) is None
    assert create_model("small-cnn", num_classes=2, seed=0).size_rule is None


def test_training_on_a_size_the_unet_cannot_take_fails_before_the_first_step(
    tmp_path: Path,
) -> None:
    from medrobust.training import TrainConfig, fit

    class Tiny(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"image": torch.rand(1, 10, 10), "mask": torch.zeros(10, 10).long(), "label": 0}

    model = create_model("unet", num_classes=2, seed=0, channels=(4, 8, 16), strides=(2, 2))
    with pytest.raises(ValueError, match=r"epoch 1 have spatial size 10x10.*to 12x12"):
        fit(model, Tiny(), Tiny(), TrainConfig(epochs=1, batch_size=2), tmp_path)
