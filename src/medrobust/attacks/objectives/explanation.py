"""Explanation objectives: move a Grad-CAM map, with the predicted class kept or changed.

An explanation attack is an ordinary attack whose objective computes the (differentiable)
Grad-CAM map of the current input, compares it with the clean map prepared once per batch, and
adds a term on the class output. It plugs into the gradient engine like any other objective.

Notation: ``c0`` is the clean predicted class, ``ĥ(x)`` the Grad-CAM map of the explained class
normalised to sum to one (Dombrowski et al.), ``ĥ0`` the clean map, ``p`` the softmax output.

Map terms (``loss=``), all maximised:

==========  ==================================================  ====================================
``loss``    term                                                "map moved" (success criterion)
==========  ==================================================  ====================================
``topk``    ``−Σ_{i ∈ TopK(ĥ0)} ĥ_i(x)`` (Ghorbani's top-k)     ``topk_intersection(ĥ0, ĥ(x), k)``
                                                                below ``topk_threshold`` (0.5)
``com``     ``‖d‖² + 10⁻³ · d·u`` with ``d = CoM(ĥ(x)) −        centre of mass moved by at least
            CoM(ĥ0)`` in fractions of the image side            ``min_shift`` pixels (default 10%
            (Ghorbani's mass-centre attack)                     of the largest image side)
``target``  ``−N · ‖ĥ(x) − h_t‖²`` toward a target map ``h_t``  ``topk_intersection(h_t, ĥ(x), k)``
            (Dombrowski's targeted manipulation; ``N`` is the   at least ``target_threshold`` (0.5)
            number of pixels, which makes the term O(1))       and above the intersection with ĥ0
==========  ==================================================  ====================================

The gradient of ``‖d‖²`` vanishes at the clean input (``d = 0``), so an attack started there
would never move; the small linear term along ``u``, the unit vector from the image centre toward
the clean centre of mass (the last axis if they coincide), breaks the tie and pushes the map
outward first, after which the quadratic term dominates.

Class terms (``label=``):

* ``"kept"``: ``− γ · ‖p(x) − p(x0)‖²`` (class preservation) and success also requires
  ``argmax f(x) = c0``. Iterates whose label changed are reported with the loss lowered by
  :data:`REJECTED` (a constant, so gradients are unchanged) and ``success=False``. Because the
  engine's best-iterate tracker prefers success, then higher loss, and the clean input (label
  kept by definition) is always offered first, **an iterate whose label changed can never become
  the returned adversarial example**: the result is the best label-kept iterate (Ghorbani's
  ``check_measure``).
* ``"changed"``: ``+ flip_weight · min(max_{j≠c0} z_j − z_c0, confidence)`` (the Carlini-Wagner
  margin away from ``c0``, capped so that the map term takes over once the label has flipped),
  and success requires ``argmax f(x) ≠ c0``.

In both cases success also requires a defined clean map and a non-zero adversarial map (an
all-zero Grad-CAM map has no top-k and no centre of mass).

Explained class (``explain=``): ``"original"`` explains ``c0`` at every iterate (the default for
``label="kept"``, where it is the predicted class whenever the label is kept); ``"predicted"``
explains the class predicted at the current iterate, i.e. the map a clinician would see (the
default for ``label="changed"``).

Target maps for ``loss="target"``: pass them to the attack in place of the labels, as a float
tensor ``(B, 1, *spatial)`` or ``(B, *spatial)`` (non-negative, non-zero per sample), or let the
objective build them from the clean maps with ``target_map=``: ``"shift"`` (the clean map rolled
by half the image size along every spatial axis, so the hotspot leaves the lesion), ``"flip"``
(mirrored along the last axis) or ``"other"`` (the clean map of the next image of the batch).

References:
    Ghorbani, Abid, Zou, "Interpretation of neural networks is fragile", AAAI 2019;
    Dombrowski et al., "Explanations can be manipulated and geometry is to blame", NeurIPS 2019;
    Rasaee & Rivaz, "Explainable AI and susceptibility to adversarial attacks: a case study in
    classification of breast ultrasound images", IEEE IUS 2021.
"""

