"""Tests of the shared data-set pieces: ArrayDataset validation and the stratified split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.data import ArrayDataset, stratified_split
from medrobust.data.base import check_split


def test_array_dataset_items() -> None:
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[1, 1:3, 1:3] = 1
    ds = ArrayDataset(
        images, np.array([[1], [0]]), ["a", "b"], masks=masks, name="toy", split="val"
    )
    assert len(ds) == 2 and ds.num_classes == 2 and ds.in_channels == 1 and ds.has_masks
    item = ds[0]
    torch.testing.assert_close(item["image"], torch.from_numpy(images[:1].astype(np.float32) / 255))
    assert item["label"].item() == 1 and item["id"] == "toy/val/00000"
    assert ds[1]["mask"].dtype == torch.int64 and int(ds[1]["mask"].sum()) == 4
    floats = ArrayDataset(np.full((3, 2, 5, 5), 0.25, np.float32), [0, 1, 2], ["x", "y", "z"])
    assert floats.in_channels == 2 and float(floats[2]["image"].mean()) == 0.25
    assert "ArrayDataset(name='arrays'" in repr(floats)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (np.zeros((0, 4, 4), np.uint8), np.zeros(0, int), "the data set is empty"),
        (np.full((2, 4, 4), np.nan, np.float32), [0, 1], "images contain 32 NaN"),
        (np.full((2, 4, 4), 2.0, np.float32), [0, 1], r"float images must lie in \[0, 1\]"),
        (np.zeros((2, 4, 4), np.int16), [0, 1], "images must be uint8"),
        (np.zeros((2, 4), np.uint8), [0, 1], r"shape \(N, H, W\) or \(N, C, H, W\), got \(2, 4\)"),
        (
            np.zeros((2, 4, 4), np.uint8),
            [0, 2],
            r"label value\(s\) \[2\] are outside the class list",
        ),
        (np.zeros((2, 4, 4), np.uint8), [0, -1], r"label value\(s\) \[-1\]"),
        (np.zeros((2, 4, 4), np.uint8), [0.0, np.nan], "labels contain 1 NaN"),
        (np.zeros((2, 4, 4), np.uint8), [0.5, 1.0], "labels must be whole numbers"),
        (np.zeros((2, 4, 4), np.uint8), [0, 1, 1], "2 images but 3 labels"),
        (np.zeros((2, 4, 4), np.uint8), np.zeros((2, 3)), r"shape \(2, 3\).*multi-label"),
    ],
)
def test_array_dataset_rejects_bad_arrays(images: np.ndarray, labels: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ArrayDataset(images, np.asarray(labels), ["a", "b"])


def test_array_dataset_rejects_bad_class_lists_and_masks() -> None:
    images = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="the class list is empty"):
        ArrayDataset(images, [0, 0], [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class names must be unique"):
        ArrayDataset(images, np.array([0, 0]), ["a", "a"])
    with pytest.raises(ValueError, match=r"masks have shape \(2, 3, 3\), expected \(2, 4, 4\)"):
        ArrayDataset(images, np.array([0, 0]), ["a"], masks=np.zeros((2, 3, 3), int))


def test_check_split() -> None:
    assert check_split("test") == "test"
    with pytest.raises(ValueError, match=r"unknown split 'trian' \(did you mean 'train'\?\)"):
        check_split("trian")
    with pytest.raises(ValueError, match="expected one of 'train', 'val', 'test'"):
        check_split(3)


def test_stratified_split_properties() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 7)
    parts = stratified_split(labels, (0.7, 0.1, 0.2), seed=0)
    everything = np.concatenate(list(parts.values()))
    assert sorted(everything.tolist()) == list(range(len(labels)))  # disjoint and complete
    assert [len(parts[s]) for s in ("train", "val", "test")] == [61, 9, 17]
    for cls, n in ((0, 50), (1, 30)):
        counts = [int((labels[parts[s]] == cls).sum()) for s in ("train", "val", "test")]
        assert counts == [round(0.7 * n), round(0.1 * n), round(0.2 * n)]
    again = stratified_split(labels, (0.7, 0.1, 0.2), seed=0)
    other = stratified_split(labels, (0.7, 0.1, 0.2), seed=1)
    assert all(np.array_equal(parts[s], again[s]) for s in parts)
    assert not np.array_equal(parts["test"], other["test"])
    with pytest.raises(ValueError, match="fractions must be three non-negative numbers"):
        stratified_split(labels, (0.5, 0.5), seed=0)
    with pytest.raises(ValueError, match="fractions must sum to 1"):
        stratified_split(labels, (0.5, 0.4, 0.4), seed=0)
