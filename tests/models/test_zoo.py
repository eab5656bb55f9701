"""Tests of the model zoo: registry, shapes in 2-D/3-D, keyword checking, seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.models import (
    MODELS,
    ModelAdapter,
    architecture_of,
    create_model,
    gradcam_layer,
    list_models,
)
from medrobust.registry import UnknownNameError
from medrobust.types import Task

CLASSIFIERS = ["densenet121", "resnet10", "resnet18", "resnet34", "resnet50", "small-cnn"]


def _size(name: str, spatial_dims: int) -> int:
    if name == "densenet121":
        return 32  # DenseNet downsamples 32x
    return 16 if spatial_dims == 2 else 8


def test_registry_lists_all_architectures() -> None:
    # other modules register more architectures (segmenters, multi-task networks); the zoo's
    # own classifiers and the UNet must always be there, with their tags
    names = list_models()
    assert names == sorted(names)
    assert set(CLASSIFIERS) | {"unet"} <= set(names)
    assert list_models("resnet*") == ["resnet10", "resnet18", "resnet34", "resnet50"]
    assert "unet" in list_models(tag="segmentation")
    assert set(CLASSIFIERS) <= set(list_models(tag="classification"))
    assert not set(list_models(tag="segmentation")) & set(CLASSIFIERS)
    assert len(MODELS) == len(names)


@pytest.mark.parametrize("name", list_models(tag="classification"))  # every registered one
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 2), (3, 5)])
def test_classifier_logit_shape(
    name: str, spatial_dims: int, in_channels: int, num_classes: int
) -> None:
    model = create_model(
        name,
        num_classes=num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        seed=0,
    ).eval()
    assert isinstance(model, ModelAdapter)
    assert model.task is Task.CLASSIFICATION
    assert (model.num_classes, model.in_channels, model.spatial_dims) == (
        num_classes,
        in_channels,
        spatial_dims,
    )
    s = _size(name, spatial_dims)
    x = torch.rand(2, in_channels, *([s] * spatial_dims))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    spec = architecture_of(model)
    assert spec is not None and spec.name == name
    assert (spec.num_classes, spec.in_channels, spec.spatial_dims) == (
        num_classes,
        in_channels,
        spatial_dims,
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 2), (3, 5)])
def test_unet_segmentation_shape(spatial_dims: int, in_channels: int, num_classes: int) -> None:
    model = create_model(
        "unet",
        num_classes=num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        channels=(4, 8, 16),
        strides=(2, 2),
        num_res_units=1,
    ).eval()
    assert model.task is Task.SEGMENTATION
    spatial = (8,) * spatial_dims
    with torch.no_grad():
        out = model(torch.rand(2, in_channels, *spatial))
    assert out.shape == (2, num_classes, *spatial)


def test_small_cnn_1d_and_widths() -> None:
    model = create_model("small-cnn", spatial_dims=1, in_channels=2, num_classes=3, width=4)
    assert model(torch.rand(2, 2, 20)).shape == (2, 3)
    assert model.net.classifier.in_features == 32  # 8 * width
    wide = create_model("small-cnn", width=8)
    assert wide.net.classifier.in_features == 64


def test_small_cnn_layer_names_for_gradcam() -> None:
    model = create_model("small-cnn", width=4)
    names = dict(model.net.named_modules())
    for stage in ("features.layer1", "features.layer2", "features.layer3", "features.layer4"):
        assert stage in names
    assert gradcam_layer("small-cnn") == "features.layer4"
    # The Grad-CAM stage keeps 1/8 of the input resolution and is the last conv stage.
    seen: list[torch.Size] = []
    handle = names["features.layer4"].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model.eval()(torch.rand(1, 1, 64, 64))
    handle.remove()
    assert seen == [torch.Size([1, 32, 8, 8])]


@pytest.mark.parametrize("name", ["resnet10", "densenet121"])
def test_gradcam_layer_exists_in_network(name: str) -> None:
    model = create_model(name)
    assert gradcam_layer(name) in dict(model.net.named_modules())


def test_gradcam_layer_unknown_for_segmenter() -> None:
    with pytest.raises(ValueError, match="no documented Grad-CAM"):
        gradcam_layer("unet")


def test_resnet_stem_options_pass_through() -> None:
    seen: list[torch.Size] = []
    default = create_model("resnet10").eval()
    small = create_model("resnet10", conv1_t_size=3, no_max_pool=True).eval()
    assert default.net.conv1.kernel_size == (7, 7)
    assert small.net.conv1.kernel_size == (3, 3)
    for model in (default, small):
        h = model.net.layer1.register_forward_hook(lambda m, i, o: seen.append(o.shape[-2:]))
        model(torch.rand(1, 1, 16, 16))
        h.remove()
    assert seen == [torch.Size([8, 8]), torch.Size([16, 16])]  # max-pool skipped
    spec = architecture_of(small)
    assert spec is not None and spec.kwargs == {"conv1_t_size": 3, "no_max_pool": True}
    strided = create_model("resnet10", conv1_t_size=(3, 5), conv1_t_stride=2)
    assert strided.net.conv1.kernel_size == (3, 5) and strided.net.conv1.stride == (2, 2)


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet18'"):
        create_model("resnt18")
    with pytest.raises(KeyError, match=r"Available: .*densenet121, .*resnet10"):
        create_model("vit")


def test_underscores_and_case_are_normalised() -> None:
    model = create_model("Small_CNN", width=2)
    spec = architecture_of(model)
    assert spec is not None and spec.name == "small-cnn"


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("small-cnn", {"widht": 8}, r"'widht' \(did you mean 'width'\?\)"),
        ("resnet18", {"no_maxpool": True}, r"did you mean 'no_max_pool'"),
        ("densenet121", {"pretrained": True}, r"unexpected parameter\(s\) 'pretrained'"),
        ("small-cnn", {"num_class": 3}, r"did you mean 'num_classes'"),
    ],
)
def test_unknown_kwarg_raises_type_error(name: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        create_model(name, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"num_classes": 1}, ValueError, "num_classes must be >= 2"),
        ({"num_classes": 2.0}, TypeError, "num_classes must be an int"),
        ({"in_channels": True}, TypeError, "in_channels must be an int"),
        ({"spatial_dims": 4}, ValueError, "spatial_dims must be 1, 2 or 3"),
        ({"width": 0}, ValueError, "width must be >= 1"),
        ({"dropout": 1.5}, ValueError, r"dropout must be in \[0.0, 1.0\]"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"mean": [0.1, 0.2]}, ValueError, "one per channel"),
        ({"bounds": (1.0, 0.0)}, ValueError, "low < high"),
    ],
)
def test_bad_values_raise(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        create_model("small-cnn", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnet10", {"conv1_t_size": (3, 3, 3)}, "must have 2 entries"),
        ("resnet10", {"shortcut_type": "C"}, "shortcut_type must be 'A' or 'B'"),
        ("resnet10", {"no_max_pool": 1}, "no_max_pool must be a bool"),
        ("unet", {"strides": (2,)}, "strides must have len"),
        ("unet", {"norm": "layer"}, "norm must be"),
    ],
)
def test_bad_architecture_values(name: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        create_model(name, **kwargs)  # type: ignore[arg-type]


def test_seed_gives_identical_weights_without_touching_global_rng() -> None:
    before = torch.get_rng_state()
    a = create_model("small-cnn", width=4, seed=7)
    b = create_model("small-cnn", width=4, seed=7)
    c = create_model("small-cnn", width=4, seed=8)
    assert torch.equal(torch.get_rng_state(), before)
    for (ka, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), ka
    assert not torch.equal(a.net.classifier.weight, c.net.classifier.weight)


def test_adapter_settings_propagate() -> None:
    model = create_model(
        "small-cnn",
        in_channels=3,
        num_classes=3,
        bounds=(-1.0, 1.0),
        mean=[0.1, 0.2, 0.3],
        std=0.5,
        class_names=["a", "b", "c"],
        width=2,
    ).eval()
    assert model.bounds.low == -1.0 and model.bounds.high == 1.0
    assert model.normalization["mean"] == pytest.approx([0.1, 0.2, 0.3])
    assert model.normalization["std"] == [0.5]
    assert model.class_names == ["a", "b", "c"]
    # The normalisation happens in the graph: feeding mean-valued input gives the net zeros.
    seen: list[torch.Tensor] = []
    h = model.net.features.layer1.register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    model(torch.tensor([0.1, 0.2, 0.3]).reshape(1, 3, 1, 1).expand(1, 3, 8, 8))
    h.remove()
    assert torch.allclose(seen[0], torch.zeros(1, 3, 8, 8), atol=1e-6)


def test_architecture_of_plain_module_is_none() -> None:
    assert architecture_of(nn.Linear(2, 2)) is None
    assert architecture_of(ModelAdapter(nn.Linear(2, 2), num_classes=2)) is None


def test_a_model_too_large_for_memory_is_refused_before_allocation() -> None:
    """Built first on the meta device: the error gives the size it would need."""
    import pytest

    from medrobust.models import create_model

    with pytest.raises(ValueError, match=r"has [\d,]+ parameters, .* GiB of weights alone"):
        create_model("small-cnn", num_classes=2, width=200_000)
