"""The detection task on the audit loop: classifier + detector as one system."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrobust.detectors import create_detector
from medrobust.evaluation import evaluate_detector
from medrobust.models import ModelAdapter, create_model


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    c = torch.rand(n, 2, generator=g) * 6 + 3
    blob = torch.exp(-((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) / 8)
    return (0.2 + 0.6 * blob).clamp(0, 1)[:, None]


@pytest.fixture(scope="module")
def system() -> tuple[ModelAdapter, object, list[tuple[torch.Tensor, torch.Tensor]]]:
    model = create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0).eval()
    det = create_detector("uad", fpr=0.1).fit(model, _images(96, 0), calibration=_images(40, 1))
    x = _images(16, 2)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every sample correct on clean data
    return model, det, [(x[:8], y[:8]), (x[8:], y[8:])]


SETTINGS = {
    "attacks": ["fgsm", {"name": "pgd-adaptive", "steps": 3}],
    "eps": [2 / 255, 16 / 255],
    "probe_samples": 2,
}


def test_system_risk_is_the_worst_case_over_the_list(system) -> None:  # type: ignore[no-untyped-def]
    model, det, data = system
    res = evaluate_detector(model, det, data, **SETTINGS)
    m, rec = res.metrics, res.records
    assert m["task"] == "detection"
    flagged = rec.clean["flagged"].bool()
    for e_i, row in enumerate(m["system_risk"]):
        fooled = torch.zeros(rec.n, dtype=torch.bool)
        for cells in rec.cells:
            # broken means misclassified and not flagged, per attack
            cell = cells[e_i]
            wrong = cell.extra["misclassified"].nan_to_num(0) > 0
            flag = cell.extra["flagged"].nan_to_num(0) > 0
            assert torch.equal(cell.broken & cell.attacked, wrong & ~flag & cell.attacked)
            fooled |= cell.broken
        expected = ((~rec.correct & ~flagged) | fooled).double().mean()
        assert row["system_risk"] == pytest.approx(float(expected))
        assert row["classifier_risk"] >= row["system_risk"]
    risks = [r["system_risk"] for r in m["system_risk"]]
    assert risks == sorted(risks)  # never better with a larger budget
    codes = {c["code"] for c in m["checks"]}
    assert {"MR101", "MR102", "MR104", "MR105", "MR106", "MR107", "MR201"} <= codes
    alarms = m["false_alarms"]
    assert alarms["nominal"] == 0.1 and alarms["n"] == 16
    assert alarms["measured"] == pytest.approx(float(flagged.double().mean()))
    assert m["clean"]["false_alarm_ci95"] == alarms["ci95"]
    assert m["clean"]["nominal_false_alarm_rate"] == 0.1


def test_detection_audit_resumes(system, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, det, data = system
    whole = evaluate_detector(model, det, data, **SETTINGS).metrics
    ckpt = tmp_path / "state.pt"

    def dying():  # type: ignore[no-untyped-def]
        yield data[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_detector(model, det, dying(), checkpoint=ckpt, **SETTINGS)
    resumed = evaluate_detector(model, det, data, checkpoint=ckpt, **SETTINGS).metrics
    for key in ("system_risk", "detection_results", "clean", "checks"):
        assert resumed[key] == whole[key]


def test_refuses_other_tasks_and_unfitted_detectors(system) -> None:  # type: ignore[no-untyped-def]
    model, det, data = system
    with pytest.raises(ValueError, match="not a classification or detection attack"):
        evaluate_detector(model, det, data, attacks=["pgd-seg"])
    with pytest.raises(Exception, match="not fitted"):
        evaluate_detector(model, create_detector("uad"), data)
    other = create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=1).eval()
    with pytest.raises(ValueError, match="another model"):
        evaluate_detector(other, det, data)
