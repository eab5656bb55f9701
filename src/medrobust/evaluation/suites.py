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
