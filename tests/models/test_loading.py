"""Any user's model (issue 14, item 5): TorchScript and torch.export archives, plain state dicts
with a zoo architecture, Python factories, the input space from flags or the data."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from medrobust.models import ModelCard, create_model, save_checkpoint
from medrobust.models.checkpoint import CheckpointError
from medrobust.models.loading import InputSpec, ModelSource, detect_format, load_model

X = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def zoo_model() -> nn.Module:
    return create_model("small-cnn", num_classes=3, seed=0, width=4).net.eval()


def _factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_model.py"
    path.write_text(
        "from torch import nn\n\n"
        "def build(width=4, classes=2):\n"
        "    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),\n"
        "        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))\n"
        "NOT_CALLABLE = 3\n"
    )
    return path


def test_detect_format(tmp_path: Path, zoo_model: nn.Module) -> None:
    torch.jit.save(torch.jit.trace(zoo_model, X), tmp_path / "ts.pt")
    torch.save(zoo_model.state_dict(), tmp_path / "sd.pt")
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(zoo_model, (X,), dynamic_shapes=({0: batch},))
    torch.export.save(ep, tmp_path / "ep.pt2")
    (tmp_path / "junk.bin").write_bytes(b"nothing")
    assert detect_format(tmp_path / "ts.pt") == "torchscript"
    assert detect_format(tmp_path / "ep.pt2") == "export"
    assert detect_format(tmp_path / "sd.pt") == "torch"
    assert detect_format(tmp_path / "junk.bin") == "torch"
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        detect_format(tmp_path / "missing.pt")


def test_torchscript_archive(
    tmp_path: Path, zoo_model: nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    torch.jit.save(torch.jit.trace(zoo_model, X), tmp_path / "ts.pt")
    inputs = InputSpec.from_params({"size": "16,16", "bounds": "0,1", "mean": 0.5, "std": 0.25})
    with caplog.at_level(logging.WARNING, logger="medrobust.models.loading"):
        model, card = load_model(ModelSource(tmp_path / "ts.pt", inputs=inputs))
    assert "use only archives you trust" in caplog.text
    assert model.num_classes == 3 and card.architecture == "torchscript"  # from a probe pass
    assert card.mean == [0.5] and card.data.image_size == [16, 16]
    assert card.notes is not None and "sha256" in card.notes
    torch.testing.assert_close(model(X), zoo_model((X - 0.5) / 0.25))
    with pytest.raises(ValueError, match="takes no --model-param"):
        load_model(ModelSource(tmp_path / "ts.pt", params={"width": 4}, inputs=inputs))
    with pytest.raises(ValueError, match=r"number of classes .* is unknown"):
        load_model(ModelSource(tmp_path / "ts.pt"))
    wrong = InputSpec(num_classes=2, size=[16, 16])
    with pytest.raises(ValueError, match=r"outputs 3 logits .* but 2 classes were expected"):
        load_model(ModelSource(tmp_path / "ts.pt", inputs=wrong))
    (tmp_path / "bad.pt").write_bytes((tmp_path / "ts.pt").read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        load_model(ModelSource(tmp_path / "bad.pt", inputs=inputs))


def test_export_archive_with_data_defaults(tmp_path: Path, zoo_model: nn.Module) -> None:
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(zoo_model, (X,), dynamic_shapes=({0: batch},))
    torch.export.save(ep, tmp_path / "ep.pt2")
    calls: list[int] = []

    def defaults() -> InputSpec:
        calls.append(1)
        return InputSpec(num_classes=3, in_channels=1, spatial_dims=2, size=[16, 16])

    model, card = load_model(ModelSource(tmp_path / "ep.pt2"), defaults)
    assert calls == [1] and card.architecture == "export" and model.task.value == "classification"
    torch.testing.assert_close(model(X), zoo_model(X))


def test_state_dict_with_an_architecture(tmp_path: Path, zoo_model: nn.Module) -> None:
    torch.save({"model_state_dict": zoo_model.state_dict()}, tmp_path / "sd.pt")
    source = ModelSource(
        tmp_path / "sd.pt",
        arch="small-cnn",
        params={"width": 4},
        inputs=InputSpec.from_params({"num_classes": 3, "class_names": "a,b,c"}),
    )
    model, card = load_model(source)
    torch.testing.assert_close(model(X), zoo_model(X))
    assert card.architecture == "small-cnn" and card.architecture_kwargs["width"] == 4
    assert card.class_names == ["a", "b", "c"]  # a registered card: rebuildable from a checkpoint
    with pytest.raises(CheckpointError, match="--arch <zoo name>"):
        load_model(ModelSource(tmp_path / "sd.pt"))
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load_model(
            ModelSource(tmp_path / "sd.pt", arch="small-cnn", inputs=InputSpec(num_classes=3))
        )
    with pytest.raises(ValueError, match="needs the number of classes"):
        load_model(ModelSource(tmp_path / "sd.pt", arch="small-cnn"))


def test_user_factory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = _factory_file(tmp_path)
    spec = f"{file}:build"
    with caplog.at_level(logging.WARNING, logger="medrobust.models.loading"):
        model, card = load_model(
            ModelSource(model_file=spec, params={"width": 3}, inputs=InputSpec(size=[8, 8]))
        )
    assert "runs the Python code in that file" in caplog.text
    assert model.num_classes == 2 and card.architecture == "user:my_model.py:build"
    # weights given beside the factory are loaded into the module
    trained = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    )
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    loaded, _ = load_model(
        ModelSource(
            tmp_path / "w.pt", model_file=spec, params={"width": 3}, inputs=InputSpec(num_classes=2)
        )
    )
    torch.testing.assert_close(loaded(X), trained(X))
    with pytest.raises(ValueError, match=r"must be 'path/to/file\.py:factory'"):
        load_model(ModelSource(model_file=str(file)))
    with pytest.raises(ValueError, match="has no callable 'NOT_CALLABLE'"):
        load_model(ModelSource(model_file=f"{file}:NOT_CALLABLE"))
    with pytest.raises(FileNotFoundError, match=r"nope\.py"):
        load_model(ModelSource(model_file=f"{tmp_path / 'nope.py'}:build"))


def test_medrobust_checkpoint_passes_through(tmp_path: Path) -> None:
    model = create_model("small-cnn", num_classes=2, seed=0, width=4)
    path = save_checkpoint(tmp_path / "best.pt", model, ModelCard.from_model(model))
    loaded, card = load_model(ModelSource(path), lambda: pytest.fail("data not needed"))
    assert card.architecture == "small-cnn" and loaded.num_classes == 2
    with pytest.raises(ValueError, match="give a model file"):
        load_model(ModelSource())


def test_input_spec_from_params() -> None:
    spec = InputSpec.from_params(
        {"size": "224,224", "bounds": "0,255", "mean": "0.4,0.5,0.6", "in_channels": 3}
    )
    assert spec.size == [224, 224] and spec.bounds == (0.0, 255.0)
    assert spec.mean == [0.4, 0.5, 0.6] and spec.in_channels == 3
    merged = InputSpec(num_classes=2).merged(InputSpec(num_classes=5, spatial_dims=3))
    assert merged.num_classes == 2 and merged.spatial_dims == 3
    with pytest.raises(ValueError, match="did you mean 'num_classes'"):
        InputSpec.from_params({"num_class": 2})
    with pytest.raises(ValueError, match="low < high"):
        InputSpec.from_params({"bounds": "1,0"})
    with pytest.raises(ValueError, match="integer >= 1"):
        InputSpec.from_params({"num_classes": "two"})
    with pytest.raises(ValueError, match="must be numbers"):
        InputSpec.from_params({"std": "x"})
