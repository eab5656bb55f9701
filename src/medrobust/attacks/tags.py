"""The fixed vocabulary of attack tags, and helpers that read an attack's kind and task.

Every registered attack carries exactly one *kind* and exactly one *task*, plus optional extras:

==================  ===========================================================================
kind                meaning
==================  ===========================================================================
``single-step``     one gradient step (FGSM): weaker than an iterative attack at the same budget
``iterative``       many projected steps inside an eps-ball (BIM, PGD, APGD, ...)
``minimal``         unbounded minimal-perturbation search (C&W, DeepFool, ASMA, DAG): the budget
                    is optional, only the input bounds constrain it
``black-box``       uses the model's scores only, no gradients (Square)
==================  ===========================================================================

==================  ===========================================================================
task                what ``labels`` are and what success means
==================  ===========================================================================
``classification``  class labels ``(B,)``; success: the prediction differs from the label
``segmentation``    masks ``(B, *spatial)``; success: Dice below a threshold, or the target
                    mask reached
``explanation``     class labels (or target maps); success: the Grad-CAM map moved with the
                    label kept (or changed)
``detection``       class labels of a detector-guarded classifier; success: misclassified and
                    not flagged by the detector
==================  ===========================================================================

Extras (optional, any number): ``gradient`` (uses input gradients), ``targeted`` /
``untargeted`` (drives toward given targets / away from the labels), ``linf-only`` (refuses the
L2 norm), ``adaptive`` (aware of a defence in front of the model).

The attack registry :data:`ATTACKS` lives here because it enforces the vocabulary: registering an
attack without exactly one kind and one task, or with a tag outside the vocabulary, fails.

The evaluation chooses its sanity checks with :func:`attack_kind` and :func:`attack_task`, never
by attack name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from medrobust.attacks.engine import Attack
from medrobust.registry import Registry

__all__ = [
    "ATTACKS",
    "EXTRAS",
    "KINDS",
    "TASKS",
    "AttackRegistry",
    "attack_kind",
    "attack_tags",
    "attack_task",
    "check_tags",
]

#: The kinds; every attack has exactly one.
KINDS: tuple[str, ...] = ("single-step", "iterative", "minimal", "black-box")
#: The tasks; every attack has exactly one.
TASKS: tuple[str, ...] = ("classification", "segmentation", "explanation", "detection")
#: Optional extra tags.
EXTRAS: tuple[str, ...] = ("gradient", "targeted", "untargeted", "linf-only", "adaptive")


def check_tags(name: str, tags: Iterable[str]) -> tuple[str, ...]:
    """Validate the tags of attack ``name`` against the vocabulary.

    Args:
        name: The attack's registered name (for the message).
        tags: Its tags.

    Returns:
        The tags as a tuple, in the order given.

    Raises:
        ValueError: If the attack has not exactly one kind and one task, or a tag outside the
            vocabulary (the message lists the vocabulary).
    """
    tags = tuple(tags)
    kinds = [t for t in tags if t in KINDS]
    tasks = [t for t in tags if t in TASKS]
    unknown = [t for t in tags if t not in KINDS + TASKS + EXTRAS]
    problems = []
    if len(kinds) != 1:
        problems.append(f"exactly one kind of {list(KINDS)} (got {kinds})")
    if len(tasks) != 1:
        problems.append(f"exactly one task of {list(TASKS)} (got {tasks})")
    if unknown:
        problems.append(f"no tags outside the vocabulary (got {unknown}; extras: {list(EXTRAS)})")
    if len(set(tags)) != len(tags):
        problems.append(f"no repeated tags (got {list(tags)})")
    if problems:
        raise ValueError(f"attack {name!r} must have {'; '.join(problems)}")
    return tags


class AttackRegistry(Registry[Attack]):
    """The attack registry: registration refuses tags outside the vocabulary (exactly one kind
    and one task)."""

    def register(
        self, name: str, *, summary: str = "", tags: tuple[str, ...] = ()
    ) -> Callable[[Callable[..., Attack]], Callable[..., Attack]]:
        """Decorator that registers ``factory`` under ``name`` after checking its tags.

        Raises:
            ValueError: For tags outside the vocabulary, or a name already registered.
        """
        return super().register(name, summary=summary, tags=check_tags(name, tags))


#: Every attack preset, by name (``create_attack``/``list_attacks`` read it).
ATTACKS: AttackRegistry = AttackRegistry("attack")


def attack_tags(name: str) -> tuple[str, ...]:
    """All tags of the registered attack ``name``.

    Raises:
        UnknownNameError: For an unknown attack (with suggestions).
    """
    return ATTACKS.get(name).tags


def attack_kind(name: str) -> str:
    """The kind of the registered attack ``name``: one of :data:`KINDS`.

    Raises:
        UnknownNameError: For an unknown attack (with suggestions).
    """
    return next(t for t in attack_tags(name) if t in KINDS)


def attack_task(name: str) -> str:
    """The task of the registered attack ``name``: one of :data:`TASKS`.

    Raises:
        UnknownNameError: For an unknown attack (with suggestions).
    """
    return next(t for t in attack_tags(name) if t in TASKS)
