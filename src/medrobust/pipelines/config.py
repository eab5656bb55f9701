"""Run configuration: YAML loaded into typed, validated objects, and the settings of the audit
of a saved model (:class:`CheckpointAudit`).

Components are named through the registries only; budgets may be written as numbers or as
fractions such as ``2/255`` (parsed as two numbers, never evaluated). Unknown keys are errors
with a "did you mean" hint. The resolved configuration is written beside every result.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medrobust._utils.validate import parse_budgets
from medrobust.attacks.precision import parse_precision
from medrobust.training.config import TrainConfig
from medrobust.types import Norm


def _check_keys(section: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse a section that is not a mapping or holds a key outside ``allowed`` (with a
    "did you mean" hint)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"config section {section!r} must be a mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown key {key!r} in config section {section!r}{hint}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )


@dataclass
class DataSection:
    """Which data set, with its parameters, and how to batch it."""

    name: str = "bus-phantom"
    params: dict[str, Any] = field(default_factory=lambda: {"size": 64})
    eval_split: str = "test"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataSection:
        """Build the ``data`` section from a mapping.

        Raises:
            ValueError: For unknown keys or invalid values.
        """
        _check_keys("data", d, {"name", "params", "eval_split"})
        kw = {k: d[k] for k in d}
        if "params" not in kw and "name" in kw:
            kw["params"] = default_data_params(str(kw["name"]))
        out = cls(**kw)
        if not isinstance(out.params, dict):
            raise ValueError("data.params must be a mapping")
        return out


def default_data_params(name: str) -> dict[str, Any]:
    """The parameters a data set gets when none are given: ``size=64`` for the data sets that
    take a ``size`` (2-D images resized to 64x64, the default of ``medrobust train``), nothing
    for the others (``nifti``, ``mni152-tissue``, ``decathlon``, ... have no ``size``).

    Args:
        name: A data set name (an unknown name gets no parameters; creating it fails later
            with a "did you mean").
    """
    return {"size": 64} if "size" in dataset_parameters(name) else {}


def dataset_parameters(name: str) -> list[str]:
    """The keyword parameters the registered data set ``name`` accepts (empty if unknown)."""
    import inspect

    from medrobust.data import DATASETS

    if name not in DATASETS:
        return []
    params = inspect.signature(DATASETS.get(name).factory).parameters
    return [p for p in params if p not in ("self", "split")]


@dataclass
class ModelSection:
    """Which architecture, with its parameters."""

    name: str = "small-cnn"
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSection:
        """Build the ``model`` section from a mapping.

        Raises:
            ValueError: For unknown keys or invalid values.
        """
        _check_keys("model", d, {"name", "params"})
        out = cls(**{k: d[k] for k in d})
        if not isinstance(out.params, dict):
            raise ValueError("model.params must be a mapping")
        return out


@dataclass
class EvaluationSection:
    """The audit: a named suite or an explicit attack list, budgets, norm and mode."""

    suite: str | None = "standard"
    attacks: list[Any] = field(default_factory=list)
    eps: list[float] = field(default_factory=lambda: [1 / 255, 2 / 255, 4 / 255, 8 / 255])
    norm: str = "linf"
    mode: str = "individual"
    max_samples: int | None = None
    batch_size: int = 100
    seed: int = 0
    n_examples: int = 6
    checks: bool = True
    #: Also attack the Grad-CAM explanations (label kept / changed) on this many samples;
    #: 0 turns the explanation section off.
    explanations: int = 0
    #: Accept an Linf budget above the model's input range (refused by default).
    allow_large_eps: bool = False
    #: Per-attack rows of a classifier: ``"own"`` (each attack's own result at each budget) or
    #: ``"carried"`` (samples broken at a smaller budget carried over; cheaper).
    per_attack: str = "own"
    #: Autocast dtype of the model's forward in every attack: ``"fp32"`` (default), ``"bf16"``
    #: or ``"fp16"`` (see :func:`medrobust.attacks.attack_speed`).
    precision: str = "fp32"
    #: Compile the model's forward with ``torch.compile`` in every attack.
    compile: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvaluationSection:
        """Build the ``evaluation`` section from a mapping.

        Raises:
            ValueError: For unknown keys or invalid values.
        """
        allowed = {
            "explanations",
            "suite",
            "attacks",
            "eps",
            "norm",
            "mode",
            "max_samples",
            "batch_size",
            "seed",
            "n_examples",
            "checks",
            "allow_large_eps",
            "per_attack",
            "precision",
            "compile",
        }
        _check_keys("evaluation", d, allowed)
        kw = dict(d)
        if "eps" in kw:
            try:
                kw["eps"] = parse_budgets(kw["eps"])
            except ValueError as exc:
                raise ValueError(f"evaluation.eps: {exc}") from None
        _check_types(kw)
        out = cls(**kw)
        _check_names(out)
        out.norm = Norm.parse(out.norm).value
        if out.mode not in ("individual", "cascade"):
            raise ValueError(f"evaluation.mode must be 'individual' or 'cascade', got {out.mode!r}")
        if out.per_attack not in ("own", "carried"):
            raise ValueError(
                f"evaluation.per_attack must be 'own' or 'carried', got {out.per_attack!r}"
            )
        if not out.attacks and not out.suite:
            raise ValueError("evaluation needs a 'suite' or a list of 'attacks'")
        if out.batch_size < 1:
            raise ValueError(f"evaluation.batch_size must be >= 1, got {out.batch_size}")
        try:
            out.precision = parse_precision(out.precision)
        except ValueError as exc:
            raise ValueError(f"evaluation.precision: {exc}") from None
        return out

    def speed(self) -> dict[str, Any]:
        """The non-default speed options (``precision``, ``compile``), for configs and
        :func:`medrobust.attacks.attack_speed`; empty for the defaults, so that configs and
        checkpoints of default audits are unchanged."""
        out: dict[str, Any] = {}
        if self.precision != "fp32":
            out["precision"] = self.precision
        if self.compile:
            out["compile"] = True
        return out


_INTS = {"batch_size": 1, "seed": 0, "n_examples": 0, "explanations": 0, "max_samples": 1}


def _check_types(kw: Mapping[str, Any]) -> None:
    """Every ``evaluation`` value has the type and range it needs, named in the message.

    Raises:
        ValueError: Naming the key, what was expected and what came.
    """
    for key, low in _INTS.items():
        if key not in kw or (key == "max_samples" and kw[key] is None):
            continue
        value = kw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"evaluation.{key} must be an integer >= {low}, got {type(value).__name__} "
                f"{value!r}"
            )
    for key in ("checks", "allow_large_eps", "compile"):
        if key in kw and not isinstance(kw[key], bool):
            raise ValueError(f"evaluation.{key} must be true or false, got {kw[key]!r}")


def _check_names(ev: EvaluationSection) -> None:
    """The suite and the attacks are registered names (checked before any training).

    Raises:
        ValueError: Naming the key and, for a misspelt name, the closest registered one.
    """
    from medrobust.evaluation import AttackSpec
    from medrobust.evaluation.suites import list_suites

    if ev.suite is not None and not ev.attacks and ev.suite not in list_suites():
        close = difflib.get_close_matches(str(ev.suite), list_suites(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"evaluation.suite: unknown suite {ev.suite!r}{hint}; choose one of "
            f"{', '.join(list_suites())}"
        )
    for i, spec in enumerate(ev.attacks):
        try:
            AttackSpec.parse(spec)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"evaluation.attacks[{i}]: {exc}") from None


@dataclass
class RunConfig:
    """A whole run: data, model, training and evaluation."""

    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """Build from a plain mapping (e.g. parsed YAML).

        Raises:
            ValueError: For unknown keys or invalid values (naming the section and key).
        """
        _check_keys("(top level)", d, {"data", "model", "train", "evaluation"})
        try:
            train = TrainConfig.from_dict(d.get("train", {}))
        except (ValueError, TypeError) as exc:
            text = str(exc)
            keyed = re.match(r"^[a-z_]+ (must|is|should|has)\b", text)
            named = f"train.{text}" if keyed else f"train: {text}"
            raise ValueError(named) from exc
        return cls(
            data=DataSection.from_dict(d.get("data", {})),
            model=ModelSection.from_dict(d.get("model", {})),
            train=train,
            evaluation=EvaluationSection.from_dict(d.get("evaluation", {})),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Load a YAML file (``yaml.safe_load``: no code is ever executed).

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If it is not valid YAML or not a valid configuration.
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"config file {p} is not UTF-8 text (byte {exc.start}): expected a YAML file"
            ) from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {p} is not valid YAML: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ValueError(f"config file {p} must hold a mapping at the top level")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{p}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-serialisable mapping (the resolved configuration)."""
        ev = self.evaluation
        return {
            "data": {
                "name": self.data.name,
                "params": dict(self.data.params),
                "eval_split": self.data.eval_split,
            },
            "model": {"name": self.model.name, "params": dict(self.model.params)},
            "train": self.train.to_dict(),
            "evaluation": {
                "suite": ev.suite,
                "attacks": list(ev.attacks),
                "eps": list(ev.eps),
                "norm": ev.norm,
                "mode": ev.mode,
                "max_samples": ev.max_samples,
                "batch_size": ev.batch_size,
                "seed": ev.seed,
                "n_examples": ev.n_examples,
                "checks": ev.checks,
                "explanations": ev.explanations,
                "allow_large_eps": ev.allow_large_eps,
                "per_attack": ev.per_attack,
                **ev.speed(),
            },
        }


