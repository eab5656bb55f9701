"""JSMA: the Jacobian-based Saliency Map Attack (pairwise rule, L0 budget), batched.

References:
    Papernot, McDaniel, Jha, Fredrikson, Celik, Swami, "The Limitations of Deep Learning in
    Adversarial Settings", IEEE EuroS&P 2016.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from medrobust.attacks.engine import Attack, Run
from medrobust.attacks.objectives.base import ObjectiveOutput, Target, index_target
from medrobust.attacks.objectives.classification import Margin
from medrobust.attacks.presets import register_attack
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm

__all__ = ["JSMA", "max_pairs", "select_pairs"]

#: Largest number of pair scores held at once while searching (rows are processed in chunks).
_PAIR_CHUNK = 1 << 22
#: Candidates of the first round of the pair search (doubled until the bound proves the best).
_FIRST_CANDIDATES = 64


def max_pairs(gamma: float, n: int) -> int:
    """How many pairs JSMA may change: ``floor(gamma * n / 2)``, so ``2 * pairs <= gamma * n``.

    Args:
        gamma: Largest share of the input elements that may change, in ``(0, 1]``.
        n: Number of elements of one input (``C * prod(spatial)``).
    """
    return math.floor(gamma * n + 1e-9) // 2


def _best_pairs(
    alpha: torch.Tensor, beta: torch.Tensor, cand: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best pair score among the elements ``cand`` ``(M, k)`` of each row: ``(value, p, q)``."""
    m, k = cand.shape
    a, b = alpha.gather(1, cand), beta.gather(1, cand)
    rows = max(1, _PAIR_CHUNK // max(1, k * k))
    values, flats = [], []
    for start in range(0, m, rows):
        # relu(A) * relu(-B) is -A * B where A > 0 and B < 0, and 0 elsewhere (in place)
        score = (a[start : start + rows, :, None] + a[start : start + rows, None, :]).clamp_(min=0)
        neg_b = b[start : start + rows, :, None] + b[start : start + rows, None, :]
        score.mul_(neg_b.neg_().clamp_(min=0))
        score.diagonal(dim1=1, dim2=2).zero_()  # a pair is two distinct elements
        v, i = score.flatten(1).max(dim=1)  # the first maximum: row p < column q
        values.append(v)
        flats.append(i)
    flat = torch.cat(flats)
    p = cand.gather(1, (flat // k)[:, None]).squeeze(1)
    q = cand.gather(1, (flat % k)[:, None]).squeeze(1)
    return torch.cat(values), p, q


def select_pairs(
    alpha: torch.Tensor,
    beta: torch.Tensor,
    domain: torch.Tensor,
    max_candidates: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairwise saliency rule: per row, the pair ``p != q`` of the search domain maximising
    ``-A * B`` with ``A = alpha_p + alpha_q > 0`` and ``B = beta_p + beta_q < 0``.

    ``alpha`` and ``beta`` are already multiplied by the sign of the change ``theta`` (so the
    rule for decreasing features is the same call with negated gradients). A valid pair's score
    is at most ``((u_p + u_q) / 2) ** 2`` with ``u_i = alpha_i - beta_i`` (arithmetic-geometric
    mean of ``A`` and ``-B``), so the search runs over the ``k`` domain elements with the largest
    ``u`` (``k = 64`` first) and is done for a row once its best score there reaches
    ``((u_(1) + u_(k+1)) / 2) ** 2``, the bound of every pair with an element left out;
    otherwise ``k`` doubles. The result is the exact rule (up to rounding; among equal scores
    the pair of smallest indices among the candidates) unless ``k`` reaches
    ``max_candidates < n``: then it is the best pair among those candidates.

    Args:
        alpha: ``(M, n)`` gradients of the target class's logit.
        beta: ``(M, n)`` gradients of the sum of the other classes' logits.
        domain: ``(M, n)`` bool, the elements that may still change.
        max_candidates: Largest ``k`` (None: up to ``n``, always exact).

    Returns:
        ``(p, q, found)``: ``(M,)`` int64 element indices and ``(M,)`` bool, False where no pair
        of the domain satisfies both conditions (``p`` and ``q`` are then meaningless).

    Shape:
        - alpha, beta, domain: ``(M, n)``; outputs ``(M,)``.

    References:
        Papernot et al., EuroS&P 2016, Algorithm 3 (the saliency map over pairs).
    """
    m, n = alpha.shape
    cap = n if max_candidates is None else min(int(max_candidates), n)
    # an element outside the domain gets alpha = -inf and beta = +inf: its pairs score 0
    alpha = alpha.masked_fill(~domain, -math.inf)
    beta = beta.masked_fill(~domain, math.inf)
    u, order = (alpha - beta).topk(cap, dim=1)
    value = torch.zeros(m, dtype=alpha.dtype, device=alpha.device)
    p = torch.zeros(m, dtype=torch.long, device=alpha.device)
    q = torch.zeros_like(p)
    todo = torch.arange(m, device=alpha.device)
    k = min(_FIRST_CANDIDATES, cap)
    while todo.numel():
        cand = order[todo, :k].sort(dim=1).values
        v, pp, qq = _best_pairs(alpha[todo], beta[todo], cand)
        if k >= cap:
            done = torch.ones_like(v, dtype=torch.bool)
        else:
            rest = (u[todo, 0] + u[todo, k]).nan_to_num(neginf=0.0).clamp(min=0)
            done = v >= (rest / 2).square()
        rows = todo[done]
        value[rows], p[rows], q[rows] = v[done], pp[done], qq[done]
        todo = todo[~done]
        k = min(2 * k, cap)
    return p, q, value > 0


class JSMA(Attack):
    """Jacobian-based Saliency Map Attack: greedily change the most salient pixel pairs.

    Each iteration computes, at the current input, ``alpha_i`` (gradient of the target class's
    logit) and ``beta_i`` (gradient of the sum of the other classes' logits) for every input
    element, picks the pair of the search domain with the largest ``-A * B`` where ``A > 0``
    and ``B < 0`` (the paper's pairwise rule; ``A``, ``B`` the pair's sums, signs flipped for a
    negative ``theta``), and changes both elements by ``theta`` times the input range, clipped
    to the adapter's bounds (and to ``eps``). Changed elements leave the search domain (each
    element changes at most once), as do elements that cannot move (already at the bound the
    change points to, or outside the region mask). A sample stops when the attack succeeds,
    when ``floor(gamma * n / 2)`` pairs have changed (``n = C * prod(spatial)``: so the L0 of
    the result never exceeds ``gamma * n``), or when no pair of its domain meets the
    conditions. The search is vectorised over the batch; gradients are those of the logits
    (JSMA-Z in Carlini & Wagner's naming; with softmax outputs the other classes' gradient
    would be exactly minus the target's).

    Binary models: two logits are defined only up to a common per-sample shift (the adapter
    turns a single-logit head ``z`` into ``[0, z]``, whose first logit has zero gradient, so
    ``A > 0`` could never hold toward class 0). For ``K = 2`` the logits are therefore centred
    (``[-d/2, d/2]`` with ``d`` the logit difference) before differentiating: then
    ``beta = -alpha`` and the rule picks the pair with the largest positive sum of
    ``d(z_t - z_o)/dx``, whatever the head. With ``K >= 3`` the logits are used as they are.

    Untargeted (default), the target class of each sample is the most likely class other than
    its label at the clean point (the second most likely class when the clean prediction is the
    label) and success is a prediction different from the label (any class). Targeted
    (``targeted=True``), ``labels`` are the target classes and success is reaching them.

    The optional ``eps`` bounds the perturbation in ``norm`` like every attack's budget: for
    ``"linf"`` it clips each element's change; for ``"l2"`` the change of the pair that would
    leave the ball is shortened to reach its surface and the sample stops there. ``result.loss``
    is the (targeted) Carlini-Wagner logit margin; ``result.steps`` counts the pairs changed.

    Args:
        theta: Signed change of each selected element as a fraction of the input range
            ``bounds.high - bounds.low``, in ``[-1, 1]`` and not 0 (``+1``, the paper's
            "increasing features": to the upper bound; ``-1``: to the lower bound).
        gamma: Largest share of the input elements that may change, in ``(0, 1]``.
        targeted: Drive toward the classes given as labels instead of away from the labels.
        eps: Optional budget in ``norm`` (None: only ``theta`` and the bounds limit changes).
        norm: Norm of that budget.
        max_candidates: Cap on the elements per sample the pair search may consider (those
            with the largest ``alpha_i - beta_i``, see :func:`select_pairs`). The search is
            exact when it proves its best pair within the cap, always when ``n`` is at most
            the cap (1024: a 32x32 image); None never caps it, at a cost of up to ``n ** 2``
            per step (large 3-D volumes).
        seed: Unused (the attack is deterministic); kept for the common interface.
        name: Name in the result's config.

    Raises:
        ValueError: For ``theta`` outside ``[-1, 1]`` or 0, ``gamma`` outside ``(0, 1]``,
            ``max_candidates < 2``, or an invalid ``eps``/``norm``/``seed``.

    Shape:
        - images: ``(B, C, *spatial)``; labels: ``(B,)`` class indices.

    References:
        Papernot et al., "The Limitations of Deep Learning in Adversarial Settings",
        EuroS&P 2016; Carlini & Wagner, IEEE S&P 2017 (JSMA-Z).
    """

    engine = "jsma"

    def __init__(
        self,
        *,
        theta: float = 1.0,
        gamma: float = 0.1,
        targeted: bool = False,
        eps: float | None = None,
        norm: Norm | str = Norm.LINF,
        max_candidates: int | None = 1024,
        seed: int = 0,
        name: str = "jsma",
    ) -> None:
        super().__init__(objective=Margin(targeted=targeted), norm=norm, eps=eps, seed=seed)
        if not _is_number(theta) or theta == 0 or abs(theta) > 1:
            raise ValueError(
                f"theta must be a nonzero number in [-1, 1] (the signed change of each element "
                f"as a fraction of the input range), got {theta!r}"
            )
        if not _is_number(gamma) or not 0 < gamma <= 1:
            raise ValueError(
                f"gamma must be in (0, 1] (the largest share of input elements changed), "
                f"got {gamma!r}"
            )
        if max_candidates is not None and (
            not isinstance(max_candidates, int)
            or isinstance(max_candidates, bool)
            or max_candidates < 2
        ):
            raise ValueError(
                f"max_candidates must be an integer >= 2 or None, got {max_candidates!r}"
            )
        self.theta = float(theta)
        self.gamma = float(gamma)
        self.max_candidates = max_candidates
        self.name = name

    def params(self) -> dict[str, Any]:
        return {"theta": self.theta, "gamma": self.gamma, "max_candidates": self.max_candidates}

    def target_classes(
        self, model: ModelAdapter, x: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The class each sample is driven to: the labels when targeted, else the most likely
        class other than the label at the clean point ``x``. Shape: ``(B,)``."""
        if self.targeted:
            return labels
        with torch.no_grad():
            z = model(x)
        return z.masked_fill(F.one_hot(labels, z.shape[1]).bool(), -math.inf).argmax(dim=1)

    def change(self, run: Run) -> torch.Tensor:
        """Each element's full change if selected: ``theta`` times the input range, clipped to
        the bounds, to ``eps`` and to the region (0 where it cannot move). Shape: ``(B, n)``."""
        x, bounds = run.x, run.threat.bounds
        delta = bounds.clamp(x + self.theta * bounds.width) - x
        if self.eps is not None:
            delta = delta.clamp(-self.eps, self.eps)
        if run.region is not None:
            delta = delta * run.region
        return delta.flatten(1)

    def saliency_inputs(
        self, model: ModelAdapter, x: torch.Tensor, target: Target, cls: torch.Tensor
    ) -> tuple[ObjectiveOutput, torch.Tensor, torch.Tensor]:
        """The objective at ``x`` and the signed ``alpha``, ``beta`` of every element.

        Returns:
            ``(out, alpha, beta)``: the detached objective output, and ``(M, n)`` gradients of
            the target class's logit and of the other classes' summed logits, times the sign
            of ``theta``.
        """
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.objective(model, xg, target)
            z = out.logits
            if z.shape[1] == 2:  # defined up to a common shift: centre them (class docstring)
                z = z - z.mean(dim=1, keepdim=True)
            (ga,) = torch.autograd.grad(z.gather(1, cls[:, None]).sum(), xg, retain_graph=True)
            (gz,) = torch.autograd.grad(z.sum(), xg)
        sign = 1.0 if self.theta > 0 else -1.0
        alpha, beta = sign * ga.flatten(1), sign * (gz - ga).flatten(1)
        out = ObjectiveOutput(out.loss.detach(), out.success, out.pred, out.logits.detach())
        return out, alpha, beta

    def _run(self, run: Run) -> None:
        """The JSMA loop, vectorised over the samples still being attacked."""
        model, x, target, _, _, best = run.unpack()
        if isinstance(target, dict):  # pragma: no cover - Margin.prepare returns the labels
            raise TypeError("JSMA expects a label tensor as target")
        b = x.shape[0]
        change = self.change(run)
        budget = max_pairs(self.gamma, change.shape[1])
        domain = change != 0
        cls = self.target_classes(model, x, target)
        used = torch.zeros(b, dtype=torch.long, device=x.device)
        spent = torch.zeros(b, dtype=change.dtype, device=x.device)  # squared L2 so far
        x_flat = x.flatten(1)
        flat = x_flat.clone()
        idx = torch.arange(b, device=x.device)
        if self.check_clean:
            idx = idx[~best.success]
        while idx.numel():
            xa = flat[idx].view((-1, *x.shape[1:]))
            out, alpha, beta = self.saliency_inputs(model, xa, index_target(target, idx), cls[idx])
            best.update(idx, xa, out)
            go = ~out.success & (used[idx] < budget) & (domain[idx].sum(dim=1) >= 2)
            idx, alpha, beta = idx[go], alpha[go], beta[go]
            if not idx.numel():
                break
            p, q, found = select_pairs(alpha, beta, domain[idx], self.max_candidates)
            idx, p, q = idx[found], p[found], q[found]
            if not idx.numel():
                break
            step = torch.stack([change[idx, p], change[idx, q]], dim=1)
            if self.eps is not None and self.norm is Norm.L2:
                need = step.square().sum(dim=1)
                room = (self.eps**2 - spent[idx]).clamp(min=0)
                scale = (room / need).sqrt().clamp(max=1.0)
                step = step * scale[:, None]
                domain[idx[scale < 1]] = False  # the ball's surface: this sample stops
                spent[idx] += step.square().sum(dim=1)
            flat[idx, p] = x_flat[idx, p] + step[:, 0]
            flat[idx, q] = x_flat[idx, q] + step[:, 1]
            domain[idx, p] = False
            domain[idx, q] = False
            used[idx] += 1
            best.steps[idx] += 1
        return None


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@register_attack(
    "jsma",
    JSMA,
    kind="iterative",
    task="classification",
    extras=("gradient",),
    summary="Jacobian saliency map attack: greedy pixel pairs under an L0 budget (gamma)",
)
def jsma(kw: dict[str, Any]) -> dict[str, Any]:
    """JSMA (Papernot et al. 2016): ``theta=1`` (to the upper bound), ``gamma=0.1`` (at most
    10% of the elements change); untargeted toward the second most likely class by default."""
    return kw
