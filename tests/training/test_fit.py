"""Tests of the training loop: learning, checkpoints, selection, resume, determinism, errors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from medrobust.models import ModelAdapter, create_model, load_checkpoint
from medrobust.registry import Entry
from medrobust.training import RECIPES, Recipe, TrainConfig, TrainEvent, fit

ToyFactory = Any  # the ToyImages class from conftest


def _model(seed: int = 0, **kwargs: Any) -> ModelAdapter:
    return create_model("small-cnn", width=4, seed=seed, **kwargs)


def _cfg(**kwargs: Any) -> TrainConfig:
    values: dict[str, Any] = {"epochs": 2, "batch_size": 8, "lr": 0.05, "optimizer": "sgd"}
    values.update(kwargs)
    return TrainConfig(**values)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class _FlipRecipe(Recipe):
    """Cross-entropy for the first two epochs, then on swapped labels: the model gets worse."""

    name: ClassVar[str] = "test-flip"

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["label"] if epoch <= 2 else 1 - batch["label"]
        return F.cross_entropy(model(batch["image"]), labels), {}


class _NoisyRecipe(Recipe):
    """Uses its generator and keeps state; declares a validation metric."""

    name: ClassVar[str] = "test-noisy"
    validation_metrics: ClassVar[tuple[str, ...]] = ("brightness",)

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert self.generator is not None
        x = batch["image"]
        noise = torch.rand(x.shape, generator=self.generator, device=x.device) * 0.1
        self.calls += 1
        x = (x + noise).clamp(0, 1)
        return F.cross_entropy(model(x), batch["label"]), {"calls": float(self.calls)}

    def validation_stats(self, model: ModelAdapter, batch: dict[str, Any]) -> dict[str, float]:
        return {"brightness": float(batch["image"].mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: Any) -> None:
        self.calls = int(state["calls"])


@pytest.fixture()
def test_recipes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register the test recipes for one test only (removed afterwards)."""
    for cls in (_FlipRecipe, _NoisyRecipe):
        monkeypatch.setitem(
            RECIPES._entries, cls.name, Entry(cls.name, cls, "test recipe", ("classification",))
        )
    yield


def test_training_learns_and_writes_run_folder(toy: ToyFactory, tmp_path: Path) -> None:
    events: list[TrainEvent] = []
    model = _model()
    result = fit(
        model,
        toy(64, 0),
        toy(32, 1),
        _cfg(epochs=3, monitor="val_accuracy"),
        tmp_path,
        progress=events.append,
        card_info={"data": {"name": "toy", "seed": 0}, "notes": "unit test"},
    )
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["val_accuracy"] >= 0.9
    assert result.epochs_run == 3 and not result.stopped_early
    for name in ("best.pt", "last.pt", "history.json", "model_card.json", "model_card.md"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "train_config.json").read_text())["epochs"] == 3
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) >= {"train_loss", "val_loss", "val_auc", "val_sensitivity", "lr"}
    # Every file loads with weights_only=True; RNG states are uint8 tensors.
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    state = last["extra"]["training_state"]
    assert state["epoch"] == 3 and "optimizer" in state and "scheduler" in state
    assert state["rng"]["torch"].dtype == torch.uint8
    assert state["rng"]["data"].dtype == torch.uint8
    torch.load(tmp_path / "best.pt", weights_only=True)
    # The best card is filled in.
    _, card = load_checkpoint(result.best_checkpoint)
    assert card.architecture == "small-cnn" and card.architecture_kwargs == {"width": 4}
    assert card.data.name == "toy" and card.data.split_sizes == {"train": 64, "val": 32}
    assert card.data.image_size == [16, 16]
    assert card.training.recipe == "standard" and card.training.best_epoch == result.best_epoch
    assert card.training.batch_size == 8 and card.training.optimizer == "sgd"
    assert card.training.wall_time_s is not None and card.training.wall_time_s > 0
    assert card.metrics["val_accuracy"] == pytest.approx(result.best_score)
    assert card.notes == "unit test"
    # Events: start, steps of every epoch, end.
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("step") == 3 * 8 and kinds.count("epoch_end") == 3
    steps = [e for e in events if e.kind == "step"]
    assert steps[0].total_steps == 8 and steps[0].loss is not None
    assert model.training  # mode restored (it was in training mode)


def _val_loss(model: ModelAdapter, data: Any) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(data.images)
    return float(F.cross_entropy(logits, data.labels))


def test_best_checkpoint_is_the_best_monitored_epoch(
    toy: ToyFactory, tmp_path: Path, test_recipes: None
) -> None:
    val = toy(32, 1)
    result = fit(_model(), toy(64, 0), val, _cfg(epochs=4, recipe="test-flip"), tmp_path)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.best_epoch < 4  # the last epochs got worse: selection matters
    assert result.best_score == pytest.approx(min(losses))
    best, card = load_checkpoint(result.best_checkpoint)
    assert card.training.best_epoch == result.best_epoch
    assert _val_loss(best, val) == pytest.approx(losses[result.best_epoch - 1], rel=1e-5)
    last, _ = load_checkpoint(result.last_checkpoint)
    assert _val_loss(last, val) == pytest.approx(losses[-1], rel=1e-5)


