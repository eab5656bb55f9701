"""The detector jobs: fit a detector of adversarial inputs on clean images, and audit a
detector-guarded model (``medrobust detect fit`` and ``medrobust detect score``).

Bad input raises ``ValueError``/``TypeError`` naming what was expected and what came.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrobust._utils.dist import is_main
from medrobust.pipelines.locking import holds_run_lock

__all__ = ["DetectorAudit", "DetectorFit", "DetectorScore", "fit_detector", "score_detector"]


@dataclass
class DetectorFit:
    """The settings of fitting a detector.

    Attributes:
        detector: Registered detector name.
        params: Detector parameters.
        data: Data set of the clean images.
        data_params: Data set parameters (``size`` defaults to the model's training size).
        split: Split of the clean fit images.
        calibration_split: Split that sets the threshold; ``"none"`` holds out part of the fit
            split.
        fpr: Clean false-positive rate.
        batch_size: Batch size.
    """

    detector: str = "uad"
    params: dict[str, Any] = field(default_factory=dict)
    data: str = "bus-phantom"
    data_params: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    calibration_split: str = "val"
    fpr: float = 0.05
    batch_size: int = 100


@dataclass
class DetectorAudit:
    """The settings of the audit of a detector-guarded model.

    Attributes:
        data: Data set name.
        data_params: Data set parameters (``size`` defaults to the model's training size).
        split: The split to audit.
        suite: Attack suite, used when ``attacks`` is empty.
        attacks: Attack names.
        eps: Budgets.
        norm: ``"linf"`` or ``"l2"``.
        adaptive: Also run the adaptive attacks (which know the detector).
        adaptive_attacks: Which: ``pgd-adaptive`` (penalty sweep), ``orthogonal-pgd`` and
            ``feature-matching`` by default.
        adaptive_steps: Steps of the adaptive attacks.
        adaptive_weight: Weight of the detector penalty.
        max_samples: Audit at most this many samples (None: all).
        batch_size: Batch size.
        seed: Attack seed.
    """

    data: str = "bus-phantom"
    data_params: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    suite: str = "quick"
    attacks: list[str] = field(default_factory=list)
    eps: list[float] = field(default_factory=lambda: [1 / 255, 2 / 255, 4 / 255, 8 / 255])
    norm: str = "linf"
    adaptive: bool = True
    adaptive_attacks: list[str] = field(
        default_factory=lambda: ["pgd-adaptive", "orthogonal-pgd", "feature-matching"]
    )
    adaptive_steps: int = 50
    adaptive_weight: float = 1.0
    max_samples: int | None = None
    batch_size: int = 100
    seed: int = 0


@dataclass
class DetectorScore:
    """What :func:`score_detector` returns.

    Attributes:
        result: The audit (``EvaluationResult``) with the detection and risk entries.
        assessment: The detector assessment (``risk`` rows, report sections).
        report: The path of ``report.html``.
    """

    result: Any
    assessment: Any
    report: Path


def _dataset(name: str, split: str, params: dict[str, Any]) -> Any:
    """The named split of a registered data set."""
    from medrobust.data import create_dataset

    return create_dataset(name, split=split, **params)


def _data_params(card: Any, data: str, params: dict[str, Any]) -> dict[str, Any]:
    """Default ``size`` to the resolution the model was trained on, for its own data set."""
    info = getattr(card, "data", None)
    size = getattr(info, "image_size", None)
    if data == getattr(info, "name", None) and size and "size" not in params:
        params = {**params, "size": int(size[-1])}
    return params


@holds_run_lock("out")
def fit_detector(
    checkpoint: str | Path,
    out: Path,
    settings: DetectorFit,
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit a detector on clean images (no labels; no adversarial examples for UAD) and save it.

    Args:
        checkpoint: The classifier (a medrobust ``best.pt``).
        out: Folder for the fitted detector.
        settings: Detector, data and threshold settings.
        overwrite: Replace a detector already in ``out``.
        progress: Receives one-line status messages.

    Returns:
        The fitted detector's description (``threshold``, ``n_fit``, ``n_calibration``,
        ``time_s`` ...).

    Raises:
        FileExistsError: If ``out`` holds a detector and ``overwrite`` is false.
    """
    from torch.utils.data import DataLoader

    from medrobust.detectors import create_detector
    from medrobust.models import load_checkpoint

    s = settings
    if (out / "detector.json").exists() and not overwrite:
        raise FileExistsError(
            f"{out} already holds a detector; pass --overwrite or choose another --out"
        )
    model, card = load_checkpoint(checkpoint)
    model.eval()
    params = _data_params(card, s.data, s.data_params)
    clean = _dataset(s.data, s.split, params)
    no_cal = s.calibration_split.lower() == "none"
    cal = None if no_cal else _dataset(s.data, s.calibration_split, params)
    det = create_detector(s.detector, fpr=s.fpr, batch_size=s.batch_size, **s.params)
    if progress:
        progress(f"fitting {s.detector!r} on {len(clean)} clean {s.split} images")
    det.fit(
        model,
        DataLoader(clean, batch_size=s.batch_size),
        calibration=None if cal is None else DataLoader(cal, batch_size=s.batch_size),
    )
    if is_main():  # under torchrun every process fitted alike; rank 0 saves
        det.save(out)
    info: dict[str, Any] = det.describe()
    return info


@holds_run_lock("out_dir")
def score_detector(
    checkpoint: str | Path,
    detector_dir: Path,
    settings: DetectorAudit,
    out_dir: Path,
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DetectorScore:
    """Audit a detector-guarded model: detection AUROC and TPR per attack and budget, and the
    system risk with and without the detector, adaptive attack included.

    Args:
        checkpoint: The classifier (a medrobust ``best.pt``).
        detector_dir: A folder written by :func:`fit_detector`.
        settings: Data, attacks, budgets and the adaptive attack.
        out_dir: The run folder.
        overwrite: Replace results in ``out_dir``.
        progress: Receives one-line status messages.

    Returns:
        The audit, the detector assessment and the report path.

    Raises:
        ValueError: For invalid settings (``max_samples`` below 1, unknown attacks ...).
    """
    from torch.utils.data import DataLoader, Subset

    from medrobust.detectors import load_detector
    from medrobust.evaluation.risk import assess_detector
    from medrobust.evaluation.suites import resolve_suite
    from medrobust.models import load_checkpoint
    from medrobust.pipelines.results import evaluate
    from medrobust.reporting.sections.risk import risk_sections

    s, say = settings, progress or (lambda _text: None)
    model, card = load_checkpoint(checkpoint)
    model.eval()
    det = load_detector(detector_dir, model)
    ds = _dataset(s.data, s.split, _data_params(card, s.data, s.data_params))
    if s.max_samples is not None:
        if s.max_samples < 1:
            raise ValueError(f"--max-samples must be >= 1, got {s.max_samples}")
        ds = Subset(ds, range(min(s.max_samples, len(ds))))
    loader = DataLoader(ds, batch_size=s.batch_size, shuffle=False)
    attack_list: list[Any] = list(s.attacks)
    if not attack_list:
        attack_list = resolve_suite(s.suite, s.norm, model.num_classes).attacks
    say(f"auditing {checkpoint} on {len(ds)} {s.split} images")
    result = evaluate(
        model,
        loader,
        attacks=attack_list,
        eps=list(s.eps),
        norm=s.norm,
        seed=s.seed,
        keep_adversarial=len(ds),
        model_info=card.to_dict() if hasattr(card, "to_dict") else {},
        title=f"Robustness audit with detector {det.name!r}",
    )
    say("measuring the detector (each attack, then the adaptive attack)")
    assessment = assess_detector(
        model,
        det,
        loader,
        result,
        attacks=attack_list,
        adaptive=s.adaptive,
        adaptive_attacks=list(s.adaptive_attacks),
        adaptive_params={"steps": s.adaptive_steps, "weight": s.adaptive_weight},
        batch_size=s.batch_size,
        progress=say,
    )
    assessment.merge_into(result.metrics)  # detection, risk and check MR201
    result.write(
        out_dir,
        overwrite=overwrite,
        extra_sections=risk_sections(result.metrics),
        config_extra={"checkpoint": str(checkpoint), "detector": det.describe()},
    )
    return DetectorScore(result, assessment, out_dir / "report.html")
