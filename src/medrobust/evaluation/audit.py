"""The one audit loop every task runs through.

Per batch: the task's clean pass; then, budget by budget from the smallest up, every attack of
the list on the eligible samples. Two ways to fill an attack's own row (``per_attack``):

* ``"own"``: every attack attacks every eligible sample at every budget, so the row "FGSM at
  4/255" is FGSM's own result at 4/255 (what comparing attacks or models needs);
* ``"carried"``: a sample an attack broke at a smaller budget is not attacked again by it; its
  smaller-budget example (which lies inside the larger ball) is carried over. Cheaper, and the
  rows never fall with the budget, but a row then mixes budgets.

The worst case per sample is cumulative in both: at a budget it is the lowest score any attack
reached at that budget or a smaller one (for classification: any attack changed the label), since
a smaller ball lies inside a larger one. Records are checkpointed after every batch, and an
interrupted audit resumes with identical results.

References:
    Croce & Hein, ICML 2020 (worst case per sample over an attack ensemble);
    Carlini et al., "On Evaluating Adversarial Robustness", 2019 (sanity checks).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from medrobust._utils.dist import Shard, current_shard, rank_path
from medrobust._utils.validate import parse_budgets
from medrobust.attacks.engine import eval_mode
from medrobust.attacks.presets import ATTACKS
from medrobust.attacks.rng import AnyGenerator, SampleGenerator, randint, randn, sample_keys
from medrobust.evaluation.records import CellRecord, Records
from medrobust.evaluation.sharding import plan_batches
from medrobust.evaluation.state import load_state, save_state
from medrobust.evaluation.tasks.base import AuditTask, Batch, CleanOutcome
from medrobust.metrics import psnr, ssim_or_nan
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm

logger = logging.getLogger(__name__)

PerAttack = Literal["own", "carried"]
Mode = Literal["individual", "cascade"]

__all__ = ["AttackSpec", "AuditContext", "Mode", "ProgressEvent", "attack_scopes", "run_audit"]


@dataclass(frozen=True)
class AttackSpec:
    """One attack of an audit: a registered name and its parameters (``eps``, ``norm`` and
    ``seed`` are set by the audit).

    The one attack-spec parser of every task.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | AttackSpec) -> AttackSpec:
        """Accept ``"pgd"``, ``{"name": "pgd", "steps": 20}`` or an :class:`AttackSpec`.

        Raises:
            ValueError: For a malformed spec or parameters the audit sets itself.
        """
        if isinstance(spec, AttackSpec):
            out = spec
        elif isinstance(spec, str):
            out = cls(spec)
        elif isinstance(spec, Mapping):
            if "name" not in spec:
                raise ValueError(f"an attack spec needs a 'name', got keys {sorted(spec)}")
            params = {k: v for k, v in spec.items() if k != "name"}
            out = cls(str(spec["name"]), params)
        else:
            raise ValueError(f"an attack is a name or a mapping with 'name', got {spec!r}")
        ATTACKS.get(out.name)  # raises UnknownNameError with suggestions
        reserved = {"eps", "norm"} & set(out.params)
        if reserved:
            raise ValueError(
                f"attack {out.name!r}: {sorted(reserved)} are set by the suite (eps list and "
                "norm), not per attack"
            )
        return out

    @staticmethod
    def parse_list(
        attacks: Sequence[str | Mapping[str, Any] | AttackSpec], *, allow_empty: bool = False
    ) -> list[AttackSpec]:
        """Parse an attack list; it must name each attack once (and at least one unless
        ``allow_empty``).

        Raises:
            ValueError: For an empty list, a duplicate or a malformed spec.
        """
        if isinstance(attacks, (str, Mapping)):
            attacks = [attacks]
        specs = [AttackSpec.parse(a) for a in attacks]
        if not specs and not allow_empty:
            raise ValueError("the attack suite is empty; name at least one attack")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"the suite names an attack twice: {names}")
        return specs

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.params)}


@dataclass
class ProgressEvent:
    """A progress update sent to the ``progress`` callback of every audit.

    Attributes:
        stage: ``"clean"``, ``"attack"`` or ``"checks"``.
        batch: Index of the current batch.
        n_batches: Number of batches if known, else None.
        samples: Samples processed so far.
        attack: Current attack name (``stage == "attack"``).
        eps: Current budget.
    """

    stage: str
    batch: int
    n_batches: int | None
    samples: int
    attack: str | None = None
    eps: float | None = None


