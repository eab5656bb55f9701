"""The objective interface: what an attack maximises and when it has succeeded."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medrobust.models.adapter import ModelAdapter
from medrobust.registry import Registry

#: A per-sample target: a tensor with the batch first, or a dict of such tensors (e.g. the clean
#: Grad-CAM map and the clean prediction of an explanation attack).
Target = torch.Tensor | dict[str, torch.Tensor]


def index_target(target: Target, idx: torch.Tensor) -> Target:
    """Select samples ``idx`` (a 1-D index tensor) from every tensor in ``target``."""
    if isinstance(target, dict):
        return {k: v[idx] for k, v in target.items()}
    return target[idx]


@dataclass
class ObjectiveOutput:
    """One evaluation of an objective on a batch.

    Attributes:
        loss: ``(B,)`` value to maximise; it must be differentiable w.r.t. the input when the
            engine asks for gradients.
        success: ``(B,)`` bool, whether the attack goal is met at this input (no gradient).
        pred: The model's prediction at this input: ``(B,)`` or ``(B, *spatial)``.
        logits: The model's output (kept for engines that need it), detached or not.
    """

    loss: torch.Tensor
    success: torch.Tensor
    pred: torch.Tensor
    logits: torch.Tensor


class Objective(ABC):
    """What an attack maximises, and everything an engine needs to know about the task.

    An objective receives the model and the current input so that it can compute anything it
    needs (logits, a Grad-CAM map, a segmentation), and a per-sample target prepared once from
    the clean input by :meth:`prepare` (the label by default). The engine knows no task: the
    objective validates what the caller passes as labels (:meth:`check_target`), may change how
    the input gradient is computed (:meth:`value_and_grad`, e.g. a smoothed network) and adds
    task metrics to the result (:meth:`extras`).

    Subclasses set ``name`` and ``tasks`` (the model tasks they support) and implement
    :meth:`__call__`.
    """

    name: str = "objective"
    tasks: tuple[str, ...] = ("classification",)
    targeted: bool = False

    def check_target(self, model: ModelAdapter, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Validate what the caller passed as labels (default: class labels ``(B,)`` in range).

        Raises:
            TypeError: If ``labels`` is not a tensor.
            ValueError: For labels that do not fit the model and the batch.
        """
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        model.check_labels(labels.to(images.device), images.shape[0])

    def prepare(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Target:
        """Build the per-sample target from the clean batch (default: the labels)."""
        return labels

    @abstractmethod
    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        """Evaluate the objective at ``x``."""

    def value_and_grad(
        self, model: nn.Module, x: torch.Tensor, target: Target
    ) -> tuple[ObjectiveOutput, torch.Tensor]:
        """The objective at ``x`` and the gradient of its summed loss w.r.t. ``x`` only.

        The gradient comes from ``torch.autograd.grad`` with respect to the input, so parameter
        gradients are never computed or stored.

        Shape:
            - x: ``(B, C, *spatial)``; gradient the same.
        """
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self(model, xg, target)
            (g,) = torch.autograd.grad(out.loss.sum(), xg)
        return out, g

    def extras(
        self, model: nn.Module, x_adv: torch.Tensor, pred_adv: torch.Tensor, target: Target
    ) -> dict[str, torch.Tensor]:
        """Per-sample task metrics at the returned inputs, added to ``AttackResult.extra``.

        Called once per attack call with the model in eval mode (default: none).
        """
        return {}

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description of the objective and its parameters."""
        return {"name": self.name, "targeted": self.targeted}


OBJECTIVES: Registry[Objective] = Registry("objective")


def create_objective(name: str, **kwargs: Any) -> Objective:
    """Build a registered objective by name (see :func:`list_objectives`)."""
    return OBJECTIVES.create(name, **kwargs)


def list_objectives(pattern: str = "*") -> list[str]:
    """Names of the registered objectives matching a shell-style pattern."""
    return OBJECTIVES.list(pattern)
