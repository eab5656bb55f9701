"""The defence study: "classification or detection?", answered with numbers for one data set.

:func:`run_study` trains every recipe of the study (standard training, PGD-AT, fast AT and SSAT
by default) at every labelled fraction (10%, 25% and 100% by default) with the same training
loop, audits each model with the worst-case suite of :func:`medrobust.evaluation.evaluate`, fits
a detector (UAD by default) on the model's clean training images, and measures the detector per
attack and budget and the system risk of classifier + detector, non-adaptive and adaptive. One
report compares them all: clean accuracy, robust accuracy per budget, detection metrics, system
risk, and training cost (wall time, epochs, and the ratio to standard training at the same
labelled fraction).

The default settings are small, so the study runs in minutes on a laptop CPU (32x32 phantom
images, a narrow small CNN, a few hundred images); every setting scales up through
:class:`StudyConfig` (or the options of ``medrobust defend``).

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

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from torch.utils.data import DataLoader, Dataset

from medrobust.defenses.data import check_labelled_fraction

__all__ = ["StudyConfig", "StudyResult", "run_study"]

logger = logging.getLogger(__name__)

_COLOURS = ("#7F7F7F", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
#: Recipes whose training budget is set from ``train_eps`` by the study.
_ADVERSARIAL = ("pgd-at", "fast-at", "ssat", "trades")


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
        detector: Registered detector put in front of every model.
        detector_params: Its parameters.
        fpr: Clean false-positive rate of the detector's threshold.
        adaptive: Run the adaptive attack on every guarded model.
        adaptive_params: Parameters of ``pgd-adaptive`` (e.g. ``{"steps": 20}``).
        detection_per_attack: Also re-run every attack of the suite for per-attack detection
            rows (the worst-case and adaptive rows are always there).
        write_audits: Write every model's audit run folder (report with detection sections).
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
    detector: str = "uad"
    detector_params: dict[str, Any] = field(default_factory=dict)
    fpr: float = 0.05
    adaptive: bool = True
    adaptive_params: dict[str, Any] = field(default_factory=lambda: {"steps": 10})
    detection_per_attack: bool = False
    write_audits: bool = True

    def __post_init__(self) -> None:
        from medrobust.detectors import DETECTORS
        from medrobust.training.recipes import RECIPES, load_recipe_plugins

        load_recipe_plugins()
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
        DETECTORS.get(self.detector)
        if not 0 < self.fpr < 1:
            raise ValueError(f"fpr must be in (0, 1), got {self.fpr}")
        unknown = sorted(set(self.recipe_params) - set(self.recipes))
        if unknown:
            raise ValueError(
                f"recipe_params names recipe(s) {unknown} that are not in the study's recipes "
                f"{list(self.recipes)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON/YAML-serialisable copy."""
        out = asdict(self)
        out["recipes"] = list(self.recipes)
        out["fractions"] = list(self.fractions)
        out["eps"] = list(self.eps)
        return out

    def params_for(self, recipe: str) -> dict[str, Any]:
        """The recipe parameters the study uses for ``recipe``."""
        params: dict[str, Any] = {}
        if recipe in _ADVERSARIAL:
            params["eps"] = self.train_eps
            params["norm"] = self.norm
        if recipe == "pgd-at":
            params["steps"] = self.pgd_steps
        if recipe == "ssat":
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


def _model_key(recipe: str, fraction: float) -> str:
    return f"{recipe}-{round(100 * fraction):d}pct"


