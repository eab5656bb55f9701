"""Fixtures of the command tests: a saved classifier that Grad-CAM can explain."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrobust.models import save_checkpoint
from medrobust.models.card import DataInfo, ModelCard
from tests.explain.conftest import Trained, trained_cnn  # noqa: F401 (re-exported fixture)


@pytest.fixture(scope="session")
def explain_checkpoint(
    trained_cnn: Trained,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The trained small CNN of the explanation tests, saved with a 32x32 bus-phantom card."""
    card = ModelCard.from_model(
        trained_cnn.model, data=DataInfo(name="bus-phantom", image_size=[32, 32])
    )
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", trained_cnn.model, card)
