"""The robustness audit of a classifier: clean metrics, robust accuracy per attack and budget,
the worst case per sample across the suite, sanity checks, examples, and resumable records.

References:
    Croce & Hein, ICML 2020 (worst case per sample over an attack ensemble);
    Carlini et al., "On Evaluating Adversarial Robustness", 2019 (sanity checks).
"""

from __future__ import annotations

import hashlib
import json
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

from medrobust._utils.format import fmt_eps
from medrobust.attacks.engine import eval_mode, make_generator
from medrobust.attacks.presets import ATTACKS, create_attack
from medrobust.evaluation.records import CellRecord, Records
from medrobust.models.adapter import ModelAdapter, as_adapter
from medrobust.types import Norm, Task

logger = logging.getLogger(__name__)

Mode = Literal["individual", "cascade"]


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite: a registered name and its parameters (``eps``, ``norm`` and
    ``seed`` are set by the suite)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | AttackSpec) -> AttackSpec:
        """Accept ``"pgd"``, ``{"name": "pgd", "steps": 20}`` or an :class:`AttackSpec`.

        Raises:
            ValueError: For a malformed spec or parameters the suite sets itself.
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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.params)}


@dataclass
class ProgressEvent:
    """A progress update sent to the ``progress`` callback of :func:`evaluate`.

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


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    if isinstance(batch, Mapping):
        if "image" not in batch or "label" not in batch:
            raise ValueError(f"a batch dict needs 'image' and 'label' keys, got {sorted(batch)}")
        ids = batch.get("id")
        return batch["image"], batch["label"], list(ids) if ids is not None else None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1], None
    raise ValueError(
        "each batch must be a dict with 'image' and 'label' or a tuple (images, labels), "
        f"got {type(batch).__name__}"
    )


def _config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _image_quality(
    x: torch.Tensor, x_adv: torch.Tensor, data_range: float, spatial_dims: int
) -> tuple[torch.Tensor, torch.Tensor]:
    from medrobust.metrics import psnr, ssim

    if x.shape[0] == 0:
        e = torch.empty(0)
        return e, e.clone()
    p = psnr(x, x_adv, data_range=data_range, cap=100.0).float().cpu()
    try:
        s = ssim(x, x_adv, data_range=data_range, spatial_dims=spatial_dims).float().cpu()
    except ValueError:  # images too small for an SSIM window: report no SSIM
        s = torch.full((x.shape[0],), math.nan)
    return s, p


