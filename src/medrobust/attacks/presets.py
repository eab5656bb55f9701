"""Named attack presets: an engine plus an objective plus defaults, in one registry.

``create_attack("pgd", eps=4/255, steps=20)`` returns a callable
``attack(model, images, labels) -> AttackResult``; ``list_attacks()`` names them all.
"""

from __future__ import annotations

from typing import Any

from medrobust.attacks.apgd import APGD
from medrobust.attacks.engine import Attack, GradientAttack
from medrobust.attacks.minimal import CarliniWagnerL2, DeepFool
from medrobust.attacks.objectives.base import create_objective
from medrobust.attacks.square import SquareAttack
from medrobust.registry import Registry

ATTACKS: Registry[Attack] = Registry("attack")


@ATTACKS.register(
    "fgsm", summary="Fast gradient sign method: one step of size eps", tags=("classification",)
)
def fgsm(
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    objective: str = "ce",
    targeted: bool = False,
    seed: int = 0,
) -> Attack:
    """FGSM (Goodfellow et al. 2015): one steepest-ascent step of size ``eps`` from the clean
    input (for L2: along the normalised gradient)."""
    return GradientAttack(
        objective=create_objective(objective, targeted=targeted),
        norm=norm,
        eps=eps,
        steps=1,
        step_size=eps,
        random_start=False,
        restarts=1,
        early_stop=True,
        seed=seed,
        name="fgsm",
    )


@ATTACKS.register(
    "bim", summary="Basic iterative method: PGD without random start", tags=("classification",)
)
def bim(
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    objective: str = "ce",
    targeted: bool = False,
    early_stop: bool = True,
    keep_best: bool = True,
    seed: int = 0,
) -> Attack:
    """BIM / I-FGSM (Kurakin et al. 2017): iterated FGSM projected onto the eps-ball."""
    return GradientAttack(
        objective=create_objective(objective, targeted=targeted),
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        random_start=False,
        restarts=1,
        early_stop=early_stop,
        keep_best=keep_best,
        seed=seed,
        name="bim",
    )


@ATTACKS.register(
    "pgd",
    summary="Projected gradient descent with random start and restarts",
    tags=("classification",),
)
def pgd(
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    objective: str = "ce",
    targeted: bool = False,
    early_stop: bool = True,
    keep_best: bool = True,
    seed: int = 0,
) -> Attack:
    """PGD (Madry et al. 2018); ``objective`` may be ``ce``, ``margin`` or ``dlr``."""
    return GradientAttack(
        objective=create_objective(objective, targeted=targeted),
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        restarts=restarts,
        early_stop=early_stop,
        keep_best=keep_best,
        seed=seed,
        name="pgd",
    )


def _apgd(name: str, objective: str) -> None:
    def factory(
        *,
        eps: float = 8 / 255,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        early_stop: bool = True,
        seed: int = 0,
    ) -> Attack:
        return APGD(
            objective=create_objective(objective),
            norm=norm,
            eps=eps,
            steps=steps,
            restarts=restarts,
            early_stop=early_stop,
            seed=seed,
            name=name,
        )

    factory.__doc__ = f"APGD (Croce & Hein 2020) on the {objective.upper()} loss."
    summary = f"Auto-PGD on the {objective.upper()} loss" + (
        " (needs >= 3 classes)" if objective == "dlr" else ""
    )
    ATTACKS.register(name, summary=summary, tags=("classification",))(factory)


_apgd("apgd-ce", "ce")
_apgd("apgd-dlr", "dlr")


@ATTACKS.register(
    "cw",
    summary="Carlini & Wagner L2 (minimal perturbation, optional budget)",
    tags=("classification", "minimal"),
)
def cw(
    *,
    eps: float | None = None,
    norm: str = "l2",
    steps: int = 100,
    binary_search_steps: int = 5,
    initial_const: float = 1.0,
    confidence: float = 0.0,
    lr: float = 0.01,
    seed: int = 0,
) -> Attack:
    """C&W-L2 (Carlini & Wagner 2017). With ``eps`` (in ``norm``), the minimal perturbation is
    projected onto that ball."""
    return CarliniWagnerL2(
        eps=eps,
        norm=norm,
        steps=steps,
        binary_search_steps=binary_search_steps,
        initial_const=initial_const,
        confidence=confidence,
        lr=lr,
        seed=seed,
    )


@ATTACKS.register(
    "deepfool",
    summary="DeepFool (minimal perturbation, L2 or Linf, optional budget)",
    tags=("classification", "minimal"),
)
def deepfool(
    *,
    eps: float | None = None,
    norm: str = "l2",
    steps: int = 50,
    overshoot: float = 0.02,
    candidates: int = 10,
    seed: int = 0,
) -> Attack:
    """DeepFool (Moosavi-Dezfooli et al. 2016), overshoot 0.02 and 50 iterations by default."""
    return DeepFool(
        norm=norm, eps=eps, steps=steps, overshoot=overshoot, candidates=candidates, seed=seed
    )


@ATTACKS.register(
    "square",
    summary="Square attack: score-based black-box random search (Linf)",
    tags=("classification", "black-box"),
)
def square(
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    n_queries: int = 1000,
    p_init: float = 0.8,
    seed: int = 0,
) -> Attack:
    """Square Attack (Andriushchenko et al. 2020), a gradient-free cross-check."""
    return SquareAttack(eps=eps, norm=norm, n_queries=n_queries, p_init=p_init, seed=seed)


def create_attack(name: str, **params: Any) -> Attack:
    """Build a registered attack.

    Args:
        name: A name from :func:`list_attacks` (e.g. ``"pgd"``).
        **params: The preset's parameters (``eps``, ``norm``, ``steps``, ``seed``, ...).

    Returns:
        A callable ``attack(model, images, labels, region=None) -> AttackResult``.

    Raises:
        UnknownNameError: For an unknown name (with suggestions).
        TypeError: For a parameter the preset does not take (listing those it does).
        ValueError: For invalid values (e.g. ``eps <= 0``).
    """
    return ATTACKS.create(name, **params)


def list_attacks(pattern: str = "*", tag: str | None = None) -> list[str]:
    """Names of the registered attacks matching a shell-style pattern (and tag)."""
    return ATTACKS.list(pattern, tag=tag)
