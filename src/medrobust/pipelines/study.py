"""The defence study: "classification or detection?", answered with numbers for one data set.

:func:`run_study` trains every recipe of the study (standard training, PGD-AT, fast AT and SSAT
by default) at every labelled fraction (10%, 25% and 100% by default) with the same training
loop, audits each model with the worst-case suite of :func:`medrobust.evaluation.evaluate`, fits
every detector of the study (UAD by default; Mahalanobis, feature squeezing ...) on the model's
clean training images, and measures each detector per attack and budget and the system risk of
classifier + detector, against the suite and against every adaptive attack. One report compares
them all: clean accuracy, robust accuracy per budget, detection metrics, system and pair risk,
Tramer's plausibility check (MR202) against the best model of the study, training cost (wall
time, epochs, and the ratio to standard training at the same labelled fraction) and, at its top,
the answer: per labelled fraction, the cheapest of retrain / detect / both that reaches the
target risk (:mod:`~medrobust.pipelines.study_answer`).

The default settings are small, so the study runs in minutes on a laptop CPU (32x32 phantom
images, a narrow small CNN, a few hundred images); every setting scales up through
:class:`StudyConfig` (or the options of ``medrobust defend``). The report's figures and sections
come from :mod:`medrobust.reporting.sections.study`, which reads only the study document.

Label scarcity: a model at fraction ``f`` is trained on ``f`` of the training labels (a
stratified, seeded split); SSAT also receives the remaining images without their labels (at
``f = 1`` the training images themselves serve as its unlabelled stream). The detector is fitted
on all clean training images without labels, since it needs none. With ``equal_steps`` (the
default) a model trained on fewer labels runs proportionally more epochs, so every model makes
about the same number of optimisation steps.

References:
    Li, Pan & Zhu, "Defending against adversarial attacks on medical imaging AI system,
    classification or detection?", arXiv:2006.13555, 2020.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import yaml
from torch.utils.data import DataLoader, Dataset

from medrobust._utils.format import fmt_eps
from medrobust._utils.io import to_jsonable, write_json_atomic, write_text_atomic
from medrobust.defenses import RECIPES
from medrobust.defenses.data import UnlabelledView, check_labelled_fraction
from medrobust.detectors import DETECTORS, Detector, create_detector
from medrobust.evaluation import EvaluationResult, evaluate
from medrobust.evaluation.risk import RiskAssessment, assess_detector
from medrobust.evaluation.suites import resolve_suite
from medrobust.models import ModelAdapter, create_model
from medrobust.pipelines.audit import load_split
from medrobust.pipelines.locking import holds_run_lock
from medrobust.pipelines.results import check_docs, write_result
from medrobust.pipelines.study_answer import cost_ratios, study_document
from medrobust.reporting.html import ReportSection, render_report
from medrobust.reporting.sections.risk import defense_section, risk_sections
from medrobust.reporting.sections.study import study_sections
from medrobust.training import TrainConfig, TrainResult, fit

__all__ = ["StudyConfig", "StudyResult", "run_study"]

logger = logging.getLogger(__name__)

#: Recipes whose training budget is set from ``train_eps`` by the study.
_ADVERSARIAL = ("pgd-at", "fast-at", "ssat", "trades", "fgsm-at")


@dataclass
class StudyConfig:
    """Settings of the defence study (defaults: a small run that takes minutes on a CPU).

    Attributes:
        data: Registered data set.
        data_params: Its parameters (for ``bus-phantom``: ``size``, ``seed`` ...).
        split_sizes: Images per split (``train``, ``val``, ``test``) for data sets that take
            an ``n`` parameter (the phantom); None uses the data set's defaults.
        model: Registered architecture.
        model_params: Its parameters.
        recipes: Training recipes to compare.
        fractions: Labelled fractions in ``(0, 1]``.
        epochs: Epochs at fraction 1 (see ``equal_steps``).
        equal_steps: Scale the epochs by ``1 / fraction`` so that every model makes about the
            same number of optimisation steps.
        batch_size, lr, seed: Training settings shared by every model.
        train_eps: Training budget of every adversarial recipe.
        pgd_steps: Steps of PGD-AT.
        recipe_params: Per-recipe parameter overrides, e.g. ``{"ssat": {"lam": 1.0}}``.
        suite: Named attack suite of the audit (``quick``, ``standard``, ``thorough``), unless
            ``attacks`` is given.
        attacks: Explicit attack list (names or ``{"name": ..., ...}`` specs).
        eps: Evaluation budgets.
        norm: ``"linf"`` or ``"l2"``.
        checks: Run the audit's sanity checks.
        detectors: Registered detectors, each put in front of every model.
        detector_params: Per-detector parameters, e.g. ``{"mahalanobis": {"noise": 0.001}}``.
        fpr: Clean false-positive rate of the detectors' thresholds.
        adaptive: Run the adaptive attacks on every guarded model.
        adaptive_attacks: Which (``pgd-adaptive``, ``orthogonal-pgd``, ``feature-matching``).
        adaptive_params: Settings shared by the adaptive attacks (e.g. ``{"steps": 20}``).
        detection_per_attack: Also re-run every attack of the suite for per-attack detection
            rows (the worst-case and adaptive rows are always there).
        write_audits: Write every model's audit run folder (report with detection sections).
        target_risk: The largest acceptable risk of the answer, in ``[0, 1]``.
        target_eps: The budget of the answer (one of ``eps``; None: the largest).
    """

    data: str = "bus-phantom"
    data_params: dict[str, Any] = field(default_factory=lambda: {"size": 32})
    split_sizes: dict[str, int] | None = field(
        default_factory=lambda: {"train": 320, "val": 100, "test": 100}
    )
    model: str = "small-cnn"
    model_params: dict[str, Any] = field(default_factory=lambda: {"width": 8})
    recipes: tuple[str, ...] = ("standard", "pgd-at", "fast-at", "ssat")
    fractions: tuple[float, ...] = (0.1, 0.25, 1.0)
    epochs: int = 8
    equal_steps: bool = True
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    train_eps: float = 4 / 255
    pgd_steps: int = 7
    recipe_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    suite: str = "quick"
    attacks: list[Any] = field(default_factory=list)
    eps: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255)
    norm: str = "linf"
    checks: bool = True
    detectors: tuple[str, ...] = ("uad",)
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    fpr: float = 0.05
    adaptive: bool = True
    adaptive_attacks: tuple[str, ...] = ("pgd-adaptive",)
    adaptive_params: dict[str, Any] = field(default_factory=lambda: {"steps": 10})
    detection_per_attack: bool = False
    write_audits: bool = True
    target_risk: float = 0.2
    target_eps: float | None = None

    def __post_init__(self) -> None:
        self.recipes = tuple(self.recipes)
        if not self.recipes:
            raise ValueError("the study needs at least one recipe")
        for r in self.recipes:
            RECIPES.get(r)  # unknown names fail with suggestions
        if len(set(self.recipes)) != len(self.recipes):
            raise ValueError(f"recipes must be distinct, got {list(self.recipes)}")
        self.fractions = tuple(check_labelled_fraction(f) for f in self.fractions)
        if not self.fractions:
            raise ValueError("the study needs at least one labelled fraction")
        if len(set(self.fractions)) != len(self.fractions):
            raise ValueError(f"fractions must be distinct, got {list(self.fractions)}")
        for name, value, low in (
            ("epochs", self.epochs, 1),
            ("batch_size", self.batch_size, 1),
            ("pgd_steps", self.pgd_steps, 1),
            ("seed", self.seed, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, number in (("lr", self.lr), ("train_eps", self.train_eps)):
            if (
                isinstance(number, bool)
                or not isinstance(number, (int, float))
                or not (math.isfinite(number) and number > 0)
            ):
                raise ValueError(f"{name} must be a finite number > 0, got {number!r}")
        self.eps = tuple(float(e) for e in self.eps)
        if not self.eps or any(not (math.isfinite(e) and e > 0) for e in self.eps):
            raise ValueError(f"eps must be a non-empty list of positive budgets, got {self.eps}")
        if not 0 < self.fpr < 1:
            raise ValueError(f"fpr must be in (0, 1), got {self.fpr}")
        self.detectors = _names_of("detectors", self.detectors, DETECTORS.get)
        self.adaptive_attacks = tuple(self.adaptive_attacks)
        for what, given, known in (
            ("recipe_params", self.recipe_params, self.recipes),
            ("detector_params", self.detector_params, self.detectors),
        ):
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise ValueError(
                    f"{what} names {unknown}, which the study does not run ({list(known)})"
                )
        risk = self.target_risk
        if isinstance(risk, bool) or not isinstance(risk, (int, float)) or not 0 <= risk <= 1:
            raise ValueError(f"target_risk must be a number in [0, 1], got {risk!r}")
        if self.target_eps is not None and not any(
            math.isclose(self.target_eps, e, rel_tol=1e-9) for e in self.eps
        ):
            raise ValueError(
                f"target_eps {self.target_eps!r} is not one of the budgets "
                f"{[fmt_eps(e) for e in self.eps]}"
            )

    @property
    def answer_eps(self) -> float:
        """The budget of the answer: ``target_eps`` or the largest budget."""
        return max(self.eps) if self.target_eps is None else float(self.target_eps)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON/YAML-serialisable copy."""
        out = asdict(self)
        out["recipes"] = list(self.recipes)
        out["fractions"] = list(self.fractions)
        out["eps"] = list(self.eps)
        out["adaptive_attacks"] = list(self.adaptive_attacks)
        out["detectors"] = list(self.detectors)
        return out

    def params_for(self, recipe: str) -> dict[str, Any]:
        """The recipe parameters the study uses for ``recipe``."""
        params: dict[str, Any] = {}
        if recipe in _ADVERSARIAL:
            params["eps"] = self.train_eps
            params["norm"] = self.norm
        if recipe == "pgd-at":
            params["steps"] = self.pgd_steps
        if recipe in ("ssat", "fgsm-at"):
            params["eps_min"] = None
        params.update(self.recipe_params.get(recipe, {}))
        return params


