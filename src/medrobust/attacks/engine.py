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
from medrobust.attacks.precision import SpeedOptions, current_speed, fast_adapter
from medrobust.attacks.result import AttackResult
from medrobust.attacks.rng import AnyGenerator, attack_generator, restrict
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

    Updates are masked writes on the batch's device (no host round trip), so an engine can offer
    iterates at every step without synchronising a GPU.

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
        #: False where ``x`` holds an iterate whose objective was not evaluated (see :meth:`place`).
        self.evaluated = torch.ones(b, dtype=torch.bool, device=x.device)

    def _pred_store(self, like: torch.Tensor) -> torch.Tensor:
        if self.pred is None:
            self.pred = torch.zeros(
                (self.x.shape[0], *like.shape[1:]), dtype=like.dtype, device=like.device
            )
        return self.pred

    def update(
        self,
        idx: torch.Tensor,
        x: torch.Tensor,
        out: ObjectiveOutput,
        offer: torch.Tensor | None = None,
    ) -> None:
        """Offer iterate ``x`` (rows ``idx`` of the batch) with its objective output.

        Args:
            idx: ``(n,)`` rows of the batch.
            x: ``(n, C, *spatial)`` iterates.
            out: Their objective output.
            offer: Optional ``(n,)`` bool mask: only these rows are offered.
        """
        loss = out.loss.detach().to(self.loss.dtype)
        succ = out.success.detach()
        old_s, old_l = self.success[idx], self.loss[idx]
        better = (succ & ~old_s) | ((succ == old_s) & (loss > old_l)) | ~self.seen[idx]
        if offer is not None:
            better = better & offer
        view = (-1,) + (1,) * (x.ndim - 1)
        self.x[idx] = torch.where(better.view(view), x.detach(), self.x[idx])
        self.loss[idx] = torch.where(better, loss, old_l)
        self.success[idx] = torch.where(better, succ, old_s)
        self.seen[idx] = self.seen[idx] | better
        self.evaluated[idx] = self.evaluated[idx] | better
        pred = out.pred.detach()
        store = self._pred_store(pred)
        pview = (-1,) + (1,) * (pred.ndim - 1)
        store[idx] = torch.where(better.view(pview), pred, store[idx])

    def place(
        self, idx: torch.Tensor, x: torch.Tensor, like: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """Return iterate ``x`` for rows ``idx[mask]`` without evaluating it: their success is
        False and marked unevaluated, their loss NaN and their prediction -1 (NaN for float
        predictions).

        Args:
            idx: ``(n,)`` rows of the batch.
            x: ``(n, C, *spatial)`` iterates.
            like: A prediction tensor ``(m, ...)`` of the objective (its dtype and shape).
            mask: ``(n,)`` bool, the rows to place.
        """
        view = (-1,) + (1,) * (x.ndim - 1)
        self.x[idx] = torch.where(mask.view(view), x.detach(), self.x[idx])
        self.loss[idx] = torch.where(
            mask, torch.full_like(self.loss[idx], math.nan), self.loss[idx]
        )
        self.success[idx] = self.success[idx] & ~mask
        self.evaluated[idx] = self.evaluated[idx] & ~mask
        store = self._pred_store(like)
        fill = math.nan if store.is_floating_point() else -1
        pview = (-1,) + (1,) * (store.ndim - 1)
        rows = store[idx]
        store[idx] = torch.where(mask.view(pview), torch.full_like(rows, fill), rows)


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
    #: How the model's forward runs (mixed precision, compiled); see :meth:`set_speed`.
    speed: SpeedOptions = SpeedOptions()

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

    def set_speed(self, *, precision: str = "fp32", compile: bool | str = False) -> Attack:
        """Run the model's forward in mixed precision and/or compiled (both off by default;
        an attack left at the defaults follows :func:`~medrobust.attacks.precision.attack_speed`).

        Every engine gets the same treatment: it is handed a view of the model adapter whose
        forward runs under ``torch.autocast`` (and/or ``torch.compile``) and returns float32
        outputs; the perturbation, its update and the objective stay in float32. Compiled networks
        are cached per network (see :mod:`medrobust.attacks.precision`).

        Args:
            precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
            compile: False, True (inductor) or a ``torch.compile`` backend name.

        Returns:
            The attack itself.

        Raises:
            ValueError: For an unknown precision or an invalid ``compile`` value.
        """
        self.speed = SpeedOptions(precision, compile)
        return self

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
                or the objective (see ``Objective.check_target``), or a precision that autocast
                does not support on the inputs' device.
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
        speed = self.speed if not self.speed.is_default else current_speed()
        adapter = fast_adapter(adapter, speed, x.device)
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
            if result.evaluated is None:  # task metrics need the prediction at every x_adv
                result.extra.update(
                    self.objective.extras(adapter, result.x_adv, result.pred_adv, target)
                )
        result.extra.update(engine_extra or {})
        if not speed.is_default:  # e.g. Grad-CAM maps built from autocast activations
            half = (torch.bfloat16, torch.float16)
            result.extra = {k: v.float() if v.dtype in half else v for k, v in result.extra.items()}
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
            **({} if self.speed.is_default else self.speed.describe()),
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
            evaluated=None if bool(tracker.evaluated.all()) else tracker.evaluated.clone(),
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
        need_success: Evaluate the final iterate to report its success, loss and prediction
            (default). With False (which needs ``keep_best=False`` and one restart) the attack
            returns the last iterate without that extra forward pass, so it costs exactly
            ``steps`` forward+backward passes; the result's ``evaluated`` mask then marks the
            samples whose success was not checked. For adversarial training, which only needs
            the adversarial inputs.
        seed: Seed of the private generator used for random starts.

    On an accelerator the loop keeps its state on the device: iterates are offered to the
    tracker as masked writes, samples that succeed are frozen in place, and the batch is
    compacted (a host round trip) only every :attr:`sync_every` steps (by default 5 on an
    accelerator and 1 on the CPU, where a round trip is free). The result does not depend on
    ``sync_every``.

    References:
        Goodfellow et al. 2015 (FGSM); Kurakin et al. 2017 (BIM); Madry et al. 2018 (PGD).
    """

    engine = "gradient"
    #: Steps between host round trips (batch compaction under ``early_stop``); None: every
    #: step on the CPU (where a round trip is free) and every 5 steps on an accelerator.
    sync_every: int | None = None

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
        need_success: bool = True,
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
        self.need_success = bool(need_success)
        if not self.need_success and (self.keep_best or self.restarts > 1):
            raise ValueError(
                "need_success=False returns the last iterate unevaluated, so it needs "
                f"keep_best=False and restarts=1 (got keep_best={keep_best}, "
                f"restarts={restarts}): choosing the best iterate or restart needs its success"
            )
        self.name = name

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "early_stop": self.early_stop,
            "keep_best": self.keep_best,
            **({} if self.need_success else {"need_success": False}),
        }

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        gen = attack_generator(self.seed, run.x.device)
        every = self.sync_every or (1 if run.x.device.type == "cpu" else 5)
        _check_positive("sync_every", every, integer=True)
        for _ in range(self.restarts):
            idx = (~run.best.success).nonzero().flatten()
            if idx.numel() == 0:
                break
            self._one_run(run, idx, gen, every)
        return None

    def _one_run(self, run: Run, idx: torch.Tensor, gen: AnyGenerator, every: int) -> None:
        """One restart on rows ``idx``: ``steps`` ascent steps, then the final iterate (one
        cohesive algorithm, kept in one function).

        ``active`` marks the rows still attacked; a row that succeeds under ``early_stop`` is
        frozen (its perturbation no longer moves and its step count stops) and leaves the batch
        at the next compaction, every ``every`` steps.
        """
        model, x, target, threat, region, best = run.unpack()
        xa, ta, ra = x[idx], index_target(target, idx), subset_region(region, idx)
        delta = (
            threat.random_init(xa, restrict(gen, idx), ra)
            if self.random_start
            else torch.zeros_like(xa)
        )
        active = torch.ones(idx.numel(), dtype=torch.bool, device=x.device)
        view = (-1,) + (1,) * (x.ndim - 1)
        like: torch.Tensor | None = None
        for t in range(self.steps + 1):
            xt = xa + delta
            last = t == self.steps
            if last and not self.need_success and like is not None:
                best.place(idx, xt, like, active)
                break
            out, grad = self.evaluate(model, xt, ta, grad=not last)
            like = out.pred
            if self.keep_best or last:
                best.update(idx, xt, out)
            elif self.early_stop:
                best.update(idx, xt, out, offer=out.success & active)
            if last or grad is None:
                break
            best.steps[idx] += active.long()
            if self.early_stop:
                active = active & ~out.success
                if (t + 1) % every == 0:
                    if not bool(active.any()):
                        break
                    if not bool(active.all()):
                        rows = active.nonzero().flatten()
                        idx, xa, delta, grad = idx[rows], xa[rows], delta[rows], grad[rows]
                        ta, ra = index_target(ta, rows), subset_region(ra, rows)
                        active = active[rows]
            step = self.step_size * threat.ascent_direction(grad, ra)
            moved = threat.project(xa, delta + step, ra)
            delta = torch.where(active.view(view), moved, delta) if self.early_stop else moved
