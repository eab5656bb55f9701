"""JSMA (Papernot et al. 2016): the pairwise saliency rule on linear models where the chosen pair
is known, success semantics, the L0 budget, bounds and eps, determinism, batching, 2-D and 3-D,
binary (two logits and a single logit) and multi-class, and the errors for bad settings."""

from __future__ import annotations

import math

import pytest
import torch

from medrobust.attacks import create_attack
from medrobust.attacks.jsma import JSMA, max_pairs, select_pairs
from medrobust.models import ModelAdapter
from tests.attacks.models import LinearModel, batch, tiny_cnn


def linear(w: torch.Tensor, b: torch.Tensor | None = None, side: int = 2) -> ModelAdapter:
    """A linear classifier on ``(B, 1, side, side)`` inputs."""
    b = torch.zeros(w.shape[0]) if b is None else b
    return ModelAdapter(LinearModel(w, b), num_classes=max(2, w.shape[0])).eval()


def changed(x: torch.Tensor, x_adv: torch.Tensor) -> list[set[int]]:
    """The indices of the elements that changed, per sample."""
    d = (x_adv != x).flatten(1)
    return [set(row.nonzero().flatten().tolist()) for row in d]


def brute_force_pair(
    alpha: torch.Tensor, beta: torch.Tensor, sign: float = 1.0
) -> tuple[int, int] | None:
    """The paper's rule, pair by pair: max ``-A * B`` with ``A > 0`` and ``B < 0``."""
    best, pair = 0.0, None
    n = alpha.numel()
    for p in range(n):
        for q in range(p + 1, n):
            a = sign * float(alpha[p] + alpha[q])
            b = sign * float(beta[p] + beta[q])
            if a > 0 and b < 0 and -a * b > best:
                best, pair = -a * b, (p, q)
    return pair


# -- the saliency rule -----------------------------------------------------------------------
def test_first_pair_is_the_analytic_saliency_pair() -> None:
    # target class 0: alpha = w_0; beta = w_1 + w_2 (the other classes' gradients summed)
    alpha = torch.tensor([2.0, 1.0, -0.5, 0.1])
    beta = torch.tensor([0.5, -0.1, -4.0, 0.0])
    c = torch.tensor([0.3, -0.3, 0.3, -0.3])
    w = torch.stack([alpha, beta / 2 + c, beta / 2 - c])
    # pairs: (0,1) B = 0.4 > 0 and (0,3) B = 0.5 > 0 are out; (0,2): A = 1.5, B = -3.5 -> 5.25
    # beats (1,2): 0.5 * 4.1 = 2.05 and (1,3): 1.1 * 0.1; element 2 has alpha < 0 but joins
    # the best pair through its large negative beta: the pairwise rule, not two single elements
    model = linear(w, torch.tensor([-10.0, 0.0, 0.0]))
    x = torch.full((1, 1, 2, 2), 0.5)
    res = create_attack("jsma", targeted=True, gamma=0.5)(model, x, torch.tensor([0]))
    assert changed(x, res.x_adv) == [{0, 2}]
    assert res.x_adv.flatten().tolist() == [1.0, 0.5, 1.0, 0.5]  # theta = +1: the upper bound
    assert res.steps.tolist() == [1] and res.l0.tolist() == [2]
    assert brute_force_pair(alpha, beta) == (0, 2)
    # decreasing features: no pair has A < 0 and B > 0 here, so nothing changes
    res = create_attack("jsma", targeted=True, gamma=0.5, theta=-1.0)(model, x, torch.tensor([0]))
    assert torch.equal(res.x_adv, x) and res.steps.tolist() == [0]
    assert brute_force_pair(alpha, beta, sign=-1.0) is None


