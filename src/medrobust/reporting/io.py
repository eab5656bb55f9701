"""Example images of a report and their ``.npz`` files.

The atomic writers and the JSON conversion live in :mod:`medrobust._utils.io` (one writer family
for every layer); they are re-exported here for the report's callers.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrobust._utils.io import (
    _atomic_target,
    read_json,
    to_jsonable,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "ExampleImages",
    "load_examples_npz",
    "read_json",
    "save_examples_npz",
    "to_jsonable",
    "write_json_atomic",
    "write_text_atomic",
]


@dataclasses.dataclass
class ExampleImages:
    """One clean/adversarial pair to show in a report.

    Attributes:
        clean: The clean input, channel first: ``(C, H, W)`` or ``(C, H, W, D)``.
        adversarial: The adversarial input, same shape as ``clean``.
        label: True class index.
        clean_pred: Predicted class of the clean input.
        adv_pred: Predicted class of the adversarial input.
        attack: Name of the attack that produced ``adversarial``.
        eps: Budget of the attack, in the model's input space.
        id: Identifier of the sample (file name, index); may be empty.
        class_names: Names of the classes, indexable by class index; may be empty (indices are
            shown instead).
        eps_display: How to print ``eps`` (e.g. ``"8/255"``); empty for a plain number.

    Torch tensors are accepted for ``clean`` and ``adversarial`` and converted to numpy arrays.

    Raises:
        ValueError: If the arrays differ in shape, are not 3-D or 4-D, are empty or not finite.
        TypeError: If a field has the wrong type.
    """

    clean: np.ndarray
    adversarial: np.ndarray
    label: int
    clean_pred: int
    adv_pred: int
    attack: str
    eps: float
    id: str = ""
    class_names: Sequence[str] = ()
    eps_display: str = ""

    def __post_init__(self) -> None:
        self.clean = _as_image_array(self.clean, "clean")
        self.adversarial = _as_image_array(self.adversarial, "adversarial")
        if self.clean.shape != self.adversarial.shape:
            raise ValueError(
                f"example {self.id!r}: clean and adversarial images must have the same shape, got "
                f"{self.clean.shape} and {self.adversarial.shape}"
            )
        for name in ("label", "clean_pred", "adv_pred"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"example {self.id!r}: {name} must be an int, got {value!r}")
            setattr(self, name, int(value))
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float, np.floating)):
            raise TypeError(f"example {self.id!r}: eps must be a number, got {self.eps!r}")
        self.eps = float(self.eps)
        self.attack = str(self.attack)
        self.id = str(self.id)
        self.eps_display = str(self.eps_display)
        if isinstance(self.class_names, str):
            raise TypeError("class_names must be a sequence of strings, not one string")
        self.class_names = tuple(str(c) for c in self.class_names)

    def class_name(self, index: int) -> str:
        """The name of class ``index``, or the index itself when no name is known."""
        if 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)


def _as_image_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor without importing torch
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(value).__name__}")
    if value.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be channel-first (C, H, W) or (C, H, W, D), got shape {value.shape}"
        )
    if value.size == 0:
        raise ValueError(f"{name} is empty: shape {value.shape}")
    if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    arr = value.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


# --------------------------------------------------------------------------------------------
# examples as .npz
# --------------------------------------------------------------------------------------------
_NPZ_SCALARS = ("label", "clean_pred", "adv_pred", "eps")
_NPZ_STRINGS = ("attack", "id", "eps_display")


def save_examples_npz(path: str | os.PathLike[str], examples: Sequence[ExampleImages]) -> Path:
    """Save examples to one compressed ``.npz`` file atomically (no pickled objects).

    Layout: ``clean_000``/``adversarial_000``... per example (shapes may differ), and the arrays
    ``label``, ``clean_pred``, ``adv_pred`` (int64), ``eps`` (float64), ``attack``, ``id``,
    ``eps_display`` (unicode) of length ``N``, and ``class_names_000``... (unicode). Read it back
    with :func:`load_examples_npz`.

    Args:
        path: Destination file (written exactly there, even without a ``.npz`` suffix).
        examples: The examples to save; may be empty.

    Returns:
        The destination as a :class:`~pathlib.Path`.

    Raises:
        TypeError: If an element is not an :class:`ExampleImages`.
    """
    arrays: dict[str, np.ndarray] = {}
    for i, ex in enumerate(examples):
        if not isinstance(ex, ExampleImages):
            raise TypeError(f"examples[{i}] must be an ExampleImages, got {type(ex).__name__}")
        arrays[f"clean_{i:03d}"] = ex.clean
        arrays[f"adversarial_{i:03d}"] = ex.adversarial
        arrays[f"class_names_{i:03d}"] = np.asarray(list(ex.class_names), dtype=np.str_)
    arrays["label"] = np.asarray([ex.label for ex in examples], dtype=np.int64)
    arrays["clean_pred"] = np.asarray([ex.clean_pred for ex in examples], dtype=np.int64)
    arrays["adv_pred"] = np.asarray([ex.adv_pred for ex in examples], dtype=np.int64)
    arrays["eps"] = np.asarray([ex.eps for ex in examples], dtype=np.float64)
    for key in _NPZ_STRINGS:
        arrays[key] = np.asarray([getattr(ex, key) for ex in examples], dtype=np.str_)
    with _atomic_target(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    return Path(path)


def load_examples_npz(path: str | os.PathLike[str]) -> list[ExampleImages]:
    """Load examples written by :func:`save_examples_npz`.

    Args:
        path: The ``.npz`` file.

    Returns:
        The examples in their saved order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not an examples archive (missing arrays, bad zip).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"examples file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as data:
            missing = [k for k in (*_NPZ_SCALARS, *_NPZ_STRINGS) if k not in data.files]
            if missing:
                raise ValueError(f"{p} is not a medrobust examples file: missing arrays {missing}")
            n = int(data["label"].shape[0])
            out = []
            for i in range(n):
                out.append(
                    ExampleImages(
                        clean=data[f"clean_{i:03d}"],
                        adversarial=data[f"adversarial_{i:03d}"],
                        label=int(data["label"][i]),
                        clean_pred=int(data["clean_pred"][i]),
                        adv_pred=int(data["adv_pred"][i]),
                        attack=str(data["attack"][i]),
                        eps=float(data["eps"][i]),
                        id=str(data["id"][i]),
                        class_names=[str(c) for c in data[f"class_names_{i:03d}"]],
                        eps_display=str(data["eps_display"][i]),
                    )
                )
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read examples from {p}: {err}") from err
    return out
