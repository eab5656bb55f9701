"""Segmentation networks of the zoo and the sliding-window wrapper attacks go through."""

from __future__ import annotations

import pytest
import torch

from medrobust.models import create_model, list_models, load_checkpoint, save_checkpoint
from medrobust.models.segmentation import (
    SlidingWindowSegmenter,
    check_volume_size,
    sliding_window,
    uses_sliding_window,
)
from medrobust.types import Task

TINY = {
    "unet": {"channels": (4, 8), "strides": (2,), "num_res_units": 0},
    "basicunet": {"features": (4, 4, 4, 4, 4, 4)},
    "attentionunet": {"channels": (4, 8), "strides": (2,)},
    "segresnet": {"init_filters": 8, "blocks_down": (1, 1), "blocks_up": (1,)},
}


def test_registered_with_tags() -> None:
    seg = list_models(tag="segmentation")
    assert {"unet", "basicunet", "attentionunet", "segresnet"} <= set(seg)
    assert {"basicunet", "attentionunet", "segresnet"} <= set(list_models(tag="3d"))


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shapes_and_task(name: str, spatial_dims: int) -> None:
    model = create_model(name, num_classes=3, spatial_dims=spatial_dims, seed=0, **TINY[name])
    assert model.task is Task.SEGMENTATION
    size = 32 if name == "basicunet" else 16  # BasicUNet's bottleneck is 1/16 of the input
    x = torch.rand((2, 1) + (size,) * spatial_dims)
    with torch.no_grad():
        out = model.eval()(x)
    assert out.shape == (2, 3) + (size,) * spatial_dims


def test_seeded_and_checkpoint_round_trip(tmp_path: object) -> None:
    a = create_model("basicunet", num_classes=2, seed=1, **TINY["basicunet"])
    b = create_model("basicunet", num_classes=2, seed=1, **TINY["basicunet"])
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    from pathlib import Path

    from medrobust.models import ModelCard

    path = Path(str(tmp_path)) / "m.pt"
    save_checkpoint(path, a, ModelCard.from_model(a))
    c, _ = load_checkpoint(path)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), c.eval()(x))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="6 entries"):
        create_model("basicunet", num_classes=2, features=(4, 4, 4))
    with pytest.raises(ValueError, match="multiple of 8"):
        create_model("segresnet", num_classes=2, init_filters=12)
    with pytest.raises(ValueError, match="strides must have"):
        create_model("attentionunet", num_classes=2, channels=(4, 8, 16), strides=(2,))
    with pytest.raises(TypeError, match="unexpected parameter"):
        create_model("segresnet", num_classes=2, channels=(4, 8))


def test_sliding_window_equals_direct_when_one_window_covers_the_input() -> None:
    model = create_model("unet", num_classes=2, seed=0, **TINY["unet"]).eval()
    sw = sliding_window(model, roi_size=16, overlap=0.0, mode="constant")
    assert uses_sliding_window(sw) and not uses_sliding_window(model)
    assert sw.net.net is model.net  # shares the parameters
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    y_direct = model(x)
    y_sw = sw(x)
    torch.testing.assert_close(y_sw, y_direct)
    (g1,) = torch.autograd.grad(y_direct.square().sum(), x)
    (g2,) = torch.autograd.grad(sw(x).square().sum(), x)
    torch.testing.assert_close(g2, g1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_flow_through_overlapping_windows(spatial_dims: int) -> None:
    model = create_model(
        "unet", num_classes=2, spatial_dims=spatial_dims, seed=0, **TINY["unet"]
    ).eval()
    model.double()  # a finite difference in float32 is too noisy for a 5% tolerance
    size = 24 if spatial_dims == 2 else 12
    roi = 16 if spatial_dims == 2 else 8
    sw = sliding_window(model, roi_size=roi, overlap=0.5)
    gen = torch.Generator().manual_seed(0)  # seeded: independent of the tests run before it
    x = torch.rand((1, 1) + (size,) * spatial_dims, generator=gen, dtype=torch.float64)
    x.requires_grad_(True)
    out = sw(x)
    assert out.shape == (1, 2) + (size,) * spatial_dims
    (g,) = torch.autograd.grad(out[:, 1].sum(), x)
    assert bool((g != 0).any())
    # finite-difference check on one voxel
    idx = (0, 0) + (size // 2,) * spatial_dims
    h = 1e-3
    xp, xm = x.detach().clone(), x.detach().clone()
    xp[idx] += h
    xm[idx] -= h
    with torch.no_grad():
        fd = (sw(xp)[:, 1].sum() - sw(xm)[:, 1].sum()) / (2 * h)
    assert float(g[idx]) == pytest.approx(float(fd), rel=5e-2, abs=1e-3)


def test_attack_through_sliding_window() -> None:
    from medrobust.attacks import create_attack

    model = create_model("unet", num_classes=2, seed=0, **TINY["unet"]).eval()
    sw = sliding_window(model, roi_size=16, overlap=0.25)
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        mask = sw(x).argmax(1)
    res = create_attack("pgd-seg", eps=0.05, steps=2)(sw, x, mask)
    with torch.no_grad():
        assert torch.equal(res.pred_adv, sw(res.x_adv).argmax(1))
    assert float((res.x_adv - x).abs().max()) > 0


def test_volume_size_check_suggests_sliding_windows() -> None:
    model = create_model("unet", num_classes=2, spatial_dims=3, seed=0, **TINY["unet"])
    x = torch.zeros(2, 1, 16, 16, 16)
    check_volume_size(model, x, max_voxels=2 * 16**3)
    with pytest.raises(ValueError, match=r"16x16x16 voxels .*sliding_window\(model, roi_size"):
        check_volume_size(model, x, max_voxels=16**3)
    check_volume_size(sliding_window(model, 8), x, max_voxels=16**3)
    check_volume_size(model, x, max_voxels=None)


def test_wrapper_errors() -> None:
    model = create_model("unet", num_classes=2, seed=0, **TINY["unet"])
    with pytest.raises(TypeError, match="bare network"):
        SlidingWindowSegmenter(model, 16)
    with pytest.raises(ValueError, match="2 spatial dims"):
        sliding_window(model, roi_size=(8, 8, 8))
    with pytest.raises(ValueError, match="mode"):
        sliding_window(model, 8, mode="mean")
    cls = create_model("small-cnn", num_classes=2, width=4)
    with pytest.raises(ValueError, match="segmentation models"):
        sliding_window(cls, 8)
