"""Every bad input gives a clear error naming what was expected and what came."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import create_attack
from medrobust.registry import UnknownNameError
from tests.attacks.models import batch, tiny_cnn


@pytest.fixture
def setup() -> tuple:
    model = tiny_cnn(2)
    x = batch(2)
    return model, x, model(x).argmax(1)


def test_nan_pixels(setup: tuple) -> None:
    model, x, y = setup
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        create_attack("pgd")(model, x, y)


def test_infinite_pixels(setup: tuple) -> None:
    model, x, y = setup
    x = x.clone()
    x[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        create_attack("fgsm")(model, x, y)


def test_out_of_bounds(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match=r"input bounds are \[0, 1\]"):
        create_attack("fgsm")(model, x * 255, y)


def test_wrong_channels(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match=r"3 channel.*expects 1"):
        create_attack("pgd")(model, x.repeat(1, 3, 1, 1), y)


def test_wrong_rank(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match=r"rank 4 for a 2-D model.*got shape \(6, 8, 8\)"):
        create_attack("pgd")(model, x[:, 0], y)


def test_labels_out_of_range(setup: tuple) -> None:
    model, x, _ = setup
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*got values in \[0, 5\]"):
        create_attack("pgd")(model, x, torch.tensor([0, 1, 5, 0, 1, 0]))


def test_labels_wrong_shape(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match=r"shape \(6,\), got \(3,\)"):
        create_attack("pgd")(model, x, y[:3])


def test_float_labels(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match="integer class indices"):
        create_attack("pgd")(model, x, y.float())


def test_empty_batch(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match="empty batch"):
        create_attack("pgd")(model, x[:0], y[:0])


@pytest.mark.parametrize("eps", [0, -0.1, float("nan"), float("inf")])
def test_bad_eps(eps: float) -> None:
    with pytest.raises(ValueError, match="eps must be"):
        create_attack("pgd", eps=eps)


def test_unknown_attack_suggests() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'pgd'"):
        create_attack("pgdd")


def test_unknown_parameter_suggests() -> None:
    with pytest.raises(TypeError, match="'step' \\(did you mean 'steps'\\?\\)"):
        create_attack("pgd", step=10)


def test_dlr_refuses_binary(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match="at least 3 classes, but the model has 2"):
        create_attack("apgd-dlr", steps=5)(model, x, y)


def test_square_is_linf_only() -> None:
    with pytest.raises(ValueError, match="'linf' norm only"):
        create_attack("square", norm="l2")


@pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": 2.5}, {"restarts": 0}, {"step_size": -1}])
def test_bad_hyperparameters(bad: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        create_attack("pgd", **bad)


def test_region_shape_mismatch(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match="does not broadcast"):
        create_attack("pgd")(model, x, y, region=torch.ones(1, 1, 4, 4))


def test_empty_region(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match="region mask is empty"):
        create_attack("pgd")(model, x, y, region=torch.zeros(1, 1, 8, 8))


def test_segmentation_model_rejected_by_classification_attack() -> None:
    from torch import nn

    from medrobust.models import ModelAdapter

    seg = ModelAdapter(nn.Conv2d(1, 2, 1), num_classes=2, task="segmentation")
    with pytest.raises(ValueError, match="task is 'segmentation'"):
        create_attack("pgd")(seg, batch(2), torch.zeros(6, dtype=torch.long))


def test_labels_must_be_a_tensor(setup: tuple) -> None:
    model, x, y = setup
    with pytest.raises(TypeError, match=r"labels must be a torch\.Tensor, got list"):
        create_attack("pgd")(model, x, y.tolist())


def test_unknown_objective_and_foreign_option() -> None:
    with pytest.raises(ValueError, match=r"unknown classification objective 'cee' .*'ce'"):
        create_attack("pgd", objective="cee")
    with pytest.raises(TypeError, match=r"with the objective 'dlr', attack 'pgd'.*'confidence'"):
        create_attack("pgd", objective="dlr", confidence=1.0)
    with pytest.raises(ValueError, match="untargeted only"):
        create_attack("apgd-dlr", targeted=True)
