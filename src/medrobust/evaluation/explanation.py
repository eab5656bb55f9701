"""Explanation robustness of a classifier on a data set, and its report section.

:func:`evaluate_explanations` attacks the Grad-CAM maps of every correctly classified sample with
the explanation attacks (by default the label-kept ``gradcam-kept`` and the label-changing
``gradcam-flip``) at each budget, compares them with random noise of the same budget, and returns
an :class:`ExplanationResult`:

* ``metrics``: a JSON-able dict for ``metrics.json`` under the top-level key ``"explanations"``
  (schema below);
* ``examples``: a few samples with their clean and attacked maps, for the overlay figure;
* ``maps``: arrays of every clean and attacked map (for ``maps.npz``).

``ExplanationResult.section()`` builds the report's :class:`~medrobust.reporting.ReportSection`:
overlays of the clean and attacked maps on the image with the lesion outline, curves of the map
metrics against the budget, and one table per budget set.

Schema of ``metrics["explanations"]``::

    {"layer": str, "method": "gradcam", "k": 0.05, "norm": "linf", "eps": [..],
     "eps_display": [..], "n_samples": int, "n_correct": int, "n_attacked": int,
     "n_undefined_map": int, "has_masks": bool, "lesion_hit_clean": float | null,
     "thresholds": {"topk_threshold": 0.5, "min_shift_px": float},
     "attacks": [{"name": str, "label": "kept" | "changed", "params": {...}}],
     "results": [{"attack", "eps", "eps_display", "n", "success_rate", "label_kept_rate",
                  "map_moved_rate", "topk_intersection", "spearman", "pearson", "map_ssim",
                  "com_shift_px", "lesion_hit_clean", "lesion_hit_adv", "linf", "l2"}],
     "noise":   [{"eps", "eps_display", "n", "label_kept_rate", "map_moved_rate",
                  "topk_intersection", "spearman", "pearson", "map_ssim", "com_shift_px",
                  "lesion_hit_adv"}]}

Only correctly classified samples whose clean map is not all zero are attacked
(``n_attacked``); rates are fractions of them. Averages skip undefined (NaN) values, e.g. the
lesion-hit ratio of a map that vanished. ``success_rate`` is the attack's own success (map moved
past the threshold *and* label kept, or changed for ``gradcam-flip``); ``map_moved_rate`` is the
map criterion alone, which is also reported for the random-noise baseline.

References:
    Rasaee & Rivaz, IEEE IUS 2021 (attacks on Grad-CAM of breast-ultrasound classifiers);
    Ghorbani, Abid, Zou, AAAI 2019 (top-k, rank correlation, centre of mass, random baseline);
    Dombrowski et al., NeurIPS 2019 (SSIM, Pearson and MSE between maps).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from medrobust._utils.format import fmt_eps
from medrobust._utils.validate import parse_budgets
from medrobust.attacks.objectives.base import index_target
from medrobust.attacks.objectives.explanation import GradCamObjective, default_gradcam_layer
from medrobust.attacks.presets import ATTACKS, create_attack
from medrobust.metrics.maps import lesion_hit_ratio, map_ssim, pearson
from medrobust.models.adapter import ModelAdapter, as_adapter
from medrobust.types import Norm

__all__ = [
    "ExplanationExample",
    "ExplanationResult",
    "evaluate_explanations",
]

logger = logging.getLogger(__name__)

DEFAULT_ATTACKS: tuple[str, ...] = ("gradcam-kept", "gradcam-flip")
_STATS = (
    "success",
    "label_kept",
    "moved",
    "topk_intersection",
    "spearman",
    "pearson",
    "map_ssim",
    "com_shift_px",
    "lesion_hit_clean",
    "lesion_hit_adv",
    "linf",
    "l2",
)
_NOISE_STATS = (
    "label_kept",
    "moved",
    "topk_intersection",
    "spearman",
    "pearson",
    "map_ssim",
    "com_shift_px",
    "lesion_hit_adv",
)


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass
class ExplanationExample:
    """One attacked sample for the overlay figure.

    Attributes:
        image: The clean input, channel first ``(C, *spatial)``.
        mask: Binary lesion mask ``(*spatial)``, or None.
        label: True class.
        clean_pred: Predicted class of the clean input (the explained class).
        id: Identifier of the sample ("" when unknown).
        clean_map: Clean Grad-CAM map ``(*spatial)`` (sum-normalised).
        attacked: One record per (attack, budget): ``attack``, ``eps``, ``map`` (array),
            ``adv_pred``, ``success``, ``topk_intersection``.
    """

    image: np.ndarray
    mask: np.ndarray | None
    label: int
    clean_pred: int
    id: str
    clean_map: np.ndarray
    attacked: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ExplanationResult:
    """What :func:`evaluate_explanations` returns.

    Attributes:
        metrics: The JSON-able ``"explanations"`` dict (see the module docstring).
        examples: Samples with clean and attacked maps, for figures.
        maps: Arrays for ``maps.npz``: ``index`` (position in the data set), ``id``, ``label``,
            ``clean_pred``, ``clean`` (maps ``(N, 1, *spatial)``, float16) and, per attack and
            budget ``j``, ``<attack>__eps<j>`` maps and ``<attack>__eps<j>__pred``.
        class_names: Names of the classes (may be empty).
    """

    metrics: dict[str, Any]
    examples: list[ExplanationExample]
    maps: dict[str, np.ndarray]
    class_names: list[str] = field(default_factory=list)

    def maps_npz(self) -> bytes:
        """The maps as the bytes of a compressed ``.npz`` file (write them atomically)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.maps)  # type: ignore[arg-type]
        return buf.getvalue()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


