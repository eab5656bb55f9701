"""The tag vocabulary: exactly one kind and one task per attack, checked at registration."""

from __future__ import annotations

import pytest

from medrobust.attacks import (
    ATTACKS,
    EXTRAS,
    KINDS,
    TASKS,
    attack_kind,
    attack_tags,
    attack_task,
    list_attacks,
)
from medrobust.attacks.engine import GradientAttack
from medrobust.attacks.presets import CLASSIFICATION_LOSSES, register_attack
from medrobust.attacks.tags import check_tags
from medrobust.registry import UnknownNameError


def test_vocabulary() -> None:
    assert KINDS == ("single-step", "iterative", "minimal", "black-box")
    assert TASKS == ("classification", "segmentation", "explanation", "detection")
    assert not set(KINDS) & set(TASKS) and not (set(KINDS) | set(TASKS)) & set(EXTRAS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_has_one_kind_and_one_task(name: str) -> None:
    tags = attack_tags(name)
    assert [t for t in tags if t in KINDS] == [attack_kind(name)]
    assert [t for t in tags if t in TASKS] == [attack_task(name)]
    assert set(tags) <= set(KINDS) | set(TASKS) | set(EXTRAS)


def test_kinds_of_the_classification_presets() -> None:
    assert attack_kind("fgsm") == "single-step"
    assert {n for n in list_attacks(tag="iterative") if attack_task(n) == "classification"} == {
        "bim",
        "pgd",
        "apgd-ce",
        "apgd-dlr",
        "jsma",
    }
    assert set(list_attacks(tag="minimal")) == {"cw", "deepfool", "asma", "asma-paper", "dag"}
    assert [n for n in list_attacks(tag="black-box") if attack_task(n) == "classification"] == [
        "square"
    ]
    assert attack_task("pgd-adaptive") == "detection"
    assert attack_task("gradcam-kept") == "explanation"
    with pytest.raises(UnknownNameError, match="Did you mean 'pgd'"):
        attack_kind("pgdd")


@pytest.mark.parametrize(
    ("tags", "match"),
    [
        (("classification",), r"exactly one kind .* \(got \[\]\)"),
        (("iterative",), r"exactly one task .* \(got \[\]\)"),
        (("iterative", "minimal", "classification"), "exactly one kind"),
        (("iterative", "classification", "segmentation"), "exactly one task"),
        (("iterative", "classification", "fast"), r"outside the vocabulary \(got \['fast'\]"),
        (("iterative", "classification", "gradient", "gradient"), "no repeated tags"),
    ],
)
def test_registration_refuses_bad_tags(tags: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_tags("x", tags)
    with pytest.raises(ValueError, match=match):
        ATTACKS.register("test-bad-tags", tags=tags)(lambda: None)  # type: ignore[arg-type,return-value]
    assert "test-bad-tags" not in ATTACKS
    kind = next((t for t in tags if t in KINDS), "iterative")
    task = next((t for t in tags if t in TASKS), "classification")
    extras = tuple(t for t in tags if t not in KINDS + TASKS)
    if len([t for t in tags if t in KINDS]) == 1 and len([t for t in tags if t in TASKS]) == 1:
        with pytest.raises(ValueError, match=match):
            register_attack(
                "test-bad-tags",
                GradientAttack,
                CLASSIFICATION_LOSSES,
                kind=kind,
                task=task,
                extras=extras,
            )(lambda kw: kw)
    assert "test-bad-tags" not in ATTACKS
