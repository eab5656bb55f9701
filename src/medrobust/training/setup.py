"""The checks and settings around one training run: arguments, the run folder, and the
reproducible context (forked generators, deterministic algorithms) that :func:`fit` runs in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medrobust.models.adapter import ModelAdapter
from medrobust.training.config import TrainConfig

__all__ = ["check_arguments", "check_run_dir", "derived_seed", "reproducible"]


def check_arguments(
    model: Any, config: Any, card_info: Any, progress: Any, unlabelled: Any
) -> None:
    """Check the types of :func:`~medrobust.training.fit`'s arguments.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the unlabelled data set is empty.
    """
    if not isinstance(model, ModelAdapter):
        raise TypeError(
            f"model must be a medrobust ModelAdapter, got {type(model).__name__}; build it with "
            "medrobust.models.create_model"
        )
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if card_info is not None and not isinstance(card_info, Mapping):
        raise TypeError(f"card_info must be a dict or None, got {type(card_info).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")
    if unlabelled is not None:
        if isinstance(unlabelled, DataLoader) or not isinstance(unlabelled, Dataset):
            raise TypeError(
                f"unlabelled must be a map-style torch Dataset, got {type(unlabelled).__name__}"
            )
        if not hasattr(unlabelled, "__len__") or len(unlabelled) == 0:
            raise ValueError(
                "the unlabelled data set is empty; give it some images or leave unlabelled=None"
            )


def check_run_dir(run: Path, *, resume: bool, overwrite: bool) -> Path:
    """Check that ``run`` can hold a fresh run, or a resumed one.

    Raises:
        NotADirectoryError: If ``run`` is a file.
        FileNotFoundError: If ``resume`` is set and there is no ``last.pt``.
        FileExistsError: If the folder holds a run and neither flag is set.
    """
    if run.exists() and not run.is_dir():
        raise NotADirectoryError(f"run_dir {run} exists and is not a folder")
    last_path = run / "last.pt"
    if resume and not last_path.is_file():
        raise FileNotFoundError(
            f"cannot resume: {last_path} does not exist; start without resume=True"
        )
    if not resume and not overwrite and (last_path.exists() or (run / "best.pt").exists()):
        raise FileExistsError(
            f"{run} already holds a training run; pass resume=True to continue it, "
            "overwrite=True to start again, or choose another folder"
        )
    return run


@contextlib.contextmanager
def reproducible(device: torch.device) -> Iterator[None]:
    """Fork the global generators and switch deterministic algorithms on, restoring both."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    fork_devices: list[int] = []
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench


def derived_seed(seed: int, stream: int) -> int:
    """A seed for the generator ``stream`` of a run seeded with ``seed``."""
    return (seed * 1_000_003 + 7919 * stream) % (2**63)
