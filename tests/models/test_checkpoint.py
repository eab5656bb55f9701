"""Tests of safe checkpoints: round trips, weights_only loading, every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from medrobust.models import (
    CheckpointError,
    ModelAdapter,
    ModelCard,
    create_model,
    load_checkpoint,
    load_state_dict_into,
    save_checkpoint,
)
from medrobust.models.checkpoint import read_checkpoint, state_dict_sha256


def _trained_model() -> ModelAdapter:
    model = create_model(
        "small-cnn",
        num_classes=3,
        in_channels=2,
        width=4,
        dropout=0.1,
        mean=[0.5, 0.4],
        std=[0.2, 0.3],
        class_names=["a", "b", "c"],
        seed=1,
    )
    # A few optimiser steps so weights and BatchNorm running stats differ from a fresh model.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.rand(4, 2, 16, 16, generator=g)
        y = torch.randint(0, 3, (4,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelAdapter, ModelCard]:
    model = _trained_model()
    card = ModelCard.from_model(model, metrics={"val_accuracy": 0.5}, notes="test")
    path = tmp_path_factory.mktemp("ckpt") / "sub" / "model.pt"
    save_checkpoint(path, model, card, extra={"epoch": 3, "opt": {"lr": [0.1, torch.ones(2)]}})
    return path, model, card


def test_round_trip_identical_outputs_and_card(saved: tuple[Path, ModelAdapter, ModelCard]) -> None:
    path, model, card = saved
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card == card
    assert not loaded.training  # eval mode
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.normalization == model.normalization
    x = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    fresh = create_model("small-cnn", num_classes=3, in_channels=2, width=4, seed=2).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), model(x))  # the comparison above is not vacuous


def test_file_is_loadable_with_weights_only(saved: tuple[Path, ModelAdapter, ModelCard]) -> None:
    path, model, _ = saved
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "medrobust-checkpoint" and raw["version"] == 1
    assert set(raw) == {"format", "version", "card", "state_dict", "extra", "extra_sha256"}
    assert set(raw["state_dict"]) == set(model.net.state_dict())
    assert raw["extra"]["epoch"] == 3
    assert torch.equal(raw["extra"]["opt"]["lr"][1], torch.ones(2))
    json.dumps(raw["card"], allow_nan=False)  # the card is plain JSON
    assert read_checkpoint(path)["extra"]["epoch"] == 3


def test_no_temporary_files_left(saved: tuple[Path, ModelAdapter, ModelCard]) -> None:
    path, _, _ = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_write_card_files(tmp_path: Path) -> None:
    model = create_model("small-cnn", width=2, seed=0)
    card = ModelCard.from_model(model, metrics={"val_loss": 0.3})
    save_checkpoint(tmp_path / "best.pt", model, card, write_card=True)
    assert ModelCard.from_dict(json.loads((tmp_path / "model_card.json").read_text())) == card
    assert "# Model card: small-cnn" in (tmp_path / "model_card.md").read_text()


def test_save_rejects_bad_inputs(tmp_path: Path) -> None:
    model = create_model("small-cnn", width=2)
    card = ModelCard.from_model(model)
    with pytest.raises(TypeError, match="extra\\['obj'\\] is a Linear"):
        save_checkpoint(tmp_path / "a.pt", model, card, extra={"obj": nn.Linear(1, 1)})
    with pytest.raises(TypeError, match="is a set"):
        save_checkpoint(tmp_path / "a.pt", model, card, extra={"s": {1, 2}})
    wrong = ModelCard.from_model(create_model("small-cnn", num_classes=3, width=2))
    with pytest.raises(ValueError, match="num_classes: card 3 vs model 2"):
        save_checkpoint(tmp_path / "a.pt", model, wrong)
    with pytest.raises(TypeError, match="must be a ModelAdapter"):
        save_checkpoint(tmp_path / "a.pt", model.net, card)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint file not found: .*nothere\.pt"):
        load_checkpoint(tmp_path / "nothere.pt")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(IsADirectoryError, match=r"holds best\.pt"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "flipped"])
def test_corrupt_files(
    saved: tuple[Path, ModelAdapter, ModelCard], tmp_path: Path, kind: str
) -> None:
    data = saved[0].read_bytes()
    if kind == "truncated":
        content = data[: len(data) // 2]
    elif kind == "garbage":
        content = b"definitely not a checkpoint " * 20
    elif kind == "empty":
        content = b""
    else:
        buf = bytearray(data)
        for i in range(100, 300):
            buf[i] ^= 0xFF
        content = bytes(buf)
    bad = tmp_path / f"{kind}.pt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{kind}\.pt is corrupt or truncated"):
        load_checkpoint(bad)


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely with weights_only=True"):
        load_checkpoint(path)


def test_plain_state_dict_explains_how_to_wrap(tmp_path: Path) -> None:
    model = create_model("small-cnn", width=2, seed=0)
    path = tmp_path / "weights.pt"
    torch.save(model.net.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"plain state_dict .*load_state_dict_into"):
        load_checkpoint(path)
    # ... and the suggested function loads it.
    other = create_model("small-cnn", width=2, seed=1)
    load_state_dict_into(other, path)
    for k, v in model.net.state_dict().items():
        assert torch.equal(other.net.state_dict()[k], v), k


def test_load_state_dict_into_strips_prefixes() -> None:
    model = create_model("small-cnn", width=2, seed=0)
    wrapped = {f"module.{k}": v for k, v in model.net.state_dict().items()}
    other = create_model("small-cnn", width=2, seed=3)
    load_state_dict_into(other, wrapped)
    assert torch.equal(other.net.classifier.weight, model.net.classifier.weight)
    adapter_keys = {"state_dict": model.state_dict()}  # keys "net.*" under "state_dict"
    third = create_model("small-cnn", width=2, seed=4)
    load_state_dict_into(third, adapter_keys)
    assert torch.equal(third.net.classifier.weight, model.net.classifier.weight)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_state_dict_into(third, {"a": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"weights": [1, 2]}, r"not a medrobust checkpoint .*keys \['weights'\]"),
        ([1, 2, 3], "not a medrobust checkpoint .*a list"),
        ({"format": "other"}, "not a medrobust checkpoint"),
    ],
)
def test_foreign_files(tmp_path: Path, payload: object, match: str) -> None:
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def _rewrite(src: Path, dst: Path, **changes: object) -> Path:
    """Re-save ``src`` with ``changes``, re-stamping the SHA-256 of changed weights."""
    raw = torch.load(src, weights_only=True)
    raw.update(changes)
    if "state_dict" in changes:
        raw["card"] = {**raw["card"], "weights_sha256": state_dict_sha256(raw["state_dict"])}
    torch.save(raw, dst)
    return dst


def test_state_dict_mismatch_names_keys(
    saved: tuple[Path, ModelAdapter, ModelCard], tmp_path: Path
) -> None:
    path = saved[0]
    state = dict(torch.load(path, weights_only=True)["state_dict"])
    state.pop("classifier.bias")
    state["extra.weight"] = torch.zeros(1)
    bad = _rewrite(path, tmp_path / "keys.pt", state_dict=state)
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: classifier\.bias; unexpected keys: extra\.weight",
    ):
        load_checkpoint(bad)


def test_shape_mismatch_is_reported(
    saved: tuple[Path, ModelAdapter, ModelCard], tmp_path: Path
) -> None:
    raw = torch.load(saved[0], weights_only=True)
    card = dict(raw["card"])
    card["architecture_kwargs"] = {"width": 8, "dropout": 0.1}
    bad = _rewrite(saved[0], tmp_path / "shape.pt", card=card)
    with pytest.raises(CheckpointError, match=r"shape mismatches: features\.layer1\.0\.weight"):
        load_checkpoint(bad)


def test_newer_version_and_unknown_architecture(
    saved: tuple[Path, ModelAdapter, ModelCard], tmp_path: Path
) -> None:
    newer = _rewrite(saved[0], tmp_path / "v9.pt", version=9)
    with pytest.raises(CheckpointError, match="version 9, newer than"):
        load_checkpoint(newer)
    card = dict(torch.load(saved[0], weights_only=True)["card"])
    card["architecture"] = "vit-huge"
    unknown = _rewrite(saved[0], tmp_path / "vit.pt", card=card)
    with pytest.raises(CheckpointError, match="'vit-huge', which is not registered"):
        load_checkpoint(unknown)
    card["architecture"] = "small-cnn"
    card["num_classes"] = "three"
    invalid = _rewrite(saved[0], tmp_path / "card.pt", card=card)
    with pytest.raises(CheckpointError, match="invalid model card: num_classes must be an int"):
        load_checkpoint(invalid)


def test_rebuilds_resnet_with_stem_options(tmp_path: Path) -> None:
    model = create_model("resnet10", conv1_t_size=3, no_max_pool=True, seed=0).eval()
    path = save_checkpoint(tmp_path / "r.pt", model, ModelCard.from_model(model))
    loaded, card = load_checkpoint(path)
    assert card.architecture_kwargs == {"conv1_t_size": 3, "no_max_pool": True}
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
