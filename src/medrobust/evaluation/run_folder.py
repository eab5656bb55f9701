"""Writing a run folder: the resolved config, metrics, adversarial examples and the report.

Every file is first written to a staging folder inside the run folder and then moved into place;
``metrics.json`` is moved last, so a run folder with a ``metrics.json`` is complete, and an
interrupted write never leaves a complete-looking result behind.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

if TYPE_CHECKING:
    from medrobust.evaluation.suite import EvaluationResult
    from medrobust.reporting.html import ReportSection

METRICS = "metrics.json"


def write_run_folder(
    result: EvaluationResult,
    run_dir: Path,
    *,
    overwrite: bool = False,
    extra_files: Mapping[str, bytes] | None = None,
    extra_sections: Sequence[ReportSection] = (),
    config_extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.html``, ``metrics.json``, ``config.yaml`` and
    ``adversarial/worst_case_eps_*.npz`` into ``run_dir``.

    Args:
        result: The evaluation result.
        run_dir: The run folder (created if needed; other files in it are kept).
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
    from medrobust.evaluation.checks import CHECKS
    from medrobust.reporting.html import render_report
    from medrobust.reporting.io import to_jsonable, write_json_atomic, write_text_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / METRICS).exists() and not overwrite:
        raise FileExistsError(
            f"{run_dir} already contains a completed evaluation ({METRICS}); choose another "
            "output folder or pass overwrite=True (--overwrite)"
        )
    staging = run_dir / f".staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        config = {"evaluation": result.config, **dict(config_extra or {})}
        write_text_atomic(
            staging / "config.yaml",
            yaml.safe_dump(to_jsonable(config), sort_keys=False, allow_unicode=True),
        )
        for key, arrays in result.adversarial.items():
            if arrays["index"].numel() == 0:
                continue
            buf = io.BytesIO()
            named: dict[str, Any] = {k: v.numpy() for k, v in arrays.items()}
            np.savez_compressed(buf, **named)
            name = f"adversarial/worst_case_eps_{key.replace('/', '_')}.npz"
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(buf.getvalue())
        for rel, data in (extra_files or {}).items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        html = render_report(
            result.metrics,
            result.examples,
            extra_sections=extra_sections,
            check_docs={code: text for code, (_, text) in CHECKS.items()},
        )
        write_text_atomic(staging / "report.html", html)
        write_json_atomic(staging / METRICS, result.metrics)
        # move into place, metrics.json last
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == METRICS)
        for src in files:
            dest = run_dir / src.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run_dir
