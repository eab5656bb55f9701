"""Any user's model, loaded for an audit: medrobust checkpoints, TorchScript and ``torch.export``
archives, plain state dicts with a zoo architecture, and Python factories in the user's files.

What each source means for trust:

* a medrobust checkpoint or a plain state dict is read with ``torch.load(weights_only=True)``:
  tensors only, no code runs;
* a TorchScript archive (``torch.jit.save``) or a ``torch.export`` archive (``torch.export.save``)
  holds a compiled program: loading it runs that program when the model is called, so load only
  archives you trust;
* ``model_file="my_model.py:build"`` imports ``my_model.py`` and calls ``build(**params)``: it
  runs the user's own Python code, with the user's permissions (a warning says so).

The input space (task, classes, channels, dims, bounds, normalisation, size) comes from
:class:`InputSpec`: the user's flags first, then the data set's defaults; the size also lets a
probe forward pass check that the model accepts the input and infer the class count.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import logging
import os
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.models.adapter import ModelAdapter
from medrobust.models.card import DataInfo, ModelCard
from medrobust.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_dict_into,
)
from medrobust.models.zoo import create_model

logger = logging.getLogger(__name__)

__all__ = ["InputSpec", "ModelSource", "detect_format", "load_model"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class InputSpec:
    """The input space and output of a model that carries no medrobust card.

    Attributes:
        task: ``"classification"`` or ``"segmentation"``.
        num_classes: Classes ``K`` (inferred by a probe pass when ``size`` is known).
        in_channels: Channels ``C``.
        spatial_dims: 2 or 3.
        size: Spatial size of the inputs, e.g. ``[64, 64]``.
        bounds: ``(low, high)`` input range in which eps is measured.
        mean: In-graph normalisation mean (scalar or per channel).
        std: In-graph normalisation std.
        class_names: Names of the classes.
    """

    task: str | None = None
    num_classes: int | None = None
    in_channels: int | None = None
    spatial_dims: int | None = None
    size: list[int] | None = None
    bounds: tuple[float, float] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    class_names: list[str] | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> InputSpec:
        """Read ``key=value`` settings (``--model-input``): numbers, ``"0,1"`` lists, names.

        Raises:
            ValueError: For an unknown key (with "did you mean") or a value of the wrong kind.
        """
        allowed = [f.name for f in fields(cls)]
        out: dict[str, Any] = {}
        for key, value in params.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"unknown model input {key!r}{hint}; expected one of {', '.join(allowed)}"
                )
            out[key] = _read_value(key, value)
        return cls(**out)

    def merged(self, defaults: InputSpec) -> InputSpec:
        """These values, with ``defaults`` where a value is unset."""
        return replace(
            defaults, **{f.name: getattr(self, f.name) for f in fields(self) if _set(self, f.name)}
        )


def _set(spec: InputSpec, name: str) -> bool:
    return getattr(spec, name) is not None


def _read_value(key: str, value: Any) -> Any:
    """One ``--model-input`` value in the type of its field."""
    if key in ("task",):
        return str(value)
    if key in ("num_classes", "in_channels", "spatial_dims"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model input {key} must be an integer >= 1, got {value!r}")
        return value
    items = value.split(",") if isinstance(value, str) else value
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    if key == "class_names":
        return [str(v).strip() for v in items]
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ValueError(f"model input {key} must be numbers, got {value!r}") from None
    if key == "size":
        return [int(v) for v in numbers]
    if key == "bounds":
        if len(numbers) != 2 or numbers[0] >= numbers[1]:
            raise ValueError(f"model input bounds must be 'low,high' with low < high: {value!r}")
        return (numbers[0], numbers[1])
    return numbers


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from.

    Attributes:
        path: A weights file or archive (None only with ``model_file`` whose factory loads
            its own weights).
        arch: A zoo architecture for a plain state dict.
        model_file: ``"path/to/file.py:factory"``: the user's Python factory.
        params: Keyword arguments of the architecture or the factory.
        inputs: The input space given by the user.
    """

    path: Path | None = None
    arch: str | None = None
    model_file: str | None = None
    params: Mapping[str, Any] | None = None
    inputs: InputSpec = InputSpec()