@pytest.mark.parametrize("theta", [1.0, -1.0])
def test_first_pair_matches_the_brute_force_rule_untargeted(theta: float) -> None:
    g = torch.Generator().manual_seed(4)
    k, n = 4, 9
    w = torch.randn(k, n, generator=g, dtype=torch.float64)
    model = ModelAdapter(LinearModel(w, torch.zeros(k, dtype=torch.float64)), num_classes=k)
    model = model.double().eval()
    x = 0.3 + 0.4 * torch.rand(12, 1, 3, 3, generator=g, dtype=torch.float64)
    y = model(x).argmax(1)
    # one pair only (gamma * n = 2); the default target is the second most likely class
    res = create_attack("jsma", gamma=2 / n, theta=theta)(model, x, y)
    second = model(x).topk(2, dim=1).indices[:, 1]
    found = 0
    for i, got in enumerate(changed(x, res.x_adv)):
        t = int(second[i])
        pair = brute_force_pair(w[t], w.sum(0) - w[t], sign=theta)
        assert got == (set() if pair is None else set(pair)), i
        found += pair is not None
    assert found >= 6


def test_select_pairs_is_the_exact_rule_and_candidates_come_from_the_top() -> None:
    g = torch.Generator().manual_seed(5)
    alpha, beta = torch.randn(6, 12, generator=g), torch.randn(6, 12, generator=g)
    domain = torch.rand(6, 12, generator=g) > 0.2
    p, q, found = select_pairs(alpha, beta, domain)
    for i in range(6):
        a = alpha[i].masked_fill(~domain[i], 0.0)
        b = beta[i].masked_fill(~domain[i], 0.0)
        ref = brute_force_pair_in(a, b, domain[i])
        assert bool(found[i]) == (ref is not None)
        if ref is not None:
            assert (int(p[i]), int(q[i])) == ref
    # with 4 candidates the pair is the best among the 4 largest alpha - beta of the domain
    p4, q4, found4 = select_pairs(alpha, beta, domain, max_candidates=4)
    u = (alpha - beta).masked_fill(~domain, -math.inf)
    top = u.topk(4, dim=1).indices
    for i in range(6):
        keep = torch.zeros(12, dtype=torch.bool)
        keep[top[i]] = True
        ref = brute_force_pair_in(alpha[i], beta[i], domain[i] & keep)
        assert bool(found4[i]) == (ref is not None)
        if ref is not None:
            assert {int(p4[i]), int(q4[i])} == set(ref)


def brute_force_pair_in(
    alpha: torch.Tensor, beta: torch.Tensor, domain: torch.Tensor
) -> tuple[int, int] | None:
    """:func:`brute_force_pair` over the elements of ``domain`` only."""
    best, pair = 0.0, None
    idx = domain.nonzero().flatten().tolist()
    for i, p in enumerate(idx):
        for q in idx[i + 1 :]:
            a, b = float(alpha[p] + alpha[q]), float(beta[p] + beta[q])
            if a > 0 and b < 0 and -a * b > best:
                best, pair = -a * b, (p, q)
    return pair


def test_binary_models_use_the_logit_difference_whatever_the_head() -> None:
    # two logits: target class 0 for samples predicted 1; d = w_0 - w_1, pair = two largest d
    w = torch.tensor([[0.1, -0.2, 0.9, 0.2], [0.5, -1.0, 0.2, -0.4]])
    model = linear(w, torch.tensor([-2.0, 0.0]))
    x = torch.full((1, 1, 2, 2), 0.5)
    res = create_attack("jsma", gamma=0.5)(model, x, torch.tensor([1]))
    assert changed(x, res.x_adv) == [{1, 2}]  # d = [-0.4, 0.8, 0.7, 0.6]
    # a single-logit head z (logits [0, z]): toward class 0 the pair with the most negative w
    head = torch.tensor([[0.5, -1.0, -0.2, -0.6]])
    single = linear(head, torch.tensor([1.0]))
    assert single(x).shape == (1, 2) and int(single(x).argmax()) == 1
    res = create_attack("jsma", gamma=0.5)(single, x, torch.tensor([1]))
    assert changed(x, res.x_adv) == [{1, 3}]


def test_max_pairs_keeps_two_elements_per_pair_within_gamma() -> None:
    assert [max_pairs(g, 64) for g in (0.01, 0.05, 0.1, 0.5, 1.0)] == [0, 1, 3, 16, 32]
    assert max_pairs(0.29, 100) == 14  # 0.29 * 100 is 28.999... in floating point
    assert max_pairs(0.3, 10) == 1