def test_early_stopping_and_resume_of_a_finished_run(
    toy: ToyFactory, tmp_path: Path, test_recipes: None
) -> None:
    cfg = _cfg(epochs=8, recipe="test-flip", patience=1)
    result = fit(_model(), toy(64, 0), toy(32, 1), cfg, tmp_path)
    assert result.stopped_early
    assert result.epochs_run == result.best_epoch + 1 < 8
    again = fit(_model(), toy(64, 0), toy(32, 1), cfg, tmp_path, resume=True)
    assert again.epochs_run == result.epochs_run and again.stopped_early
    assert again.history == result.history


class _Interrupt(Exception):
    pass


def _stop_after(epoch: int) -> Callable[[TrainEvent], None]:
    def callback(event: TrainEvent) -> None:
        if event.kind == "epoch_end" and event.epoch == epoch:
            raise _Interrupt

    return callback


@pytest.mark.parametrize("as_loader", [False, True])
def test_resume_gives_identical_weights(
    toy: ToyFactory, tmp_path: Path, as_loader: bool, test_recipes: None
) -> None:
    # Dropout (global RNG), shuffling (data generator) and a recipe that draws noise from its
    # generator and keeps state: all must be restored for an exact resume.
    cfg = _cfg(epochs=3, recipe="test-noisy", optimizer="adam", lr=1e-2, scheduler="cosine")

    def data() -> tuple[Any, Any]:
        train, val = toy(48, 0), toy(16, 1)
        if as_loader:
            return DataLoader(train, batch_size=8, shuffle=True), DataLoader(val, batch_size=8)
        return train, val

    full = _model(dropout=0.3)
    ref = fit(full, *data(), cfg, tmp_path / "full")

    part = _model(dropout=0.3)
    with pytest.raises(_Interrupt):
        fit(part, *data(), cfg, tmp_path / "part", progress=_stop_after(1))
    resumed_model = _model(seed=99, dropout=0.3)  # fresh weights: all come from last.pt
    resumed = fit(resumed_model, *data(), cfg, tmp_path / "part", resume=True)

    _assert_same(_params(full), _params(resumed_model))
    strip = [{k: v for k, v in h.items() if k != "time_s"} for h in ref.history]
    assert [{k: v for k, v in h.items() if k != "time_s"} for h in resumed.history] == strip
    assert resumed.best_epoch == ref.best_epoch
    assert resumed.history[-1]["train_calls"] > resumed.history[0]["train_calls"]


def test_resume_requires_same_config_and_existing_run(toy: ToyFactory, tmp_path: Path) -> None:
    fit(_model(), toy(16, 0), toy(8, 1), _cfg(epochs=1), tmp_path)
    with pytest.raises(ValueError, match=r"different config \(lr: saved 0.05, now 0.1\)"):
        fit(_model(), toy(16, 0), toy(8, 1), _cfg(epochs=2, lr=0.1), tmp_path, resume=True)
    with pytest.raises(FileExistsError, match="already holds a training run"):
        fit(_model(), toy(16, 0), toy(8, 1), _cfg(epochs=1), tmp_path)
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        fit(_model(), toy(16, 0), toy(8, 1), _cfg(), tmp_path / "new", resume=True)
    # epochs may grow on resume; overwrite starts again
    more = fit(_model(), toy(16, 0), toy(8, 1), _cfg(epochs=2), tmp_path, resume=True)
    assert more.epochs_run == 2
    fresh = fit(_model(), toy(16, 0), toy(8, 1), _cfg(epochs=1), tmp_path, overwrite=True)
    assert fresh.epochs_run == 1
    assert len(json.loads((tmp_path / "history.json").read_text())) == 1


def test_same_seed_same_weights_and_state_restored(toy: ToyFactory, tmp_path: Path) -> None:
    torch.use_deterministic_algorithms(False)
    rng_before = torch.get_rng_state()
    runs = []
    for i, seed in enumerate((0, 0, 1)):
        model = _model(dropout=0.2)
        model.eval()
        fit(model, toy(32, 0), toy(16, 1), _cfg(seed=seed), tmp_path / str(i))
        assert not model.training  # eval mode restored
        runs.append(_params(model))
    _assert_same(runs[0], runs[1])
    assert not torch.equal(runs[0]["net.classifier.weight"], runs[2]["net.classifier.weight"])
    assert torch.equal(torch.get_rng_state(), rng_before)  # caller's random state untouched
    assert not torch.are_deterministic_algorithms_enabled()  # setting restored


