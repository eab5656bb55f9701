"""Frozen, named attack suites, so that "the standard suite" means the same thing in every
report (AutoAttack's habit). A suite is resolved for a norm and a class count: attacks that do
not apply (DLR with fewer than 3 classes, Square under L2) are left out and the reason recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medrobust.types import Norm

_SUITES: dict[str, dict[str, list[dict[str, Any]]]] = {
    "quick": {
        "linf": [{"name": "fgsm"}, {"name": "pgd", "steps": 10}],
        "l2": [{"name": "fgsm"}, {"name": "pgd", "steps": 10}],
    },
    "standard": {
        "linf": [
            {"name": "fgsm"},
            {"name": "pgd", "steps": 20},
            {"name": "apgd-ce", "steps": 50},
            {"name": "apgd-dlr", "steps": 50},
            {"name": "deepfool"},
            {"name": "square", "n_queries": 500},
        ],
        "l2": [
            {"name": "fgsm"},
            {"name": "pgd", "steps": 20},
            {"name": "apgd-ce", "steps": 50},
            {"name": "apgd-dlr", "steps": 50},
            {"name": "deepfool"},
            {"name": "cw", "steps": 50, "binary_search_steps": 4},
        ],
    },
    "thorough": {
        "linf": [
            {"name": "fgsm"},
            {"name": "pgd", "steps": 50, "restarts": 3},
            {"name": "apgd-ce", "steps": 100, "restarts": 2},
            {"name": "apgd-dlr", "steps": 100, "restarts": 2},
            {"name": "deepfool"},
            {"name": "square", "n_queries": 2000},
        ],
        "l2": [
            {"name": "fgsm"},
            {"name": "pgd", "steps": 50, "restarts": 3},
            {"name": "apgd-ce", "steps": 100, "restarts": 2},
            {"name": "apgd-dlr", "steps": 100, "restarts": 2},
            {"name": "deepfool"},
            {"name": "cw", "steps": 200, "binary_search_steps": 6},
        ],
    },
}


# Segmentation suites (Croce, Singh & Hein's SEA; Gu et al.'s SegPGD; Agnihotri et al.'s
# CosPGD): cheap attacks first, and each attack runs only on the samples the earlier ones left
# unbroken (``mode="cascade"``, see SEGMENTATION_SUITES); the worst case per sample is the
# lowest Dice any of them reached. The black-box leg is the gradient-masking cross-check (Linf).
# The SEA presets (apgd-sea-*) run with SEA's progressive radius reduction (2, 1.5, 1 x eps);
# only their last stage, inside the eps-ball, can supply a result.
_SEG_STANDARD: list[dict[str, Any]] = [
    {"name": "pgd-seg", "steps": 10},
    {"name": "segpgd", "steps": 20},
    {"name": "cospgd", "steps": 20},
    {"name": "apgd-sea-mce", "steps": 30},
    {"name": "apgd-sea-msph", "steps": 30},
    {"name": "apgd-sea-js", "steps": 30},
    {"name": "apgd-sea-mbce", "steps": 30},
]
_SEG_THOROUGH: list[dict[str, Any]] = [
    {"name": "pgd-seg", "steps": 20},
    {"name": "segpgd", "steps": 50},
    {"name": "cospgd", "steps": 50},
    {"name": "apgd-sea-mce", "steps": 100},
    {"name": "apgd-sea-msph", "steps": 100},
    {"name": "apgd-sea-js", "steps": 100},
    {"name": "apgd-sea-mbce", "steps": 100},
    {"name": "apgd-seg", "objective": "dice", "steps": 100},
]
_SUITES["seg-standard"] = {
    "linf": [*_SEG_STANDARD, {"name": "square-seg", "n_queries": 200}],
    "l2": list(_SEG_STANDARD),
}
_SUITES["seg-thorough"] = {
    "linf": [*_SEG_THOROUGH, {"name": "square-seg", "n_queries": 1000}],
    "l2": list(_SEG_THOROUGH),
}
#: Suites of segmentation attacks; they run with SEA-style scheduling (``mode="cascade"``).
SEGMENTATION_SUITES: tuple[str, ...] = ("seg-standard", "seg-thorough")


@dataclass(frozen=True)
class ResolvedSuite:
    """A suite resolved for a norm and class count.

    Attributes:
        name: The suite's name.
        attacks: Attack specs (dicts with ``name`` and parameters), in order.
        skipped: ``{attack: reason}`` for attacks left out.
    """

    name: str
    attacks: list[dict[str, Any]]
    skipped: dict[str, str]


def list_suites() -> list[str]:
    """Names of the named suites."""
    return sorted(_SUITES)


def resolve_suite(name: str, norm: str | Norm, num_classes: int) -> ResolvedSuite:
    """The attacks of suite ``name`` for ``norm`` and a ``num_classes``-class model.

    Raises:
        ValueError: For an unknown suite name.
    """
    key = name.strip().lower()
    if key not in _SUITES:
        raise ValueError(f"unknown attack suite {name!r}; available: {', '.join(list_suites())}")
    n = Norm.parse(norm)
    attacks, skipped = [], {}
    for spec in _SUITES[key][n.value]:
        if spec["name"] == "apgd-dlr" and num_classes < 3:
            skipped["apgd-dlr"] = f"the DLR loss needs >= 3 classes (model has {num_classes})"
            continue
        attacks.append(dict(spec))
    return ResolvedSuite(key, attacks, skipped)
