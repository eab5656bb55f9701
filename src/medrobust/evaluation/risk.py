"""Adversarial risk of a classifier guarded by a detector, and detection metrics.

The system is a classifier ``f`` plus a detector ``D`` that flags inputs (``D(x) = 1``). At each
budget ``eps``:

* **classifier-only risk** ``P[f(x') != y]``: one minus the worst-case robust accuracy of the
  audit (:func:`medrobust.evaluation.evaluate`), clean errors included;
* **system risk** ``P[f(x') != y and D(x') = 0]``: the adversary wins only if the input is
  misclassified *and* not flagged. It is estimated twice: against the audit's own worst-case
  adversarial examples, which ignore the detector (*non-adaptive*), and, per sample, the worst
  case of those and of the adaptive attack ``pgd-adaptive``, which knows the detector
  (*adaptive*). A detector evaluated only against attacks that ignore it is not evaluated; the
  report shows both;
* **false-alarm rate** ``P[D(x) = 1]`` on clean inputs, the clean-side cost of the detector.

A sample that is misclassified and unflagged at a budget stays so at every larger budget (its
input lies in the larger ball too), so the risks are non-decreasing in ``eps``.

Detection metrics per attack and budget compare the detector's scores of the successful
adversarial examples (positives) with those of all clean test images (negatives): the AUROC,
the TPR at 5% FPR (read off the ROC of these clean scores) and the detection rate at the
detector's own calibrated threshold.

References:
    Li, Pan & Zhu, arXiv:2006.13555, 2020 (system risk of classification vs detection);
    Carlini & Wagner, AISec 2017 (adaptive attacks on detectors).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from medrobust._utils.format import fmt_eps
from medrobust.attacks.engine import eval_mode
from medrobust.metrics import roc_auc
from medrobust.models.adapter import ModelAdapter

if TYPE_CHECKING:
    from medrobust.detectors.base import Detector
    from medrobust.evaluation.suite import EvaluationResult
    from medrobust.reporting.html import ReportSection

__all__ = [
    "RiskAssessment",
    "assess_detector",
    "defense_section",
    "detection_figure",
    "detection_metrics",
    "risk_figure",
    "tpr_at_fpr",
]

logger = logging.getLogger(__name__)

_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


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
            ``system_risk`` (non-adaptive), ``system_risk_adaptive``, ``false_alarm_rate``,
            ``clean_error``, ``n``.
        detection: One row per attack and budget (``worst-case`` rows use the audit's
            worst-case examples, ``pgd-adaptive`` rows the adaptive attack's misclassified
            examples): ``attack``, ``eps``, ``eps_display``, ``auroc``, ``tpr_at_fpr``,
            ``detection_rate``, ``false_alarm_rate``, ``n_clean``, ``n_adversarial``,
            ``adaptive``.
        fpr: The FPR at which ``tpr_at_fpr`` is read.
        timing: Seconds spent (``detection_s``, ``adaptive_s``).
    """

    detector: dict[str, Any]
    risk: list[dict[str, Any]]
    detection: list[dict[str, Any]]
    fpr: float = 0.05
    timing: dict[str, float] = field(default_factory=dict)

    def to_metrics(self) -> dict[str, Any]:
        """The ``detection`` (detector description, FPR of the TPR column, per-attack rows) and
        ``risk`` entries for ``metrics.json``."""
        return {
            "detection": {
                "detector": dict(self.detector),
                "fpr": self.fpr,
                "results": [dict(r) for r in self.detection],
            },
            "risk": [dict(r) for r in self.risk],
        }

    def figures(self) -> tuple[Figure, Figure]:
        """``(risk_figure, detection_figure)``."""
        return risk_figure(self.risk), detection_figure(self.detection, fpr=self.fpr)

    def report_sections(self) -> list[ReportSection]:
        """The "Detection" and "System risk" sections of the HTML report."""
        from medrobust.reporting.html import ReportSection, html_table

        risk_fig, det_fig = self.figures()
        d = self.detector
        pct = f"{100 * self.fpr:g}%"
        det_rows = [
            {
                "attack": r["attack"] + (" (adaptive)" if r.get("adaptive") else ""),
                "eps": r["eps_display"],
                "AUROC": _round(r["auroc"]),
                f"TPR at {pct} FPR": _round(r["tpr_at_fpr"]),
                "detection rate": _round(r["detection_rate"]),
                "adversarial examples": r["n_adversarial"],
            }
            for r in self.detection
        ]
        body = html_table(det_rows)
        intro = (
            f"Detector {d.get('name')!r} (threshold {_round(d.get('threshold'))} at a clean "
            f"false-positive rate of {100 * float(d.get('fpr', self.fpr)):g}% on "
            f"{d.get('n_calibration', '?')} calibration images; fitted on {d.get('n_fit', '?')} "
            "clean images). Positives are the successful adversarial examples of each attack; "
            "negatives all clean test images. Rows marked adaptive come from an attack that "
            "knows the detector."
        )
        from markupsafe import Markup, escape

        detection = ReportSection(
            title="Detection",
            body=Markup("<p>{}</p>").format(escape(intro)) + body,
            figures=[det_fig],
            captions=[f"Detection AUROC and TPR at {pct} FPR against the budget, per attack."],
            key="detection",
        )
        risk_rows = [
            {
                "eps": r["eps_display"],
                "classifier-only risk": _round(r["classifier_risk"]),
                "system risk (non-adaptive)": _round(r["system_risk"]),
                "system risk (adaptive)": _round(r["system_risk_adaptive"]),
                "clean false-alarm rate": _round(r["false_alarm_rate"]),
            }
            for r in self.risk
        ]
        risk_text = (
            "System risk is the probability that an input is misclassified and not flagged by "
            "the detector. The non-adaptive column uses the audit's worst-case examples, which "
            "ignore the detector; the adaptive column is the per-sample worst case of those and "
            "of pgd-adaptive, which fools the classifier while keeping the detector score under "
            "its threshold. The false-alarm rate is the share of clean test images flagged."
        )
        risk = ReportSection(
            title="System risk",
            body=Markup("<p>{}</p>").format(escape(risk_text)) + html_table(risk_rows),
            figures=[risk_fig],
            captions=["Classifier-only and system risk against the budget."],
            key="risk",
        )
        return [detection, risk]