@dataclass
class CheckpointAudit:
    """The settings of the audit of a saved model (``medrobust evaluate``).

    Attributes:
        data: Registered data set name.
        data_params: Data set parameters.
        split: The split to audit.
        suite: Named attack suite, used when ``attacks`` is empty (classifiers only).
        attacks: Attack names; empty: the suite (classifiers only).
        eps: Budgets, numbers or fractions such as ``"2/255"``.
        norm: ``"linf"`` or ``"l2"``.
        mode: ``"individual"`` or ``"cascade"`` (classifiers only).
        per_attack: ``"own"`` or ``"carried"`` per-attack rows (classifiers only).
        max_samples: Audit at most this many samples (None: all).
        batch_size: Evaluation batch size.
        seed: Attack seed.
        allow_large_eps: Accept an Linf budget above the model's input range.
        allow_size_mismatch: Audit a classifier on inputs of another size than its model card's,
            or any model on data of another voxel spacing (refused by default).
        allow_class_mismatch: Audit on data whose class names differ from the model card's
            (refused by default: a class index would mean two things).
        arch: A zoo architecture for a plain state dict (``--arch``).
        model_file: ``"file.py:factory"``, the user's Python factory (runs their code).
        model_params: Keyword arguments of ``arch`` or the factory.
        model_input: The input space of a model without a medrobust card (``task``,
            ``num_classes``, ``in_channels``, ``spatial_dims``, ``size``, ``bounds``, ``mean``,
            ``std``, ``class_names``); unset values come from the data set.
        precision: Autocast dtype of the model's forward in the attacks (``"fp32"``,
            ``"bf16"``, ``"fp16"``).
        compile: Compile the model's forward with ``torch.compile`` in the attacks.
    """

    data: str = "bus-phantom"
    data_params: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    suite: str = "standard"
    attacks: list[str] = field(default_factory=list)
    eps: list[Any] = field(default_factory=lambda: ["1/255", "2/255", "4/255", "8/255"])
    norm: str = "linf"
    mode: str = "individual"
    max_samples: int | None = None
    batch_size: int = 100
    seed: int = 0
    allow_large_eps: bool = False
    per_attack: str = "own"
    allow_size_mismatch: bool = False
    allow_class_mismatch: bool = False
    arch: str | None = None
    model_file: str | None = None
    model_params: dict[str, Any] = field(default_factory=dict)
    model_input: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    compile: bool = False

    def run_config(self, *, segmentation: bool = False) -> RunConfig:
        """The run configuration of this audit.

        Args:
            segmentation: Build it for a segmenter: no suite and no mode (``attacks`` must
                name segmentation attacks).

        Raises:
            ValueError: For invalid budgets, norm, mode or batch size.
        """
        ev: dict[str, Any] = {
            "suite": None if self.attacks or segmentation else self.suite,
            "attacks": list(self.attacks),
            "eps": list(self.eps),
            "norm": self.norm,
            "max_samples": self.max_samples,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "allow_large_eps": self.allow_large_eps,
        }
        if self.precision != "fp32":
            ev["precision"] = self.precision
        if self.compile:
            ev["compile"] = True
        if not segmentation:
            ev["mode"] = self.mode
            ev["per_attack"] = self.per_attack
        data = DataSection(name=self.data, params=dict(self.data_params), eval_split=self.split)
        return RunConfig(data=data, evaluation=EvaluationSection.from_dict(ev))


