"""Safe checkpoints: tensors and plain Python values only, loaded with ``weights_only=True``.

A medrobust checkpoint is a ``torch.save`` file holding one dictionary::

    {"format": "medrobust-checkpoint", "version": 1,
     "card": ModelCard.to_dict(),          # plain JSON types, with "weights_sha256"
     "state_dict": adapter.net.state_dict(),
     "extra": {...},                       # tensors and plain values (training state, ...)
     "extra_sha256": "..."}                # SHA-256 of "extra"

Integrity: the card records the SHA-256 of the weights (:func:`state_dict_sha256`) and the file
the SHA-256 of ``extra`` (:func:`extra_sha256`); :func:`read_checkpoint` (and so
:func:`load_checkpoint` and the training resume) recomputes both and raises
:class:`CheckpointError` on a mismatch, so a flipped bit in a tensor is a clear error, never
silently wrong weights (``torch.load`` itself does not check the tensor bytes). Checkpoints
written before the hashes existed still load, with a logged warning.

:func:`load_checkpoint` never unpickles arbitrary objects: it reads the file with
``torch.load(..., weights_only=True)``, rebuilds the network by name through the model registry
from the card, and loads the weights strictly. Files are written atomically (temporary file in
the same folder, then ``os.replace``), so an interrupted save never leaves a truncated checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust._utils.io import atomic_torch_save, write_text_atomic
from medrobust.models.adapter import ModelAdapter
from medrobust.models.card import ModelCard
from medrobust.models.zoo import create_model
from medrobust.registry import UnknownNameError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "extra_sha256",
    "load_checkpoint",
    "load_state_dict_into",
    "read_checkpoint",
    "save_checkpoint",
    "state_dict_sha256",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "medrobust-checkpoint"
"""Value of the ``"format"`` entry of every medrobust checkpoint."""

CHECKPOINT_VERSION = 1
"""Layout version written by :func:`save_checkpoint`."""

PathLike = str | os.PathLike[str]

# Exceptions torch.load raises on damaged files (truncated zip, garbage bytes, bad pickles).
_CORRUPT_ERRORS = (
    RuntimeError,
    EOFError,
    KeyError,
    IndexError,
    ValueError,
    struct.error,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    OSError,  # the zip reader reports some truncations as EINVAL
)


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, foreign, or does not match the architecture."""


# --------------------------------------------------------------------------- integrity