@dataclass
class AuditContext:
    """The resolved settings of one audit (shared by the loop, the checks and the summaries)."""

    task: AuditTask
    adapter: ModelAdapter
    specs: list[AttackSpec]
    budgets: list[float]
    norm: Norm
    mode: Mode
    seed: int
    device: torch.device
    built: list[list[Any]]
    config: dict[str, Any]
    max_samples: int | None = None
    n_examples: int = 6
    keep_adversarial: int = 256
    checks: bool = True
    noise_draws: int = 4
    probe_samples: int = 16
    progress: Callable[[ProgressEvent], None] | None = None
    #: ``"own"`` or ``"carried"`` per-attack rows (see the module docstring).
    per_attack: PerAttack = "own"

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]


def attack_scopes(specs: Sequence[AttackSpec], mode: Mode) -> list[str]:
    """Which samples each attack of the list attacks at a budget.

    ``"all"``: every eligible sample it has not broken at a smaller budget
    (``mode="individual"``). ``"unbroken"``: only those no earlier attack of the list broke at
    this budget (every attack under ``mode="cascade"``, and black-box attacks in both modes: they
    are a cross-check of what the gradient attacks missed, see check MR103).
    """
    out = []
    for spec in specs:
        black_box = "black-box" in ATTACKS.get(spec.name).tags
        out.append("unbroken" if mode == "cascade" or black_box else "all")
    return out


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def make_context(
    task: AuditTask,
    adapter: ModelAdapter,
    attacks: Sequence[str | Mapping[str, Any] | AttackSpec],
    eps: Any,
    *,
    norm: str | Norm,
    mode: str,
    seed: int,
    device: str | torch.device | None,
    max_samples: int | None,
    **options: Any,
) -> AuditContext:
    """Validate every setting and build every attack before any compute.

    Raises:
        ValueError: For bad budgets (an Linf budget above the input range unless
            ``allow_large_eps=True``), an empty or duplicate attack list, an attack of another
            task, unknown attack parameters, a bad mode or ``max_samples < 1``.
    """
    norm_e = Norm.parse(norm)
    if mode not in ("individual", "cascade"):
        raise ValueError(f"mode must be 'individual' or 'cascade', got {mode!r}")
    budgets = parse_budgets(eps)
    per_attack = options.setdefault("per_attack", task.per_attack)
    if per_attack not in ("own", "carried"):
        raise ValueError(f"per_attack must be 'own' or 'carried', got {per_attack!r}")
    allow_large = bool(options.pop("allow_large_eps", False))
    width = adapter.bounds.width
    if norm_e is Norm.LINF and budgets[-1] > width and not allow_large:
        raise ValueError(
            f"eps={budgets[-1]:g} is larger than the input range of the model "
            f"(bounds [{adapter.bounds.low:g}, {adapter.bounds.high:g}], width {width:g}): every "
            "input is then reachable and robust accuracy says nothing; pass a budget in the "
            "model's input space (e.g. 4/255) or allow_large_eps=True (--allow-large-eps) if this "
            "is deliberate"
        )
    specs = AttackSpec.parse_list(attacks, allow_empty=not task.requires_attacks)
    task.applicable(specs)
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    dev = torch.device(device) if device is not None else model_device(adapter)
    adapter.to(dev)
    built = [[task.build_attack(s, e, norm_e, seed, adapter) for e in budgets] for s in specs]
    config = {
        "task": task.describe(),
        "attacks": [s.to_dict() for s in specs],
        "resolved_attacks": [row[0].config() for row in built],
        "eps": budgets,
        "norm": norm_e.value,
        "mode": mode,
        "seed": seed,
        "max_samples": max_samples,
        "checks": options.get("checks", True),
        "per_attack": per_attack,
        "model": adapter.describe(),
    }
    if task.name == "classification":  # keep the hash of classification checkpoints stable
        del config["task"]
    return AuditContext(
        task, adapter, specs, budgets, norm_e, mode, seed, dev, built, config,  # type: ignore[arg-type]
        max_samples=max_samples, **options,
    )  # fmt: skip


