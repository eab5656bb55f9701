"""Explanation robustness of a classifier on a data set, and its report section.

:func:`evaluate_explanations` attacks the Grad-CAM maps of every correctly classified sample with
the explanation attacks (by default the label-kept ``gradcam-kept`` and the label-changing
``gradcam-flip``) at each budget, compares them with random noise of the same budget, and returns
an :class:`ExplanationResult`:

* ``metrics``: a JSON-able dict for ``metrics.json`` under the top-level key ``"explanations"``
  (schema below);
* ``examples``: a few samples with their clean and attacked maps, for the overlay figure;
* ``maps``: arrays of every clean and attacked map (for ``maps.npz``).

The audit runs on the one audit loop (:func:`medrobust.evaluation.audit` with the
:class:`~medrobust.evaluation.tasks.explanation.ExplanationTask`): per-sample records, the worst
case per sample across the attack list (the largest map change with the label kept), samples
broken at a smaller budget not attacked again, the sanity checks, resume from a per-batch
checkpoint and the shared ``metrics.json`` header (``ExplanationResult.document``). The report
section is :func:`medrobust.reporting.sections.explanation.explanation_section`.

Schema of ``metrics["explanations"]``: see
:mod:`medrobust.evaluation.tasks.explanation_summary`.

Only correctly classified samples whose clean map is not all zero are attacked
(``n_attacked``); rates are fractions of them. ``success_rate`` is the attack's own success (map
moved past the threshold *and* label kept, or changed for ``gradcam-flip``); ``map_moved_rate``
is the map criterion alone, which is also reported for the random-noise baseline.

References:
    Rasaee & Rivaz, IEEE IUS 2021 (attacks on Grad-CAM of breast-ultrasound classifiers);
    Ghorbani, Abid, Zou, AAAI 2019 (top-k, rank correlation, centre of mass, random baseline);
    Dombrowski et al., NeurIPS 2019 (SSIM, Pearson and MSE between maps).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from medrobust._utils.examples import ExplanationExample
from medrobust.attacks.presets import ATTACKS
from medrobust.evaluation.api import audit
from medrobust.evaluation.audit import AttackSpec, ProgressEvent
from medrobust.evaluation.records import Records
from medrobust.evaluation.tasks.explanation import ExplanationSettings, ExplanationTask
from medrobust.models.adapter import as_adapter

__all__ = ["DEFAULT_ATTACKS", "ExplanationExample", "ExplanationResult", "evaluate_explanations"]

DEFAULT_ATTACKS: tuple[str, ...] = ("gradcam-kept", "gradcam-flip")
_RESERVED = {"eps", "norm", "seed", "layer", "k", "method"}


@dataclass
class ExplanationResult:
    """What :func:`evaluate_explanations` returns.

    Attributes:
        metrics: The JSON-able ``"explanations"`` dict (see the module docstring).
        examples: Samples with clean and attacked maps, for figures.
        maps: Arrays for ``maps.npz``: ``index`` (position in the data set), ``id``, ``label``,
            ``clean_pred``, ``clean`` (maps ``(N, 1, *spatial)``, float16) and, per attack and
            budget ``j``, ``<attack>__eps<j>`` maps of the samples that attack attacked at that
            budget, their predictions ``<attack>__eps<j>__pred`` and data-set positions
            ``<attack>__eps<j>__index``. After a resume they cover the batches processed since.
        class_names: Names of the classes (may be empty).
        document: The whole ``metrics.json`` document of the audit (header, ``"explanations"``,
            checks, timing).
        records: The per-sample records.
    """

    metrics: dict[str, Any]
    examples: list[ExplanationExample]
    maps: dict[str, np.ndarray]
    class_names: list[str] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)
    records: Records | None = None

    def maps_npz(self) -> bytes:
        """The maps as the bytes of a compressed ``.npz`` file (write them atomically)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.maps)  # type: ignore[arg-type]
        return buf.getvalue()


def _attack_specs(attacks: Sequence[str | Mapping[str, Any]]) -> list[AttackSpec]:
    """Parse the explanation attacks (each once, none setting what the audit sets).

    Raises:
        ValueError: For a non-explanation attack, a duplicate or a reserved parameter.
        TypeError: For an entry that is neither a name nor a mapping.
    """
    specs: list[AttackSpec] = []
    for i, spec in enumerate(attacks):
        if not isinstance(spec, (str, Mapping)):
            raise TypeError(
                f"attacks[{i}] must be a name or a dict with 'name', got {type(spec).__name__}"
            )
        if isinstance(spec, Mapping) and "name" not in spec:
            raise ValueError(f"attacks[{i}] needs a 'name', got keys {sorted(spec)}")
        name = spec if isinstance(spec, str) else str(spec["name"])
        params = {} if isinstance(spec, str) else {k: v for k, v in spec.items() if k != "name"}
        entry = ATTACKS.get(name)
        if "explanation" not in entry.tags:
            explanation = ", ".join(ATTACKS.list(tag="explanation"))
            raise ValueError(
                f"attack {name!r} is not an explanation attack; choose from: {explanation}"
            )
        clash = sorted(_RESERVED & set(params))
        if clash:
            raise ValueError(
                f"attacks[{i}] sets {clash}, which evaluate_explanations sets itself; pass them "
                "as arguments of evaluate_explanations"
            )
        specs.append(AttackSpec(entry.name, params))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"each attack may appear once, got {names}")
    if not specs:
        raise ValueError("attacks is empty: give at least one explanation attack")
    return specs


