"""The real-anatomy example: the MNI152 template shipped by nilearn, in tissue classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("nilearn")

from medrobust.data import create_dataset
from medrobust.data.anatomy import TISSUE_CLASSES, MNI152Tissue, load_mni152_tissue


def test_tissue_labels_follow_the_probability_maps() -> None:
    from nilearn import datasets

    vol = load_mni152_tissue(resolution=4)
    gm = datasets.load_mni152_gm_template(resolution=4).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=4).get_fdata()
    assert vol.image.shape == vol.labels.shape == gm.shape
    assert float(vol.image.min()) >= 0.0 and float(vol.image.max()) == pytest.approx(1.0)
    assert set(np.unique(vol.labels).tolist()) == {0, 1, 2, 3}
    brain = vol.labels > 0
    # where grey matter clearly dominates the label is grey matter, likewise white matter
    assert np.all(vol.labels[brain & (gm > 0.8)] == 2)
    assert np.all(vol.labels[brain & (wm > 0.8)] == 3)
    # white matter is brighter than grey matter on T1
    assert vol.image[vol.labels == 3].mean() > vol.image[vol.labels == 2].mean()
    assert vol.affine.shape == (4, 4)


def test_slice_dataset_splits() -> None:
    parts = {s: MNI152Tissue(s, resolution=4) for s in ("train", "val", "test")}
    assert parts["train"].class_names == list(TISSUE_CLASSES)
    sizes = {s: len(d) for s, d in parts.items()}
    assert sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0
    ids = [set(d._ids) for d in parts.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2])
    item = parts["train"][0]
    assert item["image"].ndim == 3 and item["image"].shape[1] % 16 == 0
    assert item["mask"].dtype == torch.int64 and parts["train"].spatial_dims == 2
    assert parts["train"].spacing == (4.0, 4.0)
    # radiological display of the RAS volume: rows run anterior -> posterior (-y), columns
    # the patient's right -> left (-x)
    whole = MNI152Tissue("test", mode="volume", resolution=4, patch=None)[0]["image"][0]
    z = int(parts["train"]._ids[0].split(":")[1])
    expected = whole[:, :, z].T.flip(0, 1)
    assert torch.equal(item["image"][0], expected)


def test_volume_patches_and_registry() -> None:
    ds = create_dataset("mni152-tissue", split="train", mode="volume", resolution=4, patch=16)
    assert ds.spatial_dims == 3 and len(ds) > 0
    item = ds[0]
    assert item["image"].shape == (1, 16, 16, 16) and bool((item["mask"] > 0).any())
    whole = MNI152Tissue("test", mode="volume", resolution=4, patch=None)
    assert len(whole) == 1 and all(s % 16 == 0 for s in whole[0]["image"].shape[1:])
    assert ds.spacing == whole.spacing == (4.0, 4.0, 4.0)
    with pytest.raises(ValueError, match="mode"):
        MNI152Tissue("train", mode="patch", resolution=4)
    with pytest.raises(ValueError, match="resolution"):
        load_mni152_tissue(0)
