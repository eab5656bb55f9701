"""Tests of the multi-task networks (mtl-resnet18/50) and the "multitask" training recipe."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrobust.attacks import create_attack
from medrobust.attacks.objectives.explanation import default_gradcam_layer
from medrobust.defenses.multitask import MultitaskRecipe, soft_dice_loss
from medrobust.explain import capture_activations, grad_cam
from medrobust.models import (
    ModelAdapter,
    architecture_of,
    create_model,
    list_models,
    load_checkpoint,
)
from medrobust.models.card import ModelCard
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.multitask import (
    MULTITASK_GRADCAM_LAYERS,
    MultitaskOutput,
    split_multitask_output,
)
from medrobust.training import TrainConfig, create_recipe, fit, list_recipes
from medrobust.types import Task

SMALL = {"widen_factor": 0.25, "decoder_channels": (8, 8, 4, 4)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mtl(seed: int = 0, spatial_dims: int = 2, **kw: object) -> ModelAdapter:
    params = {**SMALL, **kw}
    return create_model(
        "mtl-resnet18", num_classes=2, spatial_dims=spatial_dims, seed=seed, **params
    ).eval()


def test_registered_with_the_multitask_tag() -> None:
    assert {"mtl-resnet18", "mtl-resnet50"} <= set(list_models(tag="multitask"))
    assert "mtl-resnet18" not in list_models(tag="classification")
    assert set(MULTITASK_GRADCAM_LAYERS) == {"mtl-resnet18", "mtl-resnet50"}
    assert "multitask" in list_recipes()


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, (32, 40)), (3, (16, 16, 16))])
def test_output_shapes(spatial_dims: int, size: tuple[int, ...]) -> None:
    model = _mtl(spatial_dims=spatial_dims)
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        raw = model.raw_forward(x)
        logits = model(x)
    assert isinstance(raw, MultitaskOutput)
    assert raw.classification.shape == (2, 2)
    assert raw.segmentation.shape == (2, 1, *size)
    # the adapter's forward selects the classification logits
    torch.testing.assert_close(logits, raw.classification)
    assert model.task is Task.MULTITASK
    spec = architecture_of(model)
    assert spec is not None and spec.name == "mtl-resnet18"


def test_stride_two_stem_still_returns_full_size_masks() -> None:
    model = _mtl(conv1_t_stride=2)
    with torch.no_grad():
        seg = model.raw_forward(torch.rand(1, 1, 33, 47)).segmentation
    assert seg.shape == (1, 1, 33, 47)


def test_resnet50_encoder_uses_bottleneck_widths() -> None:
    model = create_model("mtl-resnet50", num_classes=2, seed=0, widen_factor=0.125)
    enc = model.net.encoder  # type: ignore[union-attr]
    assert enc.layer4[-1].conv3.out_channels == 2048 // 8
    up1 = model.net.decoder.up1.block[0]  # type: ignore[union-attr,index]
    assert up1.in_channels == 2048 // 8 + 1024 // 8


def test_split_multitask_output_forms_and_errors() -> None:
    c, s = torch.zeros(2, 3), torch.zeros(2, 1, 4, 4)
    for out in ((c, s), [c, s], {"classification": c, "segmentation": s}, MultitaskOutput(c, s)):
        got = split_multitask_output(out)
        assert got[0] is c and got[1] is s
    with pytest.raises(TypeError, match="single-task"):
        split_multitask_output(c)
    with pytest.raises(TypeError, match="keys 'classification' and 'segmentation'"):
        split_multitask_output({"logits": c})
    with pytest.raises(ValueError, match=r"segmentation logits must have shape \(2, C"):
        split_multitask_output((c, torch.zeros(3, 1, 4, 4)))
    with pytest.raises(TypeError, match="1-element tuple"):
        split_multitask_output((c,))


def test_gradcam_equals_cam_closed_form_at_encoder_layer4() -> None:
    model = _mtl(seed=3)
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = grad_cam(model, x, MULTITASK_GRADCAM_LAYERS["mtl-resnet18"], target=1)
    with capture_activations(model, "encoder.layer4") as holder, torch.no_grad():
        model(x)
    act = holder.activation
    assert act is not None
    w = model.net.encoder.fc.weight[1]  # type: ignore[union-attr,index]
    z = act.shape[2] * act.shape[3]
    cam = F.relu((w.view(1, -1, 1, 1) * act).sum(dim=1, keepdim=True)) / z
    expected = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)


def test_explanation_attack_runs_on_the_multitask_model() -> None:
    model = _mtl()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    res = create_attack("gradcam-kept", eps=4 / 255, steps=2)(model, x, torch.zeros(2).long())
    assert res.config["objective"]["layer"] is None  # chosen per model
    assert res.extra["map_adv"].shape == (2, 1, 32, 32)
    assert float((res.x_adv - x).abs().max()) <= 4 / 255 + 1e-6


def test_checkpoint_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = _mtl(seed=5)
    path = save_checkpoint(tmp_path / "m.pt", model, ModelCard.from_model(model))
    loaded, card = load_checkpoint(path)
    assert card.architecture == "mtl-resnet18"
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        a, b = model.raw_forward(x), loaded.raw_forward(x)
    torch.testing.assert_close(a.segmentation, b.segmentation)
    torch.testing.assert_close(a.classification, b.classification)


def test_bad_architecture_arguments() -> None:
    with pytest.raises(ValueError, match="decoder_channels must be 4 positive ints"):
        create_model("mtl-resnet18", num_classes=2, decoder_channels=(8, 8))
    with pytest.raises(TypeError, match="decoder_channels must be a sequence"):
        create_model("mtl-resnet18", num_classes=2, decoder_channels=8)
    with pytest.raises(TypeError, match="no_max_pool must be a bool"):
        create_model("mtl-resnet18", num_classes=2, no_max_pool="yes")
    with pytest.raises(TypeError, match="unexpected parameter"):
        create_model("mtl-resnet18", num_classes=2, depth=34)


# --------------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------------


def test_soft_dice_golden_values() -> None:
    big = torch.full((1, 1, 2, 2), 50.0)  # sigmoid ~ 1 everywhere
    ones = torch.ones(1, 2, 2)
    torch.testing.assert_close(soft_dice_loss(big, ones), torch.zeros(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        soft_dice_loss(-big, ones), torch.tensor([1.0 - 1e-5 / (4 + 1e-5)]), atol=1e-6, rtol=0
    )
    # sigmoid(0) = 0.5 on a half-full mask: 1 - (2 * 1 + s) / (2 + 2 + s)
    half = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    expect = 1 - (2 * 1.0 + 1e-5) / (2.0 + 2.0 + 1e-5)
    torch.testing.assert_close(
        soft_dice_loss(torch.zeros(1, 1, 2, 2), half), torch.tensor([expect])
    )


def test_recipe_loss_is_ce_plus_weighted_dice_and_bce() -> None:
    model = _mtl().train()
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(4, 32, 32, dtype=torch.long)
    mask[:, 8:20, 10:22] = 1
    batch = {"image": x, "label": torch.tensor([0, 1, 1, 0]), "mask": mask}
    recipe = create_recipe("multitask", seg_weight=0.5)
    assert isinstance(recipe, MultitaskRecipe)
    recipe.setup(model, generator=torch.Generator())
    model.eval()  # deterministic BatchNorm for the comparison
    loss, stats = recipe.loss(model, batch, step=0, epoch=1)
    with torch.no_grad():
        out = model.raw_forward(x)
    ce = F.cross_entropy(out.classification, batch["label"])
    m = mask.float()
    p = torch.sigmoid(out.segmentation[:, 0])
    dice = 1 - (2 * (p * m).sum((1, 2)) + 1e-5) / (p.sum((1, 2)) + m.sum((1, 2)) + 1e-5)
    bce = F.binary_cross_entropy_with_logits(out.segmentation[:, 0], m)
    torch.testing.assert_close(loss.detach(), ce + 0.5 * (dice.mean() + bce))
    assert math.isclose(stats["ce"], float(ce), rel_tol=1e-5)
    assert loss.requires_grad


def test_recipe_errors() -> None:
    model = _mtl()
    recipe = create_recipe("multitask")
    recipe.setup(model, generator=torch.Generator())
    x = torch.rand(2, 1, 32, 32)
    with pytest.raises(ValueError, match="needs lesion masks"):
        recipe.loss(model, {"image": x, "label": torch.zeros(2).long()}, step=0, epoch=1)
    bad = {"image": x, "label": torch.zeros(2).long(), "mask": torch.zeros(2, 16, 16).long()}
    with pytest.raises(ValueError, match=r"must have shape \(2, 32, 32\)"):
        recipe.loss(model, bad, step=0, epoch=1)
    single = create_model("small-cnn", num_classes=2, width=4)
    ok_mask = {"image": x, "label": torch.zeros(2).long(), "mask": torch.zeros(2, 32, 32).long()}
    with pytest.raises(ValueError, match="cannot read two heads"):
        recipe.loss(single, ok_mask, step=0, epoch=1)
    seg = create_model("unet", num_classes=2, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match="got a segmentation model"):
        recipe.setup(seg, generator=torch.Generator())
    with pytest.raises(ValueError, match="seg_weight must be"):
        create_recipe("multitask", seg_weight=-1.0)


class _Lesions(Dataset):  # type: ignore[type-arg]
    """Class 1 images carry a bright square (the lesion); masks mark the square."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 2
        self.images = torch.rand(n, 1, 32, 32, generator=g) * 0.4
        self.masks = torch.zeros(n, 32, 32, dtype=torch.long)
        for i in range(n):
            r, c = torch.randint(4, 20, (2,), generator=g).tolist()
            self.masks[i, r : r + 8, c : c + 8] = 1
            if self.labels[i] == 1:
                self.images[i, 0, r : r + 8, c : c + 8] += 0.5
        self.images = self.images.clamp(0, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "mask": self.masks[i]}


