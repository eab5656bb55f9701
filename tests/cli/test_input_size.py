"""The input size between training and evaluation: ``size`` only for data sets that take it,
the model card's size on another data set, refused or recorded mismatches (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust.models import ModelCard, create_model, save_checkpoint
from medrobust.models.card import DataInfo
from medrobust.pipelines.audit import card_data_params, check_input_size
from medrobust.pipelines.config import CheckpointAudit, RunConfig, default_data_params
from tests.cli.test_audit import run_cli
from tests.data.helpers import make_nifti_folder, write_grey_png


def _card(size: list[int], task: str = "classification") -> ModelCard:
    arch = "small-cnn" if task == "classification" else "unet"
    model = create_model(arch, num_classes=2, spatial_dims=len(size), seed=0)
    return ModelCard.from_model(model, data=DataInfo(name="bus-phantom", image_size=size))


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model = create_model("small-cnn", num_classes=2, seed=0, width=4)
    card = ModelCard.from_model(model, data=DataInfo(name="bus-phantom", image_size=[32, 32]))
    return save_checkpoint(tmp_path / "best.pt", model, card)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for cls, value in (("benign", 60), ("malignant", 180)):
        for i in range(5):
            write_grey_png(tmp_path / "imgs" / cls / f"{i}.png", value + i, size=(48, 40))
    return tmp_path / "imgs"


def test_size_only_for_data_sets_that_take_it() -> None:
    assert default_data_params("bus-phantom") == {"size": 64}
    assert default_data_params("image-folder") == {"size": 64}
    assert default_data_params("nifti") == {}
    assert default_data_params("mni152-tissue") == {}
    assert default_data_params("no-such-set") == {}
    assert RunConfig.from_dict({"data": {"name": "nifti"}}).data.params == {}
    assert RunConfig.from_dict({"data": {"name": "busi"}}).data.params == {"size": 64}
    given = {"name": "bus-phantom", "params": {"n": 8}}
    assert RunConfig.from_dict({"data": given}).data.params == {"n": 8}


@pytest.mark.slow
def test_train_on_nifti_from_the_command_line(tmp_path: Path) -> None:
    root = make_nifti_folder(tmp_path / "d", n=4)
    args = ["train", "--data", "nifti", "--model", "unet", "--epochs", "1", "--out"]
    params = ["root=" + str(root), "mode=slice", "pad_multiple=16", "fractions=[0.5,0.25,0.25]"]
    args += [str(tmp_path / "run"), *(x for p in params for x in ("--data-param", p))]
    assert run_cli(args) == 0
    card = json.loads((tmp_path / "run" / "train" / "model_card.json").read_text())
    # every split has the classes of every volume (the val volume holds class 2 only)
    assert card["class_names"] == ["background", "class 1", "class 2"]


def test_another_data_set_gets_the_card_size(folder: Path) -> None:
    card = _card([32, 32])
    settings = CheckpointAudit(data="image-folder", data_params={"root": str(folder)})
    params = card_data_params(settings, card)
    assert params == {"root": str(folder), "size": 32}
    given = CheckpointAudit(data="image-folder", data_params={"root": str(folder), "size": 48})
    assert card_data_params(given, card)["size"] == 48
    assert (
        check_input_size(
            CheckpointAudit(data="image-folder", data_params=params), card, "classification"
        )
        is None
    )


def test_a_classifier_at_another_size_is_refused(folder: Path, tmp_path: Path) -> None:
    card = _card([32, 32])
    at48 = CheckpointAudit(data="image-folder", data_params={"root": str(folder), "size": 48})
    with pytest.raises(ValueError, match=r"trained on 32x32 inputs .* gives 48x48 .* size=32"):
        check_input_size(at48, card, "classification")
    allowed = CheckpointAudit(
        data="image-folder",
        data_params={"root": str(folder), "size": 48},
        allow_size_mismatch=True,
    )
    record = check_input_size(allowed, card, "classification")
    assert record is not None and record["trained"] == [32, 32] and record["data"] == [48, 48]
    nifti = make_nifti_folder(tmp_path / "n", n=2)
    slices = CheckpointAudit(
        data="nifti", data_params={"root": str(nifti), "mode": "slice"}, split="all"
    )
    with pytest.raises(ValueError, match="resample the data"):
        check_input_size(slices, card, "classification")


def test_a_segmenter_on_whole_volumes_is_warned(tmp_path: Path) -> None:
    root = make_nifti_folder(tmp_path / "n", n=2)
    card = _card([8, 8, 8], task="segmentation")
    settings = CheckpointAudit(data="nifti", data_params={"root": str(root)}, split="all")
    record = check_input_size(settings, card, "segmentation")
    assert record is not None and record["data"] == [10, 12, 6]
    assert "sliding-window" in record["message"] and "8x8x8" in record["message"]


@pytest.mark.slow
def test_evaluate_on_another_data_set_from_the_command_line(
    checkpoint: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["evaluate", str(checkpoint), "--data", "image-folder", "--attacks", "fgsm"]
    common += ["--eps", "2/255", "--split", "train", "--data-param", f"root={folder}"]
    out = tmp_path / "ev"
    assert run_cli([*common, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["image_shape"] == [1, 32, 32]
    bad = [*common, "--data-param", "size=48", "--out", str(tmp_path / "bad")]
    assert run_cli(bad) == 2
    assert "--allow-size-mismatch" in capsys.readouterr().err.replace("\n", " ")
    assert run_cli([*bad[:-1], str(tmp_path / "ok"), "--allow-size-mismatch"]) == 0
