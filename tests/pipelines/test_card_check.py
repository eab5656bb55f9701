"""The model card against the audit's data (pipelines/card_check.py): channels, dimensions,
classes and spacing are a clear error or an explicit, recorded override."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medrobust.models import create_model, save_checkpoint
from medrobust.models.card import DataInfo, ModelCard
from medrobust.pipelines.card_check import check_card_data
from medrobust.pipelines.config import CheckpointAudit


class _Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(
        self,
        shape: tuple[int, ...] = (1, 8, 8),
        class_names: list[str] | None = None,
        spacing: tuple[float, ...] | None = None,
    ) -> None:
        self.shape = shape
        self.class_names = class_names or ["benign", "malignant"]
        self.num_classes = len(self.class_names)
        self.spacing = spacing

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": torch.zeros(self.shape), "label": 0}


def _card(**data: Any) -> ModelCard:
    return ModelCard(
        architecture="small-cnn",
        num_classes=2,
        class_names=["benign", "malignant"],
        data=DataInfo(name="toy", **data),
    )


def _check(ds: Any, card: ModelCard | None = None, **settings: Any) -> list[dict[str, Any]]:
    audit = CheckpointAudit(data="toy", **settings)
    return check_card_data(audit, card or _card(), "classification", ds)


def test_matching_data_passes() -> None:
    assert _check(_Data(class_names=["Benign", "Malignant"])) == []


def test_channels_and_dims_are_errors() -> None:
    with pytest.raises(ValueError, match=r"takes 1-channel inputs .* gives 3 channel\(s\)"):
        _check(_Data(shape=(3, 8, 8)))
    with pytest.raises(ValueError, match=r"the model is 2-D .* gives 3-D inputs"):
        _check(_Data(shape=(1, 4, 8, 8)))


def test_more_classes_than_the_model_is_an_error_fewer_is_a_note() -> None:
    with pytest.raises(ValueError, match="has 3 classes but the model predicts 2"):
        _check(_Data(class_names=["benign", "malignant", "normal"]))
    card = ModelCard(architecture="small-cnn", num_classes=3, class_names=["b", "m", "n"])
    notes = _check(_Data(class_names=["b", "m"]), card)
    assert notes == [
        {"kind": "classes", "message": "data set 'toy' holds 2 of the model's 3 classes"}
    ]


def test_other_class_names_need_the_override() -> None:
    swapped = _Data(class_names=["malignant", "benign"])
    with pytest.raises(
        ValueError, match=r"a class index would mean different things.*--allow-class"
    ):
        _check(swapped)
    notes = _check(swapped, allow_class_mismatch=True)
    assert len(notes) == 1 and notes[0]["kind"] == "classes"
    assert "['benign', 'malignant'] (model card)" in notes[0]["message"]


def test_a_segmenter_is_not_held_to_the_image_labels() -> None:
    card = ModelCard(
        architecture="unet",
        num_classes=2,
        task="segmentation",
        class_names=["background", "lesion"],
    )
    audit = CheckpointAudit(data="toy")
    ds = _Data(class_names=["benign", "malignant", "normal"])
    assert check_card_data(audit, card, "segmentation", ds) == []


def test_spacing_is_checked_when_both_record_one() -> None:
    card = _card(spacing=[1.0, 1.0])
    assert _check(_Data(spacing=(1.0, 1.0)), card) == []
    assert _check(_Data(), card) == []  # the data records none
    assert _check(_Data(spacing=(2.0, 2.0))) == []  # the card records none
    with pytest.raises(ValueError, match=r"voxels of \[1.0, 1.0\] mm .* \[2.0, 2.0\] mm.*resample"):
        _check(_Data(spacing=(2.0, 2.0)), card)
    notes = _check(_Data(spacing=(2.0, 2.0)), card, allow_size_mismatch=True)
    assert notes[0]["kind"] == "spacing" and notes[0]["data"] == [2.0, 2.0]


def test_fit_records_the_spacing_of_the_training_set(tmp_path: Path) -> None:
    from medrobust.models import load_checkpoint
    from medrobust.training import TrainConfig, fit
    from tests.training.conftest import ToyImages

    train, val = ToyImages(8, 0, size=8), ToyImages(4, 1, size=8)
    train.spacing = (0.5, 0.7)
    model = create_model("small-cnn", num_classes=2, width=4, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=4, batchnorm_check="off")
    result = fit(model, train, val, cfg, tmp_path)
    card = load_checkpoint(result.best_checkpoint)[1]
    assert card.data.spacing == [0.5, 0.7]
    assert "| spacing (mm) | [0.5, 0.7] |" in (tmp_path / "model_card.md").read_text()
    assert DataInfo.from_dict(card.data.to_dict()) == card.data


def test_evaluate_refuses_swapped_classes_before_auditing(tmp_path: Path) -> None:
    from medrobust.pipelines.audit import evaluate_checkpoint

    model = create_model(
        "small-cnn", num_classes=2, width=4, seed=0, class_names=["malignant", "benign"]
    )
    card = ModelCard.from_model(model, data=DataInfo(name="bus-phantom", image_size=[32, 32]))
    ckpt = save_checkpoint(tmp_path / "best.pt", model, card)
    settings = CheckpointAudit(data="bus-phantom", data_params={"n": 4}, attacks=["fgsm"])
    with pytest.raises(ValueError, match="--allow-class-mismatch"):
        evaluate_checkpoint(ckpt, settings, tmp_path / "audit")
    assert not (tmp_path / "audit" / "metrics.json").exists()


def test_evaluate_segmentation_checks_the_card_too(tmp_path: Path) -> None:
    from medrobust.pipelines.segmentation import evaluate_segmentation_checkpoint

    model = create_model(
        "unet", num_classes=2, in_channels=3, seed=0, channels=(4, 8), strides=(2,)
    )
    card = ModelCard.from_model(model, data=DataInfo(name="bus-phantom", image_size=[32, 32]))
    ckpt = save_checkpoint(tmp_path / "seg.pt", model, card)
    settings = CheckpointAudit(data="bus-phantom", data_params={"n": 4, "size": 32})
    with pytest.raises(ValueError, match=r"takes 3-channel inputs .* gives 1 channel\(s\)"):
        evaluate_segmentation_checkpoint(ckpt, settings, tmp_path / "audit")
