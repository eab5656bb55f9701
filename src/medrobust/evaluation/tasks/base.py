"""The task plug-in of the audit loop: what differs between classification, segmentation and
explanation audits, and nothing else.

The loop in :mod:`medrobust.evaluation.audit` owns everything that is the same for every task:
budgets, the attack list, per-sample records, the worst case per sample, samples broken at a
smaller budget not attacked again, the sanity checks, the per-batch checkpoint, progress events
and the metrics header. A task says

* how to read a batch (:meth:`AuditTask.read_batch`) and check it against the model;
* what the clean pass records and which samples are eligible for attack (:meth:`clean`);
* which attacks apply (their ``task`` tag) and how to build one (:meth:`build_attack`);
* what an attack achieved per sample: a *score* (higher is better for the model: 1/0 for a
  correct/incorrect label, the Dice of a segmentation, the rank correlation of an explanation
  map) and whether the sample is *broken* (:meth:`outcome`);
* how the records become the task's part of ``metrics.json`` (:meth:`summarise`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from medrobust.attacks.engine import Attack
from medrobust.attacks.result import AttackResult
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm

if TYPE_CHECKING:
    from medrobust.evaluation.audit import AttackSpec, AuditContext
    from medrobust.evaluation.records import Records

__all__ = [
    "AttackOutcome",
    "AuditTask",
    "Batch",
    "CleanOutcome",
    "as_index_tensor",
    "check_finite_outputs",
    "norms_of_all",
    "read_pair",
]


@dataclass
class Batch:
    """One batch as the audit loop sees it.

    Attributes:
        x: Inputs ``(B, C, *spatial)`` on the audit device.
        target: What the attacks are measured against: labels ``(B,)`` or masks
            ``(B, *spatial)``.
        ids: Sample identifiers, if the loader gives them.
        aux: Further per-sample tensors a task reads (e.g. a lesion mask for explanations).
        index: ``(B,)`` positions of the samples in the data set (set by the audit loop).
    """

    x: torch.Tensor
    target: torch.Tensor
    ids: list[str] | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, n: int) -> Batch:
        """The first ``n`` samples."""
        return Batch(
            self.x[:n],
            self.target[:n],
            self.ids[:n] if self.ids is not None else None,
            {k: v[:n] for k, v in self.aux.items()},
            self.index[:n] if self.index is not None else None,
        )

    def select(self, idx: torch.Tensor) -> Batch:
        """The samples at ``idx``."""
        ids = [self.ids[int(i)] for i in idx] if self.ids is not None else None
        index = self.index[idx.to(self.index.device)] if self.index is not None else None
        return Batch(
            self.x[idx], self.target[idx], ids, {k: v[idx] for k, v in self.aux.items()}, index
        )

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.x.to(device).float(),
            self.target.to(device),
            self.ids,
            {k: v.to(device) for k, v in self.aux.items()},
            self.index,
        )


@dataclass
class CleanOutcome:
    """What the clean pass of a batch found.

    Attributes:
        eligible: ``(B,)`` bool, samples the attacks try to break (e.g. correctly classified).
        score: ``(B,)`` float, the clean score (the value an attack tries to lower).
        record: Per-sample tensors kept in the records (first axis ``B``), e.g. ``logits``.
        pred: The clean predictions, for examples.
    """

    eligible: torch.Tensor
    score: torch.Tensor
    record: dict[str, torch.Tensor]
    pred: torch.Tensor


@dataclass
class AttackOutcome:
    """What an attack achieved on the samples it attacked.

    Attributes:
        score: ``(k,)`` the task's score at the adversarial examples (lower is worse).
        broken: ``(k,)`` bool, the attack reached its goal.
        extra: Further per-sample measurements to record (first axis ``k``), e.g. the
            per-class Dice of a segmentation.
    """

    score: torch.Tensor
    broken: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def read_pair(batch: Any, second: str) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """The one batch reader: a dict with ``"image"`` and ``second`` (``"label"`` or ``"mask"``)
    and an optional ``"id"``, or a tuple ``(images, second, ...)``.

    Raises:
        ValueError: For any other batch, naming what came.
    """
    if isinstance(batch, Mapping):
        if "image" not in batch or second not in batch:
            raise ValueError(
                f"a batch dict needs 'image' and '{second}' keys, got {sorted(map(str, batch))}"
            )
        ids = batch.get("id")
        return batch["image"], batch[second], list(ids) if ids is not None else None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1], None
    raise ValueError(
        f"each batch must be a dict with 'image' and '{second}' or a tuple (images, "
        f"{second}s), got {type(batch).__name__}"
    )


def as_index_tensor(values: Any, name: str) -> torch.Tensor:
    """Class indices as int64, refusing floats and booleans instead of truncating them.

    Raises:
        ValueError: For a floating or boolean tensor (naming ``name`` and the dtype).
    """
    t = torch.as_tensor(values)
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be integer class indices, got dtype {t.dtype}")
    return t.long()


def check_finite_outputs(adapter: ModelAdapter, logits: torch.Tensor) -> None:
    """Refuse a model whose clean outputs are NaN or infinite, before any attack runs.

    Raises:
        ValueError: Naming the network and the first affected samples of the batch.
    """
    bad = ~torch.isfinite(logits.detach()).flatten(1).all(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        net = type(getattr(adapter, "net", adapter)).__name__
        raise ValueError(
            f"the model ({net}) returned NaN or infinite outputs for {int(bad.sum())} of "
            f"{logits.shape[0]} clean inputs (batch rows {rows}); check its weights, the input "
            "bounds and the normalisation (mean/std) before auditing it"
        )


def norms_of_all(result: AttackResult) -> dict[str, torch.Tensor]:
    """``linf_all``, ``l2_all`` and ``l0_all``: the perturbation norms of every attacked sample
    (the loop's own norms cover only the broken ones), as per-sample extras."""
    return {
        f"{name}_all": getattr(result, name).detach().double().cpu()
        for name in ("linf", "l2", "l0")
    }


class AuditTask(abc.ABC):
    """Base class of the task plug-ins (see the module docstring).

    Attributes:
        name: The task's name in ``metrics.json`` (``"classification"``, ...).
        attack_task: The ``task`` tag of the attacks this task runs.
        eligible_noun: How the sanity checks name the samples the attacks try to break.
        probe_name: How the sanity checks name the unbounded probe attack.
    """

    name: ClassVar[str]
    attack_task: ClassVar[str]
    #: How the checks call the eligible samples ("correctly classified samples").
    eligible_noun: ClassVar[str] = "attacked samples"
    #: How the checks name the unbounded probe attack (check MR101).
    probe_name: ClassVar[str] = "PGD-50"
    #: Whether the audit needs at least one attack in its list.
    requires_attacks: bool = True
    #: Default of the loop's ``per_attack`` option: ``"own"`` (each attack's row is its own
    #: result at that budget) or ``"carried"`` (samples it broke at a smaller budget are carried
    #: over, not attacked again). The segmentation and explanation audits still carry (their
    #: reports describe it); classification compares attacks, so its rows are their own.
    per_attack: ClassVar[str] = "carried"

    @abc.abstractmethod
    def read_batch(self, batch: Any) -> Batch:
        """Turn a loader batch into a :class:`Batch` (on the CPU, unchecked)."""

    @abc.abstractmethod
    def check(self, adapter: ModelAdapter, batch: Batch) -> None:
        """Raise ValueError if the batch does not fit the model (before any compute)."""

    @abc.abstractmethod
    def clean(self, adapter: ModelAdapter, batch: Batch) -> CleanOutcome:
        """The clean pass of a batch."""

    def build_attack(
        self, spec: AttackSpec, eps: float, norm: Norm, seed: int, adapter: ModelAdapter
    ) -> Attack:
        """Build one attack of the list at one budget (the default: the registered preset)."""
        from medrobust.attacks.presets import create_attack

        return create_attack(spec.name, eps=eps, norm=norm.value, seed=seed, **dict(spec.params))

    def run_attack(self, attack: Attack, adapter: ModelAdapter, batch: Batch) -> AttackResult:
        """Attack the (eligible) samples of ``batch``."""
        return attack(adapter, batch.x, batch.target)

    @abc.abstractmethod
    def outcome(self, adapter: ModelAdapter, batch: Batch, result: AttackResult) -> AttackOutcome:
        """The score, success and extra measurements of the attacked samples at
        ``result.x_adv``."""

    def after_batch(
        self,
        ctx: AuditContext,
        batch: Batch,
        clean: CleanOutcome,
        cells: list[list[Any]],
        offset: int,
    ) -> dict[str, torch.Tensor]:
        """Task-specific per-sample work after the attack list ran on a batch (e.g. targeted
        attacks, noise baselines); returns per-sample tensors (first axis ``B``) that the records
        keep and checkpoint. ``cells[a][e]`` are this batch's cell records; ``offset`` is the
        index of the batch's first sample in the data set."""
        return {}

    def on_attack(
        self,
        ctx: AuditContext,
        batch: Batch,
        clean_pred: torch.Tensor,
        result: AttackResult,
        a_i: int,
        e_i: int,
    ) -> None:
        """Called after attack ``a_i`` ran at budget ``e_i`` on the samples ``batch`` (e.g. to
        keep report examples); the default does nothing."""
        return None

    @abc.abstractmethod
    def noise_broken(
        self, adapter: ModelAdapter, batch: Batch, x_noisy: torch.Tensor
    ) -> torch.Tensor:
        """``(B,)`` bool: random noise ``x_noisy`` broke the sample (check MR104)."""

    def artifacts(self) -> dict[str, Any]:
        """What the task keeps for its report beside the records (examples, maps), saved in
        the per-batch checkpoint; the default keeps nothing."""
        return {}

    def restore_artifacts(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`artifacts` from a checkpoint; the default has nothing to restore."""
        return None

    def merge_artifacts(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Join the :meth:`artifacts` of every process of a sharded audit (rank order) into this
        task; the default has nothing to join."""
        return None

    def probe_broken(
        self, adapter: ModelAdapter, batch: Batch, result: AttackResult
    ) -> torch.Tensor:
        """``(B,)`` bool: the unbounded probe broke the sample (check MR101); by default the
        task's own success test."""
        return self.outcome(adapter, batch, result).broken

    @abc.abstractmethod
    def gradient_loss(self, adapter: ModelAdapter, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        """A scalar loss whose input gradient the attacks follow (check MR105)."""

    @abc.abstractmethod
    def probe_attack(self, eps: float, norm: Norm, seed: int) -> Attack:
        """A strong attack with an unbounded budget ``eps`` (check MR101)."""

    def describe(self) -> dict[str, Any]:
        """The task's settings, for the configuration hash and ``metrics.json``."""
        return {"name": self.name}

    @abc.abstractmethod
    def summarise(self, ctx: AuditContext, records: Records) -> dict[str, Any]:
        """The task's part of ``metrics.json``."""

    def extra_checks(self, ctx: AuditContext, records: Records) -> list[dict[str, Any]]:
        """Task-specific sanity checks (rows as :func:`medrobust.evaluation.checks.check_row`)."""
        return []

    def applicable(self, specs: Sequence[AttackSpec]) -> None:
        """Raise ValueError for an attack of another task in the list."""
        from medrobust.attacks.presets import ATTACKS

        for spec in specs:
            tags = ATTACKS.get(spec.name).tags
            if self.attack_task not in tags:
                task = next((t for t in _TASKS if t in tags), "another task")
                raise ValueError(
                    f"attack {spec.name!r} is a {task} attack; a {self.name} audit runs "
                    f"{self.attack_task} attacks (medrobust list attacks)"
                )


_TASKS = ("classification", "segmentation", "explanation", "detection")
