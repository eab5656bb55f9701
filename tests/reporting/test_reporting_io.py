"""Tests of medrobust.reporting.io: JSON conversion, atomic writes, examples archives."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.reporting import (
    ExampleImages,
    load_examples_npz,
    read_json,
    save_examples_npz,
    to_jsonable,
    write_json_atomic,
    write_text_atomic,
)
from medrobust.types import Norm


@dataclasses.dataclass
class _Cfg:
    eps: float
    norm: Norm


def test_to_jsonable_converts_numpy_torch_and_non_finite() -> None:
    obj = {
        "a": np.float32(0.5),
        "b": np.int64(3),
        "c": torch.tensor(2.5),
        "d": torch.tensor([1, 2]),
        "e": np.array([[1.0, np.nan]]),
        "f": (float("inf"), -float("inf"), float("nan")),
        "g": Path("runs/x"),
        "h": _Cfg(eps=8 / 255, norm=Norm.LINF),
        "i": np.bool_(True),
        1: "int key",
    }
    out = to_jsonable(obj)
    assert out == {
        "a": 0.5,
        "b": 3,
        "c": 2.5,
        "d": [1, 2],
        "e": [[1.0, None]],
        "f": [None, None, None],
        "g": "runs/x",
        "h": {"eps": 8 / 255, "norm": "linf"},
        "i": True,
        "1": "int key",
    }
    assert type(out["b"]) is int and type(out["a"]) is float and type(out["i"]) is bool
    json.dumps(out, allow_nan=False)  # must not raise


def test_to_jsonable_names_the_bad_value() -> None:
    with pytest.raises(TypeError, match=r"\$\['results'\]\[1\]\['x'\]: cannot convert a set"):
        to_jsonable({"results": [{}, {"x": {1, 2}}]})
    with pytest.raises(TypeError, match="dict keys must be strings or numbers"):
        to_jsonable({(1, 2): 3})


def test_write_json_atomic_roundtrip_and_null(tmp_path: Path) -> None:
    target = tmp_path / "run" / "metrics.json"
    returned = write_json_atomic(target, {"auc": float("nan"), "acc": np.float64(0.75), "ok": "é"})
    assert returned == target
    text = target.read_text(encoding="utf-8")
    assert "NaN" not in text and '"auc": null' in text and "é" in text
    assert read_json(target) == {"auc": None, "acc": 0.75, "ok": "é"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]  # no temp left
    assert (target.stat().st_mode & 0o777) == 0o644


def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"v": 1})

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(target, {"v": 2})
    monkeypatch.undo()
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with pytest.raises(TypeError, match="cannot convert"):
        write_json_atomic(target, {"v": object()})
    assert read_json(target) == {"v": 1}
    with pytest.raises(IsADirectoryError):
        write_text_atomic(tmp_path, "x")


def test_read_json_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n "b": }', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.json is not valid JSON: .* line 2, column 7"):
        read_json(bad)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        read_json(tmp_path)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_json(binary)


def test_examples_npz_roundtrip(tmp_path: Path, examples: list[ExampleImages]) -> None:
    target = tmp_path / "examples_archive"  # written exactly here, no suffix added
    save_examples_npz(target, examples)
    assert target.is_file() and not (tmp_path / "examples_archive.npz").exists()
    with np.load(target, allow_pickle=False) as data:  # no pickled objects inside
        assert data["label"].tolist() == [ex.label for ex in examples]
    loaded = load_examples_npz(target)
    assert len(loaded) == len(examples)
    for a, b in zip(loaded, examples, strict=True):
        np.testing.assert_array_equal(a.clean, b.clean)
        np.testing.assert_array_equal(a.adversarial, b.adversarial)
        assert (a.label, a.clean_pred, a.adv_pred, a.attack, a.id, a.eps_display) == (
            b.label,
            b.clean_pred,
            b.adv_pred,
            b.attack,
            b.id,
            b.eps_display,
        )
        assert a.eps == pytest.approx(b.eps) and a.class_names == b.class_names
    save_examples_npz(tmp_path / "empty.npz", [])
    assert load_examples_npz(tmp_path / "empty.npz") == []


def test_examples_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.npz"):
        load_examples_npz(tmp_path / "nothing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(2))
    with pytest.raises(ValueError, match="not a medrobust examples file"):
        load_examples_npz(other)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"junk\.npz"):
        load_examples_npz(junk)
    with pytest.raises(TypeError, match=r"examples\[0\] must be an ExampleImages"):
        save_examples_npz(tmp_path / "x.npz", ["nope"])  # type: ignore[list-item]


def test_example_images_validation() -> None:
    img = np.zeros((1, 8, 8), dtype=np.float64)
    ex = ExampleImages(torch.zeros(1, 8, 8), img, 1, 1, 0, "pgd", 0.03, class_names=["a", "b"])
    assert isinstance(ex.clean, np.ndarray) and ex.clean.dtype == np.float32
    assert ex.class_name(1) == "b" and ex.class_name(5) == "5"
    with pytest.raises(ValueError, match="same shape"):
        ExampleImages(img, np.zeros((1, 8, 9)), 0, 0, 0, "pgd", 0.1)
    with pytest.raises(ValueError, match=r"channel-first \(C, H, W\)"):
        ExampleImages(img[0], img[0], 0, 0, 0, "pgd", 0.1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ExampleImages(np.full((1, 4, 4), math.nan), np.zeros((1, 4, 4)), 0, 0, 0, "pgd", 0.1)
    with pytest.raises(TypeError, match="label must be an int"):
        ExampleImages(img, img, True, 0, 0, "pgd", 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="class_names must be a sequence"):
        ExampleImages(img, img, 0, 0, 0, "pgd", 0.1, class_names="ab")