from __future__ import annotations

import inspect
import math
import weakref
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.objectives.base import OBJECTIVES, Objective, ObjectiveOutput, Target
from medrobust.attacks.objectives.gradcam_maps import (
    check_choice,
    check_number,
    com_fraction,
    default_gradcam_layer,
    explained_maps,
    map_mass,
    outward_direction,
    shifted_maps,
)
from medrobust.explain.softplus import softplus_relu
from medrobust.metrics.maps import (
    _resolve_k,
    center_of_mass,
    normalize_map,
    spearman,
    topk_intersection,
)
from medrobust.models.adapter import ModelAdapter

__all__ = [
    "REJECTED",
    "GradCamObjective",
    "default_gradcam_layer",
    "explained_maps",
]

LossKind = Literal["topk", "com", "target"]
LabelRule = Literal["kept", "changed"]
TargetStrategy = Literal["shift", "flip", "other"]
Explain = Literal["original", "predicted"]

#: Weight of the linear symmetry-breaking term of ``loss="com"`` (see the module docstring).
_TIE_BREAK = 1.0e-3

#: Subtracted from the loss of a label-kept attack's iterate whose label changed.
REJECTED = 1.0e6

_LOSSES = ("topk", "com", "target")
_LABELS = ("kept", "changed")
_TARGETS = ("shift", "flip", "other")
_EXPLAIN = ("original", "predicted")
_METHODS = ("gradcam", "gradcam++")


# --------------------------------------------------------------------------------------------
# the objective
# --------------------------------------------------------------------------------------------


