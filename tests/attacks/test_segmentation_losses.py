"""The reweighted segmentation losses (SegPGD and CosPGD, untargeted and targeted, SEA's JS,
masked CE, masked balanced CE and masked spherical loss) against direct computations, SegPGD's
schedule inside its engine, the Dice-ranked best iterate, and the Square-style black-box leg."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medrobust.attacks import create_attack
from medrobust.attacks.engine import BestTracker
from medrobust.attacks.objectives.base import ObjectiveOutput
from medrobust.attacks.objectives.segmentation import sample_dice
from medrobust.attacks.objectives.segmentation_losses import (
    CosPGDLoss,
    JensenShannonLoss,
    MaskedBalancedCE,
    MaskedCrossEntropy,
    MaskedSphericalLoss,
    SegPGDLoss,
    js_divergence,
    segpgd_weight,
)
from medrobust.attacks.segmentation import DiceTracker
from medrobust.attacks.segpgd import ScheduledPGD
from tests.attacks.test_segmentation_contract import inputs, tiny_unet
from tests.attacks.test_segmentation_golden import image, pixel_model

# pixel_model: class 1 iff x > 0.5, logits (2 - 4x, 4x - 2)
X = image([[0.30, 0.80], [0.20, 0.70]])  # predicts [[0, 1], [0, 1]]
MASK = torch.tensor([[[0, 1], [1, 1]]])  # pixel (1, 0) is wrong, the other three correct


def ce_map(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = pixel_model()(x)
    return F.cross_entropy(z, mask, reduction="none").flatten(1)


def test_segpgd_weight_schedule_and_loss() -> None:
    assert segpgd_weight(torch.tensor([0.0, 0.5, 1.0, 3.0])).tolist() == [0.0, 0.25, 0.5, 0.5]
    model = pixel_model()
    ce = ce_map(X, MASK)[0]
    correct = torch.tensor([1.0, 1.0, 0.0, 1.0])
    obj = SegPGDLoss()
    for progress in (0.0, 0.4, 1.0):
        lam = progress / 2
        target = {"mask": MASK, "progress": torch.tensor([progress])}
        want = ((1 - lam) * (correct * ce) + lam * ((1 - correct) * ce)).mean()
        got = obj(model, X, target).loss[0].detach()
        assert float(got) == pytest.approx(float(want), rel=1e-6)
    # without a schedule (another engine): lambda = 0, the CE of the correct pixels only
    assert float(obj(model, X, MASK).loss[0].detach()) == pytest.approx(
        float((correct * ce).mean())
    )


def test_cospgd_weights_by_the_cosine_of_the_sigmoid() -> None:
    model = pixel_model()
    with torch.no_grad():
        z = model(X)
    s = torch.sigmoid(z)
    onehot = F.one_hot(MASK, 2).permute(0, 3, 1, 2).float()
    cos = F.cosine_similarity(s, onehot, dim=1).flatten(1)
    want = (cos * ce_map(X, MASK)).mean()
    assert float(CosPGDLoss()(model, X, MASK).loss[0]) == pytest.approx(float(want), rel=1e-6)


def test_js_divergence_matches_its_definition_and_is_bounded() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 4, 4, generator=g) * 3
    mask = torch.randint(0, 3, (2, 4, 4), generator=g)
    p = torch.softmax(z, 1)
    q = F.one_hot(mask, 3).permute(0, 3, 1, 2).float()
    m = (p + q) / 2

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (a / b).log(), torch.zeros_like(a)).sum(1)

    want = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    torch.testing.assert_close(js_divergence(z, mask), want, rtol=1e-5, atol=1e-6)
    assert float(js_divergence(z, mask).max()) <= math.log(2) + 1e-6
    # a confident wrong pixel approaches log 2, a confident right one 0
    far = torch.tensor([[[[-30.0]], [[30.0]]]])
    assert float(js_divergence(far, torch.tensor([[[0]]]))) == pytest.approx(math.log(2), 1e-4)
    assert float(js_divergence(far, torch.tensor([[[1]]]))) == pytest.approx(0.0, abs=1e-6)
    model = pixel_model()
    with torch.no_grad():
        mean = js_divergence(model(X), MASK).flatten(1).mean(1)
    torch.testing.assert_close(JensenShannonLoss()(model, X, MASK).loss, mean)


def test_masked_losses_skip_flipped_pixels() -> None:
    model = pixel_model()
    ce = ce_map(X, MASK)[0]
    correct = torch.tensor([1.0, 1.0, 0.0, 1.0])
    assert float(MaskedCrossEntropy()(model, X, MASK).loss[0]) == pytest.approx(
        float((correct * ce).sum() / 4)
    )
    # classes: 0 has one pixel (correct), 1 has three (two correct): weight 1/(2 n_c)
    weights = torch.tensor([1 / 2, 1 / 6, 1 / 6, 1 / 6])
    assert float(MaskedBalancedCE()(model, X, MASK).loss[0]) == pytest.approx(
        float((weights * correct * ce).sum())
    )
    # every pixel flipped: nothing left to push, both losses are 0
    flipped = 1 - torch.tensor([[[0, 1], [0, 1]]])
    assert float(MaskedCrossEntropy()(model, X, flipped).loss[0]) == 0.0
    assert float(MaskedBalancedCE()(model, X, flipped).loss[0]) == 0.0


def test_masked_balanced_ce_gives_each_class_equal_weight() -> None:
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, :2, :2] = 1  # a small lesion: 4 of 64 pixels
    z = torch.zeros(1, 2, 8, 8)
    z[:, 0] = 1.0
    z[:, 1, :2, :2] = 2.0  # everything correct, equal confidence per class
    model = torch.nn.Identity()
    loss = MaskedBalancedCE()(model, z, mask).loss[0]  # the identity "model" returns z
    ce = F.cross_entropy(z, mask, reduction="none")
    half = 0.5 * float(ce[0, 0, 0]) + 0.5 * float(ce[0, 7, 7])
    assert float(loss) == pytest.approx(half, rel=1e-6)


class _Spy(SegPGDLoss):
    """Records the progress each evaluation sees (test only)."""

    seen: list[float]

    def __call__(self, model, x, target):  # type: ignore[no-untyped-def]
        if isinstance(target, dict) and "progress" in target:
            self.seen.append(round(float(target["progress"][0]), 6))
        return super().__call__(model, x, target)


def test_scheduled_pgd_passes_segpgds_progress() -> None:
    spy = _Spy()
    spy.seen = []
    attack = ScheduledPGD(objective=spy, eps=0.1, steps=4, random_start=False, early_stop=False)
    model = tiny_unet(2)
    x = inputs(2)
    attack(model, x, model(x).argmax(1))
    assert spy.seen == [0.0, 0.25, 0.5, 0.75, 1.0]  # (t - 1) / T at t = 1..T, then the last
    assert create_attack("segpgd").config()["engine"] == "scheduled-pgd"


def test_dice_tracker_keeps_the_lowest_dice_not_the_highest_loss() -> None:
    mask = torch.tensor([[[1, 1], [1, 1]]])
    x = torch.zeros(1, 1, 2, 2)
    base = BestTracker(x)
    tracker = DiceTracker(base, mask, 2)
    idx = torch.tensor([0])

    def offer(pred: list[list[int]], loss: float, value: float) -> None:
        p = torch.tensor([pred])
        out = ObjectiveOutput(torch.tensor([loss]), torch.tensor([False]), p, p)
        tracker.update(idx, torch.full_like(x, value), out)

    offer([[1, 1], [1, 1]], 5.0, 0.1)  # Dice 1, high loss
    offer([[0, 1], [0, 1]], 1.0, 0.2)  # Dice 2/3, lower loss (a masked loss fell): kept
    offer([[0, 0], [0, 1]], 0.5, 0.3)  # Dice 0.4: kept
    offer([[0, 0], [0, 1]], 0.9, 0.4)  # same Dice, higher loss: kept
    offer([[1, 0], [1, 1]], 9.0, 0.5)  # higher Dice, higher loss: not kept
    assert float(base.x[0, 0, 0, 0]) == pytest.approx(0.4)  # the shared state was updated
    assert base.pred is not None and torch.equal(base.pred[0], torch.tensor([[0, 0], [0, 1]]))
    assert float(tracker.dice[0]) == pytest.approx(0.4)
    assert float(base.loss[0]) == pytest.approx(0.9)


def test_square_seg_is_seeded_counts_queries_and_stays_in_the_ball() -> None:
    model = tiny_unet(2)
    x = inputs(2)
    y = model(x).argmax(1)
    a = create_attack("square-seg", eps=0.1, n_queries=25, seed=1)(model, x, y)
    b = create_attack("square-seg", eps=0.1, n_queries=25, seed=1)(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert bool((a.steps <= 25).all()) and bool((a.steps >= 1).all())
    assert bool((a.steps[~a.success] == 25).all())  # unbroken samples spend every query
    assert float(a.linf.max()) <= 0.1 + 1e-6
    with torch.no_grad():
        clean = sample_dice(model(x).argmax(1), y, 3)
    assert bool((a.extra["dice"].double() <= clean).all())
    with pytest.raises(ValueError, match="n_queries must be a positive integer"):
        create_attack("square-seg", n_queries=0)
    with pytest.raises(TypeError, match="targeted"):
        create_attack("square-seg", targeted=True)


class _Counting(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out: torch.Tensor = self.net(x)
        return out


def test_asma_spends_one_forward_pass_per_step_even_when_clipping() -> None:
    from medrobust.models import ModelAdapter

    counting = _Counting(tiny_unet(2).net)
    model = ModelAdapter(counting, num_classes=3, task="segmentation", spatial_dims=2).eval()
    x = inputs(2)
    with torch.no_grad():
        target = torch.roll(model(x).argmax(1), 1, dims=0)
    counting.calls = 0
    steps = 6
    # large normalised steps: every iterate leaves [0, 1] and is clipped
    attack = create_attack("asma", steps=steps, normalize="linf", tau=0.5, beta=0.5)
    res = attack(model, x, target)
    assert float(res.x_adv.min()) == 0.0 or float(res.x_adv.max()) == 1.0  # clipping happened
    # one to prepare the target, one clean check, one per step, one for the last iterate
    assert counting.calls == steps + 3


# ---------------------------------------------------------------------------- targeted / MSL
TARGET = torch.tensor([[[1, 1], [0, 1]]])  # only pixel (0, 0) is not at the target yet


def test_targeted_segpgd_weighs_pixels_not_at_the_target_by_one_minus_lambda() -> None:
    model = pixel_model()
    ce = ce_map(X, TARGET)[0]
    at = torch.tensor([0.0, 1.0, 1.0, 1.0])  # prediction [[0, 1], [0, 1]] vs the target
    obj = SegPGDLoss(targeted=True)
    for progress in (0.0, 0.4, 1.0):
        lam = progress / 2
        target = {"mask": TARGET, "progress": torch.tensor([progress])}
        want = -((1 - lam) * ((1 - at) * ce) + lam * (at * ce)).mean()
        out = obj(model, X, target)
        assert float(out.loss[0].detach()) == pytest.approx(float(want), rel=1e-6)
    # the targeted rule decides success: a pixel of the target still disagrees
    assert not bool(out.success[0])
    assert bool(obj(model, X, {"mask": torch.tensor([[[0, 1], [0, 1]]])}).success[0])


def test_targeted_cospgd_weight_is_one_minus_the_detached_softmax_cosine() -> None:
    model = pixel_model()
    x = X.clone().requires_grad_(True)
    loss = CosPGDLoss(targeted=True)(model, x, TARGET).loss.sum()
    (grad,) = torch.autograd.grad(loss, x)
    z = model(x)
    p = torch.softmax(z, dim=1)
    cos = F.cosine_similarity(p, F.one_hot(TARGET, 2).movedim(-1, 1).float(), dim=1)
    ce = F.cross_entropy(z, TARGET, reduction="none")
    want = -((1 - cos).detach() * ce).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    (want_grad,) = torch.autograd.grad(want, x, retain_graph=True)
    torch.testing.assert_close(grad, want_grad)
    # a differentiated weight would give another gradient: the test tells them apart
    (other,) = torch.autograd.grad(-((1 - cos) * ce).mean(), x)
    assert not torch.allclose(grad, other)
    # pixels already at the target fade out: only the wrong ones carry gradient here
    assert float(grad[0, 0, 0, 1].abs()) < 1e-3 * float(grad[0, 0, 0, 0].abs())


def test_masked_spherical_loss_is_the_unit_sphere_logit_of_correct_pixels() -> None:
    model = pixel_model()
    z = model(X).detach()
    u = z / z.norm(dim=1, keepdim=True)
    u_true = u.gather(1, MASK.unsqueeze(1)).flatten(1)[0]
    correct = torch.tensor([1.0, 1.0, 0.0, 1.0])
    out = MaskedSphericalLoss()(model, X, MASK)
    assert float(out.loss[0]) == pytest.approx(float(-(correct * u_true).mean()), rel=1e-6)
    assert -1.0 <= float(out.loss[0]) <= 0.0
    # blind to the scale of the logits (masked CE is not)
    ident = torch.nn.Identity()
    msl = [float(MaskedSphericalLoss()(ident, c * z, MASK).loss[0]) for c in (1.0, 5.0)]
    mce = [float(MaskedCrossEntropy()(ident, c * z, MASK).loss[0]) for c in (1.0, 5.0)]
    assert msl[0] == pytest.approx(msl[1], rel=1e-6) and mce[0] != pytest.approx(mce[1])
    # every pixel flipped: 0; and the loss is untargeted only
    flipped = 1 - torch.tensor([[[0, 1], [0, 1]]])
    assert float(MaskedSphericalLoss()(model, X, flipped).loss[0]) == 0.0
    with pytest.raises(TypeError):
        MaskedSphericalLoss(targeted=True)  # type: ignore[call-arg]