@dataclass
class EvaluationResult:
    """The outcome of :func:`evaluate`.

    Attributes:
        metrics: Every number of the audit, in the ``metrics.json`` schema (version 1).
        examples: Example images (clean, adversarial) for the report.
        adversarial: Per budget, the worst-case adversarial examples kept (``x_adv``, ``index``,
            ``label``, ``adv_pred``, ``attack``), as tensors.
        config: The resolved evaluation configuration.
        records: The per-sample records.
    """

    metrics: dict[str, Any]
    examples: list[Any]
    adversarial: dict[str, dict[str, torch.Tensor]]
    config: dict[str, Any]
    records: Records

    def robust_accuracy(self, attack: str | None = None, eps: float | None = None) -> float:
        """Robust accuracy of one attack (or the worst case when ``attack`` is None) at ``eps``
        (default: the largest budget).

        Raises:
            KeyError: If the attack or budget was not evaluated.
        """
        budgets = self.metrics["threat_model"]["eps"]
        e = budgets[-1] if eps is None else eps
        if attack is None:
            for row in self.metrics["worst_case"]:
                if math.isclose(row["eps"], e, rel_tol=1e-9):
                    return float(row["robust_accuracy"])
        else:
            for row in self.metrics["results"]:
                if row["attack"] == attack and math.isclose(row["eps"], e, rel_tol=1e-9):
                    return float(row["robust_accuracy"])
        raise KeyError(f"no result for attack={attack!r}, eps={e!r}; budgets: {budgets}")

    def summary(self) -> str:
        """A short plain-text summary (clean accuracy and worst-case robust accuracy)."""
        m = self.metrics
        lines = [f"clean accuracy: {m['clean']['accuracy']:.3f} (n={m['clean']['n']})"]
        for row in m["worst_case"]:
            lines.append(
                f"worst-case robust accuracy at eps={fmt_eps(row['eps'])}: "
                f"{row['robust_accuracy']:.3f}"
            )
        warn = [c["code"] for c in m["checks"] if c["status"] != "pass"]
        lines.append(
            f"sanity checks: {len(warn)} flagged" + (f" ({', '.join(warn)})" if warn else "")
        )
        return "\n".join(lines)

    def write(
        self, run_dir: str | os.PathLike[str], *, overwrite: bool = False, **kwargs: Any
    ) -> Path:
        """Write the run folder (``report.html``, ``metrics.json``, ``config.yaml``, worst-case
        adversarial examples); keyword arguments as
        :func:`medrobust.evaluation.run_folder.write_run_folder`."""
        from medrobust.evaluation.run_folder import write_run_folder

        return write_run_folder(self, Path(run_dir), overwrite=overwrite, **kwargs)


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    attacks: Sequence[str | Mapping[str, Any] | AttackSpec] = ("fgsm", "pgd"),
    eps: Sequence[float] = (1 / 255, 2 / 255, 4 / 255),
    *,
    norm: str | Norm = Norm.LINF,
    mode: Mode = "individual",
    seed: int = 0,
    num_classes: int | None = None,
    bounds: tuple[float, float] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    device: str | torch.device | None = None,
    max_samples: int | None = None,
    n_examples: int = 6,
    keep_adversarial: int = 256,
    checks: bool = True,
    probe_samples: int = 16,
    noise_draws: int = 4,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    model_info: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> EvaluationResult:
    """Audit a classifier: clean metrics, robust accuracy per attack and budget, the worst case
    per sample, and sanity checks against gradient masking.

    Budgets are processed from the smallest up. A sample broken by an attack at a budget stays
    broken at every larger budget (its adversarial example is inside the larger ball too), so it is
    not attacked again; only still-unbroken samples are attacked further. With
    ``mode="individual"`` every gradient attack runs on every sample still unbroken *by that
    attack*, giving per-attack robust accuracy; black-box attacks (Square) run only on the
    samples the attacks before them left unbroken, as a cross-check against gradient masking.
    With ``mode="cascade"`` (AutoAttack style, faster) every attack runs only on the samples no
    earlier attack of the suite broke at that budget. Rows of attacks that only saw unbroken
    samples report cumulative robust accuracy (``"scope": "unbroken"`` in ``metrics.json``).

    Args:
        model: A classifier; a :class:`ModelAdapter`, or a bare module whose inputs lie in
            ``bounds`` (default ``[0, 1]``).
        loader: Batches as dicts (``"image"``, ``"label"``, optional ``"id"``) or
            ``(images, labels)`` tuples, in a fixed order if ``checkpoint`` is used.
        attacks: Attack names or specs (``{"name": "pgd", "steps": 20}``), in suite order.
        eps: Budgets, in the model's input space (e.g. ``4/255`` for images in ``[0, 1]``).
        norm: ``"linf"`` or ``"l2"``.
        mode: ``"individual"`` or ``"cascade"`` (see above).
        seed: Seed of every attack's private generator.
        num_classes, bounds, mean, std: Adapter settings for a bare module.
        device: Where to run (default: the model's device).
        max_samples: Stop after this many samples.
        n_examples: Number of example images kept for the report.
        keep_adversarial: Worst-case adversarial examples kept per budget (for the run folder).
        checks: Run the sanity checks (``docs/checks.md``).
        probe_samples: Samples used by the large-budget probe (check MR101).
        noise_draws: Random-noise draws per budget for check MR104.
        checkpoint: A file where records are saved after each batch; an existing checkpoint of
            the same configuration is resumed.
        progress: Callback receiving :class:`ProgressEvent` updates.
        model_info, data_info: Descriptions copied into the metrics (model card, data set).
        title: Report title.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ValueError: For an empty loader, ``eps <= 0``, unknown attacks (with suggestions), inputs
            that do not match the model (rank, channels, NaN, bounds) or labels out of range.
    """
    t_start = time.perf_counter()
    adapter = (
        as_adapter(model, num_classes=num_classes, bounds=bounds, mean=mean, std=std)
        if not isinstance(model, ModelAdapter)
        else model
    )
    if adapter.task is Task.SEGMENTATION:
        raise ValueError("evaluate() audits classifiers; this model's task is 'segmentation'")
    norm_e = Norm.parse(norm)
    if mode not in ("individual", "cascade"):
        raise ValueError(f"mode must be 'individual' or 'cascade', got {mode!r}")
    budgets = _check_budgets(eps)
    specs = [AttackSpec.parse(a) for a in attacks]
    if not specs:
        raise ValueError("the attack suite is empty; name at least one attack")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"the suite names an attack twice: {names}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    dev = torch.device(device) if device is not None else _model_device(adapter)
    adapter.to(dev)
    # Build every attack once per budget now, so bad parameters fail before any work.
    built = [
        [
            create_attack(s.name, eps=e, norm=norm_e.value, seed=seed, **dict(s.params))
            for e in budgets
        ]
        for s in specs
    ]
    config = {
        "attacks": [s.to_dict() for s in specs],
        "resolved_attacks": [built[i][0].config() for i in range(len(specs))],
        "eps": budgets,
        "norm": norm_e.value,
        "mode": mode,
        "seed": seed,
        "max_samples": max_samples,
        "checks": checks,
        "model": adapter.describe(),
    }
    ckpt = Path(checkpoint) if checkpoint is not None else None
    records = _load_checkpoint(ckpt, config) if ckpt is not None else None
    if records is None:
        records = Records(len(specs), len(budgets))
    keep: dict[int, dict[str, list[torch.Tensor]]] = {
        i: {"x_adv": [], "index": [], "label": [], "adv_pred": [], "attack": []}
        for i in range(len(budgets))
    }
    example_pool: list[dict[str, Any]] = []
    n_batches = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    with eval_mode(adapter):
        for b_idx, batch in enumerate(loader):
            if max_samples is not None and records.n >= max_samples:
                break
            if b_idx < records.batches_done:
                continue
            x, y, ids = _unpack(batch)
            if max_samples is not None:
                room = max_samples - records.n
                x, y = x[:room], y[:room]
                ids = ids[:room] if ids is not None else None
            x, y = x.to(dev).float(), y.to(dev).long().reshape(-1)
            adapter.check_input(x)
            adapter.check_labels(y, x.shape[0])
            if progress:
                progress(ProgressEvent("clean", b_idx, n_batches, records.n))
            offset = records.n
            _process_batch(
                adapter,
                x,
                y,
                specs,
                built,
                budgets,
                mode,
                seed,
                records,
                keep,
                example_pool,
                offset,
                ids,
                n_examples,
                keep_adversarial,
                checks,
                noise_draws,
                norm_e,
                progress,
                b_idx,
                n_batches,
            )
            records.batches_done = b_idx + 1
            if ckpt is not None:
                _save_checkpoint(ckpt, config, records)
    if records.n == 0:
        raise ValueError(
            "the data loader yielded no samples: the data set is empty (check the data path, "
            "split and filters)"
        )
    from medrobust.evaluation.checks import run_checks
    from medrobust.evaluation.summarise import build_metrics, select_examples

    check_rows = (
        run_checks(adapter, records, specs, budgets, norm_e, loader, seed, probe_samples, dev)
        if checks
        else []
    )
    if progress:
        progress(ProgressEvent("checks", records.batches_done, n_batches, records.n))
    examples = select_examples(example_pool, records, specs, budgets, n_examples, adapter)
    metrics = build_metrics(
        adapter,
        records,
        specs,
        budgets,
        norm_e,
        mode,
        check_rows,
        examples,
        model_info=model_info,
        data_info=data_info,
        title=title,
        total_s=time.perf_counter() - t_start,
    )
    adversarial = {
        fmt_eps(budgets[i]): {
            k: (torch.cat(v) if v else torch.empty(0)) for k, v in keep[i].items()
        }
        for i in range(len(budgets))
    }
    return EvaluationResult(metrics, examples, adversarial, config, records)


