"""Tests of the labelled/unlabelled split, the unlabelled stream and their use by ``fit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medrobust.defenses.data import (
    UnlabelledStream,
    UnlabelledView,
    check_labelled_fraction,
    dataset_labels,
    labelled_split,
)
from medrobust.models import create_model
from medrobust.training import TrainConfig, fit


class Toy(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Learnable toy images: class 1 has a bright centre. Optional ``targets``."""

    def __init__(
        self, n: int, seed: int = 0, labels: list[int] | None = None, with_targets: bool = True
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.tensor(labels) if labels is not None else torch.arange(n) % 2
        self.images = torch.rand(len(self.labels), 1, 8, 8, generator=g) * 0.5
        self.images[:, :, 2:6, 2:6] += 0.5 * self.labels.float()[:, None, None, None]
        if with_targets:
            self.targets = self.labels.numpy()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": self.labels[i], "id": f"t{i}"}


def test_check_labelled_fraction() -> None:
    assert check_labelled_fraction(1) == 1.0
    assert check_labelled_fraction(0.25) == 0.25
    for bad in (0, 0.0, -0.1, 1.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"labelled_fraction must be in \(0, 1\]"):
            check_labelled_fraction(bad)
    with pytest.raises(TypeError, match="labelled_fraction must be a number"):
        check_labelled_fraction("0.5")


def test_labelled_split_is_stratified_seeded_and_partitions() -> None:
    labels = [0] * 30 + [1] * 10
    ds = Toy(40, labels=labels)
    lab, rest = labelled_split(ds, 0.2, seed=1)
    assert rest is not None
    idx = list(lab.indices)  # type: ignore[attr-defined]
    assert sorted(idx) == idx
    assert len(set(idx) | set(rest.indices)) == 40 and not set(idx) & set(rest.indices)
    kept = np.asarray(labels)[idx]
    assert (kept == 0).sum() == 6 and (kept == 1).sum() == 2  # 20% of each class
    again, _ = labelled_split(ds, 0.2, seed=1)
    other, _ = labelled_split(ds, 0.2, seed=2)
    assert list(again.indices) == idx  # type: ignore[attr-defined]
    assert list(other.indices) != idx  # type: ignore[attr-defined]
    # every class keeps at least one label
    tiny, _ = labelled_split(ds, 0.01, seed=0)
    assert sorted(set(np.asarray(labels)[list(tiny.indices)])) == [0, 1]  # type: ignore[attr-defined]
    full, none = labelled_split(ds, 1.0)
    assert none is None and len(full) == 40  # type: ignore[arg-type]


def test_labelled_split_reads_labels_without_targets() -> None:
    ds = Toy(12, with_targets=False)
    assert dataset_labels(ds).tolist() == (torch.arange(12) % 2).tolist()
    sub = torch.utils.data.Subset(Toy(12), [3, 4, 5])
    assert dataset_labels(sub).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="cannot split an empty data set"):
        labelled_split(Toy(0, labels=[]), 0.5)
    with pytest.raises(ValueError, match=r"labelled_fraction must be in \(0, 1\]"):
        labelled_split(Toy(4), 1.5)


def test_unlabelled_view_hides_labels() -> None:
    view = UnlabelledView(Toy(6), [1, 3])
    assert len(view) == 2
    item = view[0]
    assert set(item) == {"image", "id"} and item["id"] == "t1"
    assert set(UnlabelledView(torch.rand(3, 1, 4, 4))[2]) == {"image"}  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        UnlabelledView(Toy(3), [5])


def test_unlabelled_stream_draws_seeded_batches_without_replacement() -> None:
    stream = UnlabelledStream(Toy(10))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = stream.sample(4, g1), stream.sample(4, g2)
    assert a.shape == (4, 1, 8, 8) and torch.equal(a, b)
    assert not torch.equal(stream.sample(4, g1), a)  # a fresh batch every step
    whole = stream.sample(50, torch.Generator().manual_seed(3))
    assert whole.shape[0] == 10  # capped at the data set, no repeats
    assert len({tuple(x.flatten().tolist()) for x in whole}) == 10
    with pytest.raises(ValueError, match="the unlabelled data set is empty"):
        UnlabelledStream(UnlabelledView(Toy(0, labels=[])))


