"""Tests of the detector folder format (detectors/io.py) and of loading (detectors/loading.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.attacks.models import batch, tiny_cnn

from medrobust.detectors import create_detector, iter_images, load_detector
from medrobust.detectors.io import (
    FORMAT,
    FORMAT_VERSION,
    read_detector_files,
    write_detector_files,
)


def test_files_round_trip(tmp_path: Path) -> None:
    tensors = {"mu": torch.arange(3.0), "t": torch.tensor(1.5, dtype=torch.float64)}
    folder = write_detector_files(tmp_path / "d", {"name": "uad", "x": [1, 2]}, tensors)
    meta, back = read_detector_files(folder)
    assert meta == {"format": FORMAT, "version": FORMAT_VERSION, "name": "uad", "x": [1, 2]}
    assert set(back) == {"mu", "t"} and torch.equal(back["mu"], tensors["mu"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        write_detector_files(tmp_path / "file", {}, tensors)


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    folder = write_detector_files(tmp_path / "d", {"name": "uad"}, {"a": torch.zeros(1)})
    meta_path, state_path = folder / "detector.json", folder / "state.pt"
    with pytest.raises(FileNotFoundError, match=r"detector\.json does not exist"):
        read_detector_files(tmp_path / "nothing")
    meta_path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="is not a medrobust detector file"):
        read_detector_files(folder)
    meta_path.write_text(json.dumps({"format": FORMAT, "version": 99}))
    with pytest.raises(ValueError, match="format version 99; this medrobust reads version 1"):
        read_detector_files(folder)
    meta_path.write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION}))
    state_path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="is corrupt or not a weights-only file"):
        read_detector_files(folder)
    torch.save({"a": [1, 2]}, state_path)
    with pytest.raises(ValueError, match="must hold a dict of tensors"):
        read_detector_files(folder)


def test_loading_checks_the_model(tmp_path: Path) -> None:
    model = tiny_cnn()
    det = create_detector("uad").fit(model, batch(n=40, size=8, seed=1))
    folder = det.save(tmp_path / "uad")
    with pytest.raises(TypeError, match="model must be a medrobust ModelAdapter"):
        load_detector(folder, torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes=2, but this model has num_classes=3"):
        load_detector(folder, tiny_cnn(num_classes=3))


def test_iter_images_accepts_the_usual_batch_forms() -> None:
    x = torch.rand(5, 1, 4, 4)
    assert [b.shape[0] for b in iter_images(x, 2)] == [2, 2, 1]
    forms = [{"image": x[:2], "label": torch.zeros(2)}, (x[2:4], torch.zeros(2)), x[4:]]
    assert torch.equal(torch.cat(list(iter_images(forms))), x)
    with pytest.raises(TypeError, match="needs an 'image' key"):
        list(iter_images([{"label": torch.zeros(1)}]))
    with pytest.raises(TypeError, match="expected images as a tensor"):
        list(iter_images(3))