def demo_config(quick: bool = False) -> RunConfig:
    """The configuration of ``medrobust demo``: a small CNN trained on the 64x64 breast-
    ultrasound phantom, audited with the standard Linf suite at 1, 2, 4 and 8 /255.

    Args:
        quick: A much smaller run (fewer images, epochs and attacks) for smoke tests.
    """
    if quick:
        return RunConfig.from_dict(
            {
                "data": {"name": "bus-phantom", "params": {"size": 32, "n": 64}},
                "model": {"name": "small-cnn", "params": {"width": 8}},
                "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "seed": 0},
                "evaluation": {
                    "suite": "quick",
                    "eps": ["2/255", "8/255"],
                    "explanations": 4,
                    "n_examples": 2,
                    "batch_size": 32,
                },
            }
        )
    return RunConfig.from_dict(
        {
            "data": {"name": "bus-phantom", "params": {"size": 64}},
            "model": {"name": "small-cnn", "params": {}},
            "train": {
                "epochs": 15,
                "batch_size": 32,
                "lr": 1e-3,
                "weight_decay": 5e-4,
                "scheduler": "cosine",
                "seed": 0,
            },
            "evaluation": {
                "suite": "standard",
                "eps": ["1/255", "2/255", "4/255", "8/255"],
                "explanations": 32,
            },
        }
    )