def detect_format(path: PathLike) -> str:
    """What a model file is: ``"torchscript"``, ``"export"`` or ``"torch"`` (a ``torch.save``
    file: a medrobust checkpoint or a state dict), from the names inside the zip archive.

    Raises:
        FileNotFoundError: If the file does not exist.
        IsADirectoryError: If the path is a folder.
    """
    file = Path(path)
    if file.is_dir():
        best = file / "train" / "best.pt"
        hint = f" (did you mean {best}?)" if best.is_file() else ""
        raise IsADirectoryError(f"model path {file} is a folder, not a file{hint}")
    if not file.is_file():
        raise FileNotFoundError(f"model file not found: {file}")
    if not zipfile.is_zipfile(file):
        return "torch"
    with zipfile.ZipFile(file) as zf:
        names = zf.namelist()
    if any(n.endswith("/archive_format") or "/models/model.json" in n for n in names):
        return "export"
    if any("/code/__torch__" in n for n in names) or any(
        n.endswith("/constants.pkl") for n in names
    ):
        return "torchscript"
    return "torch"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _import_factory(spec: str) -> Callable[..., Any]:
    """Import ``file.py:name`` and return the callable ``name`` (runs the user's code).

    Raises:
        ValueError: For a spec without ``:name``, a missing name or a non-callable.
        FileNotFoundError: If the file does not exist.
    """
    file_text, sep, name = spec.rpartition(":")
    if not sep or not file_text or not name.isidentifier():
        raise ValueError(f"--model-file must be 'path/to/file.py:factory', got {spec!r}")
    file = Path(file_text)
    if not file.is_file():
        raise FileNotFoundError(f"model file {file} does not exist")
    logger.warning(
        "importing %s and calling %s(): this runs the Python code in that file with your "
        "permissions; use only files you trust",
        file,
        name,
    )
    module_name = (
        f"medrobust_user_model_{hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]}"
    )
    loader_spec = importlib.util.spec_from_file_location(module_name, file)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"cannot import {file} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    loader_spec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ValueError(f"{file} has no callable {name!r}; it defines {found[:12]}")
    return factory


def _probe(net: nn.Module, spec: InputSpec, source: str) -> InputSpec:
    """Run two zero inputs of the given size through ``net`` to check it accepts them and to
    read the class count and task from the output shape."""
    if not spec.size:
        return spec
    x = torch.zeros(2, spec.in_channels or 1, *spec.size)
    adapter = ModelAdapter(net, num_classes=spec.num_classes or 1, task="classification")
    try:
        with torch.no_grad():
            out = adapter.select_output(net(x))
    except Exception as exc:  # the user's model may raise anything on a wrong input
        raise ValueError(
            f"{source} does not accept inputs of shape {tuple(x.shape)} (from --model-input or "
            f"the data set): {type(exc).__name__}: {exc}"
        ) from exc
    task = spec.task or ("segmentation" if out.ndim > 2 else "classification")
    k = int(out.shape[1])
    if spec.num_classes is not None and k not in (spec.num_classes, 1):
        raise ValueError(
            f"{source} outputs {k} logits for inputs of shape {tuple(x.shape)} but "
            f"{spec.num_classes} classes were expected (from --model-input or the data set)"
        )
    return replace(spec, task=task, num_classes=spec.num_classes or k)


def _adapter(net: nn.Module, spec: InputSpec, source: str) -> ModelAdapter:
    spec = _probe(net, spec, source)
    if spec.num_classes is None:
        raise ValueError(
            f"the number of classes of {source} is unknown: give --model-input num_classes=K "
            "or --model-input size=H,W so a probe pass can read it"
        )
    return ModelAdapter(
        net,
        num_classes=spec.num_classes,
        task=spec.task or "classification",
        spatial_dims=spec.spatial_dims or 2,
        in_channels=spec.in_channels or 1,
        bounds=spec.bounds or (0.0, 1.0),
        mean=spec.mean,
        std=spec.std,
        class_names=spec.class_names,
    )


def _card(model: ModelAdapter, spec: InputSpec, architecture: str, **kw: Any) -> ModelCard:
    names = model.class_names
    return ModelCard.from_model(
        model,
        architecture=architecture,
        class_names=names if names is None or len(names) == model.num_classes else None,
        data=DataInfo(image_size=list(spec.size) if spec.size else None),
        **kw,
    )