# -- success, budget, bounds ------------------------------------------------------------------
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("gamma", [0.05, 0.1, 0.37, 1.0])
def test_l0_never_exceeds_gamma_n(spatial_dims: int, k: int, gamma: float) -> None:
    model = tiny_cnn(spatial_dims, num_classes=k)
    x = batch(spatial_dims, n=4, size=6 if spatial_dims == 3 else 8)
    y = model(x).argmax(1)
    res = create_attack("jsma", gamma=gamma)(model, x, y)
    n = x[0].numel()
    d = (res.x_adv != x).flatten(1)
    assert res.l0.dtype == torch.int64 and torch.equal(res.l0, d.sum(1))
    assert int(res.l0.max()) <= gamma * n
    assert bool((res.l0 <= 2 * res.steps).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0


def test_untargeted_and_targeted_success_semantics() -> None:
    model = tiny_cnn(2, num_classes=5)
    x = batch(2, n=8)
    y = model(x).argmax(1)
    res = create_attack("jsma", gamma=0.3)(model, x, y)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.pred_adv, pred) and torch.equal(res.success, pred != y)
    assert bool(res.success.any())
    targets = (y + 4) % 5
    res = create_attack("jsma", gamma=0.3, targeted=True)(model, x, targets)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == targets) and bool(res.success.any())
    assert res.config["objective"]["targeted"] is True
    assert (res.config["engine"], res.config["theta"], res.config["gamma"]) == ("jsma", 1.0, 0.3)
    # a sample already at its target (or misclassified, untargeted) is a success, unchanged
    res = create_attack("jsma", targeted=True)(model, x, y)
    assert bool(res.success.all()) and torch.equal(res.x_adv, x)


@pytest.mark.parametrize("theta", [0.25, -1.0])
def test_changes_follow_theta_and_stay_in_other_bounds(theta: float) -> None:
    net = tiny_cnn(2, num_classes=3).net
    model = ModelAdapter(net, num_classes=3, bounds=(-1.0, 1.0)).eval()
    x = batch(2, n=6) * 2 - 1
    y = model(x).argmax(1)
    res = create_attack("jsma", theta=theta, gamma=0.3)(model, x, y)
    assert float(res.x_adv.min()) >= -1.0 and float(res.x_adv.max()) <= 1.0
    moved = res.x_adv != x
    assert bool(moved.any())
    expected = (x + theta * 2.0).clamp(-1.0, 1.0)  # theta is a fraction of the range 2
    assert torch.equal(res.x_adv[moved], expected[moved])


def test_eps_clips_each_change_linf_and_bounds_the_l2_norm() -> None:
    model = tiny_cnn(2, num_classes=3)
    x = batch(2, n=6)
    y = model(x).argmax(1)
    res = create_attack("jsma", eps=0.1, gamma=0.3)(model, x, y)
    moved = res.x_adv != x
    assert torch.allclose(res.x_adv[moved], (x + 0.1).clamp(max=1.0)[moved])
    res = create_attack("jsma", eps=0.5, norm="l2", gamma=1.0)(model, x, y)
    assert float(res.l2.max()) <= 0.5 + 1e-6
    stopped = ~res.success
    assert bool(stopped.any()) and torch.allclose(
        res.l2[stopped], torch.full_like(res.l2[stopped], 0.5)
    )


def test_region_mask_leaves_the_search_domain() -> None:
    model = tiny_cnn(2, num_classes=3)
    x = batch(2, n=4)
    y = model(x).argmax(1)
    region = torch.zeros(1, 1, 8, 8)
    region[..., :4, :] = 1
    res = create_attack("jsma", gamma=0.5)(model, x, y, region=region)
    assert float(((res.x_adv - x) * (1 - region)).abs().max()) == 0.0
    assert bool((res.l0 > 0).any())


# -- batching, determinism, shapes --------------------------------------------------------------
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("k", [2, 4])
def test_batched_equals_one_sample_at_a_time_and_is_deterministic(
    spatial_dims: int, k: int
) -> None:
    model = tiny_cnn(spatial_dims, num_classes=k, in_channels=2)
    x = batch(spatial_dims, n=5, size=6 if spatial_dims == 3 else 8, channels=2)
    y = model(x).argmax(1)
    attack = create_attack("jsma", gamma=0.2)
    res = attack(model, x, y)
    again = create_attack("jsma", gamma=0.2)(model, x, y)
    assert torch.equal(res.x_adv, again.x_adv) and torch.equal(res.steps, again.steps)
    for i in range(x.shape[0]):
        one = attack(model, x[i : i + 1], y[i : i + 1])
        torch.testing.assert_close(one.x_adv[0], res.x_adv[i], rtol=0, atol=0)
        assert int(one.steps[0]) == int(res.steps[i])
        assert bool(one.success[0]) == bool(res.success[i])
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype


