"""Scanner settings of the phantom: a shifted test set of the same anatomy."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data import SCANNERS, BusPhantom, Scanner, generate_bus_phantom
from medrobust.data._phantom.scanner import parse_scanner


def _gen(scanner: object = None) -> np.ndarray:
    return generate_bus_phantom(4, 32, seed=3, scanner=scanner).images  # type: ignore[arg-type]


def test_default_scanner_changes_nothing() -> None:
    plain = generate_bus_phantom(4, 32, seed=3).images
    assert np.array_equal(plain, _gen("default"))
    assert np.array_equal(plain, _gen(Scanner()))


def test_each_setting_changes_the_images_the_way_it_says() -> None:
    base = _gen()
    bright = _gen("bright")
    assert bright.mean() > base.mean() + 0.02  # +5 dB gain on a 50-60 dB display range
    deep = _gen("deep-attenuation")
    rows = base.shape[2]
    # the top rows barely change, the deepest rows darken
    assert abs(deep[..., : rows // 8, :].mean() - base[..., : rows // 8, :].mean()) < 0.02
    assert deep[..., -rows // 4 :, :].mean() < base[..., -rows // 4 :, :].mean() - 0.03

    # a wider PSF makes larger speckle grains: neighbouring columns correlate more
    def lateral_correlation(img: np.ndarray) -> float:
        a = img - img.mean(axis=-1, keepdims=True)
        return float((a[..., :-1] * a[..., 1:]).sum() / (a * a).sum())

    sharp = generate_bus_phantom(4, 64, seed=3).images
    blurry = generate_bus_phantom(4, 64, seed=3, scanner="blurry").images
    assert lateral_correlation(blurry) > lateral_correlation(sharp) + 0.05
    for name in SCANNERS:
        if name != "default":
            assert not np.array_equal(base, _gen(name)), name


def test_dataset_keeps_labels_and_masks_and_caches_apart(tmp_path: object) -> None:
    plain = BusPhantom("test", n=8, size=32, cache_dir=tmp_path)  # type: ignore[arg-type]
    shifted = BusPhantom("test", n=8, size=32, cache_dir=tmp_path, scanner="shifted")  # type: ignore[arg-type]
    assert np.array_equal(plain.targets, shifted.targets)
    assert all(bool((plain[i]["mask"] == shifted[i]["mask"]).all()) for i in range(len(plain)))
    assert not bool((plain[0]["image"] == shifted[0]["image"]).all())
    assert "scanner" not in plain.params and shifted.params["scanner"]["psf_width"] == 1.4
    assert plain.cache_path != shifted.cache_path
    again = BusPhantom("test", n=8, size=32, cache_dir=tmp_path, scanner="shifted")  # type: ignore[arg-type]
    assert bool((again[3]["image"] == shifted[3]["image"]).all())  # read back from its cache


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("nope", ValueError, "unknown scanner 'nope'"),
        ({"psf": 2.0}, ValueError, r"unknown scanner settings \['psf'\]"),
        ({"psf_width": 0.0}, ValueError, r"psf_width must lie in \[0.1, 10\]"),
        ({"gain_db": float("nan")}, ValueError, "gain_db must be finite"),
        ({"density": "low"}, TypeError, "density must be a number"),
        (3, TypeError, "scanner must be a name, a mapping or a Scanner"),
    ],
)
def test_bad_scanner_settings_are_refused(value: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        parse_scanner(value)  # type: ignore[arg-type]