def _load_split(cfg: StudyConfig, split: str) -> Dataset[Any]:
    from medrobust.data import create_dataset

    params = dict(cfg.data_params)
    if cfg.split_sizes and split in cfg.split_sizes and "n" not in params:
        params["n"] = int(cfg.split_sizes[split])
    ds: Dataset[Any] = create_dataset(cfg.data, split=split, **params)
    return ds


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
    from medrobust._utils.io import write_json_atomic, write_text_atomic
    from medrobust.detectors import create_detector
    from medrobust.evaluation import evaluate
    from medrobust.evaluation.risk import assess_detector
    from medrobust.evaluation.suites import resolve_suite
    from medrobust.models import create_model
    from medrobust.training import TrainConfig, fit

    cfg = config or StudyConfig()
    out = Path(out_dir)
    if (out / "study.json").exists() and not (overwrite or resume):
        raise FileExistsError(
            f"{out} already holds a completed study (study.json); pass overwrite=True "
            "(--overwrite) or resume=True (--resume), or choose another folder"
        )
    say = progress or (lambda text: logger.info(text))
    t_start = time.perf_counter()
    say(f"preparing data set {cfg.data!r}")
    train_ds, val_ds, test_ds = (_load_split(cfg, s) for s in ("train", "val", "test"))
    num_classes = int(getattr(train_ds, "num_classes", 2))
    in_channels = int(getattr(train_ds, "in_channels", 1))
    spatial_dims = int(getattr(train_ds, "spatial_dims", 2))
    class_names = getattr(train_ds, "class_names", None)
    if cfg.attacks:
        attacks: list[Any] = list(cfg.attacks)
        skipped: dict[str, str] = {}
    else:
        resolved = resolve_suite(cfg.suite, cfg.norm, num_classes)
        attacks, skipped = resolved.attacks, resolved.skipped
    test_loader = DataLoader(test_ds, batch_size=100, shuffle=False)
    from medrobust.defenses.data import UnlabelledView

    unlabelled_all = UnlabelledView(train_ds)
    rows: list[dict[str, Any]] = []
    per_model: dict[str, dict[str, Any]] = {}
    n_train = len(train_ds)  # type: ignore[arg-type]
    for fraction in cfg.fractions:
        for recipe in cfg.recipes:
            key = _model_key(recipe, fraction)
            folder = out / "models" / key
            epochs = cfg.epochs
            if cfg.equal_steps:
                epochs = max(1, round(cfg.epochs / fraction))
            params = cfg.params_for(recipe)
            train_cfg = TrainConfig(
                epochs=epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                seed=cfg.seed,
                recipe=recipe,
                recipe_params=params,
                labelled_fraction=fraction,
            )
            model = create_model(
                cfg.model,
                num_classes=num_classes,
                in_channels=in_channels,
                spatial_dims=spatial_dims,
                class_names=class_names,
                seed=cfg.seed,
                **cfg.model_params,
            )
            say(f"[{key}] training {recipe} on {_pct(fraction)} of the labels ({epochs} epochs)")
            use_unl = recipe == "ssat" and fraction >= 1.0
            train_result = fit(
                model,
                train_ds,
                val_ds,
                train_cfg,
                folder / "train",
                card_info={"data": {"name": cfg.data, "seed": cfg.data_params.get("seed")}},
                resume=resume and (folder / "train" / "last.pt").exists(),
                overwrite=overwrite or resume,
                unlabelled=unlabelled_all if use_unl else None,
            )
            model.eval()
            card = {"architecture": cfg.model, "recipe": recipe, "labelled_fraction": fraction}
            say(f"[{key}] auditing (worst case of {', '.join(_names(attacks))})")
            ev = evaluate(
                model,
                test_loader,
                attacks=attacks,
                eps=list(cfg.eps),
                norm=cfg.norm,
                seed=cfg.seed,
                checks=cfg.checks,
                keep_adversarial=len(test_ds),  # type: ignore[arg-type]
                model_info=card,
                title=f"Robustness audit: {cfg.model} trained with {recipe} on "
                f"{_pct(fraction)} of the labels",
            )
            say(f"[{key}] fitting detector {cfg.detector!r} on clean training images")
            det = create_detector(cfg.detector, fpr=cfg.fpr, **cfg.detector_params)
            det.fit(
                model,
                DataLoader(unlabelled_all, batch_size=100),
                calibration=DataLoader(val_ds, batch_size=100),
            )
            det.save(folder / "detector")
            say(
                f"[{key}] detection and system risk"
                + (" (with adaptive attack)" if cfg.adaptive else "")
            )
            assessment = assess_detector(
                model,
                det,
                test_loader,
                ev,
                attacks=attacks if cfg.detection_per_attack else [],
                adaptive=cfg.adaptive,
                adaptive_params=cfg.adaptive_params,
                fpr=0.05,
                progress=None,
            )
            sizes = _split_sizes(folder / "train")
            n_labelled = int(sizes.get("train", n_train))
            row = {
                "model": key,
                "recipe": recipe,
                "recipe_params": params,
                "labelled_fraction": fraction,
                "n_labelled": n_labelled,
                "n_unlabelled": int(sizes.get("unlabelled", 0)),
                "epochs": train_result.epochs_run,
                "wall_time_s": train_result.wall_time_s,
                "clean_accuracy": ev.metrics["clean"]["accuracy"],
                "robust_accuracy": {
                    r["eps_display"]: r["robust_accuracy"] for r in ev.metrics["worst_case"]
                },
                "checks_flagged": [
                    c["code"] for c in ev.metrics["checks"] if c["status"] != "pass"
                ],
            }
            rows.append(row)
            per_model[key] = {"row": row, **assessment.to_metrics()}
            if cfg.write_audits:
                from medrobust.evaluation.risk import defense_section

                training = {
                    k: row[k]
                    for k in (
                        "recipe",
                        "recipe_params",
                        "labelled_fraction",
                        "n_labelled",
                        "n_unlabelled",
                        "epochs",
                        "wall_time_s",
                    )
                }
                ev.metrics.update(assessment.to_metrics())
                ev.metrics["defense"] = [training]
                ev.write(
                    folder / "audit",
                    overwrite=True,
                    extra_sections=[defense_section([training]), *assessment.report_sections()],
                    config_extra={"training": train_cfg.to_dict(), "detector": det.describe()},
                )
    _cost_ratios(rows)
    metrics = _study_metrics(cfg, rows, per_model, skipped, time.perf_counter() - t_start)
    report = _write_report(cfg, metrics, out)
    import yaml

    from medrobust._utils.io import to_jsonable

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
    import json

    card = json.loads((train_dir / "model_card.json").read_text(encoding="utf-8"))
    sizes = (card.get("data") or {}).get("split_sizes") or {}
    return {str(k): int(v) for k, v in sizes.items()}


