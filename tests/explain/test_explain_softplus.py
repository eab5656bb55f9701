"""Tests of medrobust.explain.softplus.softplus_relu."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18
from torch import nn

from medrobust.explain import grad_cam, softplus_relu
from medrobust.models.adapter import ModelAdapter


def _x(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _relus(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.ReLU)]


def test_monai_resnet_swapped_and_restored() -> None:
    torch.manual_seed(0)
    net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, conv1_t_stride=2)
    model = ModelAdapter(net, num_classes=2).eval()
    x = _x((1, 1, 32, 32), 1)
    before_modules = dict(model.named_modules())
    relu_ids = {id(m) for m in _relus(model)}
    assert relu_ids and all(m.inplace for m in _relus(model))
    with torch.no_grad():
        before = model(x)
    with softplus_relu(model, beta=5.0) as smooth:
        assert smooth is model
        assert not _relus(model)
        softs = [m for m in model.modules() if isinstance(m, nn.Softplus)]
        assert len(softs) == len(relu_ids) and all(s.beta == 5.0 for s in softs)
        with torch.no_grad():
            inside = model(x)
        assert not torch.allclose(inside, before)
    with torch.no_grad():
        after = model(x)
    assert torch.equal(after, before)
    after_modules = dict(model.named_modules())
    assert after_modules.keys() == before_modules.keys()
    assert all(after_modules[k] is v for k, v in before_modules.items())  # the same objects


def test_restored_on_exception_and_shared_instances() -> None:
    shared = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 4), shared, nn.Linear(4, 4), shared, nn.Linear(4, 1))
    with pytest.raises(RuntimeError, match="inside"), softplus_relu(model):
        assert model[1] is model[3]  # one Softplus shared where one ReLU was shared
        assert isinstance(model[1], nn.Softplus)
        raise RuntimeError("inside")
    assert model[1] is shared and model[3] is shared


def test_matches_softplus_function_and_train_mode_kept() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(inplace=True), nn.Linear(5, 2)).train()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    with softplus_relu(model, beta=3.0):
        out = model(x)
        assert model[1].training
    expected = model[2](F.softplus(model[0](x), beta=3.0))
    torch.testing.assert_close(out, expected)
    assert model.training and model[1].training


def test_second_order_gradients_exist_only_when_smoothed() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)).double()

    def hessian_vector(inp: torch.Tensor) -> torch.Tensor:
        x = inp.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
        (h,) = torch.autograd.grad(g.pow(2).sum(), x, allow_unused=True)
        return torch.zeros_like(x) if h is None else h

    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert float(hessian_vector(x0).abs().sum()) == 0.0  # piecewise linear
    with softplus_relu(model, beta=10.0):
        assert float(hessian_vector(x0).abs().sum()) > 0.0


def test_grad_cam_map_differentiable_through_weights_with_softplus() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.act = nn.ReLU(inplace=True)
            self.head = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(6)
    model = Net().double()
    x = _x((1, 1, 6, 6), 7).double().requires_grad_(True)
    with softplus_relu(model, beta=10.0):
        maps = grad_cam(model, x, "act", 1, relu=False)
        (g,) = torch.autograd.grad(maps.pow(2).sum(), x)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    assert isinstance(model.act, nn.ReLU) and isinstance(model.head[1], nn.ReLU)


def test_no_relu_warns_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with (
        caplog.at_level(logging.WARNING, logger="medrobust.explain.softplus"),
        softplus_relu(model) as same,
    ):
        assert same is model
    assert "no nn.ReLU modules" in caplog.text
    with pytest.raises(ValueError, match="beta must be a positive finite number, got 0"):
        softplus_relu(model, beta=0).__enter__()
    with pytest.raises(ValueError, match="beta must be a positive finite number, got inf"):
        softplus_relu(model, beta=float("inf")).__enter__()
    with pytest.raises(ValueError, match="beta must be a positive finite number, got True"):
        softplus_relu(model, beta=True).__enter__()
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got function"):
        softplus_relu(lambda t: t).__enter__()  # type: ignore[arg-type]