def _check_options(steps: Any, max_samples: Any, n_examples: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if max_samples is not None and (isinstance(max_samples, bool) or max_samples < 1):
        raise ValueError(f"max_samples must be None or >= 1, got {max_samples!r}")
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 0:
        raise ValueError(f"n_examples must be an integer >= 0, got {n_examples!r}")


def evaluate_explanations(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    eps: Any = (1 / 255, 2 / 255, 4 / 255, 8 / 255),
    attacks: Sequence[str | Mapping[str, Any]] = DEFAULT_ATTACKS,
    steps: int = 20,
    layer: str | None = None,
    method: str = "gradcam",
    k: int | float = 0.05,
    n_examples: int = 4,
    keep_maps: bool = True,
    class_names: Sequence[str] | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    **kwargs: Any,
) -> ExplanationResult:
    """Measure how far explanation attacks move the Grad-CAM maps of ``model`` on ``loader``.

    Args:
        model: A ``ModelAdapter`` (classification or multi-task), left in its mode.
        loader: Batches in the batch convention (dicts with ``image``, ``label`` and optionally
            ``mask`` and ``id``) or tuples ``(images, labels[, masks])``.
        eps: Budgets (in the model's input space).
        attacks: Explanation presets (names, or dicts with ``name`` and preset parameters other
            than ``eps``, ``norm``, ``seed``, ``layer``, ``k`` and ``method``).
        steps: Gradient steps of every attack (overridable per attack with ``steps`` in a dict).
        layer: Grad-CAM layer; None picks the model's default.
        method: ``"gradcam"`` or ``"gradcam++"``.
        k: Top-k size of the map metrics (fraction of the pixels or a count).
        n_examples: Samples kept with their maps for the overlay figure.
        keep_maps: Keep every map for :attr:`ExplanationResult.maps`.
        class_names: Class names for the figures (default: the adapter's).
        progress: Called with a :class:`~medrobust.evaluation.ProgressEvent` per step.
        **kwargs: As :func:`medrobust.evaluation.audit`: ``norm``, ``seed``, ``mode``,
            ``device``, ``max_samples``, ``checks``, ``probe_samples``, ``noise_draws``,
            ``checkpoint`` (resume), ``model_info``, ``data_info``, ``title``.

    Returns:
        The :class:`ExplanationResult`.

    Raises:
        ValueError: For an attack that is not an explanation attack, invalid budgets, batches
            that do not match the model, an unknown layer or a layer without spatial output.
        TypeError: For batches of the wrong type.

    Shape:
        - images ``(B, C, *spatial)``, labels ``(B,)``, masks ``(B, *spatial)``.

    References:
        Rasaee & Rivaz, IEEE IUS 2021; Ghorbani et al., AAAI 2019.
    """
    adapter = as_adapter(model)
    specs = _attack_specs(attacks)
    _check_options(steps, kwargs.get("max_samples"), n_examples)
    settings = ExplanationSettings(
        steps=steps, layer=layer, method=method, k=k, n_examples=n_examples, keep_maps=keep_maps
    )
    task = ExplanationTask(settings)
    kwargs.setdefault("noise_draws", 1)
    kwargs.setdefault("probe_samples", 4)
    kwargs.setdefault("title", "Explanations under attack")
    was_training = adapter.training
    try:
        result = audit(task, adapter, loader, specs, eps, progress=progress, n_examples=0, **kwargs)
    finally:
        adapter.train(was_training)
    maps: dict[str, np.ndarray] = {}
    if keep_maps and task.maps:
        maps = {key: np.concatenate(parts, axis=0) for key, parts in task.maps.items()}
    names = list(class_names) if class_names is not None else list(adapter.class_names or [])
    section = dict(result.metrics["explanations"])
    section["time_s"] = result.metrics["timing"]["total_s"]
    return ExplanationResult(
        metrics=section,
        examples=task.examples,
        maps=maps,
        class_names=names,
        document=result.metrics,
        records=result.records,
    )
