"""Writing a run folder: the resolved config, metrics, adversarial examples and the report.

Every file is first written to a staging folder inside the run folder and then moved into place;
``metrics.json`` is moved last, so a run folder with a ``metrics.json`` is complete, and an
interrupted write never leaves a complete-looking result behind. The staging folder is named
``.staging-<pid>``; those of dead writers are removed by the next write.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import yaml

from medrobust._utils.dist import is_main
from medrobust._utils.io import to_jsonable, write_json_atomic, write_text_atomic
from medrobust._utils.lock import STAGING_PREFIX, remove_stale_staging

if TYPE_CHECKING:
    from medrobust.reporting.html import ReportSection


class AuditOutput(Protocol):
    """What the run-folder writer reads of an audit result (reporting never imports the
    evaluation: any object with these attributes will do)."""

    metrics: dict[str, Any]
    examples: list[Any]
    adversarial: dict[str, dict[str, Any]]
    config: dict[str, Any]


METRICS = "metrics.json"


def commit_run_folder(
    run_dir: Path,
    *,
    metrics: Mapping[str, Any],
    report_html: str,
    config: Mapping[str, Any],
    files: Mapping[str, bytes] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete run folder: ``config.yaml``, the given files, ``report.html`` and, last,
    ``metrics.json``. Every file is staged inside ``run_dir`` and then moved into place, so an
    interrupted write never leaves a complete-looking result behind; other files already in
    ``run_dir`` (e.g. ``train/``) are kept. Staging folders left by writers that died are
    removed first (:func:`medrobust._utils.lock.remove_stale_staging`); a live writer's are kept.

    Args:
        run_dir: The run folder (created if needed).
        metrics: The ``metrics.json`` document.
        report_html: The rendered report.
        config: The resolved configuration for ``config.yaml``.
        files: More files, relative path -> bytes.
        overwrite: Replace an earlier completed run in the same folder.

    Returns:
        ``run_dir``.

    Raises:
        FileExistsError: If ``run_dir`` already holds a completed run and ``overwrite`` is false.
    """
    if not is_main():  # several processes (torchrun): rank 0 writes the one run folder
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / METRICS).exists() and not overwrite:
        raise FileExistsError(
            f"{run_dir} already contains a completed evaluation ({METRICS}); choose another "
            "output folder or pass overwrite=True (--overwrite)"
        )
    remove_stale_staging(run_dir)  # left by writers that died (kill -9, power loss)
    staging = run_dir / f"{STAGING_PREFIX}{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        write_text_atomic(
            staging / "config.yaml",
            yaml.safe_dump(to_jsonable(dict(config)), sort_keys=False, allow_unicode=True),
        )
        for rel, data in (files or {}).items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        write_text_atomic(staging / "report.html", report_html)
        write_json_atomic(staging / METRICS, metrics)
        # move into place, metrics.json last
        staged = sorted(p for p in staging.rglob("*") if p.is_file())
        staged.sort(key=lambda p: p.name == METRICS)
        for src in staged:
            dest = run_dir / src.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run_dir


def npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """Arrays (numpy or torch) as the bytes of a compressed ``.npz`` file (no pickles)."""
    named: dict[str, Any] = {
        k: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for k, v in arrays.items()
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **named)
    return buf.getvalue()


def write_run_folder(
    result: AuditOutput,
    run_dir: Path,
    *,
    check_docs: Mapping[str, str] | None = None,
    overwrite: bool = False,
    extra_files: Mapping[str, bytes] | None = None,
    extra_sections: Sequence[ReportSection] = (),
    config_extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.html``, ``metrics.json``, ``config.yaml`` and
    ``adversarial/worst_case_eps_*.npz`` of a classification audit into ``run_dir`` (see
    :func:`commit_run_folder`).

    Args:
        result: The evaluation result.
        run_dir: The run folder (created if needed; other files in it are kept).
        check_docs: What each sanity-check code means, for "What the checks mean".
        overwrite: Replace an earlier completed evaluation in the same folder.
        extra_files: More files to write, relative path -> bytes.
        extra_sections: More report sections.
        config_extra: More entries for ``config.yaml`` (e.g. data and training settings).

    Returns:
        ``run_dir``.

    Raises:
        FileExistsError: If ``run_dir`` already holds a completed evaluation and ``overwrite`` is
            false.
    """
    from medrobust.reporting.html import render_report

    files = {
        f"adversarial/worst_case_eps_{key.replace('/', '_')}.npz": npz_bytes(arrays)
        for key, arrays in result.adversarial.items()
        if len(arrays["index"])
    }
    files.update(extra_files or {})
    html = render_report(
        result.metrics,
        result.examples,
        extra_sections=extra_sections,
        check_docs=dict(check_docs or {}),
    )
    return commit_run_folder(
        run_dir,
        metrics=result.metrics,
        report_html=html,
        config={"evaluation": result.config, **dict(config_extra or {})},
        files=files,
        overwrite=overwrite,
    )
