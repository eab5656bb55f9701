"""Tests of medrobust.reporting.figures."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from medrobust.reporting import (
    ExampleImages,
    default_magnification,
    example_grid,
    robustness_curves,
    to_base64_png,
)


def test_robustness_curves_content(metrics: dict[str, Any]) -> None:
    fig = robustness_curves(metrics)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert {"fgsm", "pgd", "worst case", "clean accuracy (87.5%)"} <= set(lines)
    # every curve starts at the clean accuracy at eps = 0, then follows the results
    pgd = lines["pgd"]
    assert list(pgd.get_xdata()) == pytest.approx([0, 1 / 255, 2 / 255, 4 / 255, 8 / 255])
    assert list(pgd.get_ydata()) == pytest.approx([0.875, 0.75, 0.5625, 0.3125, 0.0625])
    worst = lines["worst case"]
    assert list(worst.get_ydata()) == pytest.approx([0.875, 0.7344, 0.5469, 0.2969, 0.0469])
    assert worst.get_color() == "black"
    assert lines["clean accuracy (87.5%)"].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1/255", "2/255", "4/255", "8/255"]
    assert "L∞" in ax.get_xlabel() and "[0, 1]" in ax.get_xlabel()


def test_robustness_curves_errors_and_dollar_names(metrics: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no 'results'"):
        robustness_curves({**metrics, "results": []})
    bad = {**metrics, "threat_model": {**metrics["threat_model"], "eps_display": ["1/255"]}}
    with pytest.raises(ValueError, match="eps_display has 1 entries"):
        robustness_curves(bad)
    broken = {**metrics, "results": [{"attack": "x", "eps": 0.1, "robust_accuracy": "high"}]}
    with pytest.raises(ValueError, match=r"results\[0\].robust_accuracy must be a number"):
        robustness_curves(broken)
    # a '$' in a name would start mathtext and fail to render; it must be shown literally
    odd = {**metrics, "results": [{**r, "attack": "cost $5$_x"} for r in metrics["results"][:4]]}
    png = base64.b64decode(to_base64_png(robustness_curves(odd), dpi=40))
    assert png.startswith(b"\x89PNG")


def test_example_grid_layout_titles_and_magnification(examples: list[ExampleImages]) -> None:
    fig = example_grid(examples)
    axes = fig.axes
    assert len(axes) == 3 * len(examples)
    m = default_magnification(examples)
    # largest power of two with m * max|delta| / range <= 0.5 (range ~1, delta 8/255)
    assert m == 8.0
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "clean\ntrue: malignant · pred: malignant"
    assert titles[1].startswith("adversarial (pgd, ε=8/255)\npred: benign (wrong)")
    assert titles[2].startswith("perturbation ×8\n")
    assert axes[1].title.get_color() != axes[7].title.get_color()  # wrong in red, right in black
    # the 3-D example says which slice it shows
    assert axes[6].get_xlabel() == "3-D: middle slice 4 of 9 (last axis)"
    assert axes[0].get_ylabel() == "case-003"
    # grey shown as 2-D, RGB as H x W x 3; the perturbation panel is 0.5 + m * delta / range
    assert axes[0].images[0].get_array().shape == (64, 64)
    assert axes[3].images[0].get_array().shape == (48, 48, 3)
    ex = examples[2]
    clean, adv = ex.clean[..., 4][0], ex.adversarial[..., 4][0]
    rng = max(clean.max(), adv.max()) - min(clean.min(), adv.min())
    expected = np.clip(0.5 + m * (adv - clean) / rng, 0, 1)
    np.testing.assert_allclose(np.asarray(axes[8].images[0].get_array()), expected, atol=1e-6)


def test_example_grid_explicit_magnify_and_no_change(examples: list[ExampleImages]) -> None:
    fig = example_grid(examples[:1], magnify=3)
    assert fig.axes[2].get_title().startswith("perturbation ×3\n")
    same = ExampleImages(examples[0].clean, examples[0].clean.copy(), 0, 0, 0, "pgd", 0.0)
    assert default_magnification([same]) == 1.0
    assert example_grid([same]).axes[1].get_title().endswith("pred: 0")  # no names: indices
    for bad in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="magnify must be a finite positive"):
            example_grid(examples[:1], magnify=bad)
    with pytest.raises(ValueError, match="at least one example"):
        example_grid([])
    with pytest.raises(TypeError, match="ExampleImages"):
        example_grid([np.zeros((1, 4, 4))])  # type: ignore[list-item]


def test_other_channel_counts_show_channel_zero() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 16, 16)).astype(np.float32)
    ex = ExampleImages(x, np.clip(x + 0.01, 0, 1), 0, 0, 1, "fgsm", 0.01)
    fig = example_grid([ex])
    assert fig.axes[0].get_xlabel() == "channel 0 of 2"
    assert fig.axes[0].images[0].get_array().shape == (16, 16)


def test_to_base64_png() -> None:
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1], [0, 1])
    text = to_base64_png(fig, dpi=20)
    assert "\n" not in text
    raw = base64.b64decode(text, validate=True)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(TypeError, match=r"matplotlib\.figure\.Figure"):
        to_base64_png("figure")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dpi must be a positive int"):
        to_base64_png(fig, dpi=0)
