"""Intensity windows (issue 14): specifications, the mapping into [0, 1], 16-bit and float
images written with Pillow, the coverage warning and the record in the model card."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrobust.data import ImageFolder, create_dataset
from medrobust.data.folders import read_image
from medrobust.data.windows import (
    PRESETS,
    Window,
    apply_window,
    coverage,
    parse_window,
    warn_coverage,
)
from medrobust.models import ModelCard, create_model
from medrobust.models.card import DataInfo

from .helpers import make_nifti_folder


@pytest.mark.parametrize(
    ("spec", "kind", "low", "high"),
    [
        ("-160,240", "fixed", -160.0, 240.0),
        ((0, 2200), "fixed", 0.0, 2200.0),
        ("p0.5,p99.5", "percentile", 0.5, 99.5),
        ("ct-abdomen", "preset", -160.0, 240.0),
        ("CT-Lung", "preset", -1350.0, 150.0),
        ("ct-brain", "preset", 0.0, 80.0),
    ],
)
def test_parse_window(spec: object, kind: str, low: float, high: float) -> None:
    w = parse_window(spec)
    assert w is not None and (w.kind, w.low, w.high) == (kind, low, high)
    assert parse_window(w.spec()) == w  # the recorded spec reads back
    assert parse_window(w.to_dict()) == w


def test_parse_window_special_and_errors() -> None:
    assert parse_window(None) is None
    assert parse_window("dtype") == Window("dtype") and parse_window("header").kind == "header"
    with pytest.raises(ValueError, match="did you mean 'ct-lung'"):
        parse_window("ct-lungs")
    with pytest.raises(ValueError, match="low < high"):
        parse_window("240,-160")
    with pytest.raises(ValueError, match="'abc' is not a number"):
        parse_window("abc,3")
    with pytest.raises(ValueError, match="0 <= low < high <= 100"):
        parse_window("p5,p101")
    with pytest.raises(ValueError, match="two edges"):
        parse_window("1,2,3")
    with pytest.raises(ValueError, match=r"\(low, high\)"):
        parse_window((1, 2, 3))
    assert all(lv - w / 2 < lv + w / 2 for lv, w in PRESETS.values())


def test_apply_window_golden() -> None:
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    out, used = apply_window(hu, parse_window("ct-abdomen") or Window("dtype"))
    assert used == (-160.0, 240.0)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)
    counts = np.array([0, 65535], dtype=np.uint16)
    np.testing.assert_allclose(apply_window(counts, Window("dtype"))[0], [0.0, 1.0])
    pct, (lo, hi) = apply_window(np.arange(101.0), Window("percentile", 10, 90))
    assert (lo, hi) == (10.0, 90.0) and pct[50] == pytest.approx(0.5)
    assert apply_window(np.full(4, 7.0), Window("percentile", 1, 99))[0].max() == 0.0
    header, used = apply_window(np.array([0.0, 50.0]), Window("header"), header=(0.0, 100.0))
    assert used == (0.0, 100.0) and header[1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="stores no window"):
        apply_window(np.zeros(2), Window("header"), source="x.dcm")
    with pytest.raises(ValueError, match="needs integer data"):
        apply_window(np.zeros(2), Window("dtype"), source="f.tif")
    with pytest.raises(ValueError, match=r"x\.png holds NaN"):
        apply_window(np.array([math.nan]), Window("fixed", 0, 1), source="x.png")


def _write16(path: Path, value: int, spread: int = 400, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = (value + rng.integers(0, spread, (size, size))).astype(np.uint16)
    Image.fromarray(arr).save(path)


def test_16bit_png_and_tiff_with_a_window(tmp_path: Path) -> None:
    _write16(tmp_path / "a.png", 1000)
    _write16(tmp_path / "a.tif", 1000)
    raw = np.asarray(Image.open(tmp_path / "a.png"), dtype=np.float64)
    for name in ("a.png", "a.tif"):
        legacy = read_image(tmp_path / name, 1)
        np.testing.assert_allclose(legacy[0], raw / 65535, atol=1e-6)
        win = read_image(tmp_path / name, 1, parse_window("1000,1400"))
        np.testing.assert_allclose(win[0], np.clip((raw - 1000) / 400, 0, 1), atol=1e-6)
    floats = np.linspace(-50, 150, 24 * 24, dtype=np.float32).reshape(24, 24)
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f\.tif must be finite and inside \[0, 1\].*window"):
        read_image(tmp_path / "f.tif", 1)
    mapped = read_image(tmp_path / "f.tif", 3, parse_window("-50,150"))
    assert mapped.shape == (3, 24, 24)
    np.testing.assert_allclose(mapped[0], (floats + 50) / 200, atol=1e-6)
    grey = np.full((4, 4), 100, np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    np.testing.assert_allclose(read_image(tmp_path / "g.png", 1, parse_window("50,150")), 0.5)


def test_folder_records_the_window_and_warns_on_low_coverage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for cls, base in (("a", 300), ("b", 1500)):
        for i in range(4):
            _write16(tmp_path / "d" / cls / f"{i}.png", base + 10 * i)
    with caplog.at_level(logging.WARNING, logger="medrobust.data.windows"):
        plain = ImageFolder(tmp_path / "d", split="train", size=16, fractions=(1.0, 0.0, 0.0))
    assert "occupy" in caplog.text and "--window" in caplog.text
    assert plain.intensity["coverage"] < 0.05 and plain.intensity["window"]["kind"] == "dtype"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medrobust.data.windows"):
        ds = create_dataset(
            "image-folder",
            root=str(tmp_path / "d"),
            size=16,
            fractions=(1.0, 0.0, 0.0),
            window="300,1900",
        )
    assert "occupy" not in caplog.text
    assert ds.intensity["window"]["spec"] == "300,1900" and ds.intensity["coverage"] > 0.5  # type: ignore[attr-defined]
    assert float(ds[0]["image"].max()) <= 1.0


def test_coverage_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert coverage([np.linspace(0, 1, 1000)]) == pytest.approx(0.99, abs=1e-6)
    assert coverage([np.full(10, 0.3)]) == 0.0
    with caplog.at_level(logging.WARNING, logger="medrobust.data.windows"):
        assert warn_coverage(0.03, "set", None) and "3.0% of [0, 1]" in caplog.text
        assert not warn_coverage(0.5, "set", None)


def test_nifti_takes_a_preset_and_records_it(tmp_path: Path) -> None:
    root = make_nifti_folder(tmp_path / "n", n=2)
    ds = create_dataset("nifti", split="all", root=str(root), window="ct-brain")
    assert ds.intensity == {  # type: ignore[attr-defined]
        "window": {"kind": "preset", "spec": "ct-brain", "low": 0.0, "high": 80.0}
    }
    default = create_dataset("nifti", split="all", root=str(root))
    assert default.intensity["window"]["spec"] == "p0.5,p99.5"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown window"):
        create_dataset("nifti", split="all", root=str(root), window="brain")


def test_model_card_keeps_the_window() -> None:
    model = create_model("small-cnn", num_classes=2, seed=0, width=4)
    intensity = {"window": {"kind": "fixed", "spec": "0,2200", "low": 0.0, "high": 2200.0}}
    card = ModelCard.from_model(model, data=DataInfo(name="x", intensity=intensity, params={}))
    back = ModelCard.from_dict(card.to_dict())
    assert back.data.intensity == intensity and back.data.params == {}
    assert "| intensity window | 0,2200 |" in card.to_markdown()
    assert "intensity" not in DataInfo(name="x").to_dict()
    with pytest.raises(TypeError, match=r"data\.intensity must be a dict"):
        DataInfo(intensity="0,1")  # type: ignore[arg-type]
