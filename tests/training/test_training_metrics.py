"""The validation metrics the training loop reports, against reference implementations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medrobust.metrics import classification_metrics, dice_per_sample


def test_classification_metrics_against_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 2, generator=g)
    labels = torch.randint(0, 2, (40,), generator=g)
    out = classification_metrics(logits, labels)
    pred = logits.argmax(1).numpy()
    probs = torch.softmax(logits, 1)[:, 1].numpy()
    assert out["accuracy"] == pytest.approx(metrics.accuracy_score(labels, pred))
    assert out["auc"] == pytest.approx(metrics.roc_auc_score(labels, probs))
    assert out["sensitivity"] == pytest.approx(metrics.recall_score(labels, pred))
    assert out["specificity"] == pytest.approx(metrics.recall_score(1 - labels, 1 - pred))
    assert out["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)))
    multi = classification_metrics(torch.randn(10, 4, generator=g), torch.arange(10) % 4)
    assert "auc" not in multi and "balanced_accuracy" in multi


def test_dice_against_monai() -> None:
    from monai.metrics import DiceMetric

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 6, 6, generator=g)
    mask = torch.randint(0, 3, (4, 6, 6), generator=g)
    mask[3] = 0  # no foreground: undefined
    ours = dice_per_sample(logits, mask)
    pred = F.one_hot(logits.argmax(1), 3).permute(0, 3, 1, 2)
    ref = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(
        pred, F.one_hot(mask, 3).permute(0, 3, 1, 2)
    )
    want = ref.nanmean(dim=1)
    assert torch.allclose(ours[:3].float(), want[:3].float(), atol=1e-6)
    assert torch.isnan(ours[3])
