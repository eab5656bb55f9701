"""Report artifacts of an audit (examples, kept adversarial examples, maps) in a form that a
checkpoint loaded with ``torch.load(..., weights_only=True)`` can hold, and back.

Numpy arrays become tensors (string arrays become lists of strings), the example records become
tagged dicts; only the record types listed in :data:`RECORD_TYPES` are rebuilt (by an explicit
table, never by a name looked up at run time), so a resumed audit writes the same report
examples, worst-case adversarial examples and explanation maps as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from medrobust._utils.examples import ExampleImages, ExplanationExample, SegmentationExample

__all__ = ["RECORD_TYPES", "from_state", "to_state"]

#: The record types an artifact may contain.
RECORD_TYPES: dict[str, type] = {
    "ExampleImages": ExampleImages,
    "SegmentationExample": SegmentationExample,
    "ExplanationExample": ExplanationExample,
}


def to_state(obj: Any) -> Any:
    """``obj`` as tensors, lists, dicts and plain values (see the module docstring).

    Raises:
        TypeError: For a value that has no such form (the message names its type).
    """
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "USO":
            return {"__strings__": [str(v) for v in obj.reshape(-1)], "shape": list(obj.shape)}
        return {"__array__": torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        if RECORD_TYPES.get(name) is not type(obj):
            raise TypeError(f"cannot checkpoint a {name}: not one of {sorted(RECORD_TYPES)}")
        fields = {f.name: to_state(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"__record__": name, "fields": fields}
    if isinstance(obj, dict):
        return {"__dict__": [[to_state(k), to_state(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [to_state(v) for v in obj]
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def from_state(obj: Any) -> Any:
    """The inverse of :func:`to_state`.

    Raises:
        ValueError: For a record type that is not in :data:`RECORD_TYPES`.
    """
    if isinstance(obj, list):
        return [from_state(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return obj["__array__"].numpy()
    if "__strings__" in obj:
        return np.asarray(obj["__strings__"], dtype=str).reshape(obj["shape"])
    if "__dict__" in obj:
        return {from_state(k): from_state(v) for k, v in obj["__dict__"]}
    if "__record__" in obj:
        cls = RECORD_TYPES.get(str(obj["__record__"]))
        if cls is None:
            raise ValueError(f"unknown record type {obj['__record__']!r} in the checkpoint")
        return cls(**{k: from_state(v) for k, v in obj["fields"].items()})
    raise ValueError(f"unexpected entry in the checkpoint's artifacts: keys {sorted(obj)}")
