"""The per-batch checkpoint of an audit: records and report artifacts saved atomically after
every batch, resumed only by an audit of the same configuration."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medrobust._utils.io import atomic_torch_save
from medrobust.evaluation.artifacts import from_state, to_state
from medrobust.evaluation.records import Records

__all__ = ["config_hash", "load_state", "save_state"]

logger = logging.getLogger(__name__)


def config_hash(config: Mapping[str, Any]) -> str:
    """A short hash of a configuration (which checkpoint belongs to which audit)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_state(
    path: Path, config: Mapping[str, Any], records: Records, artifacts: Mapping[str, Any]
) -> None:
    """Checkpoint the records and the report artifacts atomically (loadable with
    ``weights_only=True``)."""
    state = {
        "format": "medrobust-eval-state",
        "config_hash": config_hash(config),
        "records": records.state(),
        "artifacts": to_state(dict(artifacts)),
    }
    atomic_torch_save(state, path)


def load_state(path: Path, config: Mapping[str, Any]) -> tuple[Records, dict[str, Any]] | None:
    """The records and report artifacts of an earlier run of the same configuration, or None
    if ``path`` is absent.

    Raises:
        ValueError: For a corrupt file, a foreign file or another configuration's checkpoint.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise ValueError(
            f"evaluation checkpoint {path} is corrupt or unreadable ({type(exc).__name__}); "
            "delete it to start over"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != "medrobust-eval-state":
        raise ValueError(f"{path} is not a medrobust evaluation checkpoint")
    if state.get("config_hash") != config_hash(config):
        raise ValueError(
            f"evaluation checkpoint {path} was written for a different configuration (attacks, "
            "budgets, model or seed changed); delete it or use another checkpoint path"
        )
    records = Records.from_state(state["records"])
    artifacts = from_state(state.get("artifacts") or {"__dict__": []})
    logger.info("resuming evaluation from %s: %d batches done", path, records.batches_done)
    return records, artifacts