def run_audit(
    ctx: AuditContext,
    loader: Iterable[Any],
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    shard: Shard | None = None,
) -> tuple[Records, dict[int, dict[str, list[torch.Tensor]]], list[dict[str, Any]]]:
    """Run the loop over this process's batches of ``loader``: per-sample records, worst-case
    adversarial examples per budget and an example pool for the report.

    Args:
        ctx: From :func:`make_context`.
        loader: Batches in a fixed order if ``checkpoint`` is used or processes share it.
        checkpoint: A file where records are saved after each batch; an existing checkpoint of
            the same configuration is resumed (one file per process, see
            :func:`medrobust._utils.dist.rank_path`).
        shard: This process's share (default: from ``torch.distributed``, the whole loader in a
            single process); see :mod:`medrobust.evaluation.sharding`.

    Returns:
        ``(records, kept, example_pool)`` of this process's batches.

    Raises:
        ValueError: For an empty loader (single process), a batch that does not fit the model,
            or a checkpoint of another configuration.
    """
    shard = shard or current_shard()
    ckpt = rank_path(Path(checkpoint), shard) if checkpoint is not None else None
    loaded = load_state(ckpt, ctx.config) if ckpt is not None else None
    kept: dict[int, dict[str, list[torch.Tensor]]] = {
        i: {"x_adv": [], "index": [], "label": [], "adv_pred": [], "attack": []}
        for i in range(len(ctx.budgets))
    }
    pool: list[dict[str, Any]] = []
    if loaded is None:
        records = Records(len(ctx.specs), len(ctx.budgets))
    else:
        records, artifacts = loaded
        kept = artifacts.get("kept", kept)
        pool = artifacts.get("pool", pool)
        ctx.task.restore_artifacts(artifacts.get("task", {}))
    plan = plan_batches(loader, ctx.task.read_batch, shard, ctx.max_samples, records.done)
    with eval_mode(ctx.adapter):
        for item in plan:
            batch = item.batch.to(ctx.device)
            batch.index = torch.arange(item.offset, item.offset + len(batch))
            ctx.task.check(ctx.adapter, batch)
            if ctx.progress:
                ctx.progress(ProgressEvent("clean", len(records.done), item.total, records.n))
            _process_batch(ctx, batch, records, kept, pool, item.position, item.total)
            records.done.append(item.position)
            if ckpt is not None:
                artifacts = {"kept": kept, "pool": pool, "task": ctx.task.artifacts()}
                save_state(ckpt, ctx.config, records, artifacts)
    if records.n == 0 and shard.size == 1:
        raise ValueError(EMPTY_LOADER)
    return records, kept, pool


#: The error of an audit whose loader yielded nothing.
EMPTY_LOADER = (
    "the data loader yielded no samples: the data set is empty (check the data path, split and "
    "filters)"
)


@dataclass
class _Worst:
    """The running worst case of one batch, carried from small to large budgets; ``now``: what
    is broken at the current budget (reset per budget; ``"unbroken"`` scopes skip it)."""

    by: torch.Tensor
    score: torch.Tensor
    broken: torch.Tensor
    x: torch.Tensor
    pred: torch.Tensor
    now: torch.Tensor


def _process_batch(
    ctx: AuditContext,
    batch: Batch,
    records: Records,
    kept: dict[int, dict[str, list[torch.Tensor]]],
    pool: list[dict[str, Any]],
    b_idx: int,
    n_batches: int | None,
) -> None:
    b = len(batch)
    offset = int(batch.index[0]) if batch.index is not None and b else records.n
    clean = ctx.task.clean(ctx.adapter, batch)
    n_a, n_e = len(ctx.specs), len(ctx.budgets)
    dev = batch.x.device
    worst = _Worst(
        torch.full((b,), -1, dtype=torch.long, device=dev),
        clean.score.double().to(dev).clone(),
        torch.zeros(b, dtype=torch.bool, device=dev),
        batch.x.clone(),
        clean.pred.clone(),
        torch.zeros(b, dtype=torch.bool, device=dev),
    )
    prev: list[CellRecord | None] = [None] * n_a
    cells = [[CellRecord.empty() for _ in range(n_e)] for _ in range(n_a)]
    worst_by = torch.full((n_e, b), -1, dtype=torch.long)
    worst_score = torch.full((n_e, b), math.nan, dtype=torch.float64)
    scopes = attack_scopes(ctx.specs, ctx.mode)
    for e_i, e in enumerate(ctx.budgets):
        worst.now.zero_()
        for a_i, spec in enumerate(ctx.specs):
            if ctx.progress:
                step = len(records.done)  # this process's batch count, as n_batches
                ctx.progress(ProgressEvent("attack", step, n_batches, records.n, spec.name, e))
            cell = _attack_cell(ctx, batch, clean, prev[a_i], worst, (a_i, e_i), scopes)
            prev[a_i] = cell
            cells[a_i][e_i] = cell
        worst_by[e_i] = worst.by.cpu()
        worst_score[e_i] = worst.score.cpu()
        _keep_worst(kept[e_i], batch.target, worst, offset, ctx.keep_adversarial)
        _pool_examples(ctx, pool, batch, clean.pred, worst, (b_idx, offset, e_i))
    noise = torch.zeros((n_e, b), dtype=torch.bool)
    zero_grad = torch.zeros(b, dtype=torch.bool)
    if ctx.checks:
        noise = _noise_probe(ctx, batch, clean.eligible)
        zero_grad = _zero_gradients(ctx, batch)
    extra = ctx.task.after_batch(ctx, batch, clean, cells, offset)
    records.add_batch(
        clean.record, clean.eligible.cpu(), clean.score.double().cpu(), extra, batch.index
    )
    for a_i in range(n_a):
        for e_i in range(n_e):
            records.cells[a_i][e_i].append(cells[a_i][e_i])
    records.worst_broken_by = torch.cat([records.worst_broken_by, worst_by], dim=1)
    records.worst_score = torch.cat([records.worst_score, worst_score], dim=1)
    records.noise_broken = torch.cat([records.noise_broken, noise], dim=1)
    records.zero_grad = torch.cat([records.zero_grad, zero_grad])