def load_model(
    source: ModelSource, defaults: Callable[[], InputSpec] | None = None
) -> tuple[ModelAdapter, ModelCard]:
    """Load any supported model as an adapter in eval mode, with a card describing it.

    Args:
        source: The file and how to read it (see :class:`ModelSource`).
        defaults: Called (once, only when needed) for the input space of the data (classes,
            channels, dims, size); the user's :attr:`ModelSource.inputs` override it.

    Returns:
        ``(model, card)``; a medrobust checkpoint without overrides returns its own card.

    Raises:
        FileNotFoundError: For a missing file.
        CheckpointError: For a plain state dict without ``arch`` or ``model_file``, or weights
            that do not match the architecture.
        ValueError: For a bad ``model_file`` spec, a model that rejects the input size, or an
            unknown class count.
    """
    params = dict(source.params or {})

    def needed() -> InputSpec:
        return source.inputs.merged(defaults()) if defaults is not None else source.inputs

    if source.model_file:
        need = needed()
        built = _import_factory(source.model_file)(**params)
        net = built.net if isinstance(built, ModelAdapter) else built
        if not isinstance(net, nn.Module):
            raise ValueError(f"{source.model_file} returned a {type(built).__name__}, not a module")
        if source.path is not None:
            load_state_dict_into(net, source.path)
        model = _adapter(net.eval(), need, source.model_file)
        return model.eval(), _card(
            model,
            need,
            f"user:{Path(source.model_file).name}",
            notes=(f"built by the user's factory {source.model_file} with {params}"),
        )
    if source.path is None:
        raise ValueError("give a model file (a checkpoint, archive or state dict) or --model-file")
    path = Path(source.path)
    kind = detect_format(path)
    if kind in ("torchscript", "export"):
        if params:
            raise ValueError(f"{path} is a {kind} archive: it takes no --model-param")
        net = _load_archive(path, kind)
        need = needed()
        model = _adapter(net, need, str(path))
        note = f"{kind} archive {path.name} (sha256 {_file_sha256(path)[:16]}...)"
        return model.eval(), _card(model, need, kind, notes=note)
    if source.arch:
        return _zoo_model(path, source.arch, params, needed())
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        if "plain state_dict" not in str(exc) and "not a medrobust checkpoint" not in str(exc):
            raise
        raise CheckpointError(
            f"{path} is not a medrobust checkpoint (a plain state_dict or another torch.save "
            "file): give its "
            "architecture with --arch <zoo name> (see `medrobust list models`; --model-param "
            "for its settings, --model-input num_classes=K ... for its input space) or a "
            "Python factory with --model-file my_model.py:build"
        ) from exc


def _load_archive(path: Path, kind: str) -> nn.Module:
    """Load a TorchScript or ``torch.export`` archive (code the user trusts) on the CPU."""
    logger.warning(
        "loading the %s archive %s: it holds a compiled program that runs when the model is "
        "called; use only archives you trust",
        kind,
        path,
    )
    try:
        if kind == "torchscript":
            return torch.jit.load(str(path), map_location="cpu")
        module = torch.export.load(str(path)).module()
    except Exception as exc:  # torch raises many types for damaged archives
        raise CheckpointError(f"cannot load the {kind} archive {path}: {exc}") from exc
    return _Exported(module)


class _Exported(nn.Module):
    """An exported program's module, which refuses ``train()``/``eval()``: the mode is kept
    here and not passed on (an exported graph has its mode fixed at export)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> _Exported:
        """Record the mode only (the exported graph's is fixed)."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> Any:
        """The exported program's output."""
        return self.module(x)


def _zoo_model(
    path: Path, arch: str, params: Mapping[str, Any], spec: InputSpec
) -> tuple[ModelAdapter, ModelCard]:
    """A zoo architecture built for ``spec`` with the weights of ``path`` (state dict)."""
    if spec.num_classes is None:
        raise ValueError(f"--arch {arch} needs the number of classes: --model-input num_classes=K")
    model = create_model(
        arch,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels or 1,
        spatial_dims=spec.spatial_dims or 2,
        bounds=spec.bounds or (0.0, 1.0),
        mean=spec.mean,
        std=spec.std,
        class_names=spec.class_names,
        **params,
    )
    load_state_dict_into(model, path)
    model.eval()
    card = ModelCard.from_model(
        model,
        data=DataInfo(image_size=list(spec.size) if spec.size else None),
        notes=f"weights from the state dict {path.name}",
    )
    return model, card
