"""Golden values on a linear model, where FGSM/BIM/DeepFool/C&W have closed-form answers."""

from __future__ import annotations

import torch

from medrobust.attacks import create_attack
from medrobust.models import ModelAdapter
from tests.attacks.models import LinearModel

D = 16


def linear_model() -> tuple[ModelAdapter, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, D, generator=g)
    b = torch.zeros(2)
    return ModelAdapter(LinearModel(w, b), num_classes=2), w


def inputs(n: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return 0.4 + 0.2 * torch.rand(n, 1, 4, 4, generator=g)  # interior: no clipping at eps <= 0.1


def test_fgsm_linf_closed_form() -> None:
    model, w = linear_model()
    x = inputs()
    y = model(x).argmax(1)
    eps = 0.05
    res = create_attack("fgsm", eps=eps)(model, x, y)
    # d CE / dx has the sign of (w_other - w_y)
    direction = (w[1 - y] - w[y]).sign().view_as(x)
    torch.testing.assert_close(res.x_adv, x + eps * direction)


def test_fgsm_l2_closed_form() -> None:
    model, w = linear_model()
    x = inputs()
    y = model(x).argmax(1)
    eps = 0.1
    res = create_attack("fgsm", eps=eps, norm="l2")(model, x, y)
    diff = w[1 - y] - w[y]
    expected = x + eps * (diff / diff.norm(dim=1, keepdim=True)).view_as(x)
    torch.testing.assert_close(res.x_adv, expected)


def test_bim_reaches_the_corner_of_the_ball() -> None:
    model, w = linear_model()
    x = inputs()
    y = model(x).argmax(1)
    eps = 0.03  # too small to flip: the best iterate is the last, at the corner
    res = create_attack("bim", eps=eps, steps=7, step_size=0.01, early_stop=False)(model, x, y)
    direction = (w[1 - y] - w[y]).sign().view_as(x)
    ok = ~res.success
    assert ok.any()
    torch.testing.assert_close(res.x_adv[ok], (x + eps * direction)[ok])


def test_deepfool_linear_is_one_step_to_the_boundary() -> None:
    model, w = linear_model()
    x = inputs()
    y = model(x).argmax(1)
    res = create_attack("deepfool", overshoot=0.02)(model, x, y)
    assert bool(res.success.all())
    z = model(x)
    f = (z[:, 1] - z[:, 0]).abs()
    wd = (w[1] - w[0]).norm()
    expected = 1.02 * (f + 1e-4) / wd  # DeepFool's L2 step on a linear boundary
    torch.testing.assert_close(res.l2, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(res.steps, torch.ones_like(res.steps))


def test_cw_finds_near_minimal_l2() -> None:
    model, w = linear_model()
    x = inputs()
    y = model(x).argmax(1)
    res = create_attack("cw", steps=300, binary_search_steps=8, lr=0.01)(model, x, y)
    assert bool(res.success.all())
    z = model(x)
    minimal = (z[:, 1] - z[:, 0]).abs() / (w[1] - w[0]).norm()
    assert bool((res.l2 >= minimal - 1e-4).all())  # cannot beat the true minimum
    assert bool((res.l2 <= minimal * 1.15 + 1e-3).all())  # and comes close to it


def test_pgd_success_matches_closed_form_boundary() -> None:
    model, w = linear_model()
    x = inputs(8)
    y = model(x).argmax(1)
    eps = 0.05
    z = model(x)
    margin = (z[:, 1] - z[:, 0]).abs()
    # the largest change of the logit difference within the Linf ball is eps * ||w1 - w0||_1
    reachable = eps * (w[1] - w[0]).abs().sum()
    res = create_attack("pgd", eps=eps, steps=20)(model, x, y)
    assert torch.equal(res.success, margin < reachable)