class GradCamObjective(Objective):
    """Move the Grad-CAM map of a classifier while keeping (or changing) its predicted class.

    See the module docstring for the exact terms and success criteria.

    Args:
        loss: ``"topk"``, ``"com"`` or ``"target"``.
        label: ``"kept"`` (success needs the clean class) or ``"changed"`` (success needs another
            class).
        layer: Grad-CAM layer (dotted name relative to the bare network); None picks
            :func:`default_gradcam_layer` for each model.
        method: ``"gradcam"`` or ``"gradcam++"``.
        k: Top-k size: a fraction in ``(0, 1)`` of the pixels or a pixel count (default 5%).
        gamma: Weight ``γ >= 0`` of the class-preservation term (``label="kept"``).
        flip_weight: Weight ``>= 0`` of the class-changing margin (``label="changed"``).
        confidence: Cap of that margin in logits (``>= 0``).
        topk_threshold: ``loss="topk"`` succeeds when the top-k intersection with the clean map
            drops below this value, in ``(0, 1]``.
        min_shift: ``loss="com"`` succeeds when the centre of mass moved by at least this many
            pixels (> 0); None means 10% of the largest spatial size.
        target_map: How to build target maps for ``loss="target"`` when the attack receives
            class labels: ``"shift"``, ``"flip"`` or ``"other"``.
        target_threshold: ``loss="target"`` succeeds when the top-k intersection with the target
            map reaches this value (and exceeds the one with the clean map), in ``(0, 1]``.
        explain: ``"original"`` or ``"predicted"`` (see the module docstring); None picks
            ``"original"`` for ``label="kept"`` and ``"predicted"`` for ``label="changed"``.
        second_order: Differentiate through the Grad-CAM weights (``create_graph=True``); exact
            for every head. False treats the weights as constants, which is exact for a
            ``GAP → linear`` head and a little cheaper.
        softplus_beta: If given (> 0), every ``nn.ReLU`` is replaced by ``Softplus(beta)``
            while the input gradient is computed (Dombrowski et al.); the loss, success and
            prediction always come from the unmodified network, at the cost of a second
            evaluation per step.

    Raises:
        ValueError: For an unknown choice or a value out of range.
        TypeError: For a parameter of the wrong type.

    Shape:
        - Target: a dict of per-sample tensors (clean class ``(B,)``, clean softmax ``(B, K)``,
          clean map ``(B, 1, *spatial)`` ...).
        - Output: loss and success ``(B,)``, prediction ``(B,)``, logits ``(B, K)``.

    References:
        Ghorbani et al., AAAI 2019; Dombrowski et al., NeurIPS 2019; Rasaee & Rivaz, IUS 2021.
    """

    name = "gradcam"
    tasks = ("classification", "multitask")

    def __init__(
        self,
        *,
        loss: LossKind = "topk",
        label: LabelRule = "kept",
        layer: str | None = None,
        method: str = "gradcam",
        k: int | float = 0.05,
        gamma: float = 1.0,
        flip_weight: float = 1.0,
        confidence: float = 1.0,
        topk_threshold: float = 0.5,
        min_shift: float | None = None,
        target_map: TargetStrategy = "shift",
        target_threshold: float = 0.5,
        explain: Explain | None = None,
        second_order: bool = True,
        softplus_beta: float | None = None,
    ) -> None:
        self.loss = check_choice("loss", loss, _LOSSES)
        self.label = check_choice("label", label, _LABELS)
        if layer is not None and (not isinstance(layer, str) or not layer.strip()):
            raise ValueError(f"layer must be None or a non-empty dotted module name, got {layer!r}")
        self.layer = layer
        self.method = check_choice("method", method, _METHODS)
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise TypeError(f"k must be an int or a float fraction in (0, 1), got {k!r}")
        if isinstance(k, float) and not k.is_integer():
            if not 0.0 < k < 1.0:
                raise ValueError(f"a fractional k must lie in (0, 1), got {k}")
        elif k < 1:
            raise ValueError(f"k must be a positive pixel count or a fraction in (0, 1), got {k}")
        self.k = k
        self.gamma = check_number("gamma", gamma, 0.0, math.inf, low_open=False)
        self.flip_weight = check_number("flip_weight", flip_weight, 0.0, math.inf, low_open=False)
        self.confidence = check_number("confidence", confidence, 0.0, math.inf, low_open=False)
        self.topk_threshold = check_number(
            "topk_threshold", topk_threshold, 0.0, 1.0, low_open=True
        )
        self.min_shift = (
            None
            if min_shift is None
            else check_number("min_shift", min_shift, 0.0, math.inf, low_open=True)
        )
        self.target_map = check_choice("target_map", target_map, _TARGETS)
        self.target_threshold = check_number(
            "target_threshold", target_threshold, 0.0, 1.0, low_open=True
        )
        if explain is None:
            explain = "original" if self.label == "kept" else "predicted"
        self.explain = check_choice("explain", explain, _EXPLAIN)
        if not isinstance(second_order, bool):
            raise TypeError(f"second_order must be a bool, got {type(second_order).__name__}")
        self.second_order = second_order
        self.softplus_beta = _check_softplus(softplus_beta)
        self.targeted = self.loss == "target"
        self.name = f"gradcam-{self.loss}"
        self._layers: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()

    # -- configuration ----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description of the objective and all its parameters."""
        return {
            "name": self.name,
            "targeted": self.targeted,
            "loss": self.loss,
            "label": self.label,
            "layer": self.layer,
            "method": self.method,
            "k": self.k,
            "gamma": self.gamma,
            "flip_weight": self.flip_weight,
            "confidence": self.confidence,
            "topk_threshold": self.topk_threshold,
            "min_shift": self.min_shift,
            "target_map": self.target_map,
            "target_threshold": self.target_threshold,
            "explain": self.explain,
            "second_order": self.second_order,
            "softplus_beta": self.softplus_beta,
        }

    def layer_for(self, model: nn.Module, images: torch.Tensor | None = None) -> str:
        """The Grad-CAM layer used for ``model``: the given one, or the default (cached per model).

        Args:
            model: The model.
            images: A batch for the probing fallback of :func:`default_gradcam_layer`.

        Returns:
            A dotted layer name.

        Raises:
            ValueError: If no default layer can be chosen.
        """
        if self.layer is not None:
            return self.layer
        cached = self._layers.get(model)
        if cached is None:
            cached = default_gradcam_layer(model, images)
            self._layers[model] = cached
        return cached

    def shift_threshold(self, spatial: tuple[int, ...]) -> float:
        """The centre-of-mass shift that counts as "moved" for maps of this size.

        Args:
            spatial: The spatial shape of the maps.

        Returns:
            ``min_shift``, or 10% of the largest spatial size when it is None (pixels).
        """
        return self.min_shift if self.min_shift is not None else 0.1 * float(max(spatial))

    def topk_count(self, n_pixels: int) -> int:
        """The number of top pixels ``k`` for maps of ``n_pixels`` pixels.

        Args:
            n_pixels: Pixels (voxels) per map.

        Returns:
            ``k`` as a count (a fraction is rounded, at least 1), as in
            :func:`medrobust.explain.topk_intersection`.

        Raises:
            ValueError: If ``k`` exceeds ``n_pixels``.
        """
        return _resolve_k(self.k, n_pixels)

    # -- target -----------------------------------------------------------------------------
    def check_target(self, model: ModelAdapter, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Class labels ``(B,)`` (validated, not used: the explained class is the clean
        prediction), or target maps ``(B, 1, *spatial)`` for a targeted objective.

        Raises:
            TypeError: If ``labels`` is not a tensor.
            ValueError: For labels out of range or target maps of the wrong shape.
        """
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.is_floating_point():
            self.check_target_maps(labels, images)
            return
        model.check_labels(labels.to(images.device), images.shape[0])

    def check_target_maps(self, maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Validate user-given target maps and return them as ``(B, 1, *spatial)`` floats.

        Args:
            maps: The target maps.
            images: The clean batch they belong to.

        Returns:
            The maps as ``(B, 1, *spatial)`` in the images' dtype and device.

        Raises:
            ValueError: If this objective is not targeted, or the maps have the wrong shape, are
                not finite, negative, or all zero for some sample.
        """
        b, spatial = images.shape[0], tuple(images.shape[2:])
        want = f"({b}, 1, {', '.join(map(str, spatial))}) or ({b}, {', '.join(map(str, spatial))})"
        if not self.targeted:
            raise ValueError(
                f"target maps were given but the objective uses loss={self.loss!r}; pass class "
                "labels (B,), or use the targeted explanation attack (loss='target')"
            )
        if tuple(maps.shape) == (b, *spatial):
            maps = maps.unsqueeze(1)
        if tuple(maps.shape) != (b, 1, *spatial):
            raise ValueError(
                f"target maps must have shape {want} to match the images "
                f"{tuple(images.shape)}, got {tuple(maps.shape)}"
            )
        maps = maps.to(device=images.device, dtype=images.dtype)
        if not bool(torch.isfinite(maps).all()):
            raise ValueError("target maps contain NaN or infinite values")
        if bool((maps < 0).any()):
            raise ValueError(
                f"target maps must be non-negative (like Grad-CAM maps), got minimum "
                f"{float(maps.min()):.4g}"
            )
        empty = (map_mass(maps) <= 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"target maps are all zero for sample(s) {empty[:10]}")
        return maps

    def prepare(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Target:
        """Clean class, clean softmax and clean map (and the target map, if targeted).

        ``labels`` are not used to choose the explained class (that is the clean prediction);
        for ``loss="target"`` a float tensor in their place is taken as the target maps.

        Args:
            model: The model (adapter), in eval mode.
            x: The clean batch.
            labels: Class labels (validated by the attack), or target maps.

        Returns:
            A dict of per-sample tensors: ``cls`` (clean class), ``prob`` (clean softmax),
            ``map`` (sum-normalised clean map), ``topk_mask``, ``com``, ``com_dir``, ``valid``
            (clean map not all zero) and, if targeted, ``target_map``.

        Raises:
            ValueError: For an unknown layer, a layer without spatial output, a model whose map
                has no gradient path to the input, or target maps of the wrong shape.
        """
        layer = self.layer_for(model, x)
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            clean, logits = explained_maps(model, xg, layer, None, method=self.method)
            path = clean.requires_grad and (
                torch.autograd.grad(clean.sum(), xg, allow_unused=True)[0] is not None
            )
            if not path:
                raise ValueError(
                    f"the Grad-CAM map at layer {layer!r} does not depend on the input through "
                    "differentiable operations (is the input detached inside the model, or is the "
                    "layer computed without gradients?); an explanation attack needs a gradient "
                    "path from the map to the input"
                )
        clean = clean.detach()
        z = logits.detach()
        cls = z.argmax(dim=1)
        valid = map_mass(clean) > 0
        n = clean[0].numel()
        kk = self.topk_count(n)
        top = torch.topk(clean.flatten(1), kk, dim=1).indices
        topk_mask = torch.zeros_like(clean.flatten(1)).scatter_(1, top, 1.0).reshape(clean.shape)
        com = com_fraction(clean)
        target: dict[str, torch.Tensor] = {
            "cls": cls,
            "prob": torch.softmax(z, dim=1),
            "map": clean,
            "topk_mask": topk_mask,
            "com": com,
            "com_dir": outward_direction(com),
            "valid": valid,
        }
        if self.targeted:
            if labels.is_floating_point():
                tmap = self.check_target_maps(labels, x)
            else:
                tmap = shifted_maps(clean, self.target_map)
            target["target_map"] = normalize_map(tmap, "sum")
            target["valid"] = valid & (map_mass(target["target_map"]) > 0)
        return target

    # -- evaluation ---------------------------------------------------------------------------
    def moved(self, maps: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
        """Whether each (sum-normalised) map counts as moved; see the module docstring.

        Args:
            maps: Maps at the current input.
            target: The prepared target.

        Returns:
            ``(B,)`` bool: the map criterion, and a defined clean map and non-zero map.

        Shape:
            - maps: ``(B, 1, *spatial)``; output ``(B,)``.
        """
        h = maps.detach()
        clean = target["map"]
        ok = target["valid"] & (map_mass(h) > 0)
        if self.loss == "topk":
            crit = topk_intersection(clean, h, self.k) < self.topk_threshold
        elif self.loss == "com":
            shift = (center_of_mass(clean) - center_of_mass(h)).norm(dim=1)
            crit = torch.nan_to_num(shift, nan=0.0) >= self.shift_threshold(tuple(h.shape[2:]))
        else:
            to_target = topk_intersection(target["target_map"], h, self.k)
            to_clean = topk_intersection(clean, h, self.k)
            crit = (to_target >= self.target_threshold) & (to_target > to_clean)
        return crit & ok

    def _map_term(self, h: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.loss == "topk":
            return -(h * target["topk_mask"]).flatten(1).sum(dim=1)
        if self.loss == "com":
            d = com_fraction(h) - target["com"]
            return (d * d).sum(dim=1) + _TIE_BREAK * (d * target["com_dir"]).sum(dim=1)
        diff = h - target["target_map"]
        return -float(h[0].numel()) * (diff * diff).flatten(1).sum(dim=1)

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        """Loss (map term and class term), success, prediction and logits at ``x``.

        Args:
            model: The model (adapter).
            x: The current inputs; the loss is differentiable in them when they require grad.
            target: The dict built by :meth:`prepare`.

        Returns:
            The :class:`ObjectiveOutput` (see the module docstring for loss and success).

        Raises:
            TypeError: If ``target`` is not the dict of :meth:`prepare`.
        """
        if not isinstance(target, dict) or "map" not in target:
            raise TypeError(
                "an explanation objective needs the dict target built by its prepare(); "
                f"got {type(target).__name__}"
            )
        layer = self.layer_for(model, x)
        cls = target["cls"]
        explain_cls = cls if self.explain == "original" else None
        graph = x.requires_grad and self.second_order
        h, z = explained_maps(model, x, layer, explain_cls, method=self.method, create_graph=graph)
        pred = z.detach().argmax(dim=1)
        loss = self._map_term(h, target)
        if self.label == "kept":
            dp = torch.softmax(z, dim=1) - target["prob"]
            loss = loss - self.gamma * (dp * dp).sum(dim=1)
            label_ok = pred == cls
            penalty = (~label_ok).to(loss.dtype) * REJECTED
            loss = loss - penalty
        else:
            zc = z.gather(1, cls[:, None]).squeeze(1)
            others = z.masked_fill(F.one_hot(cls, z.shape[1]).bool(), float("-inf")).amax(dim=1)
            loss = loss + self.flip_weight * (others - zc).clamp(max=self.confidence)
            label_ok = pred != cls
        success = self.moved(h, target) & label_ok
        return ObjectiveOutput(loss, success.detach(), pred, z)

    def value_and_grad(
        self, model: nn.Module, x: torch.Tensor, target: Target
    ) -> tuple[ObjectiveOutput, torch.Tensor]:
        """Objective and input gradient; with ``softplus_beta`` the gradient comes from the
        smoothed network and the output (loss, success, prediction) from the unmodified one.

        Shape:
            - x: ``(B, C, *spatial)``; gradient the same.
        """
        if self.softplus_beta is None:
            return super().value_and_grad(model, x, target)
        with softplus_relu(model, self.softplus_beta):
            _, g = super().value_and_grad(model, x, target)
        with torch.no_grad():
            return self(model, x.detach(), target), g

    def extras(
        self, model: nn.Module, x_adv: torch.Tensor, pred_adv: torch.Tensor, target: Target
    ) -> dict[str, torch.Tensor]:
        """The map metrics of :meth:`measure` at the returned inputs."""
        if not isinstance(target, dict):  # pragma: no cover - prepare always builds a dict
            raise TypeError("an explanation objective needs the dict target of its prepare()")
        return self.measure(model, x_adv, target)

    def measure(
        self, model: nn.Module, x: torch.Tensor, target: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per-sample explanation metrics at ``x`` (e.g. the adversarial inputs), no gradients.

        Args:
            model: The model (adapter).
            x: The inputs to measure.
            target: The dict built by :meth:`prepare` for the clean batch.

        Returns:
            ``map_clean`` and ``map_adv`` (sum-normalised, ``(B, 1, *spatial)``), ``clean_pred``,
            ``label_kept`` (bool), ``moved`` (the success criterion of the map alone, bool),
            ``topk_intersection``, ``spearman``, ``com_shift`` (pixels; NaN for an empty map),
            and for targeted objectives ``target_map`` and ``target_topk``.
        """
        layer = self.layer_for(model, x)
        cls = target["cls"]
        explain_cls = cls if self.explain == "original" else None
        with torch.no_grad():
            h, z = explained_maps(model, x.detach(), layer, explain_cls, method=self.method)
        h = h.detach()
        clean = target["map"]
        out = {
            "map_clean": clean,
            "map_adv": h,
            "clean_pred": cls,
            "label_kept": z.detach().argmax(dim=1) == cls,
            "moved": self.moved(h, target),
            "topk_intersection": topk_intersection(clean, h, self.k),
            "spearman": spearman(clean, h),
            "com_shift": (center_of_mass(clean) - center_of_mass(h)).norm(dim=1),
        }
        if self.targeted:
            out["target_map"] = target["target_map"]
            out["target_topk"] = topk_intersection(target["target_map"], h, self.k)
        return out


def _check_softplus(beta: float | None) -> float | None:
    if beta is None:
        return None
    number = isinstance(beta, (int, float)) and not isinstance(beta, bool)
    if not (number and math.isfinite(beta) and beta > 0):
        raise ValueError(f"softplus_beta must be None or a number > 0, got {beta!r}")
    return float(beta)


def _register(name: str, loss: LossKind, summary: str) -> None:
    """Register ``GradCamObjective`` with ``loss`` fixed under ``name``."""

    def factory(**kw: Any) -> Objective:
        return GradCamObjective(loss=loss, **kw)

    sig = inspect.signature(GradCamObjective)
    factory.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for n, p in sig.parameters.items() if n != "loss"]
    )
    factory.__doc__ = f"{summary}; see :class:`GradCamObjective`."
    OBJECTIVES.register(name, summary=summary, tags=("explanation",))(factory)


_register("gradcam-topk", "topk", "Grad-CAM top-k mass drop (Ghorbani), class kept or changed")
_register("gradcam-com", "com", "Grad-CAM centre-of-mass shift (Ghorbani), class kept or changed")
_register("gradcam-target", "target", "Grad-CAM toward a target map (Dombrowski), class kept")