def test_segmentation_training(toy: ToyFactory, tmp_path: Path) -> None:
    model = create_model(
        "unet", num_classes=2, channels=(4, 8), strides=(2,), num_res_units=0, seed=0
    )
    data = toy(16, 0, size=8, with_mask=True)
    result = fit(
        model,
        data,
        toy(8, 1, size=8, with_mask=True),
        _cfg(epochs=2, monitor="val_dice", lr=0.01, optimizer="adam"),
        tmp_path,
    )
    assert {"val_dice", "val_loss"} <= set(result.history[0])
    assert "val_accuracy" not in result.history[0]
    assert 0.0 <= result.history[-1]["val_dice"] <= 1.0
    _, card = load_checkpoint(result.best_checkpoint)
    assert card.task == "segmentation"


def test_recipe_validation_metric_is_reported(
    toy: ToyFactory, tmp_path: Path, test_recipes: None
) -> None:
    val = toy(16, 1)
    result = fit(
        _model(),
        toy(16, 0),
        val,
        _cfg(epochs=1, recipe="test-noisy", monitor="val_brightness"),
        tmp_path,
    )
    assert result.history[0]["val_brightness"] == pytest.approx(float(val.images.mean()))


# --------------------------------------------------------------------------- errors


def test_empty_loader(toy: ToyFactory, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"the train loader is empty \(0 batches\)"):
        fit(_model(), toy(0, 0), toy(8, 1), _cfg(), tmp_path)
    with pytest.raises(ValueError, match="the val loader is empty"):
        fit(_model(), toy(8, 0), toy(0, 1), _cfg(), tmp_path)


def test_label_out_of_range(toy: ToyFactory, tmp_path: Path) -> None:
    data = toy(8, 0, num_classes=3)  # labels 0..2 for a 2-class model
    with pytest.raises(
        ValueError, match=r"labels of the train batch 1 of epoch 1 must be in \[0, 1\]"
    ):
        fit(_model(), data, toy(8, 1), _cfg(), tmp_path)


def test_images_outside_bounds(toy: ToyFactory, tmp_path: Path) -> None:
    data = toy(8, 0)
    data.images = data.images * 255
    with pytest.raises(ValueError, match="train batch 1 of epoch 1 have values in"):
        fit(_model(), data, toy(8, 1), _cfg(), tmp_path)


def test_wrong_channels(toy: ToyFactory, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"have 3 channel\(s\) but the model expects 1"):
        fit(_model(), toy(8, 0, channels=3), toy(8, 1), _cfg(), tmp_path)


def test_nan_loss_names_epoch_and_step(toy: ToyFactory, tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        model.net.classifier.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="became nan at epoch 1, step 1"):
        fit(model, toy(8, 0), toy(8, 1), _cfg(), tmp_path)


def test_monitor_must_be_available(toy: ToyFactory, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"monitor 'val_dice' is not available.*'val_auc'"):
        fit(_model(), toy(8, 0), toy(8, 1), _cfg(monitor="val_dice"), tmp_path)
    five = _model(num_classes=5)
    with pytest.raises(ValueError, match="monitor 'val_auc' is not available"):
        fit(five, toy(8, 0), toy(8, 1), _cfg(monitor="val_auc"), tmp_path)


def test_bad_arguments(toy: ToyFactory, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="must be a medrobust ModelAdapter"):
        fit(nn.Linear(2, 2), toy(8, 0), toy(8, 1), _cfg(), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        fit(_model(), toy(8, 0), toy(8, 1), {"epochs": 1}, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"has batch_size 4 but config\.batch_size is 8"):
        fit(_model(), DataLoader(toy(8, 0), batch_size=4), toy(8, 1), _cfg(), tmp_path)
    with pytest.raises(ValueError, match=r"card_info must not set \['metrics'\]"):
        fit(_model(), toy(8, 0), toy(8, 1), _cfg(), tmp_path, card_info={"metrics": {}})
    foreign = ModelAdapter(nn.Sequential(nn.Flatten(), nn.Linear(256, 2)), num_classes=2)
    with pytest.raises(ValueError, match=r"was not built by medrobust\.models\.create_model"):
        fit(foreign, toy(8, 0), toy(8, 1), _cfg(), tmp_path)
    with pytest.raises(TypeError, match="must be a torch DataLoader or Dataset"):
        fit(_model(), [1, 2], toy(8, 1), _cfg(), tmp_path)  # type: ignore[arg-type]
    assert not (tmp_path / "last.pt").exists()


def test_lr_schedules(toy: ToyFactory, tmp_path: Path) -> None:
    cos = fit(_model(), toy(8, 0), toy(8, 1), _cfg(epochs=3, scheduler="cosine"), tmp_path / "c")
    assert [h["lr"] for h in cos.history] == pytest.approx(
        [0.05 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    )
    step = fit(
        _model(),
        toy(8, 0),
        toy(8, 1),
        _cfg(epochs=3, scheduler="multistep", milestones=(2,), gamma=0.5),
        tmp_path / "s",
    )
    assert [h["lr"] for h in step.history] == pytest.approx([0.05, 0.05, 0.025])
