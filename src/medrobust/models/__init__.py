"""Networks, the model adapter, the model zoo, model cards and safe checkpoints."""

from medrobust.models import inception as _inception  # noqa: F401 (registers inception)
from medrobust.models import multitask as _multitask  # noqa: F401 (registers mtl-resnet*)
from medrobust.models import segmentation as _segmentation  # noqa: F401 (basicunet, ...)
from medrobust.models.adapter import ModelAdapter, as_adapter
from medrobust.models.card import DataInfo, ModelCard, TrainingInfo
from medrobust.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_dict_into,
    save_checkpoint,
)
from medrobust.models.segmentation import check_volume_size, sliding_window
from medrobust.models.window_memory import VolumeMemoryError
from medrobust.models.zoo import MODELS, architecture_of, create_model, gradcam_layer, list_models

__all__ = [
    "MODELS",
    "CheckpointError",
    "DataInfo",
    "ModelAdapter",
    "ModelCard",
    "TrainingInfo",
    "VolumeMemoryError",
    "architecture_of",
    "as_adapter",
    "check_volume_size",
    "create_model",
    "gradcam_layer",
    "list_models",
    "load_checkpoint",
    "load_state_dict_into",
    "save_checkpoint",
    "sliding_window",
]
