"""medrobust: adversarial robustness of medical-imaging AI.

The public API is small and imported lazily (``import medrobust`` does not import torch models,
MONAI or matplotlib until they are used)::

    import medrobust
    result = medrobust.evaluate(model, loader, attacks=["fgsm", "pgd"], eps=[1/255, 2/255, 4/255])
    result.write("runs/audit")

    attack = medrobust.create_attack("pgd", eps=4/255, steps=20)
    out = attack(model, images, labels)   # AttackResult: x_adv, success, ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from medrobust._version import __version__

_LAZY = {
    "evaluate": "medrobust.pipelines.results",
    "evaluate_segmentation": "medrobust.pipelines.results",
    "compare": "medrobust.pipelines.compare",
    "evaluate_explanations": "medrobust.evaluation",
    "evaluate_detector": "medrobust.evaluation",
    "assess_detector": "medrobust.evaluation",
    "audit": "medrobust.evaluation",
    "grad_cam": "medrobust.explain",
    "EvaluationResult": "medrobust.evaluation",
    "create_attack": "medrobust.attacks",
    "list_attacks": "medrobust.attacks",
    "AttackResult": "medrobust.attacks",
    "ThreatModel": "medrobust.attacks",
    "ModelAdapter": "medrobust.models",
    "create_model": "medrobust.models",
    "list_models": "medrobust.models",
    "load_checkpoint": "medrobust.models",
    "save_checkpoint": "medrobust.models",
    "create_dataset": "medrobust.data",
    "create_detector": "medrobust.detectors",
    "list_detectors": "medrobust.detectors",
    "load_detector": "medrobust.detectors",
    "list_datasets": "medrobust.data",
    "Bounds": "medrobust.types",
    "Norm": "medrobust.types",
    "Task": "medrobust.types",
}

__all__ = [
    "AttackResult",
    "Bounds",
    "EvaluationResult",
    "ModelAdapter",
    "Norm",
    "Task",
    "ThreatModel",
    "__version__",
    "assess_detector",
    "audit",
    "compare",
    "create_attack",
    "create_dataset",
    "create_detector",
    "create_model",
    "evaluate",
    "evaluate_detector",
    "evaluate_explanations",
    "evaluate_segmentation",
    "grad_cam",
    "list_attacks",
    "list_datasets",
    "list_detectors",
    "list_models",
    "load_checkpoint",
    "load_detector",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from medrobust.attacks import AttackResult, ThreatModel, create_attack, list_attacks
    from medrobust.data import create_dataset, list_datasets
    from medrobust.detectors import create_detector, list_detectors, load_detector
    from medrobust.evaluation import (
        EvaluationResult,
        assess_detector,
        audit,
        evaluate_detector,
        evaluate_explanations,
    )
    from medrobust.explain import grad_cam
    from medrobust.models import (
        ModelAdapter,
        create_model,
        list_models,
        load_checkpoint,
        save_checkpoint,
    )
    from medrobust.pipelines.compare import compare
    from medrobust.pipelines.results import evaluate, evaluate_segmentation
    from medrobust.types import Bounds, Norm, Task


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medrobust' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
