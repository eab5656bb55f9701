"""The explanation job: Grad-CAM maps of a saved model, clean and attacked, in a run folder.

:func:`run_explain` loads a medrobust checkpoint, builds the named data set split, runs
:func:`medrobust.evaluation.explanation.evaluate_explanations` and writes a run folder::

    config.yaml     the resolved settings
    maps.npz        every clean and attacked map (see ExplanationResult.maps)
    report.html     self-contained report with the explanation section
    metrics.json    {"schema_version": 1, ..., "explanations": {...}}; written last

Every file is written atomically; ``metrics.json`` is moved into place last, so a folder holding
it is complete. ``medrobust explain`` runs this job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["ExplainSettings", "run_explain"]

logger = logging.getLogger(__name__)

_METRICS = "metrics.json"
#: The settings recorded under ``explain`` in ``config.yaml``, in their order.
_CONFIG_ORDER = (
    "attacks",
    "eps",
    "norm",
    "steps",
    "layer",
    "method",
    "k",
    "max_samples",
    "batch_size",
    "seed",
    "n_examples",
)


@dataclass(frozen=True)
class ExplainSettings:
    """The settings of an explanation run.

    Attributes:
        data: Registered data set name.
        data_params: Data set parameters; ``size`` defaults to the training size recorded in the
            model card when ``data`` is the training data set.
        split: The split to explain.
        attacks: Explanation presets.
        eps: Budgets in the model's input space.
        norm: ``"linf"`` or ``"l2"``.
        steps: Steps per attack.
        layer: Grad-CAM layer (default: the model's documented layer).
        method: ``"gradcam"`` or ``"gradcam++"``.
        k: Top-k size of the map metrics.
        max_samples: Explain at most this many samples (None: all).
        batch_size: Batch size.
        seed: Seed of the attacks and the noise baseline.
        n_examples: Samples shown in the overlay figure.
        save_maps: Write ``maps.npz``.
    """

    data: str = "bus-phantom"
    data_params: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    attacks: Sequence[str] = ("gradcam-kept", "gradcam-flip")
    eps: Sequence[float] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    norm: str = "linf"
    steps: int = 20
    layer: str | None = None
    method: str = "gradcam"
    k: float = 0.05
    max_samples: int | None = 64
    batch_size: int = 16
    seed: int = 0
    n_examples: int = 4
    save_maps: bool = True


def run_explain(
    checkpoint: str | Path,
    out: str | Path,
    settings: ExplainSettings | None = None,
    *,
    overwrite: bool = False,
    progress: Callable[[Any], None] | None = None,
    **overrides: Any,
) -> Path:
    """Explain a saved model on a data set split, clean and under attack, into a run folder.

    Args:
        checkpoint: A medrobust checkpoint (``best.pt``).
        out: The run folder (created if needed).
        settings: The settings (default: :class:`ExplainSettings`).
        overwrite: Replace a completed run in ``out``.
        progress: Receives the audit's progress events (a
            :class:`~medrobust.evaluation.ProgressEvent` per step).
        **overrides: Fields of :class:`ExplainSettings` replacing those of ``settings``
            (``steps=2``, ``data_params={"n": 8}`` ...).

    Returns:
        The path of ``report.html``.

    Raises:
        FileExistsError: If ``out`` already holds a completed run and ``overwrite`` is false.
        FileNotFoundError: If the checkpoint does not exist.
        TypeError: For an override that is not a setting.
        ValueError: For bad settings (unknown layer, attacks, budgets, data parameters).
    """
    from torch.utils.data import DataLoader

    from medrobust.data import create_dataset
    from medrobust.evaluation.explanation import evaluate_explanations
    from medrobust.models import load_checkpoint

    s = replace(settings or ExplainSettings(), **overrides)
    run_dir = Path(out)
    _check_run_dir(run_dir, overwrite)
    if isinstance(s.batch_size, bool) or not isinstance(s.batch_size, int) or s.batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {s.batch_size!r}")
    model, card = load_checkpoint(checkpoint)
    params = dict(s.data_params or {})
    trained_size = card.data.image_size
    if s.data == card.data.name and trained_size and "size" not in params:
        params["size"] = int(trained_size[-1])
    s = replace(s, data_params=params)
    ds = create_dataset(s.data, split=s.split, **params)
    loader = DataLoader(ds, batch_size=s.batch_size, shuffle=False, num_workers=0)
    class_names = list(getattr(ds, "class_names", []) or card.class_names or [])
    data_info = {
        "name": s.data,
        "params": s.data_params,
        "split": s.split,
        "class_names": class_names,
        "image_shape": list(ds[0]["image"].shape),
    }
    result = evaluate_explanations(
        model,
        loader,
        eps=list(s.eps),
        norm=s.norm,
        attacks=list(s.attacks),
        steps=s.steps,
        layer=s.layer,
        method=s.method,
        k=s.k,
        seed=s.seed,
        max_samples=s.max_samples,
        n_examples=s.n_examples,
        keep_maps=s.save_maps,
        class_names=class_names,
        progress=progress,
        model_info=card.to_dict(),
        data_info=data_info,
        title=f"Explanations under attack: {card.architecture} on {s.data}",
    )
    return _write_run(run_dir, s, result, checkpoint)


def _check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a run folder that is a file, or that holds a completed run (unless overwriting)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} exists and is not a folder")
    if (run_dir / _METRICS).exists() and not overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a completed explanation run ({_METRICS}); choose another "
            "folder or pass --overwrite"
        )


def _config(s: ExplainSettings, layer: str, checkpoint: str | Path) -> dict[str, Any]:
    """The ``config.yaml`` content of an explanation run (the resolved settings)."""
    explain = {**asdict(s), "attacks": list(s.attacks), "eps": list(s.eps), "layer": layer}
    return {
        "command": "explain",
        "checkpoint": str(checkpoint),
        "data": {"name": s.data, "params": s.data_params, "split": s.split},
        "explain": {key: explain[key] for key in _CONFIG_ORDER},
    }


def _write_run(run_dir: Path, s: ExplainSettings, result: Any, checkpoint: str | Path) -> Path:
    """Write config.yaml, maps.npz, report.html and (last) metrics.json through the one
    run-folder writer; return the report."""
    from medrobust.pipelines.results import write_explanations

    config = _config(s, result.metrics["layer"], checkpoint)
    write_explanations(result, run_dir, config=config, save_maps=s.save_maps, overwrite=True)
    logger.info("explanation run written to %s", run_dir)
    return run_dir / "report.html"