def _cost_ratios(rows: list[dict[str, Any]]) -> None:
    base = {r["labelled_fraction"]: r for r in rows if r["recipe"] == "standard"}
    for r in rows:
        ref = base.get(r["labelled_fraction"])
        r["cost_ratio"] = (
            r["wall_time_s"] / ref["wall_time_s"]
            if ref is not None and ref["wall_time_s"] > 0
            else None
        )


def _study_metrics(
    cfg: StudyConfig,
    rows: list[dict[str, Any]],
    per_model: Mapping[str, Mapping[str, Any]],
    skipped: Mapping[str, str],
    total_s: float,
) -> dict[str, Any]:
    from datetime import datetime, timezone

    from medrobust._utils.format import fmt_eps
    from medrobust._version import __version__

    eps = list(cfg.eps)
    risk, detection = [], []
    for key, m in per_model.items():
        for r in m["risk"]:
            risk.append({"model": key, **r})
        for d in m["detection"]["results"]:
            detection.append({"model": key, **d})
    summary = _summary(cfg, rows, risk)
    return {
        "schema_version": 1,
        "medrobust_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "title": "Defence study: classification or detection?",
        "data": {
            "name": cfg.data,
            "params": dict(cfg.data_params),
            "split_sizes": dict(cfg.split_sizes or {}),
        },
        "threat_model": {"norm": cfg.norm, "eps": eps, "eps_display": [fmt_eps(e) for e in eps]},
        "study": {
            "config": cfg.to_dict(),
            "suite_skipped": dict(skipped),
            "detectors": {k: m["detection"]["detector"] for k, m in per_model.items()},
            "summary": summary,
        },
        "defenses": rows,
        "detection": detection,
        "risk": risk,
        "timing": {"total_s": total_s, "torch_threads": torch.get_num_threads()},
    }


