"""Example images of a report and their ``.npz`` files.

The atomic writers and the JSON conversion live in :mod:`medrobust._utils.io` (one writer family
for every layer); they are re-exported here for the report's callers.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medrobust._utils.examples import ExampleImages
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
