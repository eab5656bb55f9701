"""The reports in a real browser: Debian's chromium, headless, driven by Playwright.

Each report (classification, segmentation, explanation) must open with no console error and no
network request, decode every embedded figure, fill its headline cards for its task and stay
readable in a narrow window. Skipped, with the reason, where chromium or Playwright is missing
(CI installs both: see .ci/run).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.slow


def _browser() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    return sync_api


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.attacks.models import batch, tiny_cnn

    from medrobust.evaluation import evaluate_explanations
    from medrobust.models import create_model
    from medrobust.pipelines.results import (
        evaluate,
        evaluate_segmentation,
        write_explanations,
    )

    root = tmp_path_factory.mktemp("reports")
    out: dict[str, Path] = {}
    model = tiny_cnn(2)
    x = batch(2, n=8, seed=7)
    with torch.no_grad():
        y = model(x).argmax(1)
    cls = evaluate(model, [(x, y)], attacks=["fgsm", "pgd"], eps=[1 / 255, 4 / 255],
                   probe_samples=2)  # fmt: skip
    out["classification"] = cls.write(root / "cls") / "report.html"
    seg_model = create_model("unet", num_classes=2, spatial_dims=2, channels=(4, 8),
                             strides=(2,), num_res_units=0, seed=0).eval()  # fmt: skip
    xs = torch.rand(4, 1, 16, 16) * 0.8 + 0.1
    with torch.no_grad():
        ms = seg_model(xs).argmax(1)
    seg = evaluate_segmentation(
        seg_model, [{"image": xs, "mask": ms}], attacks=[{"name": "pgd-seg", "steps": 2}],
        eps=[2 / 255], targeted=[{"name": "asma", "steps": 2}], targets=["background"],
        noise=["gaussian"], n_examples=2, probe_samples=2,
    )  # fmt: skip
    out["segmentation"] = seg.write(root / "seg") / "report.html"
    clf = create_model("small-cnn", num_classes=2, width=4, seed=0).eval()
    xe = torch.rand(6, 1, 32, 32)
    with torch.no_grad():
        ye = clf(xe).argmax(1)
    ex = evaluate_explanations(clf, [(xe, ye)], eps=[2 / 255], steps=2, n_examples=2,
                               probe_samples=2)  # fmt: skip
    out["explanation"] = write_explanations(ex, root / "expl", config={}) / "report.html"
    return out


@pytest.mark.parametrize("task", ["classification", "segmentation", "explanation"])
def test_report_in_a_real_browser(reports: dict[str, Path], task: str) -> None:
    sync_api = _browser()
    path = reports[task]
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri(), wait_until="load")
            assert not errors, errors
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth])"
            )
            assert images and all(ok and w > 0 for ok, w in images), images
            cards = page.eval_on_selector_all("#summary .card", "cs => cs.map(c => c.innerText)")
            assert len(cards) == 3
            for text in cards[:2]:  # the clean figure and the worst case, filled for the task
                assert "%" in text, (task, text)
            assert "no checks were run" not in cards[2]
            page.set_viewport_size({"width": 420, "height": 900})
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 8, f"{task} report scrolls sideways by {overflow} px at 420 px"
        finally:
            browser.close()


def test_browser_is_the_system_chromium() -> None:
    """The test never downloads a browser: it drives the Debian package."""
    _browser()
    assert shutil.which("chromium") == CHROMIUM or Path(CHROMIUM).exists()
