"""Every registered architecture keeps the zoo's contract: a new entry cannot escape it.

The tests iterate over :data:`medrobust.models.MODELS`. Each entry must declare its task
(``classification``, ``segmentation`` or ``multitask``) and the spatial dims it supports
(``2d``/``3d``) by tags; it must build with its defaults from a seed, run a forward pass of the
declared shape in every declared dim, rebuild identically from the same seed, and survive a
model-card round trip through JSON and a checkpoint round trip with identical outputs.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

import medrobust.models
from medrobust.models import (
    MODELS,
    ModelAdapter,
    ModelCard,
    architecture_of,
    create_model,
    list_models,
    load_checkpoint,
    save_checkpoint,
)
from medrobust.models.zoo import task_of_tags
from medrobust.types import Task

NAMES = list_models()
TASK_TAGS = {"classification", "segmentation", "multitask"}
DIM_TAGS = {"2d": 2, "3d": 3}
#: Input side used for each spatial dim (small, yet above every default network's downsampling).
SMALL_SIDE = {2: 32, 3: 16}
#: Architectures whose defaults need a larger input in some dim (total stride or norm layers).
LARGER_SIDE = {("basicunet", 3): 32, ("densenet121", 3): 32}
BATCH = 2


def _dims(name: str) -> list[int]:
    return [d for tag, d in DIM_TAGS.items() if tag in MODELS.get(name).tags]


def _input(name: str, spatial_dims: int, seed: int = 0) -> torch.Tensor:
    side = LARGER_SIDE.get((name, spatial_dims), SMALL_SIDE[spatial_dims])
    g = torch.Generator().manual_seed(seed)
    return torch.rand(BATCH, 1, *([side] * spatial_dims), generator=g)


def _cases() -> list[tuple[str, int]]:
    return [(name, d) for name in NAMES for d in _dims(name)]


def test_every_entry_declares_one_task_and_its_dims() -> None:
    assert len(NAMES) == len(MODELS) > 0
    for name in NAMES:
        tags = set(MODELS.get(name).tags)
        assert len(tags & TASK_TAGS) == 1, f"{name}: tags {sorted(tags)} name no single task"
        assert tags & set(DIM_TAGS), f"{name}: tags {sorted(tags)} declare no spatial dims"
        assert MODELS.get(name).summary, f"{name}: no summary"


@pytest.mark.parametrize(("name", "spatial_dims"), _cases())
def test_builds_with_defaults_and_forward_shape(name: str, spatial_dims: int) -> None:
    model = create_model(name, spatial_dims=spatial_dims, seed=0).eval()
    task = task_of_tags(MODELS.get(name).tags)
    assert isinstance(model, ModelAdapter)
    assert model.task is task and model.spatial_dims == spatial_dims
    assert (model.num_classes, model.in_channels) == (2, 1)  # the documented defaults
    x = _input(name, spatial_dims)
    with torch.no_grad():
        out = model(x)
    spatial = tuple(x.shape[2:])
    if task is Task.SEGMENTATION:
        assert out.shape == (BATCH, 2, *spatial)
    else:
        assert out.shape == (BATCH, 2)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    if task is Task.MULTITASK:
        with torch.no_grad():
            logits, seg = model.raw_forward(x)
        assert torch.equal(logits, out)
        assert seg.shape[0] == BATCH and tuple(seg.shape[2:]) == spatial
    spec = architecture_of(model)
    assert spec is not None and spec.name == name and spec.spatial_dims == spatial_dims


@pytest.mark.parametrize("name", NAMES)
def test_seeded_build_card_and_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    dims = _dims(name)[0]
    model = create_model(name, spatial_dims=dims, seed=3).eval()
    same = create_model(name, spatial_dims=dims, seed=3)
    other = create_model(name, spatial_dims=dims, seed=4)
    state, same_state = model.state_dict(), same.state_dict()
    assert state.keys() == same_state.keys()
    assert all(torch.equal(state[k], same_state[k]) for k in state)
    assert any(not torch.equal(state[k], v) for k, v in other.state_dict().items())

    card = ModelCard.from_model(model, metrics={"val_accuracy": 0.5})
    assert card.architecture == name and card.task == model.task.value
    assert card.spatial_dims == dims
    text = json.dumps(card.to_dict(), allow_nan=False)
    assert ModelCard.from_dict(json.loads(text)) == card

    path = save_checkpoint(tmp_path / "model.pt", model, card)
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card == card and loaded.task is model.task
    x = _input(name, dims, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("name", medrobust.models.__all__)
def test_public_api_is_documented(name: str) -> None:
    obj = getattr(medrobust.models, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        doc = obj.__doc__ or ""  # not inspect.getdoc: it falls back to the base class's
        assert doc.strip() and not doc.startswith(f"{obj.__name__}("), f"{name} is undocumented"
