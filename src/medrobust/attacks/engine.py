"""The attack engine: one base class that validates, handles model modes and assembles the
:class:`~medrobust.attacks.result.AttackResult`, and the gradient loop shared by FGSM, BIM and PGD.

Engines with a loop of their own (APGD, C&W, DeepFool, Square, and the segmentation and
explanation engines of later modules) subclass :class:`Attack` and implement :meth:`Attack._run`
with the same :class:`BestTracker`, so every attack keeps the best iterate per sample and stops
early per sample in the same way.
"""

from __future__ import annotations

import contextlib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, final

import torch
from torch import nn

from medrobust.attacks.objectives.base import Objective, ObjectiveOutput, Target, index_target
from medrobust.attacks.result import AttackResult
from medrobust.attacks.threat import ThreatModel
from medrobust.metrics.perturbation import perturbation_norms
from medrobust.models.adapter import ModelAdapter, as_adapter
from medrobust.types import Norm

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator seeded with ``seed`` on ``device`` (attacks never touch the global RNG)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _check_positive(name: str, value: float | int, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a finite number > 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


class BestTracker:
    """Per-sample best iterate: success beats failure, then a higher loss wins.

    Args:
        x: The clean batch ``(B, C, *spatial)``.
    """

    def __init__(self, x: torch.Tensor) -> None:
        b = x.shape[0]
        self.x = x.detach().clone()
        self.loss = torch.full((b,), -math.inf, device=x.device, dtype=x.dtype)
        self.success = torch.zeros(b, dtype=torch.bool, device=x.device)
        self.steps = torch.zeros(b, dtype=torch.long, device=x.device)
        self.pred: torch.Tensor | None = None
        self.seen = torch.zeros(b, dtype=torch.bool, device=x.device)

    def update(self, idx: torch.Tensor, x: torch.Tensor, out: ObjectiveOutput) -> None:
        """Offer iterate ``x`` (rows ``idx`` of the batch) with its objective output."""
        loss = out.loss.detach()
        succ = out.success.detach()
        old_s, old_l = self.success[idx], self.loss[idx]
        better = (succ & ~old_s) | ((succ == old_s) & (loss > old_l)) | ~self.seen[idx]
        if not bool(better.any()):
            return
        rows = idx[better]
        self.x[rows] = x.detach()[better]
        self.loss[rows] = loss[better]
        self.success[rows] = succ[better]
        self.seen[rows] = True
        pred = out.pred.detach()
        if self.pred is None:
            self.pred = torch.zeros(
                (self.x.shape[0], *pred.shape[1:]), dtype=pred.dtype, device=pred.device
            )
        self.pred[rows] = pred[better]


@dataclass(frozen=True)
class Run:
    """One attack call as an engine sees it (built by :meth:`Attack.__call__`, never kept).

    Attributes:
        model: The model adapter, in eval mode.
        x: The clean batch ``(B, C, *spatial)``, detached.
        target: The objective's per-sample target (from :meth:`Objective.prepare`).
        threat: The threat model (ball, bounds).
        region: The validated region mask ``(B or 1, 1 or C, *spatial)``, or None.
        best: The per-sample best iterate so far.
    """

    model: ModelAdapter
    x: torch.Tensor
    target: Target
    threat: ThreatModel
    region: torch.Tensor | None
    best: BestTracker

    def unpack(
        self,
    ) -> tuple[ModelAdapter, torch.Tensor, Target, ThreatModel, torch.Tensor | None, BestTracker]:
        """``(model, x, target, threat, region, best)``."""
        return self.model, self.x, self.target, self.threat, self.region, self.best


class Attack(ABC):
    """Base class of every attack: ``attack(model, images, labels, region=None) -> AttackResult``.

    The base class validates the inputs against the model adapter (rank, channels, finiteness,
    bounds) and, through the objective, the labels; runs the engine with the model in eval mode
    (restoring each submodule's mode afterwards), never writes to parameter gradients, and
    assembles the result. The engine knows no task: the objective brings target checks, task
    metrics (``result.extra``) and special gradients.

    :meth:`__call__` is final; an engine implements :meth:`_run` only, keeps no per-call state on
    the instance, and returns its own per-sample extras (if any) from :meth:`_run`.

    Args:
        objective: What to maximise.
        norm: Norm of the threat model.
        eps: Radius of the threat model's ball (``None`` for minimal-perturbation attacks that
            are not budget-bounded).
        seed: Seed of the attack's private random generator.
    """

    name: str = "attack"
    engine: str = "attack"
    #: Evaluate the clean input first, so that a sample whose clean prediction already meets the
    #: goal counts as a success (robust accuracy never exceeds clean accuracy). Costs one forward
    #: pass; the evaluation suite, which attacks only correctly classified samples, turns it off.
    check_clean: bool = True

    def __init__(
        self,
        *,
        objective: Objective,
        norm: Norm | str = Norm.LINF,
        eps: float | None = 8 / 255,
        seed: int = 0,
    ) -> None:
        self.objective = objective
        self.norm = Norm.parse(norm)
        if eps is not None:
            _check_positive("eps", eps)
        self.eps = None if eps is None else float(eps)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed

    @property
    def tasks(self) -> tuple[str, ...]:
        """The model tasks the attack supports: those of its objective."""
        return self.objective.tasks

    @property
    def targeted(self) -> bool:
        """Whether the attack drives the prediction toward given targets (its objective's)."""
        return bool(self.objective.targeted)

    # -- public -----------------------------------------------------------------------------
    @final
    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        region: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack a batch.

        Args:
            model: A :class:`~medrobust.models.ModelAdapter` (or a bare classifier whose input
                space is ``[0, 1]``; it is wrapped on the fly).
            images: Clean inputs inside the model's bounds.
            labels: What the objective expects: true labels (untargeted) or target labels
                (targeted); masks for segmentation objectives; labels or target maps for
                explanation objectives.
            region: Optional 0/1 mask where the perturbation may go.

        Returns:
            An :class:`AttackResult`; ``extra`` holds the objective's task metrics and the
            engine's own per-sample values.

        Shape:
            - images: ``(B, C, *spatial)``; labels ``(B,)`` or ``(B, *spatial)``;
              region ``(B or 1, 1 or C, *spatial)``.

        Raises:
            ValueError: For inputs that do not match the model (see ``ModelAdapter.check_input``)
                or the objective (see ``Objective.check_target``).
            TypeError: For labels that are not a tensor.
        """
        adapter = as_adapter(model)
        if adapter.task.value not in self.tasks:
            raise ValueError(
                f"attack {self.name!r} supports {', '.join(self.tasks)} models, but the model's "
                f"task is {adapter.task.value!r}"
            )
        adapter.check_input(images)
        self.objective.check_target(adapter, images, labels)
        threat = self.threat(adapter, region)
        region_t = threat.check_region(images)
        x = images.detach()
        with eval_mode(adapter):
            with torch.no_grad():
                with torch.enable_grad():
                    target = self.objective.prepare(adapter, x, labels.to(x.device))
                best = BestTracker(x)
                if self.check_clean:
                    out, _ = self.evaluate(adapter, x, target, grad=False)
                    best.update(torch.arange(x.shape[0], device=x.device), x, out)
                engine_extra = self._run(Run(adapter, x, target, threat, region_t, best))
            result = self._result(images, best)
            result.extra.update(
                self.objective.extras(adapter, result.x_adv, result.pred_adv, target)
            )
        result.extra.update(engine_extra or {})
        return result

    def threat(self, adapter: ModelAdapter, region: torch.Tensor | None) -> ThreatModel:
        """The threat model for this call: the ball of radius ``eps`` (an unbounded ball, which
        only the input bounds constrain, when ``eps`` is None) intersected with the bounds."""
        eps = math.inf if self.eps is None else self.eps
        return ThreatModel(self.norm, eps, adapter.bounds, region)

    def config(self) -> dict[str, Any]:
        """The resolved configuration written beside every result."""
        return {
            "name": self.name,
            "engine": self.engine,
            "objective": self.objective.describe(),
            "norm": self.norm.value,
            "eps": self.eps,
            "seed": self.seed,
            **self.params(),
        }

    def params(self) -> dict[str, Any]:
        """Engine-specific hyper-parameters (overridden by subclasses)."""
        return {}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({inner})"

    # -- engine -----------------------------------------------------------------------------
    @abstractmethod
    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        """Run the engine on ``run``, offering its iterates to ``run.best``; samples already
        successful there (e.g. by the clean check) need not be attacked. Returns the engine's
        own per-sample extras (``(B, ...)`` tensors for ``AttackResult.extra``), or None."""

    def evaluate(
        self, model: ModelAdapter, x: torch.Tensor, target: Target, grad: bool
    ) -> tuple[ObjectiveOutput, torch.Tensor | None]:
        """Objective (and optionally its gradient w.r.t. the input) at ``x``.

        The gradient comes from :meth:`Objective.value_and_grad`, with respect to the input
        only, so parameter gradients are never computed or stored.
        """
        if not grad:
            with torch.no_grad():
                return self.objective(model, x, target), None
        return self.objective.value_and_grad(model, x, target)

    def _result(self, images: torch.Tensor, tracker: BestTracker) -> AttackResult:
        x_adv = tracker.x
        norms = perturbation_norms(images, x_adv)
        linf, l2 = norms["linf"], norms["l2"]
        if tracker.pred is None:  # pragma: no cover - engines always evaluate at least once
            raise RuntimeError(f"attack {self.name!r} evaluated no iterate")
        return AttackResult(
            x_adv=x_adv,
            success=tracker.success.clone(),
            loss=tracker.loss.clone(),
            linf=linf,
            l2=l2,
            l0=norms["l0"],
            steps=tracker.steps.clone(),
            pred_adv=tracker.pred,
            config=self.config(),
        )


def _subset_output(out: ObjectiveOutput, rows: torch.Tensor) -> ObjectiveOutput:
    return ObjectiveOutput(out.loss[rows], out.success[rows], out.pred[rows], out.logits[rows])


def subset_region(region: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    """Rows ``idx`` of a per-sample region (a shared ``(1, ...)`` region or None as is)."""
    if region is None or region.shape[0] == 1:
        return region
    return region[idx]


class GradientAttack(Attack):
    """Iterative steepest ascent in an Lp ball: FGSM, BIM and PGD are presets of this engine.

    Each iteration evaluates the objective and its input gradient in one forward and backward
    pass, steps along the norm's steepest-ascent direction (sign for Linf, normalised gradient for
    L2) and projects onto the ball and the bounds. The best iterate per sample is kept (success
    first, then the highest loss); with ``early_stop`` a sample leaves the batch once the attack
    has succeeded on it, and later restarts attack only the samples that are still unbroken.

    Args:
        objective: What to maximise.
        norm: ``"linf"`` or ``"l2"``.
        eps: Radius of the ball (> 0).
        steps: Number of gradient steps.
        step_size: Absolute step size; default ``2.5 * eps / steps`` (Madry et al.).
        random_start: Start from a uniformly random point of the ball.
        restarts: Number of random restarts.
        early_stop: Stop per sample as soon as the attack succeeds.
        keep_best: Return the best iterate per sample (default). With False, return the last
            iterate (or the first successful one under ``early_stop``), as the reference PGD does.
        seed: Seed of the private generator used for random starts.

    References:
        Goodfellow et al. 2015 (FGSM); Kurakin et al. 2017 (BIM); Madry et al. 2018 (PGD).
    """

    engine = "gradient"

    def __init__(
        self,
        *,
        objective: Objective,
        norm: Norm | str = Norm.LINF,
        eps: float = 8 / 255,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        early_stop: bool = True,
        keep_best: bool = True,
        seed: int = 0,
        name: str = "pgd",
    ) -> None:
        super().__init__(objective=objective, norm=norm, eps=eps, seed=seed)
        _check_positive("steps", steps, integer=True)
        _check_positive("restarts", restarts, integer=True)
        if step_size is not None:
            _check_positive("step_size", step_size)
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.step_size = float(step_size) if step_size is not None else 2.5 * float(eps) / steps
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.keep_best = bool(keep_best)
        self.name = name

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "early_stop": self.early_stop,
            "keep_best": self.keep_best,
        }

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        model, x, target, threat, region, best = run.unpack()
        gen = make_generator(self.seed, x.device)
        for _ in range(self.restarts):
            idx = (~best.success).nonzero().flatten()
            if idx.numel() == 0:
                break
            xa, ta, ra = x[idx], index_target(target, idx), subset_region(region, idx)
            delta = threat.random_init(xa, gen, ra) if self.random_start else torch.zeros_like(xa)
            for t in range(self.steps + 1):
                xt = xa + delta
                last = t == self.steps
                out, grad = self.evaluate(model, xt, ta, grad=not last)
                if self.keep_best or last:
                    best.update(idx, xt, out)
                elif self.early_stop and bool(out.success.any()):
                    hit = out.success.nonzero().flatten()
                    best.update(idx[hit], xt[hit], _subset_output(out, hit))
                if last or grad is None:
                    break
                best.steps[idx] += 1
                if self.early_stop:
                    keep = ~out.success
                    if not bool(keep.any()):
                        break
                    if not bool(keep.all()):
                        idx, xa, delta, grad = idx[keep], xa[keep], delta[keep], grad[keep]
                        rows = keep.nonzero().flatten()
                        ta, ra = index_target(ta, rows), subset_region(ra, rows)
                step = self.step_size * threat.ascent_direction(grad, ra)
                delta = threat.project(xa, delta + step, ra)
        return None