@dataclass
class StudyResult:
    """What :func:`run_study` returns.

    Attributes:
        metrics: The study document (also written as ``study.json``).
        report: Path of ``report.html``.
        run_dir: The study folder.
    """

    metrics: dict[str, Any]
    report: Path
    run_dir: Path


def _pct(f: float) -> str:
    return f"{100 * f:g}%"


def _names_of(what: str, given: Any, lookup: Callable[[str], Any]) -> tuple[str, ...]:
    """A non-empty tuple of distinct registered names (unknown ones fail with suggestions)."""
    out = (given,) if isinstance(given, str) else tuple(given)
    if not out:
        raise ValueError(f"the study needs at least one of {what}")
    for name in out:
        lookup(name)
    if len(set(out)) != len(out):
        raise ValueError(f"{what} must be distinct, got {list(out)}")
    return out


def _model_key(recipe: str, fraction: float) -> str:
    return f"{recipe}-{round(100 * fraction):d}pct"


def _load_split(cfg: StudyConfig, split: str) -> Dataset[Any]:
    return load_split(cfg.data, cfg.data_params, split, cfg.split_sizes)


@dataclass
class _Job:
    """What every model of one study run shares: settings, data, attack list and folder."""

    cfg: StudyConfig
    out: Path
    overwrite: bool
    resume: bool
    say: Callable[[str], None]
    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any]
    attacks: list[Any]
    skipped: dict[str, str]

    @property
    def unlabelled(self) -> UnlabelledView:
        """All training images without their labels (the detector's fit set)."""
        return UnlabelledView(self.train)

    def info(self, name: str, default: Any) -> Any:
        """A property of the data set (``num_classes``, ``in_channels`` ...)."""
        return getattr(self.train, name, default)


