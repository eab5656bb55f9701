"""Tests of medrobust.reporting.html: self-containedness, content, escaping, extensibility."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup
from matplotlib.figure import Figure
from reporting_samples import EVIL, make_examples, make_metrics

from medrobust.reporting import (
    ExampleImages,
    ReportSection,
    html_table,
    render_report,
    render_value,
    to_base64_png,
    write_report,
)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[tuple[str, str, str]] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action"):
                self.refs.append((tag, name, value or ""))
            if name == "id" and value:
                self.ids.append(value)


def _parse(html: str) -> _Collector:
    parser = _Collector()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def full_report() -> str:
    metrics = make_metrics()
    metrics["defenses"] = {"pgd-at": {"epochs": 10, "clean_accuracy": 0.8123}}
    return render_report(metrics, make_examples())


def test_report_is_self_contained(full_report: str) -> None:
    parsed = _parse(full_report)
    assert "http://" not in full_report and "https://" not in full_report
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    assert "@import" not in full_report and "url(" not in full_report
    images = [v for tag, name, v in parsed.refs if tag == "img"]
    assert len(images) == 2  # robustness curves and example grid
    for uri in images:
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1], validate=True).startswith(b"\x89PNG")
    hrefs = [v for _, name, v in parsed.refs if name == "href"]
    assert hrefs and all(h.startswith("#") for h in hrefs)
    assert {h[1:] for h in hrefs} <= set(parsed.ids)  # every in-page link has a target
    assert len(parsed.ids) == len(set(parsed.ids))


def test_report_shows_the_numbers(full_report: str) -> None:
    text = re.sub(r"\s+", " ", full_report)
    assert "<title>Robustness audit: small-cnn on bus-phantom</title>" in text
    assert "2025-03-04 10:20:30 UTC" in text and "medrobust 0.1.0" in text
    # clean metrics
    for value in ("87.5%", "84.4%", "90.6%", "0.932"):
        assert f'<td class="num">{value}</td>' in text
    # per-attack rows: pgd at 8/255 and fgsm at 1/255
    pgd_row = ["6.2%", "92.9%", "56 / 64", "0.03137", "1.17", "4096", "0.9557", "44.99", "12.50 s"]
    assert "<td>8/255</td> " + " ".join(f'<td class="num">{v}</td>' for v in pgd_row) in text
    assert '<td>1/255</td> <td class="num">81.2%</td>' in text
    # worst case with "broken by" columns
    assert "broken by fgsm" in text and "broken by pgd" in text
    assert (
        '<td>8/255</td><td class="num">4.7%</td><td class="num">6</td><td class="num">7</td>'
        in text
    )
    # summary, checks and timing
    assert '2 <span class="unit">of 3 flagged</span>' in text
    for code in ("MR101", "MR102", "MR105"):
        assert f'href="#check-mr{code[2:]}"' in text and f'id="check-mr{code[2:]}"' in text
    assert '<span class="badge fail">FAIL</span>' in text
    assert "1 min 23 s" in text and "0.42 s" in text
    # examples table with class names, and the unknown section
    assert '<td class="changed">benign (0)</td>' in text
    assert "Other results" in text and "<h3>defenses</h3>" in text and "0.8123" in text
    assert text.index('id="curves"') < text.index('id="attacks"') < text.index('id="worst-case"')
    assert text.index('id="examples"') < text.index('id="checks"') < text.index('id="timing"')


def test_everything_is_escaped() -> None:
    metrics = make_metrics(class_names=(EVIL, "malignant"))
    metrics["title"] = f"audit {EVIL}"
    metrics["model"]["card"][EVIL] = EVIL
    metrics["checks"][0]["message"] = EVIL
    metrics["checks"][1]["code"] = EVIL
    metrics["examples"][0]["id"] = EVIL
    metrics["results"] = [{**r, "attack": EVIL} for r in metrics["results"][:2]]
    metrics[EVIL] = {EVIL: [{"k": EVIL}]}
    html = render_report(metrics, [], extra_sections=[ReportSection(title=EVIL, body=EVIL)])
    assert "<script" not in html.lower()
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert html.count(escaped) >= 10
    assert f"<code>0</code> {escaped}" in html  # the class name in the data section


def test_minimal_metrics_render_without_optional_sections() -> None:
    html = render_report({"schema_version": 1, "title": "t"})
    assert "<h1>t</h1>" in html
    assert 'id="curves"' not in html and "<img" not in html and 'id="checks"' not in html
    assert "no checks were run" in html


def test_missing_values_show_a_dash() -> None:
    metrics = make_metrics()
    metrics["clean"].update(sensitivity=None, specificity=None, auc=None)
    metrics["results"][0]["mean_ssim"] = None
    html = render_report(metrics, [])
    assert html.count('<td class="num">—</td>') >= 4


def test_extra_sections(metrics: dict[str, Any]) -> None:
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    metrics["explanations"] = {"cam_iou": 0.42}
    sections = [
        ReportSection(
            title="Explanations",
            body=html_table([{"eps": "8/255", "cam_iou": 0.3141}]),
            figures=[fig, to_base64_png(fig, dpi=20)],
            captions=["a caption", "second"],
            key="explanations",
        ),
        ReportSection(title="Explanations", body="plain <b>text</b>"),
    ]
    html = render_report(metrics, [], extra_sections=sections)
    parsed = _parse(html)
    assert 'id="explanations"' in html and 'id="explanations-2"' in html
    assert '<td class="num">0.3141</td>' in html and "<figcaption>a caption</figcaption>" in html
    assert "<p>plain &lt;b&gt;text&lt;/b&gt;</p>" in html
    assert sum(1 for tag, _, v in parsed.refs if tag == "img" and v.startswith("data:")) == 3
    assert "Other results" not in html  # the section with key="explanations" replaced it
    with pytest.raises(ValueError, match="not base64 text"):
        render_report(metrics, [], extra_sections=[ReportSection("x", figures=["%%%"])])
    with pytest.raises(ValueError, match="not a PNG"):
        render_report(metrics, [], extra_sections=[ReportSection("x", figures=["aGVsbG8="])])
    with pytest.raises(ValueError, match="1 figures but 2 captions"):
        render_report(
            metrics, [], extra_sections=[ReportSection("x", figures=[fig], captions=["a", "b"])]
        )
    with pytest.raises(TypeError, match="ReportSection"):
        render_report(metrics, [], extra_sections=["x"])  # type: ignore[list-item]


def test_check_docs_and_help_text(metrics: dict[str, Any]) -> None:
    metrics["checks"][1]["help"] = "PGD should never be weaker than FGSM."
    html = render_report(metrics, [], check_docs={"MR105": "An unbounded attack must succeed."})
    assert "<dd>PGD should never be weaker than FGSM.</dd>" in html
    assert "<dd>An unbounded attack must succeed.</dd>" in html


def test_render_value_generic_rendering() -> None:
    out = render_value({"a": {"b": [1, 2.5, None]}, "rows": [{"x": 1, "y": "z"}, {"x": 2}]})
    assert isinstance(out, Markup)
    assert '<table class="kv"><tr><th scope="row">a</th><td><table class="kv">' in out
    assert "1, 2.5, —" in out
    assert '<th scope="col">x</th><th scope="col">y</th>' in out
    assert render_value(float("nan")) == "—" and render_value(True) == "yes"
    assert "<ol><li>" in render_value([{"nested": {"deep": 1}}, [1, [2]]])
    with pytest.raises(TypeError, match=r"rows\[0\] must be a dict"):
        html_table([1])  # type: ignore[list-item]


def test_validation_errors(metrics: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unsupported metrics schema_version 2"):
        render_report({**metrics, "schema_version": 2})
    with pytest.raises(ValueError, match=r"metrics\['results'\] must be a list"):
        render_report({**metrics, "results": {"a": 1}})
    with pytest.raises(ValueError, match=r"metrics\['checks'\]\[0\]\['status'\] must be one of"):
        render_report({**metrics, "checks": [{"code": "MR1", "status": "ok"}]})
    with pytest.raises(ValueError, match=r"metrics\['clean'\] must be a dict"):
        render_report({**metrics, "clean": [0.5]})
    bad_result = {**metrics["results"][0], "eps": "8/255"}
    with pytest.raises(ValueError, match=r"metrics\['results'\]\[0\]\['eps'\] must be a number"):
        render_report({**metrics, "results": [bad_result]})
    tm = {**metrics["threat_model"], "eps_display": ["1/255"]}
    with pytest.raises(ValueError, match=r"eps_display'\] has 1 entries but 'eps' has 4"):
        render_report({**metrics, "threat_model": tm})
    with pytest.raises(TypeError, match="metrics must be a dict"):
        render_report([metrics])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"examples\[0\] must be an ExampleImages"):
        render_report(metrics, ["x"])  # type: ignore[list-item]


def test_write_report(
    tmp_path: Path, metrics: dict[str, Any], examples: list[ExampleImages]
) -> None:
    target = tmp_path / "run" / "report.html"
    assert write_report(target, metrics, examples[:1], dpi=30) == target
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count("data:image/png;base64,") == 2
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_headline_cards_are_filled_for_every_task() -> None:
    """The summary's two headline cards read the task's own figures, never a bare dash."""
    from medrobust.reporting.context import headline

    table = [(1 / 255, "1/255"), (4 / 255, "4/255")]
    seg = {
        "task": "segmentation",
        "segmentation": {
            "clean": {"mean_dice": 0.8, "n": 12},
            "worst_case": [{"eps": 4 / 255, "mean_worst_dice": 0.5}],
        },
    }
    expl = {
        "task": "explanation",
        "explanations": {
            "n_attacked": 6,
            "n_samples": 8,
            "worst_case": [{"eps": 1 / 255, "broken_rate": 0.25}],
        },
    }
    study = {
        "task": "study",
        "defenses": [{"clean_accuracy": 0.7}, {"clean_accuracy": 0.9}],
        "risk": [
            {"eps": 4 / 255, "system_risk": 0.4, "system_risk_adaptive": 0.5},
            {"eps": 4 / 255, "system_risk": 0.2, "system_risk_adaptive": 0.3},
        ],
    }
    det = {"task": "detection", "clean": {"accuracy": 1.0, "n": 4},
           "system_risk": [{"eps": 1 / 255, "system_risk": 0.125}]}  # fmt: skip
    cls = {
        "clean": {"accuracy": 0.75, "n": 4},
        "worst_case": [{"eps": 1 / 255, "robust_accuracy": 0.5}],
    }
    expected = {
        "seg": ("Clean mean Dice", "80.0%", [("4/255", "50.0%")]),
        "expl": ("Samples with an attacked map", "75.0%", [("1/255", "25.0%")]),
        "study": ("Best clean accuracy", "90.0%", [("4/255", "30.0%")]),
        "det": ("Clean accuracy", "100.0%", [("1/255", "12.5%")]),
        "cls": ("Clean accuracy", "75.0%", [("1/255", "50.0%")]),
    }
    for name, metrics in {"seg": seg, "expl": expl, "study": study, "det": det, "cls": cls}.items():
        h = headline(metrics, table)
        assert (h["clean_title"], h["clean_value"], h["worst_rows"]) == expected[name], name
