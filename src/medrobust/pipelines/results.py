"""Audits that can write their run folder: the layer where evaluation meets reporting.

``medrobust.evaluate(model, loader, ...)`` returns an :class:`AuditResult`, an
:class:`~medrobust.evaluation.EvaluationResult` with :meth:`AuditResult.write`. The evaluation
layer computes; the reporting layer renders dictionaries; only this layer joins them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from medrobust.evaluation import CHECKS, EvaluationResult
from medrobust.evaluation import evaluate as _evaluate
from medrobust.evaluation.explanation import ExplanationResult
from medrobust.evaluation.segmentation import SegmentationEvaluation
from medrobust.evaluation.segmentation import evaluate_segmentation as _evaluate_segmentation
from medrobust.reporting.html import render_report
from medrobust.reporting.run_folder import commit_run_folder, npz_bytes, write_run_folder
from medrobust.reporting.sections.explanation import explanation_section
from medrobust.reporting.sections.segmentation import report_sections

__all__ = [
    "AuditResult",
    "SegmentationAudit",
    "check_docs",
    "evaluate",
    "evaluate_segmentation",
    "write_explanations",
    "write_result",
    "write_segmentation",
]


def check_docs() -> dict[str, str]:
    """What each sanity-check code means, for the report's "What the checks mean"."""
    return {code: text for code, (_, text) in CHECKS.items()}


def write_result(result: EvaluationResult, run_dir: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write the run folder of a classification audit (``report.html``, ``metrics.json``,
    ``config.yaml``, worst-case adversarial examples).

    Args:
        result: The audit result.
        run_dir: The run folder.
        **kwargs: ``overwrite``, ``extra_files``, ``extra_sections``, ``config_extra`` (see
            :func:`medrobust.reporting.run_folder.write_run_folder`).

    Raises:
        FileExistsError: If ``run_dir`` holds a completed run and ``overwrite`` is false.
    """
    return write_run_folder(result, Path(run_dir), check_docs=check_docs(), **kwargs)


class AuditResult(EvaluationResult):
    """An :class:`~medrobust.evaluation.EvaluationResult` that writes its run folder."""

    def write(
        self, run_dir: str | os.PathLike[str], *, overwrite: bool = False, **kwargs: Any
    ) -> Path:
        """Write the run folder; see :func:`write_result`."""
        return write_result(self, run_dir, overwrite=overwrite, **kwargs)


def write_segmentation(
    result: SegmentationEvaluation,
    run_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    extra_sections: Sequence[Any] = (),
    config_extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.html``, ``metrics.json`` (last), ``config.yaml`` and
    ``adversarial/*.npz`` of a segmentation audit into ``run_dir``, each file atomically.

    Raises:
        FileExistsError: If ``run_dir`` already holds a ``metrics.json`` and ``overwrite`` is
            false.
    """
    sections = [*report_sections(result.metrics, result.examples), *extra_sections]
    html = render_report(result.metrics, extra_sections=sections, check_docs=check_docs())
    return commit_run_folder(
        Path(run_dir),
        metrics=result.metrics,
        report_html=html,
        config={"evaluation": result.config, **dict(config_extra or {})},
        files={
            f"adversarial/{name}.npz": npz_bytes(arrays)
            for name, arrays in result.adversarial.items()
        },
        overwrite=overwrite,
    )


def write_explanations(
    result: ExplanationResult,
    run_dir: str | os.PathLike[str],
    *,
    config: Mapping[str, Any],
    save_maps: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the run folder of an explanation audit: ``config.yaml``, ``maps.npz``,
    ``report.html`` and (last) ``metrics.json`` (the audit's document: the shared header,
    ``"explanations"``, checks and timing), each file atomically.

    Raises:
        FileExistsError: If ``run_dir`` already holds a ``metrics.json`` and ``overwrite`` is
            false.
    """
    section = explanation_section(result.metrics, result.examples, result.class_names)
    html = render_report(result.document, [], extra_sections=[section], check_docs=check_docs())
    files = {"maps.npz": result.maps_npz()} if save_maps and result.maps else {}
    run = Path(run_dir)
    commit_run_folder(
        run, metrics=result.document, report_html=html, config=config, files=files,
        overwrite=overwrite,
    )  # fmt: skip
    return run


class SegmentationAudit(SegmentationEvaluation):
    """A :class:`~medrobust.evaluation.segmentation.SegmentationEvaluation` that writes its
    run folder."""

    def sections(self) -> list[Any]:
        """The report sections (clean, untargeted and worst case, targeted attacks, noise)."""
        return report_sections(self.metrics, self.examples)

    def write(self, run_dir: str | os.PathLike[str], **kwargs: Any) -> Path:
        """Write the run folder; see :func:`write_segmentation`."""
        return write_segmentation(self, run_dir, **kwargs)


def evaluate_segmentation(model: nn.Module, loader: Iterable[Any], **kwargs: Any) -> Any:
    """:func:`medrobust.evaluation.evaluate_segmentation` whose result can write its run
    folder (the function behind ``medrobust.evaluate_segmentation``)."""
    return SegmentationAudit(**vars(_evaluate_segmentation(model, loader, **kwargs)))


def evaluate(model: nn.Module, loader: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`medrobust.evaluation.evaluate` whose result can write its run folder (the
    function behind ``medrobust.evaluate``; a segmenter gets :func:`evaluate_segmentation`)."""
    result = _evaluate(model, loader, *args, **kwargs)
    if type(result) is EvaluationResult:
        return AuditResult(**vars(result))
    if type(result) is SegmentationEvaluation:
        return SegmentationAudit(**vars(result))
    return result
