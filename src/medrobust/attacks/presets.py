"""Named attack presets: an engine plus an objective plus defaults, in one registry.

``create_attack("pgd", eps=4/255, steps=20)`` returns a callable
``attack(model, images, labels) -> AttackResult``; ``list_attacks()`` names them all.

A preset is a few lines, in the spirit of timm's entry points: a function that merges its
defaults with the caller's keywords, registered with the engine it builds, the objectives it may
use and its tags (see :mod:`medrobust.attacks.tags`)::

    @register_attack("pgd", GradientAttack, CLASSIFICATION_LOSSES, kind="iterative",
                     task="classification", extras=("gradient",), summary="...")
    def pgd(kw: dict[str, Any]) -> dict[str, Any]:
        \"\"\"PGD (Madry et al. 2018).\"\"\"
        return {"random_start": True, **kw}

The keywords a preset accepts are those of the engine's constructor and of its objectives'
constructors (plus ``objective``, the objective's name, where there is a choice), less the ones
the preset fixes; an unknown keyword fails with a "did you mean".
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from medrobust.attacks.apgd import APGD
from medrobust.attacks.engine import Attack, GradientAttack
from medrobust.attacks.minimal import CarliniWagnerL2, DeepFool
from medrobust.attacks.objectives.base import Objective
from medrobust.attacks.objectives.classification import DLR, CrossEntropy, Margin
from medrobust.attacks.precision import SpeedOptions
from medrobust.attacks.square import SquareAttack
from medrobust.attacks.tags import ATTACKS, AttackRegistry
from medrobust.registry import check_keywords

__all__ = [
    "ATTACKS",
    "CLASSIFICATION_LOSSES",
    "AttackRegistry",
    "ObjectiveChoice",
    "build_attack",
    "create_attack",
    "list_attacks",
    "preset_keywords",
    "register_attack",
]

#: What a preset function does: the caller's keywords in, the merged keywords out.
PresetFn = Callable[[dict[str, Any]], dict[str, Any]]

# constructor parameters that a preset sets itself
_INTERNAL = ("self", "objective", "name")
#: Keywords every preset accepts, applied with :meth:`Attack.set_speed` (not the constructor).
SPEED_KEYWORDS = ("precision", "compile")


@dataclass(frozen=True)
class ObjectiveChoice:
    """The objectives a preset may build, by the name given as its ``objective`` keyword.

    Attributes:
        default: The name used when the caller gives none.
        choices: Name -> objective class (aliases may map to the same class).
        what: What the objectives are, for messages (``"classification"``...).
    """

    default: str
    choices: Mapping[str, type[Objective]]
    what: str = ""

    def resolve(self, preset: str, name: Any) -> type[Objective]:
        """The objective class for ``name``.

        Raises:
            ValueError: For a name outside the choices (with "did you mean").
        """
        key = str(name).strip().lower().replace("_", "-")
        if key not in self.choices:
            close = difflib.get_close_matches(key, list(self.choices), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            kind = f"{self.what} objective" if self.what else "objective"
            raise ValueError(
                f"unknown {kind} {name!r} for attack {preset!r}{hint}; expected one of "
                f"{', '.join(repr(c) for c in self.choices)}"
            )
        return self.choices[key]

    def classes(self) -> list[type[Objective]]:
        """The distinct objective classes, in order."""
        return list(dict.fromkeys(self.choices.values()))


#: The classification losses of the gradient presets.
CLASSIFICATION_LOSSES = ObjectiveChoice(
    "ce", {"ce": CrossEntropy, "margin": Margin, "dlr": DLR}, "classification"
)


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``cls``'s constructor; a constructor that forwards
    ``**kwargs`` to its base class also takes the base constructor's parameters."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    out: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        for n, p in params.items():
            if p.kind in kinds and n not in _INTERNAL:
                out.setdefault(n, p)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return out


def preset_keywords(
    engine: type[Attack], objectives: ObjectiveChoice | None, fixed: Iterable[str] = ()
) -> list[str]:
    """The keywords a preset of ``engine`` with ``objectives`` accepts (less ``fixed``)."""
    names = list(_parameters(engine))
    if objectives is not None:
        if len(objectives.classes()) > 1:
            names.append("objective")
        for cls in objectives.classes():
            names.extend(n for n in _parameters(cls) if n not in names)
    names.extend(SPEED_KEYWORDS)
    return [n for n in names if n not in set(fixed)]


def _signature(
    engine: type[Attack], objectives: ObjectiveChoice | None, keywords: list[str], fn: PresetFn
) -> inspect.Signature:
    """A keyword-only signature listing what the preset accepts, with its effective defaults."""
    known: dict[str, inspect.Parameter] = {}
    for cls in [engine, *(objectives.classes() if objectives else [])]:
        for n, p in _parameters(cls).items():
            known.setdefault(n, p)
    if objectives is not None:
        known["objective"] = inspect.Parameter(
            "objective", inspect.Parameter.KEYWORD_ONLY, default=objectives.default
        )
    try:
        merged = fn({})
    except (TypeError, ValueError):  # a preset that needs a keyword (none today)
        merged = {}
    params = []
    for n in keywords:
        if n in SPEED_KEYWORDS:
            continue
        p = known[n]
        default = merged.get(n, p.default)
        params.append(
            inspect.Parameter(
                n, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=p.annotation
            )
        )
    speed = SpeedOptions()
    params += [
        inspect.Parameter("precision", inspect.Parameter.KEYWORD_ONLY, default=speed.precision),
        inspect.Parameter("compile", inspect.Parameter.KEYWORD_ONLY, default=speed.compile),
    ]
    return inspect.Signature(params, return_annotation=engine.__name__)


def build_attack(
    name: str, engine: type[Attack], objectives: ObjectiveChoice | None, kw: dict[str, Any]
) -> Attack:
    """Build ``engine`` (and its objective) from merged preset keywords.

    The keywords the chosen objective's constructor takes go to the objective; the rest go to
    the engine.

    Raises:
        TypeError: For a keyword neither takes (e.g. an option of another objective).
        ValueError: For an unknown objective name or invalid values.
    """
    kw = dict(kw)
    engine_params = _parameters(engine)
    make: Callable[..., Attack] = engine  # every engine takes ``name``
    if objectives is None:
        check_keywords("attack", name, engine_params, kw)
        return make(name=name, **kw)
    cls = objectives.resolve(name, kw.pop("objective", objectives.default))
    obj_params = _parameters(cls)
    obj_kw = {k: kw.pop(k) for k in list(kw) if k in obj_params}
    accepted = [*engine_params, *obj_params]
    check_keywords(f"with the objective {cls.name!r}, attack", name, accepted, kw)
    return make(objective=cls(**obj_kw), name=name, **kw)


def register_attack(
    name: str,
    engine: type[Attack],
    objectives: ObjectiveChoice | None = None,
    *,
    kind: str,
    task: str,
    extras: tuple[str, ...] = (),
    fixed: tuple[str, ...] = (),
    summary: str = "",
) -> Callable[[PresetFn], Callable[..., Attack]]:
    """Register a preset: ``fn`` merges its defaults with the caller's keywords.

    Args:
        name: The attack's name.
        engine: The engine class it builds.
        objectives: The objectives it may build (None: the engine builds its own).
        kind: One of :data:`~medrobust.attacks.tags.KINDS`.
        task: One of :data:`~medrobust.attacks.tags.TASKS`.
        extras: Extra tags from :data:`~medrobust.attacks.tags.EXTRAS`.
        fixed: Engine or objective keywords the preset sets and the caller may not.
        summary: One line for ``medrobust list attacks`` (default: the first docstring line).

    Returns:
        A decorator returning the factory ``(**keywords) -> Attack``.

    Raises:
        ValueError: At registration, for tags outside the vocabulary.
    """

    def decorator(fn: PresetFn) -> Callable[..., Attack]:
        keywords = preset_keywords(engine, objectives, fixed)

        def factory(**kw: Any) -> Attack:
            check_keywords("attack", name, keywords, kw)
            speed = {k: kw.pop(k) for k in SPEED_KEYWORDS if k in kw}
            attack = build_attack(name, engine, objectives, fn(dict(kw)))
            return attack.set_speed(**speed) if speed else attack

        factory.__name__ = factory.__qualname__ = fn.__name__
        factory.__doc__ = fn.__doc__
        factory.__module__ = fn.__module__
        factory.__signature__ = _signature(engine, objectives, keywords, fn)  # type: ignore[attr-defined]
        ATTACKS.register(name, summary=summary, tags=(kind, task, *extras))(factory)
        return factory

    return decorator


# --------------------------------------------------------------------------------------------
# classification presets
# --------------------------------------------------------------------------------------------
_ONE_RUN = ("random_start", "restarts")


@register_attack(
    "fgsm",
    GradientAttack,
    CLASSIFICATION_LOSSES,
    kind="single-step",
    task="classification",
    extras=("gradient",),
    fixed=("steps", "step_size", "keep_best", *_ONE_RUN),
    summary="Fast gradient sign method: one step of size eps",
)
def fgsm(kw: dict[str, Any]) -> dict[str, Any]:
    """FGSM (Goodfellow et al. 2015): one steepest-ascent step of size ``eps`` from the clean
    input (for L2: along the normalised gradient)."""
    eps = kw.get("eps", 8 / 255)
    return {
        **kw,
        "steps": 1,
        "step_size": eps,
        "random_start": False,
        "restarts": 1,
        # without the final evaluation there is no best iterate to choose: the stepped one
        "keep_best": bool(kw.get("need_success", True)),
    }


@register_attack(
    "bim",
    GradientAttack,
    CLASSIFICATION_LOSSES,
    kind="iterative",
    task="classification",
    extras=("gradient",),
    fixed=_ONE_RUN,
    summary="Basic iterative method: PGD without random start",
)
def bim(kw: dict[str, Any]) -> dict[str, Any]:
    """BIM / I-FGSM (Kurakin et al. 2017): iterated FGSM projected onto the eps-ball."""
    return {**kw, "random_start": False, "restarts": 1}


@register_attack(
    "pgd",
    GradientAttack,
    CLASSIFICATION_LOSSES,
    kind="iterative",
    task="classification",
    extras=("gradient",),
    summary="Projected gradient descent with random start and restarts",
)
def pgd(kw: dict[str, Any]) -> dict[str, Any]:
    """PGD (Madry et al. 2018); ``objective`` may be ``ce``, ``margin`` or ``dlr``."""
    return {"random_start": True, **kw}


@register_attack(
    "apgd-ce",
    APGD,
    ObjectiveChoice("ce", {"ce": CrossEntropy}),
    kind="iterative",
    task="classification",
    extras=("gradient",),
    summary="Auto-PGD on the CE loss",
)
def apgd_ce(kw: dict[str, Any]) -> dict[str, Any]:
    """APGD (Croce & Hein 2020) on the cross-entropy loss."""
    return kw


@register_attack(
    "apgd-dlr",
    APGD,
    ObjectiveChoice("dlr", {"dlr": DLR}),
    kind="iterative",
    task="classification",
    extras=("gradient",),
    summary="Auto-PGD on the DLR loss (needs >= 3 classes)",
)
def apgd_dlr(kw: dict[str, Any]) -> dict[str, Any]:
    """APGD (Croce & Hein 2020) on the scale-invariant DLR loss."""
    return kw


@register_attack(
    "cw",
    CarliniWagnerL2,
    kind="minimal",
    task="classification",
    extras=("gradient",),
    summary="Carlini & Wagner L2 (minimal perturbation, optional budget)",
)
def cw(kw: dict[str, Any]) -> dict[str, Any]:
    """C&W-L2 (Carlini & Wagner 2017). With ``eps`` (in ``norm``), the minimal perturbation is
    projected onto that ball."""
    return kw


@register_attack(
    "deepfool",
    DeepFool,
    kind="minimal",
    task="classification",
    extras=("gradient",),
    summary="DeepFool (minimal perturbation, L2 or Linf, optional budget)",
)
def deepfool(kw: dict[str, Any]) -> dict[str, Any]:
    """DeepFool (Moosavi-Dezfooli et al. 2016), overshoot 0.02 and 50 iterations by default."""
    return kw


@register_attack(
    "square",
    SquareAttack,
    kind="black-box",
    task="classification",
    extras=("linf-only",),
    summary="Square attack: score-based black-box random search (Linf)",
)
def square(kw: dict[str, Any]) -> dict[str, Any]:
    """Square Attack (Andriushchenko et al. 2020), a gradient-free cross-check."""
    return kw


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