def _card(run: Path) -> dict[str, Any]:
    return json.loads((run / "model_card.json").read_text())


def test_fit_trains_ssat_on_the_rest_of_a_labelled_fraction(tmp_path: Path) -> None:
    model = create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0)
    cfg = TrainConfig(
        epochs=1,
        batch_size=8,
        recipe="ssat",
        labelled_fraction=0.25,
        recipe_params={"eps": 0.02, "eps_min": None},
    )
    result = fit(model, Toy(32), Toy(8, seed=1), cfg, tmp_path / "run")
    sizes = _card(tmp_path / "run")["data"]["split_sizes"]
    assert sizes == {"unlabelled": 24, "train": 8, "val": 8}
    assert result.history[0]["train_pseudo_kept"] == 1.0
    assert (
        json.loads((tmp_path / "run" / "train_config.json").read_text())["labelled_fraction"]
        == 0.25
    )


def test_fit_leaves_the_rest_out_for_supervised_recipes(tmp_path: Path) -> None:
    model = create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=8, labelled_fraction=0.5)
    fit(model, Toy(32), Toy(8, seed=1), cfg, tmp_path / "run")
    assert _card(tmp_path / "run")["data"]["split_sizes"] == {"train": 16, "val": 8}


def test_fit_with_explicit_unlabelled_data_and_bad_inputs(tmp_path: Path) -> None:
    model = create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0)
    ssat = TrainConfig(
        epochs=1, batch_size=8, recipe="ssat", recipe_params={"eps": 0.02, "eps_min": None}
    )
    fit(model, Toy(16), Toy(8, seed=1), ssat, tmp_path / "a", unlabelled=Toy(12, seed=5))
    assert _card(tmp_path / "a")["data"]["split_sizes"]["unlabelled"] == 12
    with pytest.raises(ValueError, match="recipe 'ssat' needs unlabelled images"):
        fit(model, Toy(16), Toy(8, seed=1), ssat, tmp_path / "b")
    with pytest.raises(ValueError, match="the unlabelled data set is empty"):
        fit(model, Toy(16), Toy(8, seed=1), ssat, tmp_path / "c", unlabelled=Toy(0, labels=[]))
    with pytest.raises(TypeError, match="unlabelled must be a map-style torch Dataset"):
        fit(
            model,
            Toy(16),
            Toy(8, seed=1),
            ssat,
            tmp_path / "d",
            unlabelled=torch.utils.data.DataLoader(Toy(4)),
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recipe 'standard' does not use unlabelled data"):
        fit(
            model,
            Toy(16),
            Toy(8, seed=1),
            TrainConfig(epochs=1, batch_size=8),
            tmp_path / "e",
            unlabelled=Toy(4),
        )
    with pytest.raises(TypeError, match="needs the training set as a map-style Dataset"):
        fit(
            model,
            torch.utils.data.DataLoader(Toy(16), batch_size=8),
            Toy(8, seed=1),
            TrainConfig(epochs=1, batch_size=8, labelled_fraction=0.5),
            tmp_path / "f",
        )
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"labelled_fraction must be in \(0, 1\]"):
            TrainConfig(labelled_fraction=bad)


def test_ssat_run_resumes_exactly(tmp_path: Path) -> None:
    def model() -> Any:
        return create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0)

    def cfg(epochs: int) -> TrainConfig:
        return TrainConfig(
            epochs=epochs,
            batch_size=8,
            recipe="ssat",
            labelled_fraction=0.5,
            recipe_params={"eps": 0.02, "eps_min": 0.01},
            seed=4,
        )

    straight = model()
    fit(straight, Toy(24), Toy(8, seed=1), cfg(2), tmp_path / "a")
    resumed = model()
    fit(resumed, Toy(24), Toy(8, seed=1), cfg(1), tmp_path / "b")
    fit(resumed, Toy(24), Toy(8, seed=1), cfg(2), tmp_path / "b", resume=True)
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
