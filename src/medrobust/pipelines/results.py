"""Audits that can write their run folder: the layer where evaluation meets reporting.

``medrobust.evaluate(model, loader, ...)`` returns an :class:`AuditResult`, an
:class:`~medrobust.evaluation.EvaluationResult` with :meth:`AuditResult.write`. The evaluation
layer computes; the reporting layer renders dictionaries; only this layer joins them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from medrobust.evaluation import CHECKS, EvaluationResult
from medrobust.evaluation import evaluate as _evaluate
from medrobust.reporting.run_folder import write_run_folder

__all__ = ["AuditResult", "check_docs", "evaluate", "write_result"]


def check_docs() -> dict[str, str]:
    """What each sanity-check code means, for the report's "What the checks mean"."""
    return {code: text for code, (_, text) in CHECKS.items()}


def write_result(
    result: EvaluationResult, run_dir: str | os.PathLike[str], **kwargs: Any
) -> Path:
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


def evaluate(model: nn.Module, loader: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`medrobust.evaluation.evaluate` whose result can :meth:`~AuditResult.write` its
    run folder (the function behind ``medrobust.evaluate``)."""
    result = _evaluate(model, loader, *args, **kwargs)
    if type(result) is EvaluationResult:
        return AuditResult(**vars(result))
    return result
