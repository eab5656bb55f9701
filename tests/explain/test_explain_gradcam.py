"""Tests of medrobust.explain.gradcam: closed form, independent reference, gradients, hygiene."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18
from torch import nn

from medrobust.explain import (
    ActivationHolder,
    GradCamOutput,
    capture_activations,
    grad_cam,
    grad_cam_full,
    softplus_relu,
)
from medrobust.models.adapter import ModelAdapter

# --------------------------------------------------------------------------------------------
# tiny models
# --------------------------------------------------------------------------------------------


class TinyCam(nn.Module):
    """conv → ReLU → pool → conv → ReLU, then GAP + Linear (a CAM-style head)."""

    def __init__(self, dims: int = 2, classes: int = 3, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
        self.features = nn.Sequential(
            conv(1, 4, 3, padding=1), act(), pool(2), conv(4, 6, 3, padding=1), act()
        )
        self.pool = gap(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class NonlinearHead(nn.Module):
    """Conv trunk with an FC → activation → FC head, so Grad-CAM weights depend on the input."""

    def __init__(self, dims: int = 2, act: type[nn.Module] = nn.Softplus) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        gap = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
        self.stem = nn.Sequential(conv(1, 3, 3, padding=1), act())
        self.layer = conv(3, 4, 3, padding=1)
        self.act = act()
        self.pool = gap(1)
        self.head = nn.Sequential(nn.Linear(4, 5), act(), nn.Linear(5, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.act(self.layer(self.stem(x)))
        return self.head(self.pool(f).flatten(1))


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def monai_adapter() -> ModelAdapter:
    torch.manual_seed(0)
    net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, conv1_t_stride=2)
    return ModelAdapter(net, num_classes=2).eval()


# --------------------------------------------------------------------------------------------
# independent reference: retain_grad on the activation and loss.backward()
# --------------------------------------------------------------------------------------------


def reference_grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    layer: nn.Module,
    target: torch.Tensor,
    plus: bool = False,
) -> dict[bool, np.ndarray]:
    """Grad-CAM from ``loss.backward()`` and ``retain_grad``; maps keyed by the ReLU flag."""
    stored: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        stored["a"] = output

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(images)
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    logits[torch.arange(images.shape[0]), target].sum().backward()
    a = stored["a"].detach().numpy().astype(np.float64)
    grad = stored["a"].grad
    assert grad is not None
    g = grad.numpy().astype(np.float64)
    axes = tuple(range(2, a.ndim))
    if plus:
        g2, g3 = g**2, g**3
        denom = 2 * g2 + a.sum(axis=axes, keepdims=True) * g3
        alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=denom != 0)
        w = (alpha * np.maximum(g, 0)).sum(axis=axes, keepdims=True)
    else:
        w = g.mean(axis=axes, keepdims=True)
    cam = (w * a).sum(axis=1, keepdims=True)
    mode = "bilinear" if images.ndim == 4 else "trilinear"
    model.zero_grad(set_to_none=True)
    return {
        relu: F.interpolate(
            torch.from_numpy(np.maximum(cam, 0) if relu else cam),
            size=images.shape[2:],
            mode=mode,
            align_corners=False,
        ).numpy()
        for relu in (False, True)
    }


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# --------------------------------------------------------------------------------------------
# (a) closed form on a GAP + Linear head
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_closed_form_gap_linear_head(dims: int) -> None:
    torch.manual_seed(1)
    model = TinyCam(dims=dims).double().eval()
    size = (12, 10) if dims == 2 else (8, 6, 10)
    x = torch.rand(3, 1, *size, generator=_seeded(2), dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    out = grad_cam_full(model, x, "features.4", target)

    with torch.no_grad():
        a = model.features(x)  # (B, 6, *feature)
        z = a[0, 0].numel()
        w = model.fc.weight[target]  # (B, 6)
        cam = torch.einsum("bk,bk...->b...", w, a).unsqueeze(1)
        expected_low = F.relu(cam) / z
        mode = "bilinear" if dims == 2 else "trilinear"
        expected = F.interpolate(expected_low, size=size, mode=mode, align_corners=False)

    assert out.low_res_maps.shape == (3, 1, *a.shape[2:])
    assert out.maps.shape == (3, 1, *size)
    torch.testing.assert_close(out.low_res_maps, expected_low, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.maps, expected, atol=1e-5, rtol=0)
    assert float(expected.max()) > 1e-3  # the check is not vacuous
    assert out.target.tolist() == [0, 2, 1]
    assert out.layer == "features.4"


def test_relu_false_keeps_negative_evidence_and_normalisations() -> None:
    torch.manual_seed(3)
    model = TinyCam().double().eval()
    x = torch.rand(2, 1, 8, 8, generator=_seeded(4), dtype=torch.float64)
    signs = set()
    for cls in range(3):
        raw = grad_cam_full(model, x, "features.4", cls, relu=False)
        relu = grad_cam_full(model, x, "features.4", cls)
        torch.testing.assert_close(relu.low_res_maps, F.relu(raw.low_res_maps))
        signs |= set(torch.sign(raw.low_res_maps).flatten().tolist())
    assert {-1.0, 1.0} <= signs  # negative evidence exists and is what ReLU removes
    mm = grad_cam(model, x, "features.4", 1, normalize="minmax")
    sm = grad_cam(model, x, "features.4", 1, normalize="sum")
    flat = mm.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(flat.max(1).values, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(sm.flatten(1).sum(1), torch.ones(2, dtype=torch.float64))
    plain = grad_cam(model, x, "features.4", 1).flatten(1)
    lo, hi = plain.min(1, keepdim=True).values, plain.max(1, keepdim=True).values
    torch.testing.assert_close(flat, (plain - lo) / (hi - lo))
    torch.testing.assert_close(sm.flatten(1), plain / plain.sum(1, keepdim=True))


# --------------------------------------------------------------------------------------------
# (b) agreement with the independent reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_matches_reference_on_monai_resnet(
    monai_adapter: ModelAdapter, layer: str, method: str
) -> None:
    x = torch.rand(2, 1, 64, 64, generator=_seeded(5))
    target = torch.tensor([0, 1])
    module = dict(monai_adapter.net.named_modules())[layer]
    plus = method == "gradcam++"
    # relu=False compares the full signed map (a randomly initialised network often has no
    # positive evidence at all); relu=True is then compared wherever the map is not all zero.
    refs = reference_grad_cam(monai_adapter, x, module, target, plus=plus)
    for relu in (False, True):
        kwargs = {"relu": relu, "method": method}
        ours = grad_cam(monai_adapter, x, layer, target, **kwargs)  # type: ignore[arg-type]
        ref = refs[relu]
        assert ours.shape == (2, 1, 64, 64)
        if not relu:
            assert np.abs(ref).max() > 0 and ref.std() > 0
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())
        for b in range(2):  # per sample (one class each)
            if not relu or ref[b].max() > 0:
                assert _corr(ours[b].numpy(), ref[b]) > 0.999
    assert all(p.grad is None for p in monai_adapter.parameters())


def test_adapter_names_resolve_relative_to_net(monai_adapter: ModelAdapter) -> None:
    x = torch.rand(1, 1, 64, 64, generator=_seeded(6))
    a = grad_cam_full(monai_adapter, x, "layer4")
    b = grad_cam_full(monai_adapter, x, "net.layer4")
    layer4 = monai_adapter.net.layer4
    assert isinstance(layer4, nn.Module)
    c = grad_cam_full(monai_adapter, x, layer4)
    torch.testing.assert_close(a.maps, b.maps)
    torch.testing.assert_close(a.maps, c.maps)
    assert a.layer == b.layer == c.layer == "layer4"
    # target=None explains the predicted class
    torch.testing.assert_close(a.target, a.logits.argmax(1))
    torch.testing.assert_close(a.predicted, a.target)


def test_matches_reference_on_3d_net() -> None:
    torch.manual_seed(7)
    model = NonlinearHead(dims=3, act=nn.ReLU).eval()
    x = torch.rand(2, 1, 8, 10, 6, generator=_seeded(8))
    target = torch.tensor([1, 0])
    for method in ("gradcam", "gradcam++"):
        ours = grad_cam(model, x, "layer", target, method=method)
        ref = reference_grad_cam(model, x, model.layer, target, plus=method == "gradcam++")[True]
        assert ours.shape == (2, 1, 8, 10, 6)
        assert ref.max() > 0
        assert _corr(ours.numpy(), ref) > 0.999


def test_inplace_ops_after_layer_do_not_corrupt_activation() -> None:
    class Residual(nn.Module):
        def __init__(self, inplace: bool) -> None:
            super().__init__()
            self.inplace = inplace
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.act = nn.ReLU(inplace=inplace)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.bn(self.conv(x))
            if self.inplace:
                out += x
            else:
                out = out + x
            out = self.act(out)
            return self.fc(out.mean(dim=(2, 3)))

    torch.manual_seed(9)
    a = Residual(inplace=True).eval()
    b = Residual(inplace=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 1, 8, 8, generator=_seeded(10))
    ma = grad_cam_full(a, x, "bn", 1, relu=False)
    mb = grad_cam_full(b, x, "bn", 1, relu=False)
    torch.testing.assert_close(ma.low_res_maps, mb.low_res_maps)
    torch.testing.assert_close(ma.logits, mb.logits)


# --------------------------------------------------------------------------------------------
# (c) differentiability
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcheck_second_order_softplus_net(method: str) -> None:
    torch.manual_seed(11)
    model = NonlinearHead(dims=2, act=nn.Softplus).double().eval()
    weight = torch.rand(1, 1, 6, 6, generator=_seeded(12), dtype=torch.float64)
    x = torch.rand(1, 1, 6, 6, generator=_seeded(13), dtype=torch.float64, requires_grad=True)

    def statistic(inp: torch.Tensor) -> torch.Tensor:
        maps = grad_cam(model, inp, "layer", 1, relu=False, method=method)  # type: ignore[arg-type]
        return (maps * weight).sum()

    assert torch.autograd.gradcheck(statistic, (x,), eps=1e-6, atol=1e-5, rtol=1e-4)
    (g,) = torch.autograd.grad(statistic(x), x)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())


def test_create_graph_false_drops_second_order_term() -> None:
    torch.manual_seed(14)
    model = NonlinearHead(dims=2, act=nn.Softplus).double().eval()
    x0 = torch.rand(1, 1, 6, 6, generator=_seeded(15), dtype=torch.float64)
    d = torch.randn(1, 1, 6, 6, generator=_seeded(16), dtype=torch.float64)

    def value(inp: torch.Tensor, graph: bool | None = None) -> torch.Tensor:
        return grad_cam(model, inp, "layer", 0, relu=False, create_graph=graph).pow(2).sum()

    h = 1e-6
    fd = (value(x0 + h * d) - value(x0 - h * d)) / (2 * h)
    x = x0.clone().requires_grad_(True)
    (full,) = torch.autograd.grad(value(x), x)
    x = x0.clone().requires_grad_(True)
    (first,) = torch.autograd.grad(value(x, graph=False), x)
    assert float((full * d).sum()) == pytest.approx(float(fd), rel=1e-5)
    # Ignoring the weights' dependence on x gives a different (wrong) directional derivative.
    assert abs(float((first * d).sum()) - float(fd)) > 1e-3 * abs(float(fd))


def test_gap_linear_head_needs_no_second_order() -> None:
    torch.manual_seed(17)
    model = TinyCam().double().eval()
    x0 = torch.rand(2, 1, 8, 8, generator=_seeded(18), dtype=torch.float64)
    grads = []
    for graph in (True, False):
        x = x0.clone().requires_grad_(True)
        maps = grad_cam(model, x, "features.4", 2, create_graph=graph, normalize="sum")
        assert maps.requires_grad
        (g,) = torch.autograd.grad(maps.pow(2).sum(), x)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1])
    assert float(grads[0].abs().sum()) > 0


def test_plain_call_is_detached_and_cheap() -> None:
    torch.manual_seed(19)
    model = TinyCam().eval()
    out = grad_cam_full(model, torch.rand(2, 1, 8, 8, generator=_seeded(20)), "features.4")
    assert not out.maps.requires_grad
    assert not out.low_res_maps.requires_grad
    assert not out.logits.requires_grad
    assert isinstance(out, GradCamOutput)


def test_works_under_no_grad_and_with_frozen_model() -> None:
    torch.manual_seed(21)
    model = TinyCam().eval()
    x = torch.rand(2, 1, 8, 8, generator=_seeded(22))
    expected = grad_cam(model, x, "features.4", 1)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        frozen = grad_cam(model, x, "features.4", 1)
    torch.testing.assert_close(frozen, expected)
    assert float(expected.max()) > 0


# --------------------------------------------------------------------------------------------
# (d) hooks and (e) model hygiene
# --------------------------------------------------------------------------------------------


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_activations_removes_hook_on_exception() -> None:
    model = TinyCam().eval()
    layer = model.features[4]
    with pytest.raises(RuntimeError, match="boom"), capture_activations(model, "features.4") as h:
        assert len(layer._forward_hooks) == 1
        model(torch.rand(1, 1, 8, 8, generator=_seeded(23)))
        assert h.activation is not None and h.activation.shape == (1, 6, 4, 4)
        assert h.calls == 1
        raise RuntimeError("boom")
    assert len(layer._forward_hooks) == 0
    assert _hook_count(model) == 0


def test_no_hooks_left_after_success_or_failure(monai_adapter: ModelAdapter) -> None:
    x = torch.rand(1, 1, 64, 64, generator=_seeded(24))
    grad_cam(monai_adapter, x, "layer4")
    assert _hook_count(monai_adapter) == 0
    with pytest.raises(ValueError):
        grad_cam(monai_adapter, x, "layer4", target=7)  # fails after the forward pass
    assert _hook_count(monai_adapter) == 0
    with pytest.raises(ValueError):
        grad_cam(monai_adapter, x, "layer9")  # fails via the probing pass
    assert _hook_count(monai_adapter) == 0
    with pytest.raises(ValueError):
        grad_cam(monai_adapter, x, "fc")  # non-spatial, after both passes
    assert _hook_count(monai_adapter) == 0


@pytest.mark.parametrize("train", [True, False])
def test_mode_preserved_and_no_parameter_grad(train: bool) -> None:
    torch.manual_seed(25)
    net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, conv1_t_stride=2)
    model = ModelAdapter(net, num_classes=2)
    model.train(train)
    modes = {n: m.training for n, m in model.named_modules()}
    x = torch.rand(2, 1, 32, 32, generator=_seeded(26), requires_grad=True)
    maps = grad_cam(model, x, "layer3", method="gradcam++")
    (g,) = torch.autograd.grad(maps.sum(), x)
    assert torch.isfinite(g).all()
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())


def test_probe_for_error_message_leaves_running_stats_untouched() -> None:
    torch.manual_seed(27)
    net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, conv1_t_stride=2)
    model = ModelAdapter(net, num_classes=2)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="unknown layer"):
        grad_cam(model, torch.rand(2, 1, 32, 32, generator=_seeded(28)), "layer44")
    after = model.state_dict()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v)


def test_layer_called_twice_uses_last_call(
    monai_adapter: ModelAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    # MONAI blocks reuse one ReLU module twice; the last call is the block output.
    x = torch.rand(1, 1, 64, 64, generator=_seeded(29))
    with caplog.at_level(logging.WARNING, logger="medrobust.explain.gradcam"):
        via_act = grad_cam(monai_adapter, x, "layer4.1.act", 1)
    assert "ran 2 times" in caplog.text
    torch.testing.assert_close(via_act, grad_cam(monai_adapter, x, "layer4", 1))


# --------------------------------------------------------------------------------------------
# (g) bad inputs
# --------------------------------------------------------------------------------------------


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Conv2d(1, 3, 3, padding=1)
        self.cls = nn.Linear(3, 2)
        self.seg_head = nn.Conv2d(3, 1, 1)
        self.unused = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.trunk(x))
        return self.cls(f.mean(dim=(2, 3))), self.seg_head(f)


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).detach().mean(dim=(2, 3)))


def test_unknown_layer_lists_spatial_layers_closest_first(monai_adapter: ModelAdapter) -> None:
    x = torch.rand(1, 1, 64, 64, generator=_seeded(30))
    with pytest.raises(ValueError, match=r"unknown layer 'layer5'.*spatial outputs.*'layer4'") as e:
        grad_cam(monai_adapter, x, "layer5")
    msg = str(e.value)
    assert msg.index("'layer4'") < msg.index("'layer3'") < msg.index("'layer4.1'")  # closest first
    assert "'fc'" not in msg and "'avgpool'" not in msg  # non-spatial layers are not offered
    with pytest.raises(ValueError, match=r"unknown layer 'features\.9'.*'features\.4'"):
        grad_cam(TinyCam(), torch.rand(1, 1, 8, 8), "features.9")
    with (
        pytest.raises(ValueError, match="unknown layer 'nope'"),
        capture_activations(TinyCam(), "nope"),
    ):
        pass


def test_non_spatial_layers_rejected(monai_adapter: ModelAdapter) -> None:
    x = torch.rand(1, 1, 64, 64, generator=_seeded(31))
    with pytest.raises(ValueError, match=r"'fc' has no spatial output.*\(1, 2\).*'layer4'"):
        grad_cam(monai_adapter, x, "fc")
    with pytest.raises(ValueError, match=r"'avgpool' has no spatial output.*\(1, 512, 1, 1\)"):
        grad_cam(monai_adapter, x, "avgpool")


def test_no_gradient_path_rejected() -> None:
    x = torch.rand(2, 1, 8, 8, generator=_seeded(32))
    two = ModelAdapter(TwoHeads(), num_classes=2, output_index=0)
    with pytest.raises(ValueError, match="no gradient path from the target class score"):
        grad_cam(two, x, "seg_head")
    with pytest.raises(ValueError, match="'unused' was not called"):
        grad_cam(two, x, "unused")
    assert grad_cam(two, x, "trunk").shape == (2, 1, 8, 8)  # the shared trunk is fine
    with pytest.raises(ValueError, match=r"no gradient path.*'conv'"):
        grad_cam(Detached(), x, "conv")
    with pytest.raises(TypeError, match="output_index or output_key"):
        grad_cam(TwoHeads(), x, "trunk")  # a bare multi-output net


def test_target_errors() -> None:
    model = TinyCam(classes=3).eval()
    x = torch.rand(2, 1, 8, 8, generator=_seeded(33))
    with pytest.raises(ValueError, match=r"target class 3 is out of range .* 3 classes"):
        grad_cam(model, x, "features.4", 3)
    with pytest.raises(ValueError, match="target class -1 is out of range"):
        grad_cam(model, x, "features.4", -1)
    with pytest.raises(ValueError, match=r"got values in \[0, 5\]"):
        grad_cam(model, x, "features.4", torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"shape \(2,\).*got shape \(3,\)"):
        grad_cam(model, x, "features.4", torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer tensor"):
        grad_cam(model, x, "features.4", torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="got bool"):
        grad_cam(model, x, "features.4", True)
    # a 0-d tensor is broadcast like an int
    torch.testing.assert_close(
        grad_cam(model, x, "features.4", torch.tensor(2)), grad_cam(model, x, "features.4", 2)
    )


def test_image_and_option_errors(monai_adapter: ModelAdapter) -> None:
    with pytest.raises(ValueError, match=r"rank 4.*got shape \(1, 64, 64\)"):
        grad_cam(monai_adapter, torch.rand(1, 64, 64), "layer4")
    with pytest.raises(ValueError, match="2 channel\\(s\\) but the model expects 1"):
        grad_cam(monai_adapter, torch.rand(1, 2, 64, 64), "layer4")
    with pytest.raises(ValueError, match=r"rank 4 or 5.*\(8, 8\)"):
        grad_cam(TinyCam(), torch.rand(8, 8), "features.4")
    with pytest.raises(ValueError, match="empty batch"):
        grad_cam(TinyCam(), torch.rand(0, 1, 8, 8), "features.4")
    with pytest.raises(TypeError, match="floating-point"):
        grad_cam(TinyCam(), torch.ones(1, 1, 8, 8, dtype=torch.long), "features.4")
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        grad_cam(TinyCam(), np.zeros((1, 1, 8, 8)), "features.4")  # type: ignore[arg-type]
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="normalize must be None, 'minmax' or 'sum', got 'l2'"):
        grad_cam(TinyCam(), x, "features.4", normalize="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method must be 'gradcam' or 'gradcam\\+\\+'"):
        grad_cam(TinyCam(), x, "features.4", method="scorecam")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dotted module name"):
        grad_cam(TinyCam(), x, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        grad_cam(TinyCam(), x, "")
    with pytest.raises(ValueError, match="is not a submodule"):
        grad_cam(TinyCam(), x, nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        grad_cam(lambda t: t, x, "features.4")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "obj",
    [grad_cam, grad_cam_full, GradCamOutput, ActivationHolder, capture_activations, softplus_relu],
)
def test_public_api_is_documented(obj: object) -> None:
    doc = getattr(obj, "__doc__", None) or ""
    name = getattr(obj, "__name__", "")
    assert doc.strip() and not doc.startswith(f"{name}("), f"{name} is undocumented"


def test_hooks_live_in_layers_and_are_reexported() -> None:
    from medrobust.explain import gradcam, layers

    assert gradcam.capture_activations is layers.capture_activations
    assert gradcam.ActivationHolder is layers.ActivationHolder
    model = TinyCam().eval()
    with (
        pytest.raises(ValueError, match=r"features\.9"),
        layers.capture_activations(model, "features.9"),
    ):
        pass
