"""The BatchNorm check after training (training/batchnorm.py, training/finish.py) and the
one-class warning (models/diagnostics.py).

The failure is reproduced as it was met on small real sets: a BatchNorm network trained for a
few steps keeps running statistics close to their initial values, so in eval mode it predicts
one class while in train mode (batch statistics) it is right on every training image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from medrobust.models import ModelAdapter, create_model, load_checkpoint
from medrobust.models.diagnostics import single_class_warning
from medrobust.training import TrainConfig, fit
from medrobust.training import batchnorm as bn_module
from medrobust.training.batchnorm import (
    batch_statistics,
    batchnorm_layers,
    check_batchnorm,
    compare_modes,
    recompute_statistics,
)


def _accuracy(model: ModelAdapter, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def _failing_run(toy: Any, tmp_path: Path, **cfg: Any) -> tuple[Any, Any, Any]:
    """One epoch of three steps: eval mode predicts one class (the reproduced failure)."""
    train, val = toy(48, 0, size=16), toy(24, 1, size=16)
    model = create_model("small-cnn", num_classes=2, seed=0, width=8)
    config = TrainConfig(epochs=1, batch_size=16, lr=3e-3, **cfg)
    return fit(model, train, val, config, tmp_path / "run"), train, val


def test_reproduces_the_failure_and_warns_without_recomputing(toy: Any, tmp_path: Path) -> None:
    result, _, val = _failing_run(toy, tmp_path, batchnorm_check="warn")
    best, card = load_checkpoint(result.best_checkpoint)
    assert _accuracy(best, val.images, val.labels) == pytest.approx(0.5)  # all class 0
    record = card.training.batchnorm
    assert record is not None and record["failed"] and not record["recomputed"]
    assert record["train_mode"] == pytest.approx(1.0)
    assert record["eval_mode"] == pytest.approx(0.5)
    assert record["eval_classes"] == [0] and record["train_classes"] == [0, 1]
    assert result.batchnorm == record
    assert len(result.warnings) == 2
    assert "disagree" in result.warnings[0] and "recompute" in result.warnings[0]
    one_class = result.warnings[1]
    assert "predicts class 0 for all 24 validation samples" in one_class
    assert "--class-weights balanced" in one_class
    assert "running statistics disagree" in (result.run_dir / "model_card.md").read_text()


def test_recomputes_the_statistics_and_fixes_best_pt(toy: Any, tmp_path: Path) -> None:
    result, train, val = _failing_run(toy, tmp_path)  # batchnorm_check="recompute" (default)
    best, card = load_checkpoint(result.best_checkpoint)
    assert _accuracy(best, val.images, val.labels) > 0.9
    assert _accuracy(best, train.images, train.labels) > 0.9
    record = card.training.batchnorm
    assert record["failed"] and record["recomputed"] and record["kept"]
    assert record["recompute_samples"] == 48
    assert record["eval_mode_after"] > 0.9 and record["eval_classes_after"] == [0, 1]
    # the card's validation metrics are those of the saved weights; the old ones are kept
    assert card.metrics["val_accuracy"] > 0.9
    assert record["val_before"]["val_accuracy"] == pytest.approx(0.5)
    assert result.history[0]["val_accuracy"] == pytest.approx(0.5)  # what training saw
    assert (
        len(result.warnings) == 1 and "recomputed over 48 training samples" in (result.warnings[0])
    )
    md = (result.run_dir / "model_card.md").read_text()
    assert "running statistics recomputed" in md
    # a resumed, finished run does not check again: the record stays
    again = fit(
        create_model("small-cnn", num_classes=2, seed=0, width=8),
        train,
        val,
        TrainConfig(epochs=1, batch_size=16, lr=3e-3),
        result.run_dir,
        resume=True,
    )
    assert load_checkpoint(again.best_checkpoint)[1].training.batchnorm == record


def test_off_leaves_best_pt_alone(toy: Any, tmp_path: Path) -> None:
    result, _, val = _failing_run(toy, tmp_path, batchnorm_check="off")
    best, card = load_checkpoint(result.best_checkpoint)
    assert card.training.batchnorm is None and result.batchnorm is None
    assert "batchnorm" not in card.to_dict()["training"]
    assert _accuracy(best, val.images, val.labels) == pytest.approx(0.5)
    assert any("predicts class 0" in w for w in result.warnings)  # still warned


def test_a_passing_check_is_recorded_without_a_warning(toy: Any, tmp_path: Path) -> None:
    train, val = toy(48, 0, size=16), toy(24, 1, size=16)
    model = create_model("small-cnn", num_classes=2, seed=0, width=8)
    result = fit(model, train, val, TrainConfig(epochs=3, batch_size=16, lr=1e-2), tmp_path)
    record = result.batchnorm
    assert record is not None and not record["failed"] and not record["recomputed"]
    assert record["eval_mode"] >= record["train_mode"] - 0.1
    assert result.warnings == ()


def _bn_net() -> ModelAdapter:
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    return ModelAdapter(net, num_classes=2, in_channels=2)


def _batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[dict[str, torch.Tensor]]:
    return [{"image": x[i : i + size], "label": y[i : i + size]} for i in range(0, len(x), size)]


def test_recompute_is_a_cumulative_average_over_the_pass() -> None:
    model = _bn_net()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 2, 4, 4, generator=g) * torch.tensor([1.0, 3.0]).reshape(1, 2, 1, 1)
    y = torch.zeros(12, dtype=torch.long)
    model.train()
    n = recompute_statistics(model, _batches(x, y, 4))
    assert n == 12
    layer = batchnorm_layers(model)[0]
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in x.split(4)])
    varis = torch.stack([b.transpose(0, 1).reshape(2, -1).var(dim=1) for b in x.split(4)])
    torch.testing.assert_close(layer.running_mean, means.mean(0))
    torch.testing.assert_close(layer.running_var, varis.mean(0))
    assert layer.momentum == 0.1 and int(layer.num_batches_tracked) == 3
    assert model.training and layer.training  # modes restored


def test_batch_statistics_without_keep_changes_nothing() -> None:
    model = _bn_net()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with batch_statistics(model, keep=False) as layers:
        assert layers[0].training and not model.training
        model(torch.rand(4, 2, 4, 4) + 5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(m.training for m in model.modules())


def test_recomputed_statistics_that_score_lower_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _bn_net()
    with torch.no_grad():  # class 1 when channel 0 is brighter than the batch mean
        linear = model.net[2]
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[0, :16] = -1.0
        linear.weight[1, :16] = 1.0
    y = torch.cat([torch.zeros(10), torch.ones(6)]).long()
    x = torch.rand(16, 2, 4, 4) * 0.1 + y.float().reshape(-1, 1, 1, 1)
    layer = batchnorm_layers(model)[0]
    with torch.no_grad():  # running mean far above the data: eval mode says class 0
        layer.running_mean.fill_(100.0)
    saved = layer.running_mean.clone()

    def sabotage(m: nn.Module, batches: Any) -> int:
        with torch.no_grad():  # now far below: class 1 everywhere, 6 of 16 right
            layer.running_mean.fill_(-100.0)
        return 16

    monkeypatch.setattr(bn_module, "recompute_statistics", sabotage)
    batches = _batches(x, y, 16)
    out = check_batchnorm(model, lambda: batches, lambda: batches)
    assert out is not None and out.failed and out.recomputed and not out.kept
    assert out.train_mode == 1.0 and out.eval_mode == pytest.approx(10 / 16)
    assert out.eval_mode_after == pytest.approx(6 / 16)
    assert torch.equal(layer.running_mean, saved)
    assert "did not help" in out.message()


def test_a_model_without_batchnorm_is_not_checked() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    model = ModelAdapter(net, num_classes=2)
    batch = [{"image": torch.rand(4, 1, 4, 4), "label": torch.tensor([0, 1, 0, 1])}]
    assert check_batchnorm(model, lambda: batch, lambda: batch) is None


def test_segmentation_compares_dice() -> None:
    model = create_model("unet", num_classes=2, seed=0, norm="batch", channels=(4, 8), strides=(2,))
    x = torch.rand(4, 1, 16, 16)
    mask = (x[:, 0] > 0.5).long()
    check = compare_modes(model, lambda: [{"image": x, "mask": mask}])
    assert check.metric == "dice" and check.samples == 4
    assert check.eval_classes == [] and 0.0 <= check.train_mode <= 1.0


def test_single_class_warning() -> None:
    msg = single_class_warning(
        torch.tensor([1, 1, 1]),
        torch.tensor([0, 1, 1]),
        where="test samples",
        class_names=["benign", "malignant"],
    )
    assert msg is not None and "class 1 ('malignant') for all 3 test samples" in msg
    assert "BatchNorm" in msg and "class weights" in msg.replace("--class-weights", "class weights")
    assert single_class_warning(torch.tensor([0, 1]), torch.tensor([0, 1]), where="x") is None
    # one class in the labels too: nothing to say
    assert single_class_warning(torch.tensor([1, 1]), torch.tensor([1, 1]), where="x") is None
    assert single_class_warning(torch.tensor([1]), None, where="x") is None
    with pytest.raises(ValueError, match="pred has 2 entries but labels has 3"):
        single_class_warning(torch.tensor([1, 1]), torch.tensor([0, 1, 1]), where="x")
