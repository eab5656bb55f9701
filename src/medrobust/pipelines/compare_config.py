"""Settings of ``medrobust compare``: which models, which data, which axes.

:class:`CompareConfig` validates everything before any compute (unknown architectures, attacks
or corruptions, a single model, bad budgets or sizes); :class:`CandidateSpec` is one model of the
comparison, trained by the command from a zoo architecture or loaded from a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medrobust._utils.validate import parse_budgets, parse_params

__all__ = ["DEFAULT_MODELS", "CandidateSpec", "CompareConfig"]

#: The default candidates: small networks of three families at two sizes each, which train in
#: seconds on the 64-pixel phantom; ``--model`` adds or replaces them.
DEFAULT_MODELS: tuple[str, ...] = (
    "small-cnn:width=8",
    "small-cnn:width=32",
    "resnet10:widen_factor=0.25,conv1_t_stride=2",
    "inception:width=8",
)

#: The default segmenters: UNets of two depths and widths, an attention U-Net and a SegResNet
#: (for 2-D inputs whose sides are multiples of 16, such as the MNI152 tissue slices).
SEGMENTATION_MODELS: tuple[str, ...] = (
    "unet:channels=[8, 16, 32],strides=[2, 2]",
    "unet:channels=[16, 32, 64, 128],strides=[2, 2, 2]",
    "attentionunet:channels=[8, 16, 32],strides=[2, 2]",
    "segresnet:init_filters=8",
)

#: The budgeted attacks of Paschali et al. (FGSM, DeepFool) plus PGD for the worst case. JSMA,
#: their third attack, is an L0 attack: under a small Linf budget its per-pixel change is capped
#: at eps and it says little, so it measures the minimal L0 perturbation instead (``minimal``);
#: add ``jsma`` here to also run it per budget.
DEFAULT_ATTACKS: tuple[str, ...] = ("fgsm", "deepfool", "pgd")


@dataclass(frozen=True)
class CandidateSpec:
    """One model of a comparison.

    Attributes:
        key: A file-system-safe unique name (``small-cnn-width-8-seed-0``).
        label: The name shown in tables (``small-cnn (width=8), seed 0``).
        architecture: The zoo architecture to train, or None for a checkpoint.
        params: Its parameters.
        checkpoint: The saved model to load, or None to train.
        seed: The training seed.
    """

    key: str
    label: str
    architecture: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    seed: int = 0
    #: An in-memory model (bare module or adapter) given through the Python API; its weights'
    #: SHA-256 stands for it in the cache key.
    module: Any = field(default=None, compare=False, repr=False)
    weights_sha256: str | None = None

    @classmethod
    def from_module(cls, name: str, module: Any) -> CandidateSpec:
        """A model given in memory (``medrobust.compare(models={"name": model})``)."""
        digest = hashlib.sha256()
        for key, t in sorted(module.state_dict().items()):
            digest.update(key.encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return cls(
            key=_slug(f"model-{name}"), label=str(name), module=module,
            weights_sha256=digest.hexdigest(),
        )  # fmt: skip

    @classmethod
    def parse(cls, text: str, seed: int) -> CandidateSpec:
        """``"name"`` or ``"name:key=value,key=value"`` (values as in ``--model-param``).

        Raises:
            ValueError: For an empty name or malformed parameters.
        """
        name, _, rest = str(text).partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"a model needs an architecture name, got {text!r}")
        params = parse_params(_split_params(rest), "--model") if rest.strip() else {}
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        label = f"{name} ({shown})" if shown else name
        return cls(
            key=_slug(f"{name}-{shown}-seed-{seed}"),
            label=f"{label}, seed {seed}",
            architecture=name,
            params=params,
            seed=seed,
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> CandidateSpec:
        """A saved model (its key and label come from the file name)."""
        p = Path(path)
        return cls(key=_slug(f"ckpt-{p.parent.name}-{p.stem}"), label=str(p), checkpoint=str(p))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for ``metrics.json`` and the cache key; the module itself is left
        out, its weights' hash stays)."""
        return {k: v for k, v in asdict(self).items() if k != "module"}


