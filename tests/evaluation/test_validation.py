"""Nothing silently wrong: inputs are refused before any compute, with the name of what is wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.evaluation import evaluate
from medrobust.models import ModelAdapter
from tests.attacks.models import batch, tiny_cnn


def _data(model: ModelAdapter) -> tuple[torch.Tensor, torch.Tensor]:
    x = batch(2, n=6, seed=7)
    with torch.no_grad():
        return x, model(x).argmax(1)


def test_float_and_bool_labels_are_refused_not_truncated() -> None:
    model = tiny_cnn(2)
    x, y = _data(model)
    for bad in (y.float() + 0.7, y.bool()):
        with pytest.raises(ValueError, match="labels must be integer class indices"):
            evaluate(model, [(x, bad)], attacks=["fgsm"], eps=[1 / 255])


def test_float_masks_are_refused() -> None:
    from medrobust.models import create_model

    seg = create_model("unet", num_classes=2, spatial_dims=2, channels=(4, 8), strides=(2,),
                       num_res_units=0, seed=0)  # fmt: skip
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="masks must be integer class indices"):
        evaluate(seg, [{"image": x, "mask": torch.zeros(2, 16, 16)}], targeted=[], noise=[])


class _NaNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)[:, :4]) * float("nan")


def test_nan_outputs_are_refused_before_any_attack() -> None:
    model = ModelAdapter(_NaNNet(), num_classes=3, spatial_dims=2, in_channels=1)
    x = torch.rand(4, 1, 2, 2)
    with pytest.raises(ValueError, match=r"model \(_NaNNet\) returned NaN or infinite outputs"):
        evaluate(model, [(x, torch.zeros(4, dtype=torch.long))], attacks=["pgd"], eps=[1 / 255])


def test_eps_above_the_input_range_needs_consent() -> None:
    model = tiny_cnn(2)
    x, y = _data(model)
    with pytest.raises(ValueError, match="larger than the input range"):
        evaluate(model, [(x, y)], attacks=["fgsm"], eps=[2.0])
    res = evaluate(model, [(x, y)], attacks=["fgsm"], eps=[2.0], allow_large_eps=True, checks=False)
    assert res.robust_accuracy("fgsm", 2.0) <= res.metrics["clean"]["accuracy"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"std": float("nan")}, "std must be finite"),
        ({"mean": float("inf")}, "mean must be finite"),
        ({"std": 0.0}, "std must be positive"),
        ({"std": "0.5"}, "std must be a number"),
    ],
)
def test_adapter_parameters_are_checked(kwargs: dict[str, object], match: str) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises((ValueError, TypeError), match=match):
        ModelAdapter(net, num_classes=2, spatial_dims=2, in_channels=1, **kwargs)  # type: ignore[arg-type]