class _Mean:
    """Sum and count of the finite values seen."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, values: torch.Tensor) -> None:
        v = values.detach().double().flatten()
        v = v[torch.isfinite(v)]
        self.total += float(v.sum())
        self.count += int(v.numel())

    def value(self) -> float | None:
        return self.total / self.count if self.count else None


def _unpack(
    batch: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[str] | None]:
    if isinstance(batch, Mapping):
        missing = [k for k in ("image", "label") if k not in batch]
        if missing:
            raise ValueError(
                f"a batch lacks the key(s) {missing}; it has {sorted(map(str, batch))}"
            )
        ids = batch.get("id")
        return (
            batch["image"],
            batch["label"],
            batch.get("mask"),
            [str(i) for i in ids] if isinstance(ids, (list, tuple)) else None,
        )
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        mask = batch[2] if len(batch) == 3 else None
        return batch[0], batch[1], mask, None
    raise TypeError(
        "batches must be dicts with 'image' and 'label' (and optionally 'mask', 'id') or tuples "
        f"(images, labels[, masks]), got {type(batch).__name__}"
    )


def _attack_specs(
    attacks: Sequence[str | Mapping[str, Any]],
) -> list[tuple[str, dict[str, Any]]]:
    specs: list[tuple[str, dict[str, Any]]] = []
    reserved = {"eps", "norm", "seed", "layer", "k", "method"}
    for i, spec in enumerate(attacks):
        if isinstance(spec, str):
            name, params = spec, {}
        elif isinstance(spec, Mapping):
            if "name" not in spec:
                raise ValueError(f"attacks[{i}] needs a 'name', got keys {sorted(spec)}")
            name = str(spec["name"])
            params = {k: v for k, v in spec.items() if k != "name"}
        else:
            raise TypeError(
                f"attacks[{i}] must be a name or a dict with 'name', got {type(spec).__name__}"
            )
        entry = ATTACKS.get(name)
        if "explanation" not in entry.tags:
            explanation = ", ".join(ATTACKS.list(tag="explanation"))
            raise ValueError(
                f"attack {name!r} is not an explanation attack; choose from: {explanation}"
            )
        clash = sorted(reserved & set(params))
        if clash:
            raise ValueError(
                f"attacks[{i}] sets {clash}, which evaluate_explanations sets itself; pass them "
                "as arguments of evaluate_explanations"
            )
        specs.append((entry.name, params))
    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"each attack may appear once, got {names}")
    if not specs:
        raise ValueError("attacks is empty: give at least one explanation attack")
    return specs


def _noise(
    x: torch.Tensor, eps: float, norm: Norm, model: ModelAdapter, gen: torch.Generator
) -> torch.Tensor:
    """Random perturbation of the same budget: random signs (Linf) or a random direction (L2)."""
    if norm is Norm.LINF:
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        delta = torch.where(u < 0.5, -eps, eps).to(x.dtype)
    else:
        g = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        n = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        delta = g / n * eps
    return model.bounds.clamp(x + delta)


def _hit(maps: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    if mask is None:
        return None
    return lesion_hit_ratio(maps, mask)


# --------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------


def evaluate_explanations(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    eps: float | Sequence[float] = (1 / 255, 2 / 255, 4 / 255, 8 / 255),
    norm: str = "linf",
    attacks: Sequence[str | Mapping[str, Any]] = DEFAULT_ATTACKS,
    steps: int = 20,
    layer: str | None = None,
    method: str = "gradcam",
    k: int | float = 0.05,
    seed: int = 0,
    max_samples: int | None = None,
    n_examples: int = 4,
    keep_maps: bool = True,
    class_names: Sequence[str] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> ExplanationResult:
    """Measure how far explanation attacks move the Grad-CAM maps of ``model`` on ``loader``.

    Args:
        model: A ``ModelAdapter`` (classification or multi-task), left in its mode.
        loader: Batches in the batch convention (dicts with ``image``, ``label`` and optionally
            ``mask`` and ``id``) or tuples ``(images, labels[, masks])``.
        eps: Budgets (in the model's input space).
        norm: ``"linf"`` or ``"l2"``.
        attacks: Explanation presets (names, or dicts with ``name`` and preset parameters other
            than ``eps``, ``norm``, ``seed``, ``layer``, ``k`` and ``method``).
        steps: Gradient steps of every attack (overridable per attack with ``steps`` in a dict).
        layer: Grad-CAM layer; None picks the model's default.
        method: ``"gradcam"`` or ``"gradcam++"``.
        k: Top-k size of the map metrics (fraction of the pixels or a count).
        seed: Seed of the attacks and of the random-noise baseline.
        max_samples: Evaluate at most this many samples (in loader order).
        n_examples: Samples kept with their maps for the overlay figure.
        keep_maps: Keep every map for :attr:`ExplanationResult.maps`.
        class_names: Class names for the figures (default: the adapter's).
        progress: Called as ``progress(batch_index, n_batches)`` after each batch.

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
    norm_e = Norm.parse(norm)
    budgets = parse_budgets(eps)
    specs = _attack_specs(attacks)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if max_samples is not None and (isinstance(max_samples, bool) or max_samples < 1):
        raise ValueError(f"max_samples must be None or >= 1, got {max_samples!r}")
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 0:
        raise ValueError(f"n_examples must be an integer >= 0, got {n_examples!r}")
    built = [
        [
            create_attack(
                name,
                **{"steps": steps, **params},
                eps=e,
                norm=norm_e.value,
                seed=seed,
                layer=layer,
                k=k,
                method=method,
            )
            for e in budgets
        ]
        for name, params in specs
    ]
    names = [name for name, _ in specs]
    labels_rule = {
        name: cast(GradCamObjective, built[i][0].objective).label for i, name in enumerate(names)
    }
    probe = GradCamObjective(loss="topk", label="kept", layer=layer, method=method, k=k)
    stats = {(a, j): {s: _Mean() for s in _STATS} for a in names for j in range(len(budgets))}
    noise_stats = {j: {s: _Mean() for s in _NOISE_STATS} for j in range(len(budgets))}
    clean_hit = _Mean()
    counts = {"n_samples": 0, "n_correct": 0, "n_attacked": 0, "n_undefined_map": 0}
    examples: list[ExplanationExample] = []
    keep: dict[str, list[np.ndarray]] = {}
    has_masks = False
    resolved_layer: str | None = layer
    spatial: tuple[int, ...] | None = None
    try:
        n_batches: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n_batches = None
    dev = next((p.device for p in adapter.parameters()), torch.device("cpu"))
    start = time.perf_counter()
    was_training = adapter.training
    adapter.eval()
    try:
        for b_idx, batch in enumerate(loader):
            if max_samples is not None and counts["n_samples"] >= max_samples:
                break
            x, y, mask, ids = _unpack(batch)
            if max_samples is not None:
                room = max_samples - counts["n_samples"]
                x, y = x[:room], y[:room]
                mask = mask[:room] if mask is not None else None
                ids = ids[:room] if ids is not None else None
            x = x.to(dev).float()
            y = y.to(dev).long().reshape(-1)
            adapter.check_input(x)
            adapter.check_labels(y, x.shape[0])
            if mask is not None:
                mask = (mask.to(dev) != 0).to(x.dtype)
                if mask.ndim == x.ndim:
                    mask = mask[:, 0]
                if tuple(mask.shape) != (x.shape[0], *x.shape[2:]):
                    raise ValueError(
                        f"masks must have shape {(x.shape[0], *x.shape[2:])} to match the images "
                        f"{tuple(x.shape)}, got {tuple(mask.shape)}"
                    )
                has_masks = True
            spatial = tuple(int(s) for s in x.shape[2:])
            offset = counts["n_samples"]
            counts["n_samples"] += int(x.shape[0])
            with torch.no_grad():
                pred = adapter(x).argmax(dim=1)
            correct = (pred == y).nonzero().flatten()
            counts["n_correct"] += int(correct.numel())
            if correct.numel() == 0:
                if progress:
                    progress(b_idx, n_batches)
                continue
            if resolved_layer is None:
                resolved_layer = default_gradcam_layer(adapter, x[:1])
                probe.layer = resolved_layer
            xc, yc = x[correct], y[correct]
            tgt = cast("dict[str, torch.Tensor]", probe.prepare(adapter, xc, yc))
            valid = tgt["valid"].nonzero().flatten()
            counts["n_undefined_map"] += int(correct.numel() - valid.numel())
            if valid.numel() == 0:
                if progress:
                    progress(b_idx, n_batches)
                continue
            sel = correct[valid]
            xa, ya = x[sel], y[sel]
            ma = mask[sel] if mask is not None else None
            tgt_a = cast("dict[str, torch.Tensor]", index_target(tgt, valid))
            counts["n_attacked"] += int(sel.numel())
            hit0 = _hit(tgt_a["map"], ma)
            if hit0 is not None:
                clean_hit.update(hit0)
            ex_rows = list(range(min(n_examples - len(examples), int(sel.numel()))))
            new_examples = [
                ExplanationExample(
                    image=xa[r].detach().cpu().numpy(),
                    mask=ma[r].detach().cpu().numpy() if ma is not None else None,
                    label=int(ya[r]),
                    clean_pred=int(tgt_a["cls"][r]),
                    id=(ids[int(sel[r])] if ids is not None else f"#{offset + int(sel[r])}"),
                    clean_map=tgt_a["map"][r, 0].detach().cpu().numpy(),
                )
                for r in ex_rows
            ]
            if keep_maps:
                keep.setdefault("index", []).append((sel + offset).cpu().numpy())
                keep.setdefault("label", []).append(ya.cpu().numpy())
                keep.setdefault("clean_pred", []).append(tgt_a["cls"].cpu().numpy())
                keep.setdefault("clean", []).append(tgt_a["map"].cpu().numpy().astype(np.float16))
                id_list = [
                    ids[int(i)] if ids is not None else f"#{offset + int(i)}" for i in sel.tolist()
                ]
                keep.setdefault("id", []).append(np.asarray(id_list, dtype=str))
            for j, e in enumerate(budgets):
                gen = torch.Generator(device=dev)
                gen.manual_seed(int(seed) * 1_000_003 + 7919 * b_idx + j)
                xn = _noise(xa, e, norm_e, adapter, gen)
                meas = probe.measure(adapter, xn, tgt_a)
                ns = noise_stats[j]
                ns["label_kept"].update(meas["label_kept"].float())
                ns["moved"].update(meas["moved"].float())
                ns["topk_intersection"].update(meas["topk_intersection"])
                ns["spearman"].update(meas["spearman"])
                ns["pearson"].update(pearson(meas["map_clean"], meas["map_adv"]))
                ns["map_ssim"].update(map_ssim(meas["map_clean"], meas["map_adv"]))
                ns["com_shift_px"].update(meas["com_shift"])
                hit_n = _hit(meas["map_adv"], ma)
                if hit_n is not None:
                    ns["lesion_hit_adv"].update(hit_n)
                for i, name in enumerate(names):
                    res = built[i][j](adapter, xa, ya)
                    ex = res.extra
                    st = stats[(name, j)]
                    st["success"].update(res.success.float())
                    st["label_kept"].update(ex["label_kept"].float())
                    st["moved"].update(ex["moved"].float())
                    st["topk_intersection"].update(ex["topk_intersection"])
                    st["spearman"].update(ex["spearman"])
                    st["pearson"].update(pearson(ex["map_clean"], ex["map_adv"]))
                    st["map_ssim"].update(map_ssim(ex["map_clean"], ex["map_adv"]))
                    st["com_shift_px"].update(ex["com_shift"])
                    st["linf"].update(res.linf)
                    st["l2"].update(res.l2)
                    if hit0 is not None and ma is not None:
                        st["lesion_hit_clean"].update(hit0)
                        st["lesion_hit_adv"].update(lesion_hit_ratio(ex["map_adv"], ma))
                    if keep_maps:
                        key = f"{name}__eps{j}"
                        keep.setdefault(key, []).append(
                            ex["map_adv"].cpu().numpy().astype(np.float16)
                        )
                        keep.setdefault(f"{key}__pred", []).append(res.pred_adv.cpu().numpy())
                    for ex_obj, r in zip(new_examples, ex_rows, strict=True):
                        ex_obj.attacked.append(
                            {
                                "attack": name,
                                "eps": e,
                                "map": ex["map_adv"][r, 0].cpu().numpy(),
                                "adv_pred": int(res.pred_adv[r]),
                                "success": bool(res.success[r]),
                                "topk_intersection": float(ex["topk_intersection"][r]),
                            }
                        )
            examples.extend(new_examples)
            if progress:
                progress(b_idx, n_batches)
    finally:
        adapter.train(was_training)

    if counts["n_samples"] == 0:
        raise ValueError("the loader yielded no samples")
    if resolved_layer is None:
        resolved_layer = probe.layer or "(not resolved: no correctly classified sample)"
    min_shift = probe.shift_threshold(spatial) if spatial is not None else None
    results = []
    for name in names:
        for j, e in enumerate(budgets):
            st = stats[(name, j)]
            results.append(
                {
                    "attack": name,
                    "eps": e,
                    "eps_display": fmt_eps(e),
                    "n": st["success"].count,
                    "success_rate": st["success"].value(),
                    "label_kept_rate": st["label_kept"].value(),
                    "map_moved_rate": st["moved"].value(),
                    "topk_intersection": st["topk_intersection"].value(),
                    "spearman": st["spearman"].value(),
                    "pearson": st["pearson"].value(),
                    "map_ssim": st["map_ssim"].value(),
                    "com_shift_px": st["com_shift_px"].value(),
                    "lesion_hit_clean": st["lesion_hit_clean"].value(),
                    "lesion_hit_adv": st["lesion_hit_adv"].value(),
                    "linf": st["linf"].value(),
                    "l2": st["l2"].value(),
                }
            )
    noise_rows = []
    for j, e in enumerate(budgets):
        ns = noise_stats[j]
        noise_rows.append(
            {
                "eps": e,
                "eps_display": fmt_eps(e),
                "n": ns["moved"].count,
                "label_kept_rate": ns["label_kept"].value(),
                "map_moved_rate": ns["moved"].value(),
                "topk_intersection": ns["topk_intersection"].value(),
                "spearman": ns["spearman"].value(),
                "pearson": ns["pearson"].value(),
                "map_ssim": ns["map_ssim"].value(),
                "com_shift_px": ns["com_shift_px"].value(),
                "lesion_hit_adv": ns["lesion_hit_adv"].value(),
            }
        )
    metrics: dict[str, Any] = {
        "layer": resolved_layer,
        "method": method,
        "k": k,
        "norm": norm_e.value,
        "eps": budgets,
        "eps_display": [fmt_eps(e) for e in budgets],
        "steps": steps,
        "seed": seed,
        **counts,
        "has_masks": has_masks,
        "lesion_hit_clean": clean_hit.value(),
        "thresholds": {"topk_threshold": probe.topk_threshold, "min_shift_px": min_shift},
        "attacks": [
            {
                "name": name,
                "label": labels_rule[name],
                "params": {k: v for k, v in built[i][0].config().items() if k != "eps"},
            }
            for i, name in enumerate(names)
        ],
        "results": results,
        "noise": noise_rows,
        "time_s": time.perf_counter() - start,
    }
    maps: dict[str, np.ndarray] = {}
    if keep_maps and keep:
        maps = {key: np.concatenate(parts, axis=0) for key, parts in keep.items()}
    names_cls = list(class_names) if class_names is not None else list(adapter.class_names or [])
    return ExplanationResult(metrics=metrics, examples=examples, maps=maps, class_names=names_cls)