def _prepare(
    cfg: StudyConfig, out: Path, overwrite: bool, resume: bool, say: Callable[[str], None]
) -> _Job:
    say(f"preparing data set {cfg.data!r}")
    train_ds, val_ds, test_ds = (_load_split(cfg, s) for s in ("train", "val", "test"))
    if cfg.attacks:
        attacks: list[Any] = list(cfg.attacks)
        skipped: dict[str, str] = {}
    else:
        num_classes = int(getattr(train_ds, "num_classes", 2))
        resolved = resolve_suite(cfg.suite, cfg.norm, num_classes)
        attacks, skipped = resolved.attacks, resolved.skipped
    return _Job(cfg, out, overwrite, resume, say, train_ds, val_ds, test_ds, attacks, skipped)


def _train(
    job: _Job, recipe: str, fraction: float, folder: Path
) -> tuple[ModelAdapter, TrainResult, TrainConfig]:
    """Train one model of the study (resuming its ``last.pt`` when asked)."""
    cfg = job.cfg
    epochs = max(1, round(cfg.epochs / fraction)) if cfg.equal_steps else cfg.epochs
    train_cfg = TrainConfig(
        epochs=epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        recipe=recipe,
        recipe_params=cfg.params_for(recipe),
        labelled_fraction=fraction,
    )
    model = create_model(
        cfg.model,
        num_classes=int(job.info("num_classes", 2)),
        in_channels=int(job.info("in_channels", 1)),
        spatial_dims=int(job.info("spatial_dims", 2)),
        class_names=job.info("class_names", None),
        seed=cfg.seed,
        **cfg.model_params,
    )
    key = _model_key(recipe, fraction)
    job.say(f"[{key}] training {recipe} on {_pct(fraction)} of the labels ({epochs} epochs)")
    use_unl = recipe == "ssat" and fraction >= 1.0
    result = fit(
        model,
        job.train,
        job.val,
        train_cfg,
        folder / "train",
        card_info={"data": {"name": cfg.data, "seed": cfg.data_params.get("seed")}},
        resume=job.resume and (folder / "train" / "last.pt").exists(),
        overwrite=job.overwrite or job.resume,
        unlabelled=job.unlabelled if use_unl else None,
    )
    model.eval()
    return model, result, train_cfg