def _split_params(text: str) -> list[str]:
    """Split ``a=1,b=[1, 2]`` at the commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[({"
        depth -= ch in "])}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [s.strip() for s in out if s.strip()]


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()


@dataclass
class CompareConfig:
    """Every setting of a comparison (defaults: the phantom run that takes minutes on a CPU).

    Attributes:
        data: Registered data set (classification).
        data_params: Its parameters (``size`` ...).
        split_sizes: Images per split for data sets that take ``n`` (the phantom).
        shift_params: Data parameters that replace ``data_params`` for the *shifted* test split
            (phantom default: another scanner, ``{"scanner": "shifted"}``); None: no shift.
        shift_data: Another registered data set as the shifted test split (with
            ``shift_params`` as its parameters); None: ``data``.
        shift_split: The split of the shifted data set to use.
        models: Candidates to train, ``"arch"`` or ``"arch:key=value,..."``.
        checkpoints: Saved models to compare as well (or instead).
        seeds: Training seeds; every architecture is trained once per seed.
        epochs, batch_size, lr: Training settings of the trained candidates.
        attacks: Classification attacks (each one's own rows, and the worst case).
        eps: Linf budgets.
        adv_samples: Test samples attacked (the first ones; the same for every model).
        corruptions: Corruption names; None: every corruption of the data set's modality.
        corrupt_samples: Test samples corrupted (the first ones).
        minimal: Measure the minimal perturbation (DeepFool L2, JSMA L0) per sample.
        reference: Key or label of the reference model for the relative corruption error;
            None: the first candidate.
        modality: The imaging modality for the corruptions; None: the data set's own.
        seed: Seed of attacks and corruptions.
        eval_batch_size: Batch size of inference and attacks.
    """

    data: str = "bus-phantom"
    data_params: dict[str, Any] = field(default_factory=lambda: {"size": 64})
    split_sizes: dict[str, int] | None = field(
        default_factory=lambda: {"train": 400, "val": 100, "test": 200}
    )
    shift_params: dict[str, Any] | None = field(default_factory=lambda: {"scanner": "shifted"})
    shift_data: str | None = None
    shift_split: str = "test"
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    checkpoints: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    eps: list[Any] = field(default_factory=lambda: ["1/255", "2/255", "4/255"])
    adv_samples: int = 100
    corruptions: list[str] | None = None
    corrupt_samples: int = 100
    minimal: bool = True
    reference: str | None = None
    modality: str | None = None
    seed: int = 0
    eval_batch_size: int = 100
    #: ``"classification"`` (accuracy, McNemar) or ``"segmentation"`` (Dice, bootstrap).
    task: str = "classification"
    #: Targeted segmentation attacks (Paschali et al.'s DAG), run once toward the
    #: all-background target (segmentation only).
    targeted: list[Any] = field(default_factory=lambda: [{"name": "dag", "steps": 50}])

    @classmethod
    def for_segmentation(cls, **overrides: Any) -> CompareConfig:
        """The segmentation defaults: four segmenters on the MNI152 tissue slices (real
        anatomy without a download: CSF, grey and white matter), PGD on Dice per budget and
        DAG toward the background, corruptions of MRI; ``overrides`` replace any field."""
        settings: dict[str, Any] = {
            "task": "segmentation",
            "data": "mni152-tissue",
            "data_params": {"resolution": 2},
            "split_sizes": None,
            "shift_params": None,
            "models": list(SEGMENTATION_MODELS),
            "attacks": ["pgd-seg"],
            "minimal": False,
            "epochs": 15,
            "batch_size": 8,
            "eval_batch_size": 16,
        }
        settings.update(overrides)
        return cls(**settings)

    def __post_init__(self) -> None:
        if self.task not in ("classification", "segmentation"):
            raise ValueError(f"task must be 'classification' or 'segmentation', got {self.task!r}")
        self.eps = parse_budgets(self.eps)
        for name in ("epochs", "batch_size", "adv_samples", "corrupt_samples", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers, got {self.seeds!r}")
        if not self.attacks:
            raise ValueError("compare needs at least one attack (e.g. fgsm,deepfool,jsma,pgd)")
        if self.split_sizes is not None:
            for split, n in self.split_sizes.items():
                if split not in ("train", "val", "test") or not isinstance(n, int) or n < 1:
                    raise ValueError(
                        "split_sizes must map train/val/test to integers >= 1, got "
                        f"{self.split_sizes!r}"
                    )

    def candidates(self, modules: Mapping[str, Any] | None = None) -> list[CandidateSpec]:
        """Every model of the comparison: trained ones, then checkpoints, then ``modules``
        (models given in memory by name).

        Raises:
            ValueError: For fewer than two models, or two with the same key.
        """
        specs = [CandidateSpec.parse(m, s) for m in self.models for s in self.seeds]
        specs += [CandidateSpec.from_checkpoint(c) for c in self.checkpoints]
        specs += [CandidateSpec.from_module(k, m) for k, m in (modules or {}).items()]
        if len(specs) < 2:
            raise ValueError(
                f"a comparison needs at least two models, got {len(specs)} "
                f"({[s.label for s in specs]}); add --model or --checkpoint"
            )
        keys = [s.key for s in specs]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"the same model is listed twice: {dup}")
        return specs

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``metrics.json``)."""
        out: dict[str, Any] = json.loads(json.dumps(asdict(self), default=str))
        return out

    def measure_hash(self, spec: CandidateSpec) -> str:
        """Hash of everything that changes one model's measurements (its cache key)."""
        keep = {
            k: v
            for k, v in self.to_dict().items()
            if k not in ("models", "checkpoints", "seeds", "reference")
        }
        keep["spec"] = spec.to_dict()
        text = json.dumps(keep, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_split_sizes(values: Mapping[str, Any] | Sequence[str] | None) -> dict[str, int] | None:
    """``["train=400", "test=200"]`` or a mapping, as ``{split: n}``.

    Raises:
        ValueError: For a malformed entry.
    """
    if values is None:
        return None
    if isinstance(values, Mapping):
        return {str(k): int(v) for k, v in values.items()}
    out = {}
    for item in values:
        split, sep, n = str(item).partition("=")
        if not sep or not n.strip().isdigit():
            raise ValueError(f"split sizes are split=count (e.g. train=400), got {item!r}")
        out[split.strip()] = int(n)
    return out
