"""PGD parity with an independent implementation (foolbox) on the same model and inputs."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import create_attack
from tests.attacks.models import batch, tiny_cnn

fb = pytest.importorskip("foolbox", reason="foolbox is a test extra: pip install -e .[test]")


@pytest.mark.parametrize("eps", [0.01, 0.03])
def test_pgd_linf_matches_foolbox(eps: float) -> None:
    model = tiny_cnn(2, num_classes=3, seed=4)
    x = batch(2, n=16, seed=5)
    y = model(x).argmax(1)
    step = eps / 4
    attack = create_attack(
        "pgd",
        eps=eps,
        steps=10,
        step_size=step,
        random_start=False,
        early_stop=False,
        keep_best=False,
    )
    attack.check_clean = False
    ours = attack(model, x, y)
    fmodel = fb.PyTorchModel(model.net.eval(), bounds=(0.0, 1.0))
    ref = fb.attacks.LinfPGD(abs_stepsize=step, steps=10, random_start=False)
    _, theirs, success = ref(fmodel, x, y, epsilons=eps)
    torch.testing.assert_close(ours.x_adv, theirs, atol=1e-6, rtol=0)
    assert torch.equal(ours.success, success)


def test_best_iterate_is_never_worse_than_last() -> None:
    model = tiny_cnn(2, num_classes=3, seed=4)
    x = batch(2, n=16, seed=5)
    y = model(x).argmax(1)
    kw = {"eps": 0.03, "steps": 10, "random_start": False, "early_stop": False}
    best = create_attack("pgd", **kw)(model, x, y)
    last = create_attack("pgd", keep_best=False, **kw)(model, x, y)
    assert bool((best.success | ~last.success).all())  # never loses a success
    both_fail = ~best.success & ~last.success
    assert bool((best.loss[both_fail] >= last.loss[both_fail] - 1e-6).all())
