"""The detection task of the audit loop: a classifier guarded by a detector, as one system.

The adversary wins on a sample when the classifier gets it wrong *and* the detector does not
flag it. A sample is eligible when the classifier gets it right on clean data; an attack breaks
it when its adversarial example is misclassified and unflagged. The attack list may mix attacks
that ignore the detector (``fgsm``, ``pgd``, ...: a detector evaluated only against them is not
evaluated) with the adaptive ``pgd-adaptive``, which knows it; the worst case per sample is
"any attack of the list fooled the system" (the detection missed).

References:
    Li, Pan & Zhu, arXiv:2006.13555, 2020 (the system risk of classification vs detection);
    Carlini & Wagner, AISec 2017 (adaptive attacks on detectors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from medrobust._utils.format import fmt_eps
from medrobust.attacks.engine import Attack
from medrobust.attacks.presets import ATTACKS, create_attack
from medrobust.attacks.result import AttackResult
from medrobust.detectors.base import Detector, NotFittedError
from medrobust.evaluation.false_alarms import false_alarm_check, false_alarms
from medrobust.evaluation.records import Records, rate_with_ci
from medrobust.evaluation.tasks.base import AttackOutcome, Batch, CleanOutcome
from medrobust.evaluation.tasks.classification import ClassificationTask
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm

if TYPE_CHECKING:
    from medrobust.evaluation.audit import AttackSpec, AuditContext

__all__ = ["DetectionTask"]


class DetectionTask(ClassificationTask):
    """Attacks on a classifier guarded by ``detector`` (see the module docstring).

    Args:
        detector: A detector fitted for the audited model.

    Raises:
        NotFittedError: If the detector is not fitted.
    """

    name = "detection"
    attack_task = "detection"
    eligible_noun = "correctly classified samples"

    def __init__(self, detector: Detector) -> None:
        if not detector.fitted:
            raise NotFittedError(
                f"detector {detector.name!r} is not fitted: fit it on clean images of this "
                "model first"
            )
        self.detector = detector

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "detector": self.detector.describe()}

    def applicable(self, specs: Sequence[AttackSpec]) -> None:
        """Classification attacks (which ignore the detector) and detection attacks (which
        know it) both apply.

        Raises:
            ValueError: For an attack of another task.
        """
        for spec in specs:
            tags = ATTACKS.get(spec.name).tags
            if "classification" not in tags and "detection" not in tags:
                raise ValueError(
                    f"attack {spec.name!r} is not a classification or detection attack; a "
                    "detection audit runs both (medrobust list attacks)"
                )

    def clean(self, adapter: ModelAdapter, batch: Batch) -> CleanOutcome:
        out = super().clean(adapter, batch)
        out.record["flagged"] = self.detector.predict(batch.x).cpu()
        return out

    def build_attack(
        self, spec: AttackSpec, eps: float, norm: Norm, seed: int, adapter: ModelAdapter
    ) -> Attack:
        if self.detector.model is not adapter:
            raise ValueError(
                "the detector was fitted for another model object; fit (or load) it for this model"
            )
        extra: dict[str, Any] = {}
        if "detection" in ATTACKS.get(spec.name).tags:
            extra["detector"] = self.detector
        return create_attack(
            spec.name, eps=eps, norm=norm.value, seed=seed, **extra, **dict(spec.params)
        )

    def _system(self, adapter: ModelAdapter, batch: Batch, x_adv: torch.Tensor) -> Any:
        with torch.no_grad():
            wrong = adapter(x_adv).argmax(dim=1) != batch.target
        flagged = self.detector.predict(x_adv).to(wrong.device)
        return wrong, flagged

    def outcome(self, adapter: ModelAdapter, batch: Batch, result: AttackResult) -> AttackOutcome:
        wrong, flagged = self._system(adapter, batch, result.x_adv)
        broken = wrong & ~flagged
        extra = {"misclassified": wrong.double().cpu(), "flagged": flagged.double().cpu()}
        return AttackOutcome((~broken).double(), broken, extra)

    def noise_broken(
        self, adapter: ModelAdapter, batch: Batch, x_noisy: torch.Tensor
    ) -> torch.Tensor:
        wrong, flagged = self._system(adapter, batch, x_noisy)
        return wrong & ~flagged

    def probe_broken(self, adapter: ModelAdapter, batch: Batch, result: AttackResult) -> Any:
        """MR101 probes the classifier's gradients: misclassified is enough (a detector may
        rightly flag an input moved across the whole input range)."""
        return self._system(adapter, batch, result.x_adv)[0]

    def gradient_loss(self, adapter: ModelAdapter, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(adapter(x), batch.target, reduction="sum")

    def extra_checks(self, ctx: AuditContext, records: Records) -> list[dict[str, Any]]:
        """MR107 (clean accuracy above chance) and MR201 (the clean false-alarm rate measured
        on the audited samples agrees with the detector's nominal rate)."""
        alarms = false_alarms(records.clean["flagged"].bool(), self.detector.fpr)
        who = f"detector {self.detector.name!r}"
        return [*super().extra_checks(ctx, records), false_alarm_check(alarms, who)]

    def summarise(self, ctx: AuditContext, records: Records) -> dict[str, Any]:
        """``clean`` (accuracy, measured and nominal false-alarm rate), ``false_alarms``,
        ``detection_results`` per attack and budget and ``system_risk`` per budget (at the
        measured false-alarm rate) of ``metrics.json``."""
        correct = records.correct
        flagged = records.clean["flagged"].bool()
        n = records.n
        alarms = false_alarms(flagged, self.detector.fpr)
        clean = {
            "n": n,
            "accuracy": float(correct.double().mean()),
            "false_alarm_rate": float(flagged.double().mean()),
            "false_alarm_ci95": alarms["ci95"],
            "nominal_false_alarm_rate": alarms["nominal"],
            "clean_risk": float((~correct & ~flagged).double().mean()),
        }
        return {
            "clean": clean,
            "false_alarms": alarms,
            "detection_results": [
                _row(ctx, records, a_i, e_i)
                for a_i in range(len(ctx.specs))
                for e_i in range(len(ctx.budgets))
            ],
            "system_risk": [_risk(ctx, records, e_i) for e_i in range(len(ctx.budgets))],
        }


def _row(ctx: AuditContext, records: Records, a_i: int, e_i: int) -> dict[str, Any]:
    cell = records.cells[a_i][e_i]
    keep = cell.attacked & records.eligible
    wrong = cell.extra.get("misclassified", torch.zeros(records.n)).nan_to_num(0) > 0
    flagged = cell.extra.get("flagged", torch.zeros(records.n)).nan_to_num(0) > 0
    n_wrong = int((wrong & keep).sum())
    detected, _ = rate_with_ci(int((wrong & flagged & keep).sum()), n_wrong)
    robust, ci = rate_with_ci(int((records.eligible & ~cell.broken).sum()), records.n)
    spec = ctx.specs[a_i]
    return {
        "attack": spec.name,
        "adaptive": "detection" in ATTACKS.get(spec.name).tags,
        "eps": ctx.budgets[e_i],
        "eps_display": fmt_eps(ctx.budgets[e_i]),
        "n_attacked": int(keep.sum()),
        "n_misclassified": n_wrong,
        "detection_rate": detected,
        "n_broken": int((cell.broken & keep).sum()),
        "system_robust_accuracy": robust,
        "ci95": ci,
    }


def _risk(ctx: AuditContext, records: Records, e_i: int) -> dict[str, Any]:
    """System and classifier-only risk at one budget, worst case per sample over the list."""
    correct = records.correct
    flagged = records.clean["flagged"].bool()
    wrong_any = torch.zeros(records.n, dtype=torch.bool)
    for row in records.cells:
        wrong_any |= row[e_i].extra.get("misclassified", torch.zeros(records.n)).nan_to_num(0) > 0
    system = (~correct & ~flagged) | (records.broken_any(e_i) & records.eligible)
    system_risk, ci = rate_with_ci(int(system.sum()), records.n)
    wrong = ~correct | (wrong_any & records.eligible)
    classifier_risk, _ = rate_with_ci(int(wrong.sum()), records.n)
    by = records.worst_broken_by[e_i]
    return {
        "eps": ctx.budgets[e_i],
        "eps_display": fmt_eps(ctx.budgets[e_i]),
        "system_risk": system_risk,
        "ci95": ci,
        "classifier_risk": classifier_risk,
        "false_alarm_rate": float(flagged.double().mean()),
        "broken_by": {s.name: int((by == a_i).sum()) for a_i, s in enumerate(ctx.specs)},
    }