def _audit(job: _Job, model: ModelAdapter, recipe: str, fraction: float) -> EvaluationResult:
    """The worst-case audit of one model on the test split (every adversarial example kept)."""
    cfg = job.cfg
    names = ", ".join(_names(job.attacks))
    job.say(f"[{_model_key(recipe, fraction)}] auditing (worst case of {names})")
    result = evaluate(
        model,
        DataLoader(job.test, batch_size=100, shuffle=False),
        attacks=job.attacks,
        eps=list(cfg.eps),
        norm=cfg.norm,
        seed=cfg.seed,
        checks=cfg.checks,
        keep_adversarial=len(job.test),  # type: ignore[arg-type]
        model_info={"architecture": cfg.model, "recipe": recipe, "labelled_fraction": fraction},
        title=f"Robustness audit: {cfg.model} trained with {recipe} on "
        f"{_pct(fraction)} of the labels",
    )
    return cast(EvaluationResult, result)  # the study's models are classifiers


def _guard(
    job: _Job, model: ModelAdapter, ev: EvaluationResult, key: str, folder: Path, name: str
) -> tuple[Detector, RiskAssessment, float]:
    """Fit detector ``name`` on the clean training images (timed), save it, and assess the
    guarded model against the suite and every adaptive attack."""
    cfg = job.cfg
    job.say(f"[{key}] fitting detector {name!r} on clean training images")
    t0 = time.perf_counter()
    det = create_detector(name, fpr=cfg.fpr, **cfg.detector_params.get(name, {}))
    det.fit(
        model,
        DataLoader(job.unlabelled, batch_size=100),
        calibration=DataLoader(job.val, batch_size=100),
    )
    fit_s = time.perf_counter() - t0
    det.save(folder / "detectors" / name)
    adaptive = f" (adaptive: {', '.join(cfg.adaptive_attacks)})" if cfg.adaptive else ""
    job.say(f"[{key}] {name}: detection and system risk{adaptive}")
    assessment = assess_detector(
        model,
        det,
        DataLoader(job.test, batch_size=100, shuffle=False),
        ev,
        attacks=job.attacks if cfg.detection_per_attack else [],
        adaptive=cfg.adaptive,
        adaptive_attacks=list(cfg.adaptive_attacks),
        adaptive_params=cfg.adaptive_params,
        fpr=0.05,
        progress=None,
    )
    return det, assessment, fit_s


def _row(
    job: _Job, key: str, recipe: str, fraction: float, result: TrainResult, ev: EvaluationResult
) -> dict[str, Any]:
    """The study's ``defenses`` row of one model."""
    sizes = _split_sizes(result.run_dir)
    return {
        "model": key,
        "recipe": recipe,
        "recipe_params": job.cfg.params_for(recipe),
        "labelled_fraction": fraction,
        "n_labelled": int(sizes.get("train", len(job.train))),  # type: ignore[arg-type]
        "n_unlabelled": int(sizes.get("unlabelled", 0)),
        "epochs": result.epochs_run,
        "wall_time_s": result.wall_time_s,
        "clean_accuracy": ev.metrics["clean"]["accuracy"],
        "robust_accuracy": {
            r["eps_display"]: r["robust_accuracy"] for r in ev.metrics["worst_case"]
        },
        "checks_flagged": [c["code"] for c in ev.metrics["checks"] if c["status"] != "pass"],
    }


_TRAINING_KEYS = (
    "recipe",
    "recipe_params",
    "labelled_fraction",
    "n_labelled",
    "n_unlabelled",
    "epochs",
    "wall_time_s",
)


def _audit_sections(per_detector: Mapping[str, RiskAssessment]) -> list[ReportSection]:
    """The detection, risk and plausibility sections of every detector of one model's audit
    (the first section presents the audit's ``detectors`` entry)."""
    out: list[ReportSection] = []
    for name, a in per_detector.items():
        for sec in risk_sections(a.to_metrics()):
            out.append(replace(sec, title=f"{sec.title}: {name}", key=None))
    return [replace(out[0], key="detectors"), *out[1:]] if out else out