def test_candidate_limit_is_exact_when_the_domain_is_small() -> None:
    model = tiny_cnn(2, num_classes=3)
    x = batch(2, n=4)
    y = model(x).argmax(1)
    exact = create_attack("jsma", gamma=0.3, max_candidates=None)(model, x, y)
    small = create_attack("jsma", gamma=0.3, max_candidates=64)(model, x, y)  # n = 64
    limited = create_attack("jsma", gamma=0.3, max_candidates=8)(model, x, y)
    assert torch.equal(exact.x_adv, small.x_adv)
    assert bool((limited.l0 <= 0.3 * 64).all())


# -- bad settings -------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0, -0.1, 1.5, float("nan"), float("inf"), True])
def test_gamma_outside_the_unit_interval_is_refused(gamma: float) -> None:
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]"):
        create_attack("jsma", gamma=gamma)


@pytest.mark.parametrize("theta", [0, 0.0, 1.5, -2, float("nan"), None])
def test_theta_zero_or_outside_range_is_refused(theta: float) -> None:
    with pytest.raises(ValueError, match=r"theta must be a nonzero number in \[-1, 1\]"):
        JSMA(theta=theta)


@pytest.mark.parametrize("bad", [1, 0, 2.5, True])
def test_max_candidates_must_be_an_integer_of_at_least_two(bad: int) -> None:
    with pytest.raises(ValueError, match="max_candidates must be an integer >= 2 or None"):
        create_attack("jsma", max_candidates=bad)


def test_unknown_keyword_and_bad_eps_are_refused() -> None:
    with pytest.raises(TypeError, match=r"'gama' \(did you mean 'gamma'\?\)"):
        create_attack("jsma", gama=0.1)
    with pytest.raises(ValueError, match="eps must be"):
        create_attack("jsma", eps=0)
    model = tiny_cnn(2, num_classes=3)
    x = batch(2, n=2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        create_attack("jsma", targeted=True)(model, x, torch.tensor([0, 3]))


def test_select_pairs_stays_exact_when_the_top_candidates_are_decoys() -> None:
    # 100 decoys with a large alpha - beta (8.5) but beta > 0 (no valid pair with them) fill the
    # first 64 candidates; the best pair (A = 2, B = -2, alpha - beta = 2 each) lies further down
    g = torch.Generator().manual_seed(6)
    n = 256
    alpha = 0.01 * torch.randn(3, n, generator=g)
    beta = 0.01 * torch.randn(3, n, generator=g)
    perm = torch.randperm(n, generator=g)
    decoys, best = perm[:100], perm[100:102]
    alpha[:, decoys], beta[:, decoys] = 10.0, 1.5
    alpha[:, best], beta[:, best] = 1.0, -1.0
    domain = torch.ones(3, n, dtype=torch.bool)
    domain[2, best[0]] = False
    p, q, found = select_pairs(alpha, beta, domain)
    assert bool(found.all())
    for i in range(2):
        assert {int(p[i]), int(q[i])} == set(best.tolist())
    # row 2: the exact rule over all pairs (a full matrix here)
    a, b = alpha[2].masked_fill(~domain[2], -math.inf), beta[2].masked_fill(~domain[2], math.inf)
    pa, pb = a[:, None] + a[None, :], b[:, None] + b[None, :]
    ok = (pa > 0) & (pb < 0) & ~torch.eye(n, dtype=torch.bool)
    score = (-pa * pb).masked_fill(~ok, 0.0)
    assert float(score[p[2], q[2]]) == float(score.max()) > 0
    assert int(best[1]) in {int(p[2]), int(q[2])}
    # a cap of 64 candidates keeps the decoys only: no valid pair among them
    _, _, found = select_pairs(alpha, beta, domain, max_candidates=64)
    assert not bool(found.any())
