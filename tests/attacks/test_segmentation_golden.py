"""Golden behaviour of the segmentation attacks on a per-pixel linear model whose answer is known
in closed form: ASMA's multiplier and adaptive mask, DAG's active set, step norm and stop rule,
and the objectives' losses and success semantics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import GradientAttack, create_attack
from medrobust.attacks.apgd import APGD
from medrobust.attacks.asma import ASMA
from medrobust.attacks.dag import DAG
from medrobust.attacks.objectives.segmentation import (
    ASMALoss,
    DAGLoss,
    PixelCrossEntropy,
    SoftDice,
    create_segmentation_objective,
    pixel_agreement,
    sample_dice,
    target_iou,
)
from medrobust.models import ModelAdapter, create_model


class PixelLinear(nn.Module):
    """Per-pixel logits ``z_k = w_k x + b_k`` (a 1x1 convolution): with ``w = (-4, 4)`` and
    ``b = (2, -2)`` a pixel is class 1 exactly when ``x > 0.5``, and its logits depend on that
    pixel only."""

    def __init__(self, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-4.0, 4.0]).view(2, 1, *([1] * spatial_dims)))
            self.conv.bias.copy_(torch.tensor([2.0, -2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


def pixel_model(spatial_dims: int = 2) -> ModelAdapter:
    return ModelAdapter(
        PixelLinear(spatial_dims), num_classes=2, task="segmentation", spatial_dims=spatial_dims
    ).eval()


def image(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[None, None]


# ------------------------------------------------------------------------------- helpers
def test_iou_helper_identical_and_disjoint() -> None:
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    a[0, :2] = 1
    b = torch.zeros(1, 4, 4, dtype=torch.long)
    b[0, 2:] = 1
    assert float(target_iou(a, a)[0]) == 1.0
    assert float(target_iou(a, b)[0]) == 0.0
    half = a.clone()
    half[0, 0] = 0  # 4 of 8 foreground pixels
    assert float(target_iou(half, a)[0]) == pytest.approx(0.5)
    # ASMA's definition: sum(p t) / sum(min(p + t, 1))
    p, t = half.float(), a.float()
    assert float(target_iou(half, a)[0]) == pytest.approx(
        float((p * t).sum() / (p + t).clamp(max=1).sum())
    )
    bg = torch.zeros_like(a)
    assert float(target_iou(bg, bg)[0]) == 1.0  # both all background agree
    # all-background target: the IoU of the background (8 of 16 pixels predicted background)
    assert float(target_iou(a, bg)[0]) == pytest.approx(0.5)
    nearly = bg.clone()
    nearly[0, 0, 0] = 1  # one pixel of lesion left: close to the target, not IoU 0
    assert float(target_iou(nearly, bg)[0]) == pytest.approx(15 / 16)


def test_multiclass_iou_and_dice_average_present_classes() -> None:
    t = torch.tensor([[[1, 1, 2, 2], [0, 0, 0, 0]]])
    p = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0]]])
    assert float(target_iou(p, t, 3)[0]) == pytest.approx(0.5)  # class 1: 1, class 2: 0
    assert float(sample_dice(p, t, 3)[0]) == pytest.approx(0.5)
    assert float(pixel_agreement(p, t)[0]) == pytest.approx(6 / 8)


# ------------------------------------------------------------------------------- ASMA
def test_asma_first_step_uses_tau_and_zero_gradient_on_matching_pixels() -> None:
    model = pixel_model()
    # pixels: wrong (needs class 1), right (class 1), right (class 0), wrong (needs class 0)
    x = image([[0.30, 0.80], [0.20, 0.70]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    tau, beta = 0.1, 0.05
    attack = ASMA(steps=1, refine=0, tau=tau, beta=beta, normalize=None)
    res = attack(model, x, target)
    # x1 = x0 + rho_0 * grad J: grad of the target logit (w_1 = 4, w_0 = -4) where the pixel
    # disagrees with the target, zero where it already agrees; the distance term is 0 at x0
    expected = image([[0.30 + 4 * tau, 0.80], [0.20, 0.70 - 4 * tau]])
    torch.testing.assert_close(res.x_adv, expected)
    assert bool(res.success[0])
    assert torch.equal(res.pred_adv, target)
    # the prediction at x~1 matches the target: IoU = 1, so rho_1 = tau + beta
    assert float(res.extra["multiplier"][0]) == pytest.approx(tau + beta)


def test_asma_multiplier_follows_iou() -> None:
    model = pixel_model()
    x = image([[0.30, 0.40], [0.20, 0.10]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    # too small a step: nothing flips, IoU stays 0 and rho_1 = tau
    res = ASMA(steps=1, refine=0, tau=1e-3, beta=0.5, normalize=None)(model, x, target)
    assert float(res.extra["multiplier"][0]) == pytest.approx(1e-3)
    assert float(res.extra["target_iou"][0]) == 0.0
    # a step that flips the first pixel only: IoU = 1/2, rho_1 = beta / 2 + tau
    x2 = image([[0.45, 0.10], [0.20, 0.10]])
    res2 = ASMA(steps=1, refine=0, tau=0.02, beta=0.5, normalize=None)(model, x2, target)
    assert float(res2.extra["target_iou"][0]) == pytest.approx(0.5)
    assert float(res2.extra["multiplier"][0]) == pytest.approx(0.02 + 0.25)


def test_asma_multiplier_per_sample_in_a_batch() -> None:
    model = pixel_model()
    x = torch.cat([image([[0.30, 0.80]]), image([[0.30, 0.80]])])
    target = torch.tensor([[[1, 1]], [[1, 1]]])
    x[1, 0, 0, 0] = 0.05  # the second sample is too far from the boundary for one step
    res = ASMA(steps=1, refine=0, tau=0.1, beta=0.05, normalize=None)(model, x, target)
    assert res.success.tolist() == [True, False]
    # sample 0: IoU 1 -> tau + beta; sample 1: only its second pixel agrees, IoU 1/2
    torch.testing.assert_close(res.extra["multiplier"], torch.tensor([0.15, 0.125]))


def test_asma_loss_matches_definition() -> None:
    model = pixel_model()
    x = image([[0.30, 0.80], [0.20, 0.70]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    obj = ASMALoss()
    prep = obj.prepare(model, x, target)
    x1 = x + 0.01
    with torch.no_grad():
        out = obj(model, x1, prep)
        z = model(x1)
    pred = z.argmax(1)
    zt = z.gather(1, target[:, None])[:, 0]
    expected = (zt * (pred != target)).sum() - ((x1 - x) ** 2).sum()
    assert float(out.loss[0]) == pytest.approx(float(expected), rel=1e-6)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(obj(model, xg, prep).loss.sum(), xg)
    assert g[0, 0, 0, 1] == 0 and g[0, 0, 1, 0] == 0  # already matching: no gradient
    assert g[0, 0, 0, 0] == pytest.approx(4.0) and g[0, 0, 1, 1] == pytest.approx(-4.0)


def test_asma_normalized_step_has_multiplier_norm() -> None:
    model = pixel_model()
    x = image([[0.30, 0.45], [0.20, 0.70]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    res = ASMA(steps=1, refine=0, tau=0.01, beta=0.0, normalize="linf")(model, x, target)
    # a step of Linf norm 0.01 flips no pixel (0.45 + 0.01 < 0.5): with equal agreement the
    # smaller perturbation, the clean input, is kept
    assert torch.equal(res.x_adv, x)
    res = ASMA(steps=1, refine=0, tau=0.06, beta=0.0, normalize="linf")(model, x, target)
    assert float((res.x_adv - x).abs().max()) == pytest.approx(0.06)
    # L2: the step (norm 0.12) spreads over the three disagreeing pixels, 0.069 each, enough
    # to flip the pixel at 0.45
    res = ASMA(steps=1, refine=0, tau=0.12, beta=0.0, normalize="l2")(model, x, target)
    assert float((res.x_adv - x).norm()) == pytest.approx(0.12, rel=1e-5)


def test_asma_bounded_respects_budget() -> None:
    model = pixel_model()
    x = image([[0.30, 0.40], [0.20, 0.10]])
    target = torch.ones(1, 2, 2, dtype=torch.long)
    res = create_attack("asma-bounded", eps=0.05, steps=20)(model, x, target)
    assert float((res.x_adv - x).abs().max()) <= 0.05 + 1e-7
    assert not bool(res.success[0])  # 0.05 cannot reach the 0.5 threshold from 0.40


def test_asma_paper_defaults() -> None:
    a = create_attack("asma", normalize=None)
    model = pixel_model()
    assert a.multipliers(model, image([[0.5]])) == (1e-7, 1e-6)  # type: ignore[attr-defined]
    b = create_attack("asma")
    tau, beta = b.multipliers(model, image([[0.5]]))  # type: ignore[attr-defined]
    assert tau == pytest.approx(1 / 255) and beta == pytest.approx(4 / 255)
    # the paper's setting as a preset (Ozbulak et al.'s main.py), beside the tuned default
    paper = create_attack("asma-paper").config()
    assert paper["name"] == "asma-paper" and paper["normalize"] is None
    assert (paper["tau"], paper["beta"], paper["steps"]) == (1e-7, 1e-6, 2501)
    assert paper["polish"] is None and paper["refine"] == 0
    tuned = b.config()
    assert tuned["polish"] == 50 and tuned["refine"] > 0


def test_asma_refine_shrinks_to_the_smallest_successful_scale() -> None:
    model = pixel_model()
    # one pixel at 0.40 must cross 0.5: a Linf-normalised step of 0.3 overshoots to 0.70
    x = image([[0.40, 0.80]])
    target = torch.ones(1, 1, 2, dtype=torch.long)
    raw = ASMA(steps=1, refine=0, tau=0.3, beta=0.0)(model, x, target)
    assert bool(raw.success[0]) and float(raw.linf[0]) == pytest.approx(0.3)
    res = ASMA(steps=1, refine=10, tau=0.3, beta=0.0)(model, x, target)
    assert bool(res.success[0]) and torch.equal(res.pred_adv, target)
    # the smallest alpha with 0.40 + 0.3 alpha > 0.5 is 1/3; bisection finds it to 2**-10
    assert 0.1 < float(res.linf[0]) <= 0.1 + 0.3 / 2**10 + 1e-6
    assert float(res.extra["pixel_success"][0]) == 1.0
    # a failed sample is returned as found (nothing to shrink toward)
    far = ASMA(steps=1, refine=10, tau=0.01, beta=0.0)(model, image([[0.10, 0.80]]), target)
    assert not bool(far.success[0])


def test_asma_polish_goes_on_after_success_and_keeps_the_smallest_success() -> None:
    """With ``polish=P`` a sample runs P iterations past its first success (``steps`` still
    caps it), and the returned perturbation is the smallest (L2) successful iterate visited."""
    model = pixel_model()
    g = torch.Generator().manual_seed(0)
    x = (0.2 + 0.25 * torch.rand(3, 1, 4, 4, generator=g)).clamp(0, 1)  # all class 0
    target = torch.ones(3, 4, 4, dtype=torch.long)
    stop = ASMA(steps=60, refine=0, polish=0)(model, x, target)
    assert stop.success.all()
    first = stop.steps.clone()
    visited: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Recording(ASMA):
        def evaluate(self, model, x, target, grad):  # type: ignore[no-untyped-def]
            out, grad_ = super().evaluate(model, x, target, grad)
            if x.shape[0] == 1:  # one sample left: record its iterates
                visited.append((x.detach().clone(), out.success.clone()))
            return out, grad_

    res = ASMA(steps=60, refine=0, polish=10)(model, x, target)
    assert res.success.all()
    assert torch.equal(res.steps, torch.clamp(first + 10, max=60))
    assert bool((res.l2 <= stop.l2 + 1e-6).all())
    # with the 90% rule the polish phase visits several successful iterates, the first is not
    # the smallest, and the attack returns the smallest
    one = Recording(steps=60, refine=0, polish=10, success_fraction=0.9)(model, x[:1], target[:1])
    l2s = [float((xi - x[:1]).norm()) for xi, ok in visited if bool(ok[0])]
    assert len(l2s) > 2 and min(l2s) < l2s[0]
    assert float(one.l2[0]) == pytest.approx(min(l2s), rel=1e-5)
    with pytest.raises(ValueError, match="polish must be None"):
        ASMA(polish=-1)


def test_targeted_extras_report_pixel_success() -> None:
    model = pixel_model()
    # three pixels differ from the target at x0; a step of 0.06 flips only the one at 0.45
    x = image([[0.30, 0.45], [0.20, 0.70]])
    target = torch.tensor([[[1, 1], [1, 1]]])
    res = DAG(steps=1, gamma=0.06, direction="sign")(model, x, target)
    assert float(res.extra["pixel_success"][0]) == pytest.approx(1 / 3)
    assert float(res.extra["pixel_accuracy"][0]) == pytest.approx(2 / 4)


# ------------------------------------------------------------------------------- DAG
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_dag_step_norm_equals_gamma(norm: str) -> None:
    model = pixel_model()
    x = image([[0.30, 0.40, 0.35], [0.20, 0.70, 0.60]])
    target = torch.ones(1, 2, 3, dtype=torch.long)
    gamma = 0.01
    visited: list[torch.Tensor] = []

    class Recording(DAG):
        def evaluate(self, model, x, target, grad):  # type: ignore[no-untyped-def]
            visited.append(x.detach().clone())
            return super().evaluate(model, x, target, grad)

    res = Recording(steps=1, gamma=gamma, norm=norm)(model, x, target)
    # no pixel crosses 0.5 in one step of 0.01: the agreement ties, and the attack returns the
    # earlier, smaller perturbation (none); the step itself is the iterate it then evaluated
    assert torch.equal(res.x_adv, x)
    d = visited[-1] - x
    size = d.abs().max() if norm == "linf" else d.norm()
    assert float(size) == pytest.approx(gamma, rel=1e-5)
    # the active set: pixels already predicted as the target do not move
    assert float(d[0, 0, 1, 1].abs()) == 0.0 and float(d[0, 0, 1, 2].abs()) == 0.0
    assert int(res.steps[0]) == 1


def test_dag_terminates_once_every_pixel_is_flipped() -> None:
    model = pixel_model()
    x = image([[0.30, 0.45], [0.60, 0.70]])
    target = torch.tensor([[[1, 1], [0, 1]]])
    res = DAG(steps=500, gamma=0.02, success_fraction=1.0)(model, x, target)
    assert bool(res.success[0])
    assert torch.equal(res.pred_adv, target)
    # the furthest pixel (0.30) needs ceil(0.2 / 0.02) = 10 Linf-normalised steps; after that
    # the active set is empty and DAG stops instead of running all 500 iterations
    assert 10 <= int(res.steps[0]) <= 12


def test_dag_stops_per_sample() -> None:
    model = pixel_model()
    x = torch.cat([image([[0.45, 0.7]]), image([[0.10, 0.7]])])
    target = torch.ones(2, 1, 2, dtype=torch.long)
    res = DAG(steps=200, gamma=0.01, success_fraction=1.0)(model, x, target)
    assert res.success.all()
    assert int(res.steps[0]) < int(res.steps[1])


def test_dag_loss_is_zero_when_target_reached() -> None:
    model = pixel_model()
    x = image([[0.8, 0.2]])
    target = torch.tensor([[[1, 0]]])
    obj = DAGLoss()
    with torch.no_grad():
        out = obj(model, x, obj.prepare(model, x, target))
        assert float(out.loss[0]) == 0.0 and bool(out.success[0])
        out = obj(model, x, obj.prepare(model, x, 1 - target))
        z = model(x)[0, :, 0]
    expected = (z[0, 0] - z[1, 0]) + (z[1, 1] - z[0, 1])
    assert float(out.loss[0]) == pytest.approx(float(expected))


# ------------------------------------------------------------------------------- objectives
def test_pixel_ce_and_soft_dice_values() -> None:
    with torch.no_grad():
        model = pixel_model()
        x = image([[0.30, 0.80], [0.20, 0.70]])
        mask = torch.tensor([[[0, 1], [0, 1]]])
        z = model(x)
        ce = PixelCrossEntropy()(model, x, mask)
        assert float(ce.loss[0]) == pytest.approx(float(F.cross_entropy(z, mask)))
        assert not bool(ce.success[0])  # prediction equals the mask: Dice 1
        tce = PixelCrossEntropy(targeted=True)(model, x, mask)
        assert float(tce.loss[0]) == pytest.approx(-float(F.cross_entropy(z, mask)))
        sd = SoftDice()(model, x, mask)
        p = torch.softmax(z, 1)
        onehot = F.one_hot(mask, 2).permute(0, 3, 1, 2).float()
        dice = (
            (2 * (p * onehot).sum((2, 3)) + 1e-5) / (p.sum((2, 3)) + onehot.sum((2, 3)) + 1e-5)
        ).mean()
        assert float(sd.loss[0]) == pytest.approx(1 - float(dice), rel=1e-5)
        with pytest.raises(ValueError, match="unknown segmentation objective"):
            create_segmentation_objective("dlr")


def test_untargeted_success_is_dice_below_threshold() -> None:
    model = pixel_model()
    x = image([[0.30, 0.80], [0.20, 0.70]])
    wrong_mask = torch.tensor([[[1, 0], [1, 0]]])
    # a bare mask: the clean Dice is taken as 1, the threshold is the fraction itself
    out = PixelCrossEntropy(broken_fraction=0.5)(model, x, wrong_mask)
    assert bool(out.success[0])
    out = PixelCrossEntropy(broken_fraction=0.0)(model, x, wrong_mask)
    assert not bool(out.success[0])


def test_untargeted_success_is_relative_to_the_clean_dice() -> None:
    model = pixel_model()
    x = image([[0.30, 0.80], [0.20, 0.70]])  # predicts [[0, 1], [0, 1]]
    mask = torch.tensor([[[1, 1], [0, 0]]])  # clean Dice of class 1: 2*1/(2+2) = 0.5
    obj = PixelCrossEntropy(broken_fraction=0.5)
    target = obj.prepare(model, x, mask)
    assert isinstance(target, dict)
    assert float(target["clean_dice"][0]) == pytest.approx(0.5)
    # at the clean input the Dice (0.5) is not below 0.5 x 0.5: not broken
    assert not bool(obj(model, x, target).success[0])
    # a prediction with Dice 0.5 counts as broken only against a clean Dice above 1.0 x 0.5
    assert not bool(obj.success(torch.tensor([[[0, 1], [0, 1]]]), target, 2)[0])
    assert bool(obj.success(torch.tensor([[[0, 0], [0, 1]]]), target, 2)[0])  # Dice 0 < 0.25


def test_pgd_seg_reuses_the_engine_loops() -> None:
    assert isinstance(create_attack("pgd-seg"), GradientAttack)
    assert isinstance(create_attack("apgd-seg"), APGD)


def test_pgd_seg_lowers_dice_of_trained_like_model() -> None:
    model = pixel_model()
    x = torch.full((2, 1, 4, 4), 0.45)
    x[:, :, :2] = 0.55  # top half class 1
    mask = model(x).argmax(1)
    res = create_attack("pgd-seg", eps=0.1, steps=5)(model, x, mask)
    assert bool(res.success.all())
    assert float(res.extra["dice"].max()) < 0.5


def test_volume_too_large_without_sliding_window() -> None:
    model = create_model(
        "unet",
        num_classes=2,
        spatial_dims=3,
        channels=(2, 4),
        strides=(2,),
        num_res_units=0,
        seed=0,
    ).eval()
    attack = create_attack("pgd-seg", steps=1)
    attack.max_voxels = 1000  # type: ignore[attr-defined]
    x = torch.rand(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="sliding_window"):
        attack(model, x, torch.zeros(1, 16, 16, 16, dtype=torch.long))


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="normalize"):
        ASMA(normalize="l1")
    with pytest.raises(ValueError, match="tau"):
        ASMA(tau=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        DAG(gamma=0.0)
    with pytest.raises(ValueError, match="success_fraction"):
        DAGLoss(success_fraction=1.5)
    with pytest.raises(ValueError, match="steps"):
        DAG(steps=0)
    assert math.isfinite(ASMA().steps)


def test_class_argmax_matches_torch_argmax_with_ties() -> None:
    from medrobust.attacks.objectives.segmentation import class_argmax

    g = torch.Generator().manual_seed(0)
    z = torch.randint(0, 3, (2, 4, 5, 6), generator=g).float()  # many ties
    assert torch.equal(class_argmax(z), z.argmax(1))
    z3 = torch.randn(1, 5, 3, 4, 2, generator=g)
    assert torch.equal(class_argmax(z3), z3.argmax(1))


class PixelBands(nn.Module):
    """A 4-class per-pixel model: ``z_k = -g (x - c_k)^2 / 0.01`` with class centres
    ``c = (0.125, 0.375, 0.625, 0.875)`` (boundaries at 0.25, 0.5, 0.75) and a gain ``g`` that
    varies over the image from 0.05 to 1, so the gradients of DAG's loss differ 20-fold."""

    def __init__(self, gain: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor([0.125, 0.375, 0.625, 0.875]).view(1, 4, 1, 1))
        self.register_buffer("gain", gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.gain * (x - self.centres) ** 2 / 0.01


def bands_case(seed: int, spread: float) -> tuple[ModelAdapter, torch.Tensor, torch.Tensor]:
    """Two 8x8 images for :class:`PixelBands`: each pixel lies ``0.03 + U(0, spread)`` from a
    class boundary, and its target is the class across that boundary."""
    side = 8
    gain = torch.linspace(0.05, 1.0, side * side).view(1, 1, side, side)
    model = ModelAdapter(PixelBands(gain), num_classes=4, task="segmentation").eval()
    g = torch.Generator().manual_seed(seed)
    boundary = torch.tensor([0.25, 0.5, 0.75])[torch.randint(0, 3, (2, side, side), generator=g)]
    below = torch.rand((2, side, side), generator=g) < 0.5
    dist = 0.03 + spread * torch.rand((2, side, side), generator=g)
    x = torch.where(below, boundary - dist, boundary + dist).unsqueeze(1)
    with torch.no_grad():
        clean = model(x).argmax(1)
    return model, x, torch.where(below, clean + 1, clean - 1)


def test_dag_reaches_multiclass_targets_with_a_small_perturbation() -> None:
    """Every pixel lies 0.03 from a class boundary and its target is the class across it: the
    minimal Linf perturbation is 0.03. The tuned DAG (sign steps, shrinking) reaches every
    target pixel with an Linf close to that; Xie et al.'s gradient scaled to Linf norm gamma
    moves the low-gain pixels 20 times slower and leaves many unflipped in as many steps."""
    model, x, target = bands_case(seed=0, spread=0.0)
    res = create_attack("dag", steps=60)(model, x, target)
    assert res.success.all()
    assert float(res.extra["pixel_success"].min()) >= 0.99
    assert float(res.linf.max()) <= 0.035
    assert int(res.steps.max()) <= 20  # 0.03 / (0.5/255) = 15.3 sign steps
    old = create_attack("dag", steps=60, direction="scaled", refine=0)(model, x, target)
    assert int(old.steps.min()) > 2 * int(res.steps.max())


def test_dag_keeps_the_iterate_agreeing_with_the_target_on_most_pixels() -> None:
    """DAG's loss sums the logit margins of the pixels still wrong, so it can rank a later
    iterate with fewer agreeing pixels higher; the attack ranks its iterates by the agreement
    with the target instead. With a budget (Linf 0.05) that lets only the pixels closer than
    0.05 to their boundary cross it, no sample succeeds and the returned iterate must agree
    with the target on as many pixels as the best one the attack visited (whose loss is that
    agreement)."""
    from medrobust.attacks.dag import DAG
    from medrobust.metrics.segmentation import pixel_agreement

    model, x, target = bands_case(seed=1, spread=0.035)  # pixels 0.03-0.065 from a boundary
    seen: list[torch.Tensor] = []

    class Recording(DAG):
        def evaluate(self, model, x, target, grad):  # type: ignore[no-untyped-def]
            out, grad_ = super().evaluate(model, x, target, grad)
            if x.shape[0] == 2:
                seen.append(out.loss.detach().clone())
            return out, grad_

    res = Recording(eps=0.05, steps=40, refine=0)(model, x, target)
    assert not res.success.any()
    with torch.no_grad():
        final = pixel_agreement(model(res.x_adv).argmax(1), target)
    best = torch.stack(seen).max(dim=0).values.double()
    assert torch.allclose(final, best)
    assert len(seen) > 5 and float(final.min()) > 0.0 and float(final.max()) < 1.0