def _hash_tensor(h: Any, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and raw (native byte order) bytes into ``h``."""
    t = tensor.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8)
    header = json.dumps([str(t.dtype), list(t.shape), int(raw.numel())])
    h.update(f"T{len(header)}:{header}".encode())
    h.update(raw.numpy().data)


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """The SHA-256 of a state dict, independent of key order, device and memory layout.

    The keys are taken in sorted order; for each, its name, the tensor's dtype and shape and the
    raw bytes of ``t.detach().cpu().contiguous()`` are hashed (each field length-prefixed, so no
    two different state dicts share an input to the hash).

    Args:
        state: Names mapped to tensors.

    Returns:
        64 lowercase hexadecimal digits.

    Raises:
        TypeError: If a value is not a tensor.
    """
    h = hashlib.sha256(b"medrobust-state-dict-v1\n")
    for key in sorted(state):
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        name = str(key).encode()
        h.update(b"K%d:" % len(name) + name)
        _hash_tensor(h, value)
    return h.hexdigest()


def _hash_value(h: Any, value: Any) -> None:
    """Feed a nested structure of tensors and plain values into ``h`` (dict keys sorted)."""
    if isinstance(value, torch.Tensor):
        _hash_tensor(h, value)
    elif isinstance(value, Mapping):
        h.update(b"D%d:" % len(value))
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _hash_value(h, key)
            _hash_value(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(b"S%d:" % len(value))
        for item in value:
            _hash_value(h, item)
    else:
        text = f"{type(value).__name__}:{value!r}".encode()
        h.update(b"V%d:" % len(text) + text)


def extra_sha256(extra: Mapping[str, Any]) -> str:
    """The SHA-256 of a checkpoint's ``extra`` entry (tensors and plain values, nested).

    Dict keys are taken in sorted order, lists and tuples in order, tensors as in
    :func:`state_dict_sha256`, plain values by type and ``repr``.

    Args:
        extra: The mapping saved under ``"extra"``.

    Returns:
        64 lowercase hexadecimal digits.
    """
    h = hashlib.sha256(b"medrobust-extra-v1\n")
    _hash_value(h, extra)
    return h.hexdigest()


def _verify(file: Path, what: str, recorded: Any, actual: Callable[[], str]) -> None:
    """Compare a recorded SHA-256 with the recomputed one; warn when none was recorded."""
    if recorded is None:
        logger.warning(
            "checkpoint %s records no SHA-256 of its %s (written by an older medrobust), so "
            "they cannot be checked for corruption; re-save it to add one",
            file,
            what,
        )
        return
    if not isinstance(recorded, str):
        raise CheckpointError(
            f"checkpoint {file} is corrupt: the SHA-256 recorded for its {what} is not a "
            f"string ({type(recorded).__name__})"
        )
    digest = actual()
    if digest != recorded:
        raise CheckpointError(
            f"checkpoint {file}: its {what} do not match the SHA-256 recorded when it was saved: "
            f"the file is corrupt (recorded {recorded[:16]}..., now {digest[:16]}...; a damaged "
            "disk or an incomplete copy); restore it from a copy or save it again"
        )


# --------------------------------------------------------------------------- saving


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` holds only tensors and plain Python values."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoints hold only tensors, None, bool, int, "
        "float, str, lists, tuples and dicts so that they load with weights_only=True"
    )


def save_checkpoint(
    path: PathLike,
    model: ModelAdapter,
    card: ModelCard,
    extra: Mapping[str, Any] | None = None,
    *,
    write_card: bool = False,
) -> Path:
    """Save a model, its card and optional extra state as a safe checkpoint, atomically.

    Args:
        path: Destination file (conventionally ``*.pt``); parent folders are created.
        model: The adapter whose network weights are saved.
        card: The model card; its task, classes, channels and dims must match ``model``. The
            card written is a copy stamped with the SHA-256 of the weights
            (``weights_sha256``); ``card`` itself is not changed.
        extra: Optional tensors and plain values (e.g. optimiser state) stored under
            ``"extra"``.
        write_card: Also write ``model_card.json`` and ``model_card.md`` beside ``path``.

    Returns:
        The checkpoint path.

    Raises:
        TypeError: If ``model``/``card`` have the wrong type or ``extra`` holds other objects.
        ValueError: If the card contradicts the model.
    """
    if not isinstance(model, ModelAdapter):
        raise TypeError(
            f"model must be a ModelAdapter, got {type(model).__name__}; wrap it with "
            "medrobust.models.as_adapter or build it with create_model"
        )
    if not isinstance(card, ModelCard):
        raise TypeError(f"card must be a ModelCard, got {type(card).__name__}")
    mismatched = [
        f"{name}: card {getattr(card, name)!r} vs model {value!r}"
        for name, value in (
            ("task", model.task.value),
            ("num_classes", model.num_classes),
            ("in_channels", model.in_channels),
            ("spatial_dims", model.spatial_dims),
        )
        if getattr(card, name) != value
    ]
    if mismatched:
        raise ValueError(f"the model card does not describe the model: {'; '.join(mismatched)}")
    extra_dict: dict[str, Any] = dict(extra) if extra is not None else {}
    _check_plain(extra_dict, "extra")
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    card = replace(card, weights_sha256=state_dict_sha256(state))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "card": card.to_dict(),
        "state_dict": state,
        "extra": extra_dict,
        "extra_sha256": extra_sha256(extra_dict),
    }
    target = atomic_torch_save(payload, path)
    if write_card:
        write_text_atomic(
            target.parent / "model_card.json",
            json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n",
        )
        write_text_atomic(target.parent / "model_card.md", card.to_markdown())
    logger.debug("saved checkpoint %s", target)
    return target


# --------------------------------------------------------------------------- loading


def _torch_load(path: PathLike, map_location: str | torch.device) -> Any:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"checkpoint file not found: {file}")
    if file.is_dir():
        hint = " (it holds best.pt; pass that file)" if (file / "best.pt").is_file() else ""
        raise IsADirectoryError(f"checkpoint path {file} is a folder, not a file{hint}")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():
            raise CheckpointError(
                f"checkpoint file {file} holds pickled Python objects that cannot be loaded "
                "safely with weights_only=True (for example a whole model saved with "
                "torch.save(model)); in a trusted environment re-save only the weights with "
                "torch.save(model.state_dict(), ...) and load them with "
                "medrobust.models.load_state_dict_into"
            ) from exc
        raise CheckpointError(
            f"checkpoint file {file} is corrupt or truncated, or was not written by torch.save "
            f"(unpickling failed: {_short_reason(exc)})"
        ) from exc
    except _CORRUPT_ERRORS as exc:
        raise CheckpointError(
            f"checkpoint file {file} is corrupt or truncated; torch.load failed with "
            f"{type(exc).__name__}: {_short_reason(exc)}"
        ) from exc


def _short_reason(exc: BaseException) -> str:
    """The informative line of a (often very long) torch.load error message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[-1].strip()
            if rest:
                return rest
            if i + 1 < len(lines):
                return lines[i + 1]
    return lines[0] if lines else type(exc).__name__


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate the raw dictionary of a medrobust checkpoint (no model is built).

    Args:
        path: The checkpoint file.
        map_location: Where tensors are loaded (as for ``torch.load``).

    Returns:
        The dictionary with keys ``format``, ``version``, ``card`` (a plain dict),
        ``state_dict`` and ``extra``.

    Raises:
        FileNotFoundError: If the file does not exist.
        IsADirectoryError: If ``path`` is a folder.
        CheckpointError: If the file is corrupt, truncated, holds unsafe pickles, is a plain
            state dict or is not a medrobust checkpoint, or its weights or extra entries do not
            match the SHA-256 recorded when it was saved.
    """
    file = Path(path)
    return _validate(file, _torch_load(file, map_location))


def _validate(file: Path, payload: Any) -> dict[str, Any]:
    """Check the layout and the recorded SHA-256 of a loaded checkpoint (see read_checkpoint)."""
    if _is_state_dict(payload):
        raise CheckpointError(
            f"{file} holds a plain state_dict ({len(payload)} tensors), not a medrobust "
            "checkpoint. Wrap it: model = medrobust.models.create_model('<architecture>', "
            "num_classes=..., in_channels=..., spatial_dims=...); "
            f"medrobust.models.load_state_dict_into(model, {str(file)!r}); "
            "medrobust.models.save_checkpoint('model.pt', model, "
            "medrobust.models.ModelCard.from_model(model))"
        )
    if not isinstance(payload, Mapping) or payload.get("format") != CHECKPOINT_FORMAT:
        what = (
            f"a dict with keys {sorted(map(str, payload))[:10]}"
            if isinstance(payload, Mapping)
            else f"a {type(payload).__name__}"
        )
        raise CheckpointError(
            f"{file} is not a medrobust checkpoint (expected a dict with "
            f"'format': {CHECKPOINT_FORMAT!r}, found {what})"
        )
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"checkpoint {file} has an invalid version entry {version!r}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {file} has format version {version}, newer than the version "
            f"{CHECKPOINT_VERSION} this medrobust reads; upgrade medrobust"
        )
    missing = [k for k in ("card", "state_dict") if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {file} is corrupt: missing entries {missing}")
    state = payload["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(
            f"checkpoint {file} is corrupt: 'state_dict' must map names to tensors"
        )
    extra = payload.get("extra", {})
    if not isinstance(extra, Mapping):
        raise CheckpointError(f"checkpoint {file} is corrupt: 'extra' must be a dict")
    card = payload["card"]
    recorded = card.get("weights_sha256") if isinstance(card, Mapping) else None
    _verify(file, "weights", recorded, lambda: state_dict_sha256(state))
    if "extra_sha256" in payload:
        _verify(file, "extra entries", payload["extra_sha256"], lambda: extra_sha256(extra))
    return {
        "format": CHECKPOINT_FORMAT,
        "version": version,
        "card": payload["card"],
        "state_dict": dict(state),
        "extra": dict(extra),
    }


def _load_strict(target: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:

        def show(items: list[str]) -> str:
            head = ", ".join(items[:8])
            return head + (f" ... ({len(items)} in all)" if len(items) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {show(shapes)}")
        raise CheckpointError(
            f"the weights in {source} do not match the architecture: {'; '.join(parts)}"
        )
    target.load_state_dict(state, strict=True)


def load_checkpoint(
    path: PathLike, map_location: str | torch.device = "cpu"
) -> tuple[ModelAdapter, ModelCard]:
    """Load a medrobust checkpoint safely and rebuild the model from its card.

    Args:
        path: The checkpoint file written by :func:`save_checkpoint`.
        map_location: Where tensors (and the model) are placed, as for ``torch.load``.

    Returns:
        ``(model, card)``: the adapter in eval mode with the saved weights, and the card.

    Raises:
        FileNotFoundError: If the file does not exist.
        IsADirectoryError: If ``path`` is a folder.
        CheckpointError: If the file is corrupt or truncated (including weights that do not
            match the SHA-256 recorded in the card), holds unsafe pickles, is a plain
            state dict or a foreign file, has an invalid card, names an unregistered
            architecture, or its weights do not match the architecture (the message lists the
            missing and unexpected keys).
    """
    file = Path(path)
    payload = read_checkpoint(file, map_location)
    try:
        card = ModelCard.from_dict(payload["card"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {file} has an invalid model card: {exc}") from exc
    try:
        model = create_model(
            card.architecture,
            num_classes=card.num_classes,
            in_channels=card.in_channels,
            spatial_dims=card.spatial_dims,
            bounds=(card.bounds[0], card.bounds[1]),
            mean=card.mean,
            std=card.std,
            class_names=card.class_names,
            **card.architecture_kwargs,
        )
    except UnknownNameError as exc:
        raise CheckpointError(
            f"checkpoint {file} needs the architecture {card.architecture!r}, which is not "
            f"registered: {exc}. Import the module that registers it before loading"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {file} cannot rebuild {card.architecture!r} from its card: {exc}"
        ) from exc
    if model.task.value != card.task:
        raise CheckpointError(
            f"checkpoint {file} says task {card.task!r} but architecture "
            f"{card.architecture!r} is a {model.task.value} model"
        )
    _load_strict(model.net, payload["state_dict"], str(file))
    model.to(map_location)
    model.eval()
    return model, card


def load_state_dict_into(
    model: nn.Module,
    source: PathLike | Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Load plain weights (a ``state_dict`` file or mapping) into a model, safely.

    Accepts a bare ``state_dict``, a dict wrapping one under ``"state_dict"``,
    ``"model_state_dict"`` or ``"model"``, or a medrobust checkpoint. Key prefixes ``"module."``
    (DataParallel) and ``"net."`` (a saved adapter) are stripped when every key carries them.
    Files are read with ``torch.load(..., weights_only=True)``.

    Args:
        model: A :class:`ModelAdapter` (weights go into ``model.net``) or a bare module.
        source: A file path or a mapping of names to tensors.
        strict: Require exactly matching keys (the error lists missing and unexpected keys).
        map_location: Where tensors are loaded from a file.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointError: If the file is corrupt, holds no state dict, or (strict) the keys or
            shapes do not match.
    """
    target = model.net if isinstance(model, ModelAdapter) else model
    name = "the given state dict"
    obj: Any = source
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        obj = _torch_load(source, map_location)
        if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
            obj = _validate(Path(source), obj)  # checks the recorded SHA-256
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in ("state_dict", "model_state_dict", "model"):
            if _is_state_dict(obj.get(key)):
                obj = obj[key]
                break
    if not _is_state_dict(obj):
        raise CheckpointError(f"{name} holds no state dict (a mapping of names to tensors)")
    state = dict(obj)
    for prefix in ("module.", "net."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if strict:
        _load_strict(target, state, name)
    else:
        own = target.state_dict()
        shapes = [
            f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if shapes:
            raise CheckpointError(
                f"the weights in {name} do not match the architecture: shape mismatches: "
                + ", ".join(shapes[:8])
            )
        result = target.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            logger.warning(
                "loaded %s non-strictly: %d missing, %d unexpected keys",
                name,
                len(result.missing_keys),
                len(result.unexpected_keys),
            )
    return model