def _summary(
    cfg: StudyConfig, rows: Sequence[Mapping[str, Any]], risk: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Plain sentences reading the numbers at the largest budget, per labelled fraction."""
    from medrobust._utils.format import fmt_eps

    e = max(cfg.eps)
    lines = []
    for fraction in cfg.fractions:
        at = {
            r["model"]: r
            for r in risk
            if math.isclose(r["eps"], e)
            and any(x["model"] == r["model"] and x["labelled_fraction"] == fraction for x in rows)
        }
        if not at:
            continue
        recipe_of = {x["model"]: x["recipe"] for x in rows}
        best_clf = min(at.values(), key=lambda r: r["classifier_risk"])
        col = "system_risk_adaptive" if cfg.adaptive else "system_risk"
        best_sys = min(at.values(), key=lambda r: float(r[col]))
        text = (
            f"{_pct(fraction)} labels, eps={fmt_eps(e)}: lowest classifier-only risk "
            f"{best_clf['classifier_risk']:.3f} ({recipe_of[best_clf['model']]}); lowest system "
            f"risk with {cfg.detector}{' under the adaptive attack' if cfg.adaptive else ''} "
            f"{float(best_sys[col]):.3f} ({recipe_of[best_sys['model']]} + {cfg.detector}, clean "
            f"false-alarm rate {best_sys['false_alarm_rate']:.3f})"
        )
        std = [r for k, r in at.items() if recipe_of[k] == "standard"]
        if std:
            s = std[0]
            text += (
                f"; standard training alone {s['classifier_risk']:.3f}, with "
                f"{cfg.detector} {float(s[col]):.3f}"
            )
        lines.append(text + ".")
    return lines


# ------------------------------------------------------------------------------ report
def _grid(cfg: StudyConfig, ylabel: str) -> tuple[Figure, list[Any]]:
    n = len(cfg.fractions)
    fig = Figure(figsize=(3.6 * n + 2.2, 3.6), layout="constrained")
    axes = list(fig.subplots(1, n, squeeze=False)[0])
    for ax, f in zip(axes, cfg.fractions, strict=True):
        ax.set_title(f"{_pct(f)} labelled")
        ax.set_xlabel("budget ε")
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.grid(True, color="#DDDDDD", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].set_ylabel(ylabel)
    return fig, axes


def _eps_axis(ax: Any, cfg: StudyConfig, with_zero: bool) -> None:
    from medrobust._utils.format import fmt_eps

    ticks = ([0.0] if with_zero else []) + sorted(cfg.eps)
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0" if t == 0 else fmt_eps(t) for t in ticks], fontsize=8)


def robustness_figure(cfg: StudyConfig, rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Worst-case robust accuracy against the budget, one panel per labelled fraction.

    Args:
        cfg: The study settings (recipes, fractions, budgets).
        rows: The study's ``defenses`` rows.

    Returns:
        The figure (matplotlib object API, no pyplot); clean accuracy is drawn at ``eps = 0``.
    """
    from medrobust._utils.format import fmt_eps

    fig, axes = _grid(cfg, "worst-case robust accuracy")
    for ax, f in zip(axes, cfg.fractions, strict=True):
        for k, recipe in enumerate(cfg.recipes):
            r = next(
                (x for x in rows if x["recipe"] == recipe and x["labelled_fraction"] == f), None
            )
            if r is None:
                continue
            xs = [0.0, *sorted(cfg.eps)]
            ys = [r["clean_accuracy"], *[r["robust_accuracy"][fmt_eps(e)] for e in sorted(cfg.eps)]]
            ax.plot(xs, ys, marker=_MARKERS[k % 7], color=_COLOURS[k % 7], label=recipe)
        _eps_axis(ax, cfg, True)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def risk_comparison_figure(
    cfg: StudyConfig, risk: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
) -> Figure:
    """Classifier-only risk (solid) and system risk (dashed) per recipe and fraction.

    Args:
        cfg: The study settings.
        risk: The study's ``risk`` rows.
        rows: The study's ``defenses`` rows.

    Returns:
        The figure; the dashed lines use the adaptive system risk when the study ran the
        adaptive attack.
    """
    fig, axes = _grid(cfg, "risk: P(wrong and undetected)")
    col = "system_risk_adaptive" if cfg.adaptive else "system_risk"
    for ax, f in zip(axes, cfg.fractions, strict=True):
        for k, recipe in enumerate(cfg.recipes):
            key = next(
                (x["model"] for x in rows if x["recipe"] == recipe and x["labelled_fraction"] == f),
                None,
            )
            pts = sorted((r for r in risk if r["model"] == key), key=lambda r: r["eps"])
            if not pts:
                continue
            xs = [r["eps"] for r in pts]
            colour, marker = _COLOURS[k % 7], _MARKERS[k % 7]
            ax.plot(
                xs,
                [r["classifier_risk"] for r in pts],
                color=colour,
                marker=marker,
                label=f"{recipe}",
            )
            ax.plot(
                xs,
                [float(r[col]) for r in pts],
                color=colour,
                marker=marker,
                linestyle="--",
                label=f"{recipe} + {cfg.detector}",
            )
        _eps_axis(ax, cfg, False)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return fig


def detection_comparison_figure(
    cfg: StudyConfig, detection: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
) -> Figure:
    """Detection AUROC of the worst-case (solid) and adaptive (dashed) examples per model.

    Args:
        cfg: The study settings.
        detection: The study's ``detection`` rows.
        rows: The study's ``defenses`` rows.

    Returns:
        The figure.
    """
    fig, axes = _grid(cfg, f"{cfg.detector} detection AUROC")
    for ax, f in zip(axes, cfg.fractions, strict=True):
        for k, recipe in enumerate(cfg.recipes):
            key = next(
                (x["model"] for x in rows if x["recipe"] == recipe and x["labelled_fraction"] == f),
                None,
            )
            for attack, style in (("worst-case", "-"), ("pgd-adaptive", "--")):
                pts = sorted(
                    (d for d in detection if d["model"] == key and d["attack"] == attack),
                    key=lambda d: d["eps"],
                )
                if not pts:
                    continue
                ax.plot(
                    [d["eps"] for d in pts],
                    [math.nan if d["auroc"] is None else d["auroc"] for d in pts],
                    color=_COLOURS[k % 7],
                    marker=_MARKERS[k % 7],
                    linestyle=style,
                    label=f"{recipe} ({'adaptive' if attack == 'pgd-adaptive' else 'suite'})",
                )
        ax.axhline(0.5, color="#999999", linestyle=":", linewidth=1.0)
        _eps_axis(ax, cfg, False)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return fig


def _write_report(cfg: StudyConfig, metrics: Mapping[str, Any], out: Path) -> Path:
    from markupsafe import Markup, escape

    from medrobust._utils.format import fmt_eps
    from medrobust._utils.io import write_text_atomic
    from medrobust.reporting.html import ReportSection, html_table, render_report

    rows = metrics["defenses"]
    eps_keys = [fmt_eps(e) for e in sorted(cfg.eps)]
    table = []
    for r in rows:
        rec: dict[str, Any] = {
            "model": r["model"],
            "labels": f"{_pct(r['labelled_fraction'])} ({r['n_labelled']})",
            "unlabelled": r["n_unlabelled"],
            "epochs": r["epochs"],
            "train time (s)": round(r["wall_time_s"], 1),
            "cost vs standard": None if r["cost_ratio"] is None else round(r["cost_ratio"], 2),
            "clean acc.": round(r["clean_accuracy"], 3),
        }
        for k in eps_keys:
            rec[f"robust acc. {k}"] = round(r["robust_accuracy"][k], 3)
        rec["checks flagged"] = ", ".join(r["checks_flagged"]) or "none"
        table.append(rec)
    intro = (
        f"Every model is a {cfg.model} trained with the same loop and audited with the same "
        f"worst-case suite ({'explicit attacks' if cfg.attacks else repr(cfg.suite)}, "
        f"{cfg.norm}). Adversarial recipes train at eps={fmt_eps(cfg.train_eps)}. "
        "Training cost is wall time on this machine; the ratio is to standard training at the "
        "same labelled fraction."
    )
    summary = metrics["study"]["summary"]
    summary_html = Markup("<ul>{}</ul>").format(
        Markup("").join(Markup("<li>{}</li>").format(s) for s in summary)
    )
    defenses = ReportSection(
        title="Defences",
        body=Markup("<p>{}</p>").format(escape(intro)) + html_table(table),
        figures=[robustness_figure(cfg, rows)],
        captions=["Clean accuracy (eps = 0) and worst-case robust accuracy per budget."],
        key="defenses",
    )
    det_rows = [
        {
            "model": d["model"],
            "attack": d["attack"],
            "eps": d["eps_display"],
            "AUROC": None if d["auroc"] is None else round(d["auroc"], 3),
            "TPR at 5% FPR": None if d["tpr_at_fpr"] is None else round(d["tpr_at_fpr"], 3),
            "detection rate": None
            if d["detection_rate"] is None
            else round(d["detection_rate"], 3),
            "n adv.": d["n_adversarial"],
        }
        for d in metrics["detection"]
        if d["attack"] in ("worst-case", "pgd-adaptive")
    ]
    detection = ReportSection(
        title="Detection",
        body=Markup("<p>{}</p>").format(
            escape(
                f"Detector {cfg.detector!r}, fitted on each model's clean training images without "
                f"labels and thresholded at {100 * cfg.fpr:g}% clean false positives on the "
                "validation split. Rows: the audit's worst-case examples and the adaptive "
                "attack's misclassified examples (each model's audit report holds the rest)."
            )
        )
        + html_table(det_rows),
        figures=[detection_comparison_figure(cfg, metrics["detection"], rows)],
        captions=["Detection AUROC against the budget (solid: suite; dashed: adaptive attack)."],
        key="detection",
    )
    risk_rows = [
        {
            "model": r["model"],
            "eps": r["eps_display"],
            "classifier-only risk": round(r["classifier_risk"], 3),
            "system risk (non-adaptive)": round(r["system_risk"], 3),
            "system risk (adaptive)": None
            if r["system_risk_adaptive"] is None
            else round(r["system_risk_adaptive"], 3),
            "clean false-alarm rate": round(r["false_alarm_rate"], 3),
        }
        for r in metrics["risk"]
    ]
    risk = ReportSection(
        title="System risk",
        body=Markup("<p>{}</p>").format(
            escape(
                "Risk is P(misclassified and not flagged). Classifier-only risk is one minus the "
                "audit's worst-case robust accuracy; the system columns put the detector in front."
            )
        )
        + summary_html
        + html_table(risk_rows),
        figures=[risk_comparison_figure(cfg, metrics["risk"], rows)],
        captions=[
            "Solid: classifier alone; dashed: classifier + detector under the adaptive attack."
        ],
        key="risk",
    )
    from medrobust.reporting.html import render_value

    settings = ReportSection(
        title="Study settings",
        body=render_value(metrics["study"]["config"]),
        key="study",
    )
    html = render_report(metrics, extra_sections=[defenses, detection, risk, settings])
    path = out / "report.html"
    write_text_atomic(path, html)
    return path