def attack_scopes(specs: Sequence[AttackSpec], mode: Mode) -> list[str]:
    """Which samples each attack of the suite attacks at a budget.

    ``"all"``: every correctly classified sample it has not broken at a smaller budget
    (``mode="individual"``). ``"unbroken"``: only those no earlier attack of the suite broke at
    this budget (every attack under ``mode="cascade"``, and black-box attacks in both modes: they
    are a cross-check of what the gradient attacks missed, see check MR103).
    """
    out = []
    for spec in specs:
        black_box = "black-box" in ATTACKS.get(spec.name).tags
        out.append("unbroken" if mode == "cascade" or black_box else "all")
    return out


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_budgets(eps: Sequence[float] | float) -> list[float]:
    if isinstance(eps, (int, float)):
        eps = [eps]
    out = []
    for e in eps:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0:
            raise ValueError(f"every eps must be a finite number > 0, got {e!r}")
        out.append(float(e))
    if not out:
        raise ValueError("eps is empty; give at least one budget")
    if len(set(out)) != len(out):
        raise ValueError(f"eps contains duplicates: {out}")
    return sorted(out)


def _process_batch(
    adapter: ModelAdapter,
    x: torch.Tensor,
    y: torch.Tensor,
    specs: list[AttackSpec],
    built: list[list[Any]],
    budgets: list[float],
    mode: Mode,
    seed: int,
    records: Records,
    keep: dict[int, dict[str, list[torch.Tensor]]],
    example_pool: list[dict[str, Any]],
    offset: int,
    ids: list[str] | None,
    n_examples: int,
    keep_adversarial: int,
    checks: bool,
    noise_draws: int,
    norm: Norm,
    progress: Callable[[ProgressEvent], None] | None,
    b_idx: int,
    n_batches: int | None,
) -> None:
    b = x.shape[0]
    with torch.no_grad():
        logits = adapter(x)
    pred = logits.argmax(dim=1)
    correct = pred == y
    n_a, n_e = len(specs), len(budgets)
    dr = adapter.bounds.width
    scopes = attack_scopes(specs, mode)
    # per attack: the samples it broke at the previous budget and their adversarial examples,
    # which are inside every larger ball too (carried over, not attacked again)
    prev_cell: list[CellRecord | None] = [None] * n_a
    prev_x = [x.clone() for _ in range(n_a)]
    worst_by_now = torch.full((b,), -1, dtype=torch.long, device=x.device)
    worst_x, worst_pred = x.clone(), pred.clone()
    cells = [[CellRecord.empty() for _ in range(n_e)] for _ in range(n_a)]
    worst_by = torch.full((n_e, b), -1, dtype=torch.long)
    for e_i, e in enumerate(budgets):
        for a_i, spec in enumerate(specs):
            prev = prev_cell[a_i]
            carried = prev.broken.to(x.device) if prev is not None else correct & False
            todo = correct & ~carried
            if scopes[a_i] == "unbroken":
                todo &= worst_by_now < 0
            cell = CellRecord(
                broken=carried.cpu().clone(),
                attacked=(todo | carried).cpu(),
                linf=torch.full((b,), math.nan),
                l2=torch.full((b,), math.nan),
                ssim=torch.full((b,), math.nan),
                psnr=torch.full((b,), math.nan),
            )
            if prev is not None:
                c = carried.cpu()
                for name in ("linf", "l2", "ssim", "psnr"):
                    getattr(cell, name)[c] = getattr(prev, name)[c]
            if progress:
                progress(ProgressEvent("attack", b_idx, n_batches, records.n, spec.name, e))
            t0 = time.perf_counter()
            idx = todo.nonzero().flatten()
            if idx.numel():
                res = built[a_i][e_i](adapter, x[idx], y[idx])
                ok = res.success
                hit = idx[ok]
                prev_x[a_i][hit] = res.x_adv[ok]
                h = hit.cpu()
                cell.broken[h] = True
                cell.linf[h] = res.linf[ok].float().cpu()
                cell.l2[h] = res.l2[ok].float().cpu()
                cell.ssim[h], cell.psnr[h] = _image_quality(
                    x[hit], res.x_adv[ok], dr, adapter.spatial_dims
                )
                first = ok & (worst_by_now[idx] < 0)
                new = idx[first]
                worst_by_now[new] = a_i
                worst_x[new] = res.x_adv[first]
                worst_pred[new] = res.pred_adv[first]
            cell.time_s = time.perf_counter() - t0
            prev_cell[a_i] = cell
            cells[a_i][e_i] = cell
        worst_by[e_i] = worst_by_now.cpu()
        _keep_worst(keep[e_i], y, worst_x, worst_by_now, worst_pred, offset, keep_adversarial)
        if n_examples and len(example_pool) < 4 * n_examples * n_e:
            for s_i in (worst_by_now >= 0).nonzero().flatten().tolist():
                example_pool.append(
                    {
                        "index": offset + s_i,
                        "id": ids[s_i] if ids is not None else f"sample-{offset + s_i}",
                        "eps_index": e_i,
                        "attack_index": int(worst_by_now[s_i]),
                        "label": int(y[s_i]),
                        "clean_pred": int(pred[s_i]),
                        "adv_pred": int(worst_pred[s_i]),
                        "clean": x[s_i].detach().cpu(),
                        "adversarial": worst_x[s_i].detach().cpu(),
                    }
                )
    noise = torch.zeros((n_e, b), dtype=torch.bool)
    zero_grad = torch.zeros(b, dtype=torch.bool)
    if checks:
        noise = _noise_probe(adapter, x, y, correct, budgets, norm, seed + offset, noise_draws)
        zero_grad = _zero_gradients(adapter, x, y)
    records.labels = torch.cat([records.labels, y.cpu()])
    records.logits = torch.cat([records.logits.reshape(-1, logits.shape[1]), logits.float().cpu()])
    for a_i in range(n_a):
        for e_i in range(n_e):
            records.cells[a_i][e_i].append(cells[a_i][e_i])
    records.worst_broken_by = torch.cat([records.worst_broken_by, worst_by], dim=1)
    records.noise_broken = torch.cat([records.noise_broken, noise], dim=1)
    records.zero_grad = torch.cat([records.zero_grad, zero_grad])


