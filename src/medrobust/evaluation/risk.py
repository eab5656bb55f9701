"""Adversarial risk of a classifier guarded by a detector, and detection metrics.

The system is a classifier ``f`` plus a detector ``D`` that flags inputs (``D(x) = 1``). At each
budget ``eps``:

* **classifier-only risk** ``P[f(x') != y]``: one minus the worst-case robust accuracy of the
  audit (:func:`medrobust.evaluation.evaluate`), clean errors included;
* **system risk** ``P[f(x') != y and D(x') = 0]``: the adversary wins only if the input is
  misclassified *and* not flagged. It is estimated twice: against the audit's own worst-case
  adversarial examples, which ignore the detector (*non-adaptive*), and, per sample, the worst
  case of those and of the adaptive attacks (``pgd-adaptive``, ``orthogonal-pgd``,
  ``feature-matching``), which know the detector (*adaptive*). A detector evaluated only
  against attacks that ignore it is not evaluated; the report shows both;
* **false-alarm rate** ``P[D(x) = 1]`` on clean inputs, the clean-side cost of the detector,
  *measured* on the clean test inputs with its Wilson 95% interval beside the *nominal* rate the
  threshold was calibrated for (:mod:`~medrobust.evaluation.false_alarms`; check MR201 warns when
  they disagree). Every risk is computed at the detector's real threshold on the test inputs,
  i.e. at the measured rate;
* **pair risk** ``P[f(x) != y or D(x) = 1 or f(x') != y and D(x') = 0]``: the system risk with
  every clean input that is misclassified or flagged counted as an error too (a false alarm is
  an input the system does not classify), non-adaptive and adaptive. It is Tramer's robust risk
  of a detector; for a classifier without detector it equals the classifier-only risk, so it
  puts "retrain" and "detect" on one scale. Check MR202
  (:mod:`~medrobust.evaluation.plausibility`) compares ``1 - pair risk`` at ``eps`` with the
  robust accuracy at ``eps / 2`` of reference classifiers.

A sample that is misclassified and unflagged at a budget stays so at every larger budget (its
input lies in the larger ball too), so the risks are non-decreasing in ``eps``.

Detection metrics per attack and budget compare the detector's scores of the successful
adversarial examples (positives) with those of all clean test images (negatives): the AUROC,
the TPR at 5% FPR (read off the ROC of these clean scores) and the detection rate at the
detector's own calibrated threshold.

This module computes the numbers only; :meth:`RiskAssessment.to_metrics` gives the rows that
:func:`medrobust.reporting.sections.risk.risk_sections` turns into report sections and figures.

References:
    Li, Pan & Zhu, arXiv:2006.13555, 2020 (system risk of classification vs detection);
    Carlini & Wagner, AISec 2017 (adaptive attacks on detectors).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from medrobust._utils.format import fmt_eps
from medrobust.attacks.engine import eval_mode
from medrobust.detectors.base import Detector, NotFittedError
from medrobust.evaluation.api import EvaluationResult
from medrobust.evaluation.audit import AttackSpec, model_device
from medrobust.evaluation.false_alarms import false_alarm_check, false_alarms
from medrobust.evaluation.plausibility import (
    ReferenceClassifier,
    plausibility,
    plausibility_check,
)
from medrobust.evaluation.tasks.base import read_pair
from medrobust.metrics import roc_auc
from medrobust.models.adapter import ModelAdapter

__all__ = [
    "RiskAssessment",
    "adaptive_specs",
    "assess_detector",
    "detection_metrics",
    "tpr_at_fpr",
]

logger = logging.getLogger(__name__)


def _check_scores(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 1 or not t.is_floating_point():
        raise ValueError(f"{name} must be a floating (N,) tensor, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contain NaN or infinite values")
    return t.detach().double().cpu()


def tpr_at_fpr(clean_scores: torch.Tensor, adv_scores: torch.Tensor, fpr: float = 0.05) -> float:
    """True-positive rate at a false-positive rate: the best TPR over thresholds whose FPR on
    ``clean_scores`` is at most ``fpr`` (an input is flagged when its score exceeds the
    threshold).

    Args:
        clean_scores: Scores of clean inputs (negatives).
        adv_scores: Scores of adversarial inputs (positives).
        fpr: Allowed false-positive rate in ``[0, 1)``.

    Returns:
        The TPR in ``[0, 1]``; ``nan`` when either set is empty.

    Raises:
        TypeError, ValueError: For non-tensors, wrong shapes, non-finite scores or ``fpr``
            outside ``[0, 1)``.

    Shape:
        - clean_scores: ``(N,)``; adv_scores: ``(M,)``.

    References:
        Ma et al., ICLR 2018; Lee et al., NeurIPS 2018 (TPR at a fixed FPR).
    """
    c = _check_scores("clean_scores", clean_scores)
    a = _check_scores("adv_scores", adv_scores)
    if not (isinstance(fpr, (int, float)) and 0.0 <= float(fpr) < 1.0):
        raise ValueError(f"fpr must be in [0, 1), got {fpr!r}")
    if c.numel() == 0 or a.numel() == 0:
        return math.nan
    desc = torch.sort(c, descending=True).values
    allowed = math.floor(float(fpr) * c.numel() + 1e-9)
    threshold = desc[allowed] if allowed < desc.numel() else desc[-1] - 1.0
    # ties at the threshold are not flagged (strict >), so the FPR stays <= fpr
    return float((a > threshold).double().mean())


def detection_metrics(
    clean_scores: torch.Tensor,
    adv_scores: torch.Tensor,
    threshold: float,
    fpr: float = 0.05,
) -> dict[str, float | int | None]:
    """AUROC, TPR at ``fpr`` and the rates at the detector's threshold.

    Args:
        clean_scores: Scores of clean inputs (negatives).
        adv_scores: Scores of adversarial inputs (positives).
        threshold: The detector's threshold (flagged when the score exceeds it).
        fpr: FPR at which the TPR is read off the ROC.

    Returns:
        ``{"auroc", "tpr_at_fpr", "detection_rate", "false_alarm_rate", "n_clean",
        "n_adversarial"}``; undefined values are None.

    Shape:
        - clean_scores: ``(N,)``; adv_scores: ``(M,)``.

    References:
        Hanley & McNeil, Radiology 1982 (AUROC).
    """
    c = _check_scores("clean_scores", clean_scores)
    a = _check_scores("adv_scores", adv_scores)
    out: dict[str, float | int | None] = {
        "auroc": None,
        "tpr_at_fpr": None,
        "detection_rate": None,
        "false_alarm_rate": float((c > threshold).double().mean()) if c.numel() else None,
        "n_clean": int(c.numel()),
        "n_adversarial": int(a.numel()),
    }
    if c.numel() and a.numel():
        scores = torch.cat([c, a])
        target = torch.cat([torch.zeros(c.numel()), torch.ones(a.numel())]).long()
        out["auroc"] = roc_auc(scores, target)
        out["tpr_at_fpr"] = tpr_at_fpr(c, a, fpr)
    if a.numel():
        out["detection_rate"] = float((a > threshold).double().mean())
    return out


@dataclass
class RiskAssessment:
    """What :func:`assess_detector` returns.

    Attributes:
        detector: The detector's description (name, parameters, threshold, fit sizes).
        risk: One row per budget: ``eps``, ``eps_display``, ``classifier_risk``,
            ``system_risk`` (non-adaptive), ``system_risk_adaptive``, ``false_alarm_rate``
            (measured on the clean test inputs), ``false_alarm_ci95``,
            ``nominal_false_alarm_rate``, ``clean_error``, ``n``, ``pair_risk``,
            ``pair_risk_adaptive`` (None without adaptive attacks) and, with adaptive attacks,
            ``system_risk_by_attack``.
        detection: One row per attack and budget (``worst-case`` rows use the audit's
            worst-case examples, ``pgd-adaptive`` rows the adaptive attack's misclassified
            examples): ``attack``, ``eps``, ``eps_display``, ``auroc``, ``tpr_at_fpr``,
            ``detection_rate``, ``false_alarm_rate``, ``n_clean``, ``n_adversarial``,
            ``adaptive``.
        fpr: The FPR at which ``tpr_at_fpr`` is read.
        timing: Seconds spent (``detection_s``, ``adaptive_s``).
        false_alarms: The measured clean false-alarm rate beside the nominal one
            (:func:`~medrobust.evaluation.false_alarms.false_alarms`).
        checks: Check rows (MR201, MR202).
        plausibility: Tramer's comparison per budget
            (:func:`~medrobust.evaluation.plausibility.plausibility`).
    """

    detector: dict[str, Any]
    risk: list[dict[str, Any]]
    detection: list[dict[str, Any]]
    fpr: float = 0.05
    timing: dict[str, float] = field(default_factory=dict)
    false_alarms: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    plausibility: list[dict[str, Any]] = field(default_factory=list)

    def to_metrics(self) -> dict[str, Any]:
        """The ``detection`` (detector description, FPR of the TPR column, measured and nominal
        false alarms, per-attack rows), ``risk`` and ``plausibility`` entries for
        ``metrics.json``."""
        return {
            "detection": {
                "detector": dict(self.detector),
                "fpr": self.fpr,
                "false_alarms": dict(self.false_alarms),
                "results": [dict(r) for r in self.detection],
            },
            "risk": [dict(r) for r in self.risk],
            "plausibility": [dict(r) for r in self.plausibility],
        }

    def merge_into(self, metrics: dict[str, Any]) -> None:
        """Add :meth:`to_metrics` to an audit's ``metrics`` and append the checks to its
        ``checks`` list (the audit's own checks are kept)."""
        metrics.update(self.to_metrics())
        metrics["checks"] = [*metrics.get("checks", []), *self.checks]


# ------------------------------------------------------------------------------- assessment
def _batches(loader: Iterable[Any]) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` of each batch, read by the one batch reader of the audits."""
    for batch in loader:
        x, y, _ = read_pair(batch, "label")
        yield x, torch.as_tensor(y)


def _run_attack(
    attack: Any, model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, succ, preds = [], [], []
    for i in range(0, x.shape[0], batch_size):
        res = attack(model, x[i : i + batch_size], y[i : i + batch_size])
        xs.append(res.x_adv)
        succ.append(res.success)
        preds.append(res.pred_adv)
    return torch.cat(xs), torch.cat(succ), torch.cat(preds)


@dataclass
class _Guarded:
    """Everything the per-budget steps of :func:`assess_detector` share (one audited set)."""

    model: ModelAdapter
    detector: Detector
    x: torch.Tensor
    y: torch.Tensor
    clean_scores: torch.Tensor
    clean_wrong: torch.Tensor
    threshold: float
    false_alarms: dict[str, Any]
    fpr: float
    norm: str
    seed: int
    batch_size: int
    suite: list[AttackSpec]
    adaptive: list[tuple[str, dict[str, Any]]]
    say: Callable[[str], None]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def row(
        self, attack: str, eps: float, adv_scores: torch.Tensor, adaptive: bool
    ) -> dict[str, Any]:
        """One detection row: the adversarial scores against all clean scores."""
        return {
            "attack": attack,
            "eps": eps,
            "eps_display": fmt_eps(eps),
            "adaptive": adaptive,
            **detection_metrics(self.clean_scores, adv_scores, self.threshold, self.fpr),
        }


@dataclass
class _Failures:
    """Samples misclassified and unflagged so far (risks never decrease with the budget)."""

    fail: torch.Tensor
    adaptive: torch.Tensor
    clean_failed: torch.Tensor
    adaptive_s: float = 0.0
    by_attack: dict[str, torch.Tensor] = field(default_factory=dict)


def _check_pair(model: ModelAdapter, detector: Detector) -> None:
    if not detector.fitted:
        raise NotFittedError(
            f"detector {detector.name!r} is not fitted: fit it on clean images of this model first"
        )
    if detector.model is not model:
        raise ValueError(
            "the detector was fitted for another model object; fit (or load) it for this model"
        )


def _gather(
    loader: Iterable[Any], evaluation: EvaluationResult, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluated samples ``(N, C, *spatial)`` and labels ``(N,)``, checked against the audit."""
    records = evaluation.records
    n = records.n
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for x, y in _batches(loader):
        room = n - sum(t.shape[0] for t in xs)
        if room <= 0:
            break
        xs.append(x[:room].float())
        ys.append(y[:room].long().reshape(-1))
    x_all = torch.cat(xs).to(dev) if xs else torch.empty(0)
    y_all = torch.cat(ys).to(dev) if ys else torch.empty(0, dtype=torch.long)
    if x_all.shape[0] != n:
        raise ValueError(
            f"the loader gives {x_all.shape[0]} samples but the evaluation recorded {n}: pass "
            "the loader that was evaluated"
        )
    if not torch.equal(y_all.cpu(), records.labels.cpu()):
        raise ValueError(
            "the loader's labels differ from those the evaluation recorded: pass the loader that "
            "was evaluated, in the same order (no shuffling)"
        )
    return x_all, y_all


def _clean_side(
    model: ModelAdapter, detector: Detector, x: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector scores and predicted classes of the clean samples (on the CPU)."""
    n = x.shape[0]
    with eval_mode(model):
        clean_scores = detector.score(x).cpu()
        with torch.no_grad():
            clean_pred = torch.cat(
                [model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, n, batch_size)]
            ).cpu()
    return clean_scores, clean_pred


def _worst_case(
    g: _Guarded, evaluation: EvaluationResult, e_i: int, eps: float, fail_prev: torch.Tensor
) -> tuple[dict[str, Any], torch.Tensor]:
    """The detection row of the audit's worst-case examples at budget ``eps`` and the samples
    misclassified and unflagged (non-adaptive) at this budget."""
    key = fmt_eps(eps)
    stored = evaluation.adversarial.get(key, {})
    broken = (evaluation.records.worst_broken_by[e_i] >= 0) & ~g.clean_wrong
    idx = stored.get("index", torch.empty(0, dtype=torch.long)).long()
    if idx.numel() < int(broken.sum()):
        raise ValueError(
            f"the evaluation kept {idx.numel()} worst-case adversarial examples at "
            f"eps={key} but {int(broken.sum())} samples were broken: run evaluate(..., "
            f"keep_adversarial={evaluation.records.n}) so that every adversarial example is "
            "available"
        )
    fail = fail_prev.clone()
    adv_scores = torch.empty(0)
    if idx.numel():
        adv_scores = g.detector.score(stored["x_adv"].to(g.device)).cpu()
        fail[idx] |= ~(adv_scores > g.threshold)
    return g.row("worst-case", eps, adv_scores, False), fail


def _suite_row(g: _Guarded, spec: Any, eps: float) -> dict[str, Any]:
    """The detection row of one suite attack re-run on the clean-correct samples."""
    from medrobust.attacks.presets import create_attack

    attack = create_attack(spec.name, eps=eps, norm=g.norm, seed=g.seed, **dict(spec.params))
    correct = (~g.clean_wrong).nonzero().flatten().to(g.device)
    adv_scores = torch.empty(0)
    if correct.numel():
        xa, ok, _ = _run_attack(attack, g.model, g.x[correct], g.y[correct], g.batch_size)
        ok = ok.cpu()
        if bool(ok.any()):
            adv_scores = g.detector.score(xa[ok.to(xa.device)]).cpu()
    return g.row(spec.name, eps, adv_scores, False)


def _adaptive(
    g: _Guarded, eps: float, name: str, params: Mapping[str, Any]
) -> tuple[dict[str, Any], torch.Tensor]:
    """Adaptive attack ``name`` at ``eps`` on every sample: its detection row (the newly
    misclassified examples) and which samples it fooled, classifier and detector both."""
    from medrobust.attacks.presets import create_attack

    attack = create_attack(
        name, detector=g.detector, eps=eps, norm=g.norm, seed=g.seed, **dict(params)
    )
    xa, ok, pred = _run_attack(attack, g.model, g.x, g.y, g.batch_size)
    wrong = (pred.cpu() != g.y.cpu()) & ~g.clean_wrong
    adv_scores = (
        g.detector.score(xa[wrong.to(xa.device)]).cpu() if bool(wrong.any()) else torch.empty(0)
    )
    return g.row(name, eps, adv_scores, True), ok.cpu()


def adaptive_specs(
    attacks: Sequence[str | Mapping[str, Any]], common: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """The adaptive attacks to run, each with the ``common`` settings it accepts (``steps``
    for all, ``weight`` for those that take it) under its own.

    Raises:
        ValueError: For an attack that is not a detection attack, or a common setting no
            attack of the list takes.
    """
    from medrobust.attacks.presets import ATTACKS

    out, used = [], set()
    for spec in (AttackSpec.parse(a) for a in attacks):
        entry = ATTACKS.get(spec.name)
        if "detection" not in entry.tags:
            raise ValueError(
                f"adaptive attacks must know the detector (task 'detection'), got {spec.name!r}"
            )
        accepted = set(inspect.signature(entry.factory).parameters)
        mine = {k: v for k, v in common.items() if k in accepted}
        used |= set(mine)
        out.append((spec.name, {**mine, **dict(spec.params)}))
    unused = sorted(set(common) - used)
    if out and unused:
        raise ValueError(f"no adaptive attack of {[n for n, _ in out]} takes {unused}")
    return out


def _budget(
    g: _Guarded, evaluation: EvaluationResult, e_i: int, eps: float, failures: _Failures
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The risk row and the detection rows of one budget; updates ``failures``."""
    worst, failures.fail = _worst_case(g, evaluation, e_i, eps, failures.fail)
    detection = [worst]
    for spec in g.suite:
        g.say(f"detection: {spec.name} at eps={fmt_eps(eps)}")
        detection.append(_suite_row(g, spec, eps))
    row: dict[str, Any] = {
        "eps": eps,
        "eps_display": fmt_eps(eps),
        "classifier_risk": 1.0 - float(evaluation.robust_accuracy(None, eps)),
        "system_risk": float(failures.fail.double().mean()),
        "system_risk_adaptive": None,
        "false_alarm_rate": g.false_alarms["measured"],
        "false_alarm_ci95": list(g.false_alarms["ci95"]),
        "nominal_false_alarm_rate": g.false_alarms["nominal"],
        "clean_error": float(g.clean_wrong.double().mean()),
        "n": int(g.x.shape[0]),
        "pair_risk": float((failures.fail | failures.clean_failed).double().mean()),
        "pair_risk_adaptive": None,
    }
    for name, params in g.adaptive:
        g.say(f"adaptive attack {name} at eps={fmt_eps(eps)}")
        t1 = time.perf_counter()
        adaptive_row, fooled = _adaptive(g, eps, name, params)
        failures.adaptive_s += time.perf_counter() - t1
        failures.adaptive = failures.adaptive | failures.fail | fooled
        mine = failures.by_attack.get(name, failures.fail) | failures.fail | fooled
        failures.by_attack[name] = mine
        row.setdefault("system_risk_by_attack", {})[name] = float(mine.double().mean())
        row["system_risk_adaptive"] = float(failures.adaptive.double().mean())
        row["pair_risk_adaptive"] = float(
            (failures.adaptive | failures.clean_failed).double().mean()
        )
        detection.append(adaptive_row)
    return row, detection


def assess_detector(
    model: ModelAdapter,
    detector: Detector,
    loader: Iterable[Any],
    evaluation: EvaluationResult,
    *,
    attacks: Sequence[str | Mapping[str, Any]] | None = None,
    adaptive: bool = True,
    adaptive_params: Mapping[str, Any] | None = None,
    adaptive_attacks: Sequence[str | Mapping[str, Any]] = ("pgd-adaptive",),
    fpr: float = 0.05,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
    references: Sequence[ReferenceClassifier] = (),
) -> RiskAssessment:
    """Detection metrics per attack and budget, and the system risk of classifier + detector.

    The classifier-only numbers come from ``evaluation`` (the audit of the same model on the
    same loader, run with ``keep_adversarial`` at least the number of samples), so they agree
    with the audit; the detector is then applied to the audit's worst-case adversarial
    examples, to each attack of the suite re-run on the clean-correct samples (for per-attack
    detection metrics) and to the adaptive attack ``pgd-adaptive`` run on every sample.

    Args:
        model: The audited classifier.
        detector: A detector fitted for ``model``.
        loader: The evaluation data in the same order as for ``evaluation``.
        evaluation: The result of :func:`medrobust.evaluation.evaluate` on ``loader``.
        attacks: Attacks for the per-attack detection rows (default: the audit's suite; an
            empty list keeps only the worst-case and adaptive rows).
        adaptive: Run the adaptive attacks.
        adaptive_params: Settings shared by the adaptive attacks (``steps``; ``weight`` for
            those that take it; default ``steps=20``).
        adaptive_attacks: The attacks that know the detector (``pgd-adaptive``,
            ``orthogonal-pgd``, ``feature-matching``, or ``{"name": ..., ...}`` specs); the
            adaptive risk is the per-sample worst case over all of them and the non-adaptive
            examples, and each one's own appears in ``system_risk_by_attack``.
        fpr: FPR of the ``tpr_at_fpr`` column.
        batch_size: Batch size of the attacks and the scoring.
        progress: Receives one-line status messages.
        references: Classifiers for Tramer's plausibility check (MR202) besides the guarded
            classifier itself, whose audit (``evaluation``) is always one of them.

    Returns:
        A :class:`RiskAssessment`.

    Raises:
        NotFittedError: If the detector is not fitted.
        ValueError: If the detector guards another model, the loader does not match the
            evaluation (sizes, labels) or the evaluation kept too few adversarial examples.
    """
    _check_pair(model, detector)
    threat = evaluation.metrics["threat_model"]
    x_all, y_all = _gather(loader, evaluation, model_device(model))
    t0 = time.perf_counter()
    clean_scores, clean_pred = _clean_side(model, detector, x_all, batch_size)
    chosen = (evaluation.config.get("attacks") or []) if attacks is None else attacks
    g = _Guarded(
        model=model,
        detector=detector,
        x=x_all,
        y=y_all,
        clean_scores=clean_scores,
        clean_wrong=clean_pred != y_all.cpu(),
        threshold=detector.threshold,
        false_alarms=false_alarms(clean_scores > detector.threshold, detector.fpr),
        fpr=fpr,
        norm=str(threat["norm"]),
        seed=int(evaluation.config.get("seed", 0)),
        batch_size=batch_size,
        suite=[AttackSpec.parse(a) for a in chosen],
        adaptive=adaptive_specs(
            adaptive_attacks if adaptive else [], {"steps": 20, **dict(adaptive_params or {})}
        ),
        say=progress or (lambda text: logger.info(text)),
    )
    flagged = clean_scores > g.threshold
    base = g.clean_wrong & ~flagged
    failures = _Failures(fail=base, adaptive=base.clone(), clean_failed=g.clean_wrong | flagged)
    detection: list[dict[str, Any]] = []
    risk: list[dict[str, Any]] = []
    for e_i, eps in enumerate(float(e) for e in threat["eps"]):
        row, rows = _budget(g, evaluation, e_i, eps, failures)
        risk.append(row)
        detection.extend(rows)
    spent = time.perf_counter() - t0
    own = ReferenceClassifier.from_metrics("the guarded classifier", evaluation.metrics)
    claims = plausibility(risk, [own, *references])
    who = f"detector {detector.name!r}"
    return RiskAssessment(
        detector=detector.describe(),
        risk=risk,
        detection=detection,
        fpr=fpr,
        timing={"detection_s": spent - failures.adaptive_s, "adaptive_s": failures.adaptive_s},
        false_alarms=g.false_alarms,
        checks=[false_alarm_check(g.false_alarms, who), plausibility_check(claims, who)],
        plausibility=claims,
    )