def _attack_cell(
    ctx: AuditContext,
    batch: Batch,
    clean: CleanOutcome,
    prev: CellRecord | None,
    worst: _Worst,
    where: tuple[int, int],
    scopes: list[str],
) -> CellRecord:
    """One attack at one budget on one batch: attack what is eligible (with ``"carried"`` rows:
    and not broken by this attack at a smaller budget, whose result is carried over), and update
    the running worst case."""
    b = len(batch)
    a_i, e_i = where
    eligible = clean.eligible
    if ctx.per_attack == "own":
        prev = None
    carried = prev.broken.to(eligible.device) if prev is not None else eligible & False
    todo = eligible & ~carried
    todo = todo & ~worst.now if scopes[a_i] == "unbroken" else todo  # broken at this budget
    worst.now |= carried
    cell = CellRecord.blank(b, broken=carried.cpu().clone(), attacked=(todo | carried).cpu())
    if prev is not None:
        cell.carry_from(prev, carried.cpu())
    t0 = time.perf_counter()
    idx = todo.nonzero().flatten()
    if idx.numel():
        sub = batch.select(idx)
        with sample_keys(sub.index):  # random draws per sample, whatever the batching
            res = ctx.task.run_attack(ctx.built[a_i][e_i], ctx.adapter, sub)
        ctx.task.on_attack(ctx, sub, clean.pred[idx], res, a_i, e_i)
        out = ctx.task.outcome(ctx.adapter, sub, res)
        score, ok = out.score.double(), out.broken
        i_cpu = idx.cpu()
        if prev is not None:  # the smaller ball's example is inside this ball too
            before = prev.score[i_cpu].to(score.device)
            score = torch.where(torch.isnan(before) | (score <= before), score, before)
        cell.score[i_cpu] = score.cpu()
        cell.set_extra(i_cpu, out.extra, b)
        hit = idx[ok]
        h = hit.cpu()
        cell.broken[h] = True
        cell.linf[h] = res.linf[ok].float().cpu()
        cell.l2[h] = res.l2[ok].float().cpu()
        cell.l0[h] = res.l0[ok].float().cpu()
        cell.ssim[h], cell.psnr[h] = _image_quality(ctx, sub.x[ok], res.x_adv[ok])
        better = score.to(worst.score.device) < worst.score[idx]
        upd = idx[better]
        worst.by[upd] = a_i
        worst.score[upd] = score.to(worst.score.device)[better]
        worst.x[upd] = res.x_adv[better]
        worst.pred[upd] = res.pred_adv[better].to(worst.pred.dtype)
        worst.broken[hit] = True
        worst.now[hit] = True
    cell.time_s = time.perf_counter() - t0
    return cell