def _keep_worst(
    store: dict[str, list[torch.Tensor]],
    y: torch.Tensor,
    worst_x: torch.Tensor,
    worst_by: torch.Tensor,
    worst_pred: torch.Tensor,
    offset: int,
    limit: int,
) -> None:
    have = sum(t.shape[0] for t in store["index"])
    room = limit - have
    if room <= 0:
        return
    sel = (worst_by >= 0).nonzero().flatten()[:room]
    if sel.numel() == 0:
        return
    store["x_adv"].append(worst_x[sel].detach().cpu())
    store["index"].append(sel.cpu() + offset)
    store["label"].append(y[sel].cpu())
    store["adv_pred"].append(worst_pred[sel].cpu())
    store["attack"].append(worst_by[sel].cpu())


def _noise_probe(
    adapter: ModelAdapter,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: torch.Tensor,
    budgets: list[float],
    norm: Norm,
    seed: int,
    draws: int,
) -> torch.Tensor:
    """``(E, B)`` bool: a random perturbation on the sphere of each budget changed a correct
    prediction (a crude baseline every attack must beat; check MR104)."""
    gen = make_generator(seed, x.device)
    out = torch.zeros((len(budgets), x.shape[0]), dtype=torch.bool)
    if draws <= 0:
        return out
    with torch.no_grad():
        for e_i, e in enumerate(budgets):
            hit = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            for _ in range(draws):
                if norm is Norm.LINF:
                    d = (torch.randint(0, 2, x.shape, generator=gen, device=x.device) * 2 - 1) * e
                    d = d.to(x.dtype)
                else:
                    g = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
                    d = g / g.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1))) * e
                xn = adapter.bounds.clamp(x + d)
                hit |= adapter(xn).argmax(dim=1) != y
            out[e_i] = (hit & correct).cpu()
    return out


