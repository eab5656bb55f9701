"""The Inception-style classifier of the zoo: shapes, branch structure, size parameters,
Grad-CAM layer, checkpoint round trip and parameter errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medrobust.attacks.objectives.gradcam_maps import default_gradcam_layer
from medrobust.explain.gradcam import grad_cam
from medrobust.models import (
    ModelCard,
    architecture_of,
    create_model,
    gradcam_layer,
    list_models,
    load_checkpoint,
    save_checkpoint,
)
from medrobust.models.inception import InceptionBlock, InceptionNet
from medrobust.types import Task


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_as_a_2d_3d_classifier() -> None:
    assert "inception" in list_models()
    assert "inception" in list_models(tag="classification")
    assert "inception" in list_models("incep*", tag="3d")
    assert "inception" not in list_models(tag="segmentation")


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 2), (3, 4)])
def test_forward_shapes(spatial_dims: int, in_channels: int, num_classes: int) -> None:
    model = create_model(
        "inception",
        num_classes=num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        width=4,
        seed=0,
    ).eval()
    assert model.task is Task.CLASSIFICATION and isinstance(model.net, InceptionNet)
    side = 32 if spatial_dims == 2 else 16
    x = torch.rand(3, in_channels, *([side] * spatial_dims))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, num_classes) and torch.isfinite(out).all()


def test_odd_sizes_and_training_mode() -> None:
    model = create_model("inception", width=4, seed=0)
    out = model(torch.rand(2, 1, 28, 37))  # MedMNIST-like 28 and an odd side
    out.sum().backward()
    assert out.shape == (2, 2)
    assert all(p.grad is not None for p in model.parameters())


def test_block_has_the_four_inception_branches() -> None:
    block = InceptionBlock(2, in_channels=10, unit=8)
    convs = {
        name: [m.kernel_size for m in branch.modules() if isinstance(m, nn.Conv2d)]
        for name, branch in block.named_children()
    }
    assert convs == {
        "branch1": [(1, 1)],
        "branch3": [(1, 1), (3, 3)],
        "branch5": [(1, 1), (3, 3), (3, 3)],  # 5x5 factorised as two 3x3
        "branch_pool": [(1, 1)],
    }
    assert any(isinstance(m, nn.MaxPool2d) for m in block.branch_pool.modules())
    y = block(torch.rand(2, 10, 9, 9))
    assert y.shape == (2, 32, 9, 9) == (2, block.out_channels, 9, 9)  # 4u, size kept
    widths = [block.branch1(torch.rand(1, 10, 5, 5)).shape[1]]
    widths += [b(torch.rand(1, 10, 5, 5)).shape[1] for b in (block.branch3, block.branch5)]
    assert widths == [8, 16, 4]


def test_block_with_unit_one_keeps_every_branch() -> None:
    block = InceptionBlock(3, in_channels=2, unit=1)
    assert block(torch.rand(1, 2, 4, 4, 4)).shape == (1, block.out_channels, 4, 4, 4)
    assert block.out_channels == 5  # 1 + 2 + 1 + 1: halved widths floor at 1


def test_width_and_blocks_set_the_size() -> None:
    base = create_model("inception", width=8, blocks=(1, 1, 1), seed=0)
    wide = create_model("inception", width=16, blocks=(1, 1, 1), seed=0)
    deep = create_model("inception", width=8, blocks=(2, 3, 2), seed=0)
    shallow = create_model("inception", width=8, blocks=(1, 1), seed=0)
    n = _params(base)
    assert 3.5 * n < _params(wide) < 4.5 * n  # convolutions scale with width squared
    assert _params(deep) > 1.5 * n
    assert _params(shallow) < n / 2
    blocks = [m for m in deep.net.modules() if isinstance(m, InceptionBlock)]
    assert len(blocks) == 7
    net = deep.net
    assert isinstance(net, InceptionNet)
    stages = [name for name, _ in net.features.named_children()]
    assert stages == ["stem", "stage1", "stage2", "stage3"]
    assert net.classifier.in_features == 4 * 8 * 4  # 4u of the last stage, u = 8 * 2**2


def test_gradcam_layer_is_the_last_stage_output() -> None:
    assert gradcam_layer("inception") == "features"
    model = create_model("inception", width=4, seed=0).eval()
    assert default_gradcam_layer(model) == "features"
    seen: list[torch.Size] = []
    assert isinstance(model.net, InceptionNet)
    handle = model.net.features.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(torch.rand(1, 1, 64, 64))
    handle.remove()
    assert seen == [torch.Size([1, 4 * 4 * 4, 8, 8])]  # 1/8 resolution with three stages
    maps = grad_cam(model, torch.rand(2, 1, 64, 64), layer=gradcam_layer("inception"))
    assert maps.shape == (2, 1, 64, 64) and torch.isfinite(maps).all()


def test_seeded_build_is_reproducible() -> None:
    a = create_model("inception", width=4, seed=1)
    b = create_model("inception", width=4, seed=1)
    c = create_model("inception", width=4, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_checkpoint_round_trip(spatial_dims: int, tmp_path: Path) -> None:
    model = create_model(
        "inception",
        num_classes=3,
        spatial_dims=spatial_dims,
        width=4,
        blocks=[2, 1],
        dropout=0.1,
        class_names=["a", "b", "c"],
        seed=5,
    ).eval()
    card = ModelCard.from_model(model)
    path = save_checkpoint(tmp_path / "inception.pt", model, card)
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card == card and loaded_card.architecture == "inception"
    spec = architecture_of(loaded)
    assert spec is not None and spec.name == "inception" and spec.spatial_dims == spatial_dims
    assert list(spec.kwargs["blocks"]) == [2, 1] and spec.kwargs["width"] == 4
    x = torch.rand(2, 1, *([16] * spatial_dims))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"width": 0}, ValueError, "width must be >= 1"),
        ({"width": 2.5}, TypeError, "width must be an int"),
        ({"blocks": ()}, ValueError, r"blocks must list 1 to 6 stages"),
        ({"blocks": (1,) * 7}, ValueError, r"blocks must list 1 to 6 stages"),
        ({"blocks": (1, 0)}, ValueError, "blocks must be >= 1"),
        ({"blocks": 3}, TypeError, "blocks must be a sequence of ints"),
        ({"blocks": "12"}, TypeError, "blocks must be a sequence of ints"),
        ({"dropout": 1.5}, ValueError, r"dropout must be in \[0.0, 1.0\]"),
        ({"widht": 8}, TypeError, r"'widht' \(did you mean 'width'\?\)"),
        ({"block": (1,)}, TypeError, r"did you mean 'blocks'"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        create_model("inception", **kwargs)  # type: ignore[arg-type]


def test_listed_by_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from medrobust.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main(["list", "models"])
    except SystemExit as exc:
        assert not exc.code
    assert "inception" in capsys.readouterr().out
