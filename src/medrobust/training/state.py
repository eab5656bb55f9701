"""The resumable state of a training run: what ``last.pt`` holds besides the weights, and the
per-epoch history file.

``last.pt`` is a medrobust checkpoint whose ``extra`` holds :data:`STATE_KEY`: the epoch
counters, the best score so far, the resolved config, the optimiser, schedule and recipe states,
every random generator's state and the history. Resuming restores all of them, so an
interrupted run ends with exactly the weights of an uninterrupted one (same device and software).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medrobust._utils.io import write_text_atomic
from medrobust.training.config import RESUMABLE_CHANGES, TrainConfig

__all__ = [
    "STATE_KEY",
    "STATE_VERSION",
    "Generators",
    "Progress",
    "check_resumable",
    "write_history",
]

STATE_KEY = "training_state"
STATE_VERSION = 1


@dataclass
class Progress:
    """Where a run stands after a finished epoch (the counters saved in ``last.pt``).

    Attributes:
        history: Per-epoch records.
        epoch: Last finished epoch (0 before the first).
        global_step: Optimisation steps so far.
        best_score: Monitored value of the best epoch (None if undefined).
        best_epoch: Epoch of ``best.pt`` (0 before the first).
        since_best: Epochs since the best one.
        stopped: Whether the patience ran out.
        wall_before: Wall time of earlier sessions, in seconds.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int = 0
    since_best: int = 0
    stopped: bool = False
    wall_before: float = 0.0

    def to_state(self, wall: float) -> dict[str, Any]:
        """The counters as saved in ``last.pt`` (with the wall time so far)."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "epochs_since_best": self.since_best,
            "stopped_early": self.stopped,
            "wall_time_s": wall,
            "history": self.history,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Progress:
        """Read the counters back from a saved state."""
        return cls(
            history=[dict(r) for r in state["history"]],
            epoch=int(state["epoch"]),
            global_step=int(state["global_step"]),
            best_score=state["best_score"],
            best_epoch=int(state["best_epoch"]),
            since_best=int(state["epochs_since_best"]),
            stopped=bool(state["stopped_early"]),
            wall_before=float(state["wall_time_s"]),
        )


@dataclass
class Generators:
    """Every random generator of a run: the forked global one (dropout), the CUDA one, the
    shuffle's, the recipe's and those of a given training loader."""

    device: torch.device
    data: torch.Generator
    recipe: torch.Generator
    loader: list[torch.Generator] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """The states of all generators."""
        cuda: torch.Tensor | None = None
        if self.device.type == "cuda":
            cuda = torch.cuda.get_rng_state(self.device)
        return {
            "torch": torch.get_rng_state(),
            "cuda": cuda,
            "data": self.data.get_state(),
            "recipe": self.recipe.get_state(),
            "loader": [g.get_state() for g in self.loader],
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` output.

        Raises:
            ValueError: If the training loader has another number of generators than saved.
        """
        torch.set_rng_state(state["torch"])
        if self.device.type == "cuda" and state.get("cuda") is not None:
            torch.cuda.set_rng_state(state["cuda"], self.device)
        self.data.set_state(state["data"])
        self.recipe.set_state(state["recipe"])
        saved = list(state.get("loader", []))
        if len(saved) != len(self.loader):
            raise ValueError(
                f"the training loader has {len(self.loader)} generator(s) but the "
                f"checkpoint saved {len(saved)}; resume with the same kind of loader"
            )
        for gen, s in zip(self.loader, saved, strict=True):
            gen.set_state(s)


def check_resumable(path: Path, state: Any, config: TrainConfig) -> None:
    """Check that the saved state of ``path`` can be resumed with ``config``.

    Raises:
        ValueError: If there is no state of this version, a setting other than
            :data:`~medrobust.training.config.RESUMABLE_CHANGES` differs, or the run already
            trained more epochs than ``config.epochs``.
    """
    if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
        raise ValueError(
            f"{path} holds no training state of this medrobust version; it cannot be resumed"
        )
    saved = TrainConfig.from_dict(state["config"]).to_dict()
    now = config.to_dict()
    diffs = [
        f"{k}: saved {saved[k]!r}, now {now[k]!r}"
        for k in now
        if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]
    ]
    if diffs:
        raise ValueError(
            f"cannot resume {path} with a different config ({'; '.join(diffs)}); only "
            f"{sorted(RESUMABLE_CHANGES)} may change"
        )
    if int(state["epoch"]) > config.epochs:
        raise ValueError(
            f"{path} has already trained {state['epoch']} epochs, more than "
            f"config.epochs={config.epochs}"
        )


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_history(path: Path, history: Iterable[Mapping[str, Any]]) -> None:
    """Write ``history.json`` atomically (non-finite numbers become ``null``)."""
    rows = [{k: _json_value(v) for k, v in r.items()} for r in history]
    write_text_atomic(path, json.dumps(rows, indent=2, allow_nan=False) + "\n")