def _study_model(job: _Job, recipe: str, fraction: float) -> dict[str, Any]:
    """Train, audit and guard one model with every detector; write its audit folder. Returns
    its study entry (``row``, ``checks``, ``detectors``: per detector its metrics and fit
    time)."""
    key = _model_key(recipe, fraction)
    folder = job.out / "models" / key
    model, result, train_cfg = _train(job, recipe, fraction, folder)
    ev = _audit(job, model, recipe, fraction)
    guarded = {name: _guard(job, model, ev, key, folder, name) for name in job.cfg.detectors}
    assessments = {name: a for name, (_, a, _) in guarded.items()}
    ev.metrics["detectors"] = {name: a.to_metrics() for name, a in assessments.items()}
    for a in assessments.values():
        ev.metrics["checks"] = [*ev.metrics.get("checks", []), *a.checks]
    row = _row(job, key, recipe, fraction, result, ev)
    if job.cfg.write_audits:
        training = {k: row[k] for k in _TRAINING_KEYS}
        ev.metrics["defense"] = [training]
        write_result(
            ev,
            folder / "audit",
            overwrite=True,
            extra_sections=[defense_section([training]), *_audit_sections(assessments)],
            config_extra={
                "training": train_cfg.to_dict(),
                "detectors": {name: det.describe() for name, (det, _, _) in guarded.items()},
            },
        )
    checks = [{**c, "message": f"{key}: {c['message']}"} for c in ev.metrics["checks"]]
    return {
        "row": row,
        "checks": checks,
        "detectors": {
            name: {**a.to_metrics(), "fit_s": fit_s} for name, (_, a, fit_s) in guarded.items()
        },
    }


@holds_run_lock("out_dir")
def run_study(
    config: StudyConfig | None = None,
    out_dir: str | os.PathLike[str] = "runs/defend",
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run the defence study and write its folder (``report.html``, ``study.json``,
    ``config.yaml``, and per model ``models/<recipe>-<pct>/{train,audit,detector}``).

    Args:
        config: The settings (default :class:`StudyConfig`).
        out_dir: The study folder.
        overwrite: Replace a completed study in ``out_dir``.
        resume: Continue the trainings of an interrupted study in ``out_dir`` from their
            ``last.pt`` (evaluations are redone).
        progress: Receives one-line status messages.

    Returns:
        A :class:`StudyResult`.

    Raises:
        FileExistsError: If ``out_dir`` holds a completed study and neither ``overwrite`` nor
            ``resume`` is set.
        ValueError: For invalid settings (unknown recipes, detectors, fractions outside
            (0, 1], a recipe that does not support the model's task).
    """
    cfg = config or StudyConfig()
    out = Path(out_dir)
    if (out / "study.json").exists() and not (overwrite or resume):
        raise FileExistsError(
            f"{out} already holds a completed study (study.json); pass overwrite=True "
            "(--overwrite) or resume=True (--resume), or choose another folder"
        )
    say = progress or (lambda text: logger.info(text))
    t_start = time.perf_counter()
    job = _prepare(cfg, out, overwrite, resume, say)
    per_model = {
        _model_key(recipe, fraction): _study_model(job, recipe, fraction)
        for fraction in cfg.fractions
        for recipe in cfg.recipes
    }
    rows = [m["row"] for m in per_model.values()]
    cost_ratios(rows)
    metrics = study_document(cfg, rows, per_model, job.skipped, time.perf_counter() - t_start)
    report = out / "report.html"
    html = render_report(metrics, extra_sections=study_sections(metrics), check_docs=check_docs())
    write_text_atomic(report, html)
    write_text_atomic(
        out / "config.yaml", yaml.safe_dump(to_jsonable(cfg.to_dict()), sort_keys=False)
    )
    write_json_atomic(out / "study.json", metrics)
    say(f"study finished in {time.perf_counter() - t_start:.0f} s: {report}")
    return StudyResult(metrics=metrics, report=report, run_dir=out)


def _names(attacks: Sequence[Any]) -> list[str]:
    return [a if isinstance(a, str) else str(a.get("name")) for a in attacks]


def _split_sizes(train_dir: Path) -> dict[str, int]:
    """The split sizes ``fit`` recorded in the model card (labelled and unlabelled counts)."""
    card = json.loads((train_dir / "model_card.json").read_text(encoding="utf-8"))
    sizes = (card.get("data") or {}).get("split_sizes") or {}
    return {str(k): int(v) for k, v in sizes.items()}