def _round(v: Any, digits: int = 3) -> Any:
    if isinstance(v, float) and math.isfinite(v):
        return round(v, digits)
    return v


def _style(ax: Any) -> None:
    ax.grid(True, color="#DDDDDD", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _eps_ticks(ax: Any, pairs: Sequence[tuple[float, str]]) -> None:
    ticks = sorted(set(pairs))
    ax.set_xticks([t for t, _ in ticks])
    ax.set_xticklabels([label.replace("$", r"\$") for _, label in ticks])


def risk_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Classifier-only risk, system risk (non-adaptive and adaptive) and the clean false-alarm
    rate against the budget (matplotlib object API, no pyplot).

    Args:
        rows: Risk rows as in :attr:`RiskAssessment.risk`.
        title: Optional title.

    Returns:
        The figure.

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("no risk rows to plot")
    pts = sorted(rows, key=lambda r: float(r["eps"]))
    xs = [float(r["eps"]) for r in pts]
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    series = (
        ("classifier_risk", "classifier only"),
        ("system_risk", "classifier + detector (non-adaptive attacks)"),
        ("system_risk_adaptive", "classifier + detector (adaptive attack)"),
    )
    for k, (key, label) in enumerate(series):
        ys = [r.get(key) for r in pts]
        if all(y is None for y in ys):
            continue
        ax.plot(
            xs,
            [math.nan if y is None else float(y) for y in ys],
            marker=_MARKERS[k],
            color=_COLOURS[k],
            linewidth=1.8,
            markersize=5,
            label=label,
        )
    far = [float(r["false_alarm_rate"]) for r in pts if r.get("false_alarm_rate") is not None]
    if far:
        ax.axhline(
            far[0],
            color="#444444",
            linestyle="--",
            linewidth=1.2,
            label=f"clean false-alarm rate ({100 * far[0]:.1f}%)",
        )
    _eps_ticks(
        ax, [(float(r["eps"]), str(r.get("eps_display", fmt_eps(float(r["eps"]))))) for r in pts]
    )
    ax.set_xlabel("budget ε")
    ax.set_ylabel("risk: P(wrong and undetected)")
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    _style(ax)
    if title:
        ax.set_title(title.replace("$", r"\$"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def detection_figure(rows: Sequence[Mapping[str, Any]], fpr: float = 0.05) -> Figure:
    """Detection AUROC and TPR at ``fpr`` against the budget, one line per attack.

    Args:
        rows: Detection rows as in :attr:`RiskAssessment.detection`.
        fpr: The FPR of the TPR panel (for the axis label).

    Returns:
        The figure.

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("no detection rows to plot")
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    names: dict[str, None] = {}
    for r in rows:
        names.setdefault(str(r["attack"]), None)
    for ax, key, label in (
        (axes[0], "auroc", "detection AUROC"),
        (axes[1], "tpr_at_fpr", f"TPR at {100 * fpr:g}% FPR"),
    ):
        for k, name in enumerate(names):
            pts = sorted((float(r["eps"]), r.get(key)) for r in rows if str(r["attack"]) == name)
            ys = [math.nan if v is None else float(v) for _, v in pts]
            ax.plot(
                [p[0] for p in pts],
                ys,
                marker=_MARKERS[k % len(_MARKERS)],
                color=_COLOURS[k % len(_COLOURS)],
                linewidth=1.6,
                markersize=5,
                label=name.replace("$", r"\$"),
            )
        _eps_ticks(
            ax,
            [(float(r["eps"]), str(r.get("eps_display", fmt_eps(float(r["eps"]))))) for r in rows],
        )
        ax.set_xlabel("budget ε")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        if key == "auroc":
            ax.axhline(0.5, color="#999999", linestyle=":", linewidth=1.0)
        _style(ax)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def defense_section(rows: Sequence[Mapping[str, Any]], title: str = "Defence") -> ReportSection:
    """A report section describing how the model(s) were trained, with the training cost.

    Args:
        rows: One record per model: ``recipe``, ``recipe_params``, ``labelled_fraction``,
            ``n_labelled``, ``n_unlabelled``, ``epochs``, ``wall_time_s`` and optionally
            ``cost_ratio`` (wall time over standard training's) and other columns.
        title: Section title.

    Returns:
        A :class:`~medrobust.reporting.ReportSection` keyed ``"defense"``.

    Raises:
        ValueError: If ``rows`` is empty.
    """
    from markupsafe import Markup, escape

    from medrobust.reporting.html import ReportSection, html_table

    if not rows:
        raise ValueError("no training records for the defence section")
    text = (
        "How each model was trained: the recipe and its parameters, the share of training "
        "labels used, and the training cost (wall time and epochs on this machine)."
    )
    return ReportSection(
        title=title,
        body=Markup("<p>{}</p>").format(escape(text)) + html_table([dict(r) for r in rows]),
        key="defense",
    )


# ------------------------------------------------------------------------------- assessment
def _batches(loader: Iterable[Any]) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for batch in loader:
        if isinstance(batch, Mapping):
            if "image" not in batch or "label" not in batch:
                raise ValueError(f"a batch dict needs 'image' and 'label', got {sorted(batch)}")
            yield batch["image"], batch["label"]
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            yield batch[0], batch[1]
        else:
            raise ValueError(
                "batches must be dicts with 'image' and 'label' or (images, labels) tuples, got "
                f"{type(batch).__name__}"
            )


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


def assess_detector(
    model: ModelAdapter,
    detector: Detector,
    loader: Iterable[Any],
    evaluation: EvaluationResult,
    *,
    attacks: Sequence[str | Mapping[str, Any]] | None = None,
    adaptive: bool = True,
    adaptive_params: Mapping[str, Any] | None = None,
    fpr: float = 0.05,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
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
        adaptive: Run the adaptive attack.
        adaptive_params: Parameters of ``pgd-adaptive`` (``steps``, ``weight``, ...).
        fpr: FPR of the ``tpr_at_fpr`` column.
        batch_size: Batch size of the attacks and the scoring.
        progress: Receives one-line status messages.

    Returns:
        A :class:`RiskAssessment`.

    Raises:
        NotFittedError: If the detector is not fitted.
        ValueError: If the detector guards another model, the loader does not match the
            evaluation (sizes, labels) or the evaluation kept too few adversarial examples.
    """
    import time

    from medrobust.attacks.presets import create_attack
    from medrobust.detectors.base import NotFittedError
    from medrobust.evaluation.suite import AttackSpec

    if not detector.fitted:
        raise NotFittedError(
            f"detector {detector.name!r} is not fitted: fit it on clean images of this model first"
        )
    if detector.model is not model:
        raise ValueError(
            "the detector was fitted for another model object; fit (or load) it for this model"
        )
    say = progress or (lambda text: logger.info(text))
    metrics = evaluation.metrics
    budgets = [float(e) for e in metrics["threat_model"]["eps"]]
    norm = str(metrics["threat_model"]["norm"])
    seed = int(evaluation.config.get("seed", 0))
    records = evaluation.records
    n = records.n
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
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
    threshold = detector.threshold
    t0 = time.perf_counter()
    with eval_mode(model):
        clean_scores = detector.score(x_all).cpu()
        with torch.no_grad():
            clean_pred = torch.cat(
                [model(x_all[i : i + batch_size]).argmax(dim=1) for i in range(0, n, batch_size)]
            ).cpu()
    y_cpu = y_all.cpu()
    clean_wrong = clean_pred != y_cpu
    clean_flag = clean_scores > threshold
    far = float(clean_flag.double().mean())
    base_fail = clean_wrong & ~clean_flag
    correct_idx = (~clean_wrong).nonzero().flatten()

    detection: list[dict[str, Any]] = []
    risk: list[dict[str, Any]] = []
    fail_prev = base_fail.clone()
    adaptive_prev = base_fail.clone()
    chosen = evaluation.config.get("attacks") or [] if attacks is None else attacks
    suite = [AttackSpec.parse(a) for a in chosen]
    adaptive_s = 0.0
    for e_i, eps in enumerate(budgets):
        key = fmt_eps(eps)
        stored = evaluation.adversarial.get(key, {})
        broken_by = records.worst_broken_by[e_i]
        broken = (broken_by >= 0) & ~clean_wrong
        idx = stored.get("index", torch.empty(0, dtype=torch.long)).long()
        if idx.numel() < int(broken.sum()):
            raise ValueError(
                f"the evaluation kept {idx.numel()} worst-case adversarial examples at "
                f"eps={key} but {int(broken.sum())} samples were broken: run evaluate(..., "
                f"keep_adversarial={n}) so that every adversarial example is available"
            )
        fail = fail_prev.clone()
        adv_scores = torch.empty(0)
        if idx.numel():
            adv_scores = detector.score(stored["x_adv"].to(dev)).cpu()
            fail[idx] |= ~(adv_scores > threshold)
        detection.append(
            {
                "attack": "worst-case",
                "eps": eps,
                "eps_display": key,
                "adaptive": False,
                **detection_metrics(clean_scores, adv_scores, threshold, fpr),
            }
        )
        for spec in suite:
            say(f"detection: {spec.name} at eps={key}")
            attack = create_attack(spec.name, eps=eps, norm=norm, seed=seed, **dict(spec.params))
            if correct_idx.numel():
                xa, ok, _ = _run_attack(
                    attack,
                    model,
                    x_all[correct_idx.to(dev)],
                    y_all[correct_idx.to(dev)],
                    batch_size,
                )
                ok = ok.cpu()
                scores = detector.score(xa[ok.to(xa.device)]) if bool(ok.any()) else None
                adv_scores = scores.cpu() if scores is not None else torch.empty(0)
            else:
                adv_scores = torch.empty(0)
            detection.append(
                {
                    "attack": spec.name,
                    "eps": eps,
                    "eps_display": key,
                    "adaptive": False,
                    **detection_metrics(clean_scores, adv_scores, threshold, fpr),
                }
            )
        row: dict[str, Any] = {
            "eps": eps,
            "eps_display": key,
            "classifier_risk": 1.0 - float(evaluation.robust_accuracy(None, eps)),
            "system_risk": float(fail.double().mean()),
            "system_risk_adaptive": None,
            "false_alarm_rate": far,
            "clean_error": float(clean_wrong.double().mean()),
            "n": n,
        }
        if adaptive:
            say(f"adaptive attack at eps={key}")
            t1 = time.perf_counter()
            params = {"steps": 20, **dict(adaptive_params or {})}
            attack = create_attack(
                "pgd-adaptive", detector=detector, eps=eps, norm=norm, seed=seed, **params
            )
            xa, ok, pred = _run_attack(attack, model, x_all, y_all, batch_size)
            adaptive_s += time.perf_counter() - t1
            wrong = (pred.cpu() != y_cpu) & ~clean_wrong
            adaptive_fail = adaptive_prev | fail | ok.cpu()
            row["system_risk_adaptive"] = float(adaptive_fail.double().mean())
            adaptive_prev = adaptive_fail
            adv_scores = (
                detector.score(xa[wrong.to(xa.device)]).cpu()
                if bool(wrong.any())
                else torch.empty(0)
            )
            detection.append(
                {
                    "attack": "pgd-adaptive",
                    "eps": eps,
                    "eps_display": key,
                    "adaptive": True,
                    **detection_metrics(clean_scores, adv_scores, threshold, fpr),
                }
            )
        fail_prev = fail
        risk.append(row)
    return RiskAssessment(
        detector=detector.describe(),
        risk=risk,
        detection=detection,
        fpr=fpr,
        timing={"detection_s": time.perf_counter() - t0 - adaptive_s, "adaptive_s": adaptive_s},
    )
