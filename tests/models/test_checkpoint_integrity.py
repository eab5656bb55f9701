"""Tests of checkpoint integrity: the SHA-256 of the weights and extras, recorded and checked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from medrobust.models import (
    CheckpointError,
    ModelAdapter,
    ModelCard,
    create_model,
    load_checkpoint,
    load_state_dict_into,
    save_checkpoint,
)
from medrobust.models.checkpoint import extra_sha256, read_checkpoint, state_dict_sha256

CORRUPT = r"its weights do not match the SHA-256 recorded when it was saved: the file is corrupt"


@pytest.fixture
def model() -> ModelAdapter:
    return create_model("small-cnn", num_classes=3, width=4, seed=7)


@pytest.fixture
def saved(tmp_path: Path, model: ModelAdapter) -> Path:
    card = ModelCard.from_model(model, notes="integrity")
    extra = {"epoch": 2, "opt": {"momentum": [torch.arange(6.0), 0.9]}}
    return save_checkpoint(tmp_path / "model.pt", model, card, extra=extra)


def _flip_bit_in_file(src: Path, dst: Path, tensor: torch.Tensor) -> Path:
    """Copy ``src`` to ``dst`` with one bit flipped inside the stored bytes of ``tensor``."""
    data = bytearray(src.read_bytes())
    needle = tensor.detach().contiguous().numpy().tobytes()[:32]
    offset = bytes(data).find(needle)
    assert offset > 0 and bytes(data).find(needle, offset + 1) == -1  # found exactly once
    data[offset + 5] ^= 0x10
    dst.write_bytes(bytes(data))
    return dst


def test_card_records_the_sha256_of_the_weights(
    tmp_path: Path, model: ModelAdapter, saved: Path
) -> None:
    raw = torch.load(saved, weights_only=True)
    digest = raw["card"]["weights_sha256"]
    assert digest == state_dict_sha256(model.net.state_dict())
    assert len(digest) == 64 and raw["extra_sha256"] == extra_sha256(raw["extra"])
    _, card = load_checkpoint(saved)
    assert card.weights_sha256 == digest
    assert f"| weights SHA-256 | {digest} |" in card.to_markdown()
    # The caller's card is not changed; the card files beside the checkpoint carry the hash.
    given = ModelCard.from_model(model)
    save_checkpoint(tmp_path / "w" / "best.pt", model, given, write_card=True)
    assert given.weights_sha256 is None
    written = json.loads((tmp_path / "w" / "model_card.json").read_text())
    assert written["weights_sha256"] == digest
    assert ModelCard.from_dict(written) == given  # the hash takes no part in ==


def test_hash_is_deterministic(tmp_path: Path, model: ModelAdapter) -> None:
    card = ModelCard.from_model(model)
    first = save_checkpoint(tmp_path / "a.pt", model, card, extra={"x": torch.ones(2)})
    second = save_checkpoint(tmp_path / "b.pt", model, card, extra={"x": torch.ones(2)})
    a, b = (torch.load(p, weights_only=True) for p in (first, second))
    assert a["card"]["weights_sha256"] == b["card"]["weights_sha256"]
    assert a["extra_sha256"] == b["extra_sha256"]
    # Independent of key order and memory layout; sensitive to values, dtype, shape and names.
    x = torch.arange(12.0).reshape(3, 4)
    ref = state_dict_sha256({"a": x.t().contiguous(), "b": torch.zeros(2)})
    assert state_dict_sha256({"b": torch.zeros(2), "a": x.t()}) == ref
    changed = x.t().contiguous()
    changed[0, 0] = -0.0  # differs from 0.0 only in its bits
    assert state_dict_sha256({"a": changed, "b": torch.zeros(2)}) != ref
    assert state_dict_sha256({"a": x.t().double(), "b": torch.zeros(2)}) != ref
    assert state_dict_sha256({"a": x.reshape(-1), "b": torch.zeros(2)}) != ref
    assert state_dict_sha256({"c": x.t(), "b": torch.zeros(2)}) != ref
    assert extra_sha256({"k": [1, 2.0]}) != extra_sha256({"k": [1, 2]})
    assert extra_sha256({1: "a", "1": "b"}) == extra_sha256({"1": "b", 1: "a"})


def test_flipped_bit_in_the_file_is_a_clear_error(
    tmp_path: Path, model: ModelAdapter, saved: Path
) -> None:
    weight = model.net.state_dict()["classifier.weight"]
    bad = _flip_bit_in_file(saved, tmp_path / "flipped.pt", weight)
    # torch.load itself does not notice: the damage would be silent without the hash.
    raw = torch.load(bad, weights_only=True)
    assert not torch.equal(raw["state_dict"]["classifier.weight"], weight)
    for load in (load_checkpoint, read_checkpoint):
        with pytest.raises(CheckpointError, match=rf"flipped\.pt: {CORRUPT}"):
            load(bad)
    with pytest.raises(CheckpointError, match=CORRUPT):
        load_state_dict_into(create_model("small-cnn", num_classes=3, width=4), bad)


def test_modified_tensor_with_the_original_card_is_refused(tmp_path: Path, saved: Path) -> None:
    raw = torch.load(saved, weights_only=True)
    name = sorted(raw["state_dict"])[0]
    tensor = raw["state_dict"][name].clone()
    tensor.view(-1).view(torch.int32)[0] ^= 1  # one bit of the first value
    raw["state_dict"][name] = tensor
    bad = tmp_path / "edited.pt"
    torch.save(raw, bad)  # the original card, whose SHA-256 no longer matches
    with pytest.raises(CheckpointError, match=rf"edited\.pt: {CORRUPT}"):
        load_checkpoint(bad)


def test_flipped_bit_in_extra_is_a_clear_error(tmp_path: Path, saved: Path) -> None:
    bad = _flip_bit_in_file(saved, tmp_path / "extra.pt", torch.arange(6.0))
    with pytest.raises(
        CheckpointError, match=r"extra\.pt: its extra entries do not match the SHA-256"
    ):
        read_checkpoint(bad)


def test_old_checkpoint_without_hash_loads_with_a_warning(
    tmp_path: Path, model: ModelAdapter, saved: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = torch.load(saved, weights_only=True)
    del raw["card"]["weights_sha256"], raw["extra_sha256"]
    old = tmp_path / "old.pt"
    torch.save(raw, old)
    with caplog.at_level(logging.WARNING, logger="medrobust.models.checkpoint"):
        loaded, card = load_checkpoint(old)
    assert card.weights_sha256 is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "old.pt records no SHA-256 of its weights" in warnings[0]
    for key, value in model.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value), key
    # Saving it again adds the hash.
    again = save_checkpoint(tmp_path / "new.pt", loaded, card)
    assert torch.load(again, weights_only=True)["card"]["weights_sha256"] == (
        state_dict_sha256(model.net.state_dict())
    )


@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        ("abc", ValueError, "64 lowercase hexadecimal digits"),
        ("A" * 64, ValueError, "64 lowercase hexadecimal digits"),
        (12, TypeError, "weights_sha256 must be a string"),
    ],
)
def test_card_rejects_a_malformed_hash(value: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        ModelCard(architecture="small-cnn", num_classes=2, weights_sha256=value)  # type: ignore[arg-type]


def test_recorded_hash_of_the_wrong_type_is_corrupt(tmp_path: Path, saved: Path) -> None:
    raw = torch.load(saved, weights_only=True)
    raw["extra_sha256"] = 5
    torch.save(raw, tmp_path / "typed.pt")
    with pytest.raises(CheckpointError, match="extra entries is not a string"):
        read_checkpoint(tmp_path / "typed.pt")