def _image_quality(
    ctx: AuditContext, x: torch.Tensor, x_adv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample SSIM and PSNR of adversarial examples (NaN SSIM for images too small for
    its window)."""
    if x.shape[0] == 0:
        e = torch.empty(0)
        return e, e.clone()
    dr = ctx.adapter.bounds.width
    p = psnr(x, x_adv, data_range=dr, cap=100.0).float().cpu()
    s = ssim_or_nan(x, x_adv, dr, ctx.adapter.spatial_dims).float().cpu()
    return s, p


def _keep_worst(
    store: dict[str, list[torch.Tensor]],
    target: torch.Tensor,
    worst: _Worst,
    offset: int,
    limit: int,
) -> None:
    room = limit - sum(t.shape[0] for t in store["index"])
    if room <= 0:
        return
    sel = worst.broken.nonzero().flatten()[:room]
    if sel.numel() == 0:
        return
    store["x_adv"].append(worst.x[sel].detach().cpu())
    store["index"].append(sel.cpu() + offset)
    store["label"].append(target[sel].cpu())
    store["adv_pred"].append(worst.pred[sel].cpu())
    store["attack"].append(worst.by[sel].cpu())


def _pool_examples(
    ctx: AuditContext,
    pool: list[dict[str, Any]],
    batch: Batch,
    clean_pred: torch.Tensor,
    worst: _Worst,
    where: tuple[int, int, int],
) -> None:
    """Add the broken samples of a batch at budget ``where[2]`` to the report's pool
    (``where``: batch position, data-set offset, budget index)."""
    b_idx, offset, e_i = where
    if not ctx.n_examples or len(pool) >= pool_limit(ctx):
        return
    for s_i in worst.broken.nonzero().flatten().tolist():
        pool.append(
            {
                "batch": b_idx,
                "index": offset + s_i,
                "id": batch.ids[s_i] if batch.ids is not None else f"sample-{offset + s_i}",
                "eps_index": e_i,
                "attack_index": int(worst.by[s_i]),
                "label": _item(batch.target[s_i]),
                "clean_pred": _item(clean_pred[s_i]),
                "adv_pred": _item(worst.pred[s_i]),
                "clean": batch.x[s_i].detach().cpu(),
                "adversarial": worst.x[s_i].detach().cpu(),
            }
        )


def pool_limit(ctx: AuditContext) -> int:
    """How many examples the report's pool collects."""
    return 4 * ctx.n_examples * len(ctx.budgets)


def _item(t: torch.Tensor) -> int | torch.Tensor:
    """A class index as an int, a mask as a CPU tensor."""
    return int(t) if t.ndim == 0 else t.detach().cpu()


def random_perturbation(x: torch.Tensor, eps: float, norm: Norm, gen: AnyGenerator) -> torch.Tensor:
    """A random perturbation on the sphere of radius ``eps``: random signs (Linf) or a random
    direction (L2). Shape of ``x``; per sample with a
    :class:`~medrobust.attacks.rng.SampleGenerator`."""
    if norm is Norm.LINF:
        d = (randint(gen, 0, 2, x.shape, device=x.device) * 2 - 1) * eps
        return d.to(x.dtype)
    g = randn(gen, x.shape, device=x.device, dtype=x.dtype)
    return g / g.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1))) * eps


def _noise_probe(ctx: AuditContext, batch: Batch, eligible: torch.Tensor) -> torch.Tensor:
    """``(E, B)`` bool: a random perturbation on the sphere of each budget broke an eligible
    sample (a crude baseline every attack must beat; check MR104); each sample's draws are
    seeded from the run seed and its index."""
    x = batch.x
    assert batch.index is not None
    gen = SampleGenerator.seeded(ctx.seed, batch.index.tolist())
    out = torch.zeros((len(ctx.budgets), x.shape[0]), dtype=torch.bool)
    if ctx.noise_draws <= 0:
        return out
    with torch.no_grad():
        for e_i, e in enumerate(ctx.budgets):
            hit = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            for _ in range(ctx.noise_draws):
                xn = ctx.adapter.bounds.clamp(x + random_perturbation(x, e, ctx.norm, gen))
                hit |= ctx.task.noise_broken(ctx.adapter, batch, xn).to(x.device)
            out[e_i] = (hit & eligible).cpu()
    return out


def _zero_gradients(ctx: AuditContext, batch: Batch) -> torch.Tensor:
    """``(B,)`` bool: the input gradient of the task's loss is all zero or not finite
    (check MR105)."""
    xg = batch.x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = ctx.task.gradient_loss(ctx.adapter, batch, xg)
        (g,) = torch.autograd.grad(loss, xg)
    flat = g.flatten(1)
    return (~torch.isfinite(flat).all(dim=1) | (flat.abs().amax(dim=1) == 0)).cpu()