def _zero_gradients(adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: the input gradient of the cross-entropy is all zero or not finite
    (check MR105)."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(adapter(xg), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
    flat = g.flatten(1)
    return (~torch.isfinite(flat).all(dim=1) | (flat.abs().amax(dim=1) == 0)).cpu()


def _save_checkpoint(path: Path, config: Mapping[str, Any], records: Records) -> None:
    from medrobust._utils.io import atomic_torch_save

    state = {
        "format": "medrobust-eval-state",
        "config_hash": _config_hash(config),
        "records": records.state(),
    }
    atomic_torch_save(state, path)


def _load_checkpoint(path: Path, config: Mapping[str, Any]) -> Records | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise ValueError(
            f"evaluation checkpoint {path} is corrupt or unreadable ({type(exc).__name__}); "
            "delete it to start over"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != "medrobust-eval-state":
        raise ValueError(f"{path} is not a medrobust evaluation checkpoint")
    if state.get("config_hash") != _config_hash(config):
        raise ValueError(
            f"evaluation checkpoint {path} was written for a different configuration (attacks, "
            "budgets, model or seed changed); delete it or use another checkpoint path"
        )
    records = Records.from_state(state["records"])
    logger.info("resuming evaluation from %s: %d batches done", path, records.batches_done)
    return records
