"""Presets merge their defaults with the caller's keywords and accept exactly the keywords of
their engine and objectives (less the ones they fix), with a "did you mean" otherwise."""

from __future__ import annotations

import inspect

import pytest

from medrobust.attacks import ATTACKS, GradientAttack, create_attack
from medrobust.attacks.objectives.classification import Margin
from medrobust.attacks.presets import CLASSIFICATION_LOSSES, preset_keywords, register_attack
from tests.attacks.models import batch, tiny_cnn


def test_signature_lists_engine_and_objective_keywords_with_preset_defaults() -> None:
    sig = inspect.signature(ATTACKS.get("pgd-seg").factory)
    assert sig.parameters["eps"].default == pytest.approx(4 / 255)
    assert sig.parameters["early_stop"].default is False
    assert {"objective", "broken_fraction", "smooth", "steps", "keep_best"} <= set(sig.parameters)
    fgsm = inspect.signature(ATTACKS.get("fgsm").factory).parameters
    assert "steps" not in fgsm and "random_start" not in fgsm and "eps" in fgsm


def test_fixed_keywords_are_refused() -> None:
    with pytest.raises(TypeError, match=r"attack 'fgsm' got unexpected parameter\(s\) 'steps'"):
        create_attack("fgsm", steps=3)
    with pytest.raises(TypeError, match="'random_start'"):
        create_attack("bim", random_start=True)
    with pytest.raises(TypeError, match="'label'"):
        create_attack("gradcam-kept", label="changed")


def test_objective_choice_and_its_options() -> None:
    attack = create_attack("pgd", objective="margin", confidence=2.0)
    assert isinstance(attack.objective, Margin) and attack.objective.confidence == 2.0
    with pytest.raises(TypeError, match=r"objective 'ce'.*'confidence'"):
        create_attack("pgd", confidence=2.0)  # an option of another objective
    with pytest.raises(ValueError, match=r"unknown classification objective 'margn'.*'margin'"):
        create_attack("pgd", objective="margn")
    with pytest.raises(ValueError, match="unknown segmentation objective 'dlr'"):
        create_attack("pgd-seg", objective="dlr")


def test_defaults_merge_with_the_caller_keywords() -> None:
    seg = create_attack("apgd-seg")
    assert (seg.eps, seg.steps, seg.early_stop) == (pytest.approx(4 / 255), 20, False)
    assert create_attack("apgd-seg", steps=5, early_stop=True).config()["steps"] == 5
    fgsm = create_attack("fgsm", eps=0.1)
    assert (fgsm.steps, fgsm.step_size, fgsm.random_start) == (1, 0.1, False)
    assert create_attack("asma-bounded").eps == pytest.approx(8 / 255)
    assert create_attack("asma").eps is None


def test_a_new_attack_is_one_preset() -> None:
    @register_attack(
        "test-pgd-margin",
        GradientAttack,
        CLASSIFICATION_LOSSES,
        kind="iterative",
        task="classification",
        extras=("gradient",),
    )
    def pgd_margin(kw: dict[str, object]) -> dict[str, object]:
        """PGD on the margin loss (a test preset)."""
        return {"objective": "margin", "steps": 3, **kw}

    try:
        attack = create_attack("test-pgd-margin", eps=0.1)
        assert isinstance(attack.objective, Margin) and attack.steps == 3
        assert attack.config()["name"] == "test-pgd-margin"
        model, x = tiny_cnn(), batch()
        assert attack(model, x, model(x).argmax(1)).success.shape == (x.shape[0],)
        assert ATTACKS.get("test-pgd-margin").summary == "PGD on the margin loss (a test preset)."
        with pytest.raises(TypeError, match=r"'stepz' \(did you mean 'steps'\?\)"):
            create_attack("test-pgd-margin", stepz=2)
        assert set(preset_keywords(GradientAttack, CLASSIFICATION_LOSSES)) == set(
            inspect.signature(ATTACKS.get("test-pgd-margin").factory).parameters
        )
    finally:
        ATTACKS._entries.pop("test-pgd-margin", None)