def test_fit_with_the_multitask_recipe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = create_model("mtl-resnet18", num_classes=2, seed=0, **SMALL)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, recipe="multitask", monitor="val_dice")
    result = fit(model, _Lesions(32, 0), _Lesions(16, 1), cfg, tmp_path / "run")
    rec = result.history[-1]
    for key in (
        "train_ce",
        "train_seg_loss",
        "val_dice",
        "val_seg_loss",
        "val_sensitivity",
        "val_specificity",
    ):
        assert key in rec and rec[key] is not None and math.isfinite(rec[key]), key
    assert 0.0 <= rec["val_dice"] <= 1.0
    loaded, card = load_checkpoint(result.best_checkpoint)
    assert card.architecture == "mtl-resnet18"
    assert json.loads((tmp_path / "run" / "model_card.json").read_text())["training"]["recipe"] == (
        "multitask"
    )
    assert isinstance(loaded.raw_forward(torch.rand(1, 1, 32, 32)), MultitaskOutput)


@pytest.mark.parametrize("seg_weight", [0.0, 1.0])
def test_segmentation_weight_drives_the_decoder(seg_weight: float, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = create_model("mtl-resnet18", num_classes=2, seed=0, **SMALL)
    head0 = model.net.decoder.head.weight.detach().clone()  # type: ignore[union-attr]
    fc0 = model.net.encoder.fc.weight.detach().clone()  # type: ignore[union-attr]
    cfg = TrainConfig(
        epochs=1,
        batch_size=16,
        lr=1e-2,
        recipe="multitask",
        recipe_params={"seg_weight": seg_weight},
    )
    fit(model, _Lesions(16, 0), _Lesions(8, 1), cfg, tmp_path / "run")
    head_changed = not torch.equal(model.net.decoder.head.weight, head0)  # type: ignore[union-attr]
    assert head_changed == (seg_weight > 0)
    assert not torch.equal(model.net.encoder.fc.weight, fc0)  # type: ignore[union-attr]


def test_a_multitask_task_adapter_trains_and_is_attacked() -> None:
    """With the adapter's task set to "multitask" (as the zoo may declare it), the classification
    head is still what forward, the recipe's CE term and the explanation attacks see."""
    net = _mtl().net
    adapter = ModelAdapter(net, num_classes=2, task=Task.MULTITASK).eval()
    assert default_gradcam_layer(adapter) == "encoder.layer4"  # not a zoo model: by name
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(adapter(x), net(x).classification)
    recipe = create_recipe("multitask")
    recipe.setup(adapter, generator=torch.Generator())
    batch = {"image": x, "label": torch.tensor([0, 1]), "mask": torch.zeros(2, 32, 32).long()}
    loss, _ = recipe.loss(adapter, batch, step=0, epoch=1)
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
    res = create_attack("gradcam-flip", eps=4 / 255, steps=2)(adapter, x, torch.tensor([0, 1]))
    assert res.extra["map_adv"].shape == (2, 1, 32, 32)
