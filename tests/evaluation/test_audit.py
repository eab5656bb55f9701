"""The worst-case evaluation: semantics, checks, resume, run folder, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import medrobust
from medrobust.models import ModelAdapter
from medrobust.pipelines.results import evaluate
from medrobust.registry import UnknownNameError
from tests.attacks.models import batch, tiny_cnn

EPS = [0.01, 0.03, 0.1]


def loader_for(model: ModelAdapter, n: int = 24, bs: int = 8, flip: int = 4) -> list[dict]:
    x = batch(2, n=n, seed=7)
    y = model(x).argmax(1)
    y[:flip] = 1 - y[:flip]
    return [
        {"image": x[i : i + bs], "label": y[i : i + bs], "id": [f"s{j}" for j in range(i, i + bs)]}
        for i in range(0, n, bs)
    ]


def run(model: ModelAdapter, loader: list, **kw: object) -> medrobust.EvaluationResult:
    params = {"attacks": ["fgsm", {"name": "pgd", "steps": 5}], "eps": EPS, "probe_samples": 4}
    params.update(kw)
    return evaluate(model, loader, **params)  # type: ignore[arg-type]


def test_worst_case_semantics() -> None:
    model = tiny_cnn(2)
    res = run(model, loader_for(model))
    m = res.metrics
    assert m["clean"]["n"] == 24
    assert m["clean"]["accuracy"] == pytest.approx(20 / 24)
    by_cell = {(r["attack"], r["eps"]): r["robust_accuracy"] for r in m["results"]}
    prev = 1.0
    for w in m["worst_case"]:
        e = w["eps"]
        # worst case is at most every single attack, at most clean accuracy, monotone in eps
        assert w["robust_accuracy"] <= min(by_cell[("fgsm", e)], by_cell[("pgd", e)]) + 1e-9
        assert w["robust_accuracy"] <= m["clean"]["accuracy"]
        assert w["robust_accuracy"] <= prev
        prev = w["robust_accuracy"]
        broken = sum(w["broken_by"].values())
        assert w["robust_accuracy"] == pytest.approx((20 - broken) / 24)
        lo, hi = w["ci95"]
        assert lo <= w["robust_accuracy"] <= hi
    # a strong budget breaks something on this steep model
    assert m["worst_case"][-1]["robust_accuracy"] < m["clean"]["accuracy"]


def test_results_are_recomputable_from_records() -> None:
    model = tiny_cnn(2)
    loader = loader_for(model)
    res = run(model, loader)
    # every sample reported broken at the largest budget really is misclassified there
    x = torch.cat([b["image"] for b in loader])
    y = torch.cat([b["label"] for b in loader])
    adv = res.adversarial["0.1"]
    with torch.no_grad():
        pred = model(adv["x_adv"]).argmax(1)
    assert torch.equal(pred, adv["adv_pred"])
    assert bool((pred != y[adv["index"]]).all())
    linf = (adv["x_adv"] - x[adv["index"]]).flatten(1).abs().amax(1)
    assert float(linf.max()) <= 0.1 + 1e-6


def test_only_unbroken_samples_are_attacked_further() -> None:
    model = tiny_cnn(2)
    res = run(model, loader_for(model), mode="cascade")
    rows = {(r["attack"], r["eps"]): r for r in res.metrics["results"]}
    for e in EPS:
        fgsm, pgd = rows[("fgsm", e)], rows[("pgd", e)]
        # in cascade mode PGD only sees what FGSM (and smaller budgets) left unbroken
        assert pgd["n_attacked"] <= fgsm["n_attacked"] - fgsm["n_broken"] + pgd["n_broken"]
    indiv = run(model, loader_for(model), mode="individual", per_attack="carried")
    # carry-over: a sample broken at a smaller budget is not attacked again, so the broken
    # counts of each attack never decrease with the budget
    for name in ("fgsm", "pgd"):
        counts = [r["n_broken"] for r in indiv.metrics["results"] if r["attack"] == name]
        assert counts == sorted(counts)
        attacked = [r["n_attacked"] for r in indiv.metrics["results"] if r["attack"] == name]
        assert attacked == [20] * len(EPS)  # carried samples count as attacked (at a smaller eps)


def test_cascade_skips_only_what_this_budget_already_broke() -> None:
    model = tiny_cnn(2)
    budgets = [0.1, 0.3]
    res = run(model, loader_for(model), mode="cascade", eps=budgets)
    rows = {(r["attack"], r["eps"]): r for r in res.metrics["results"]}
    for e in budgets:
        fgsm, pgd = rows[("fgsm", e)], rows[("pgd", e)]
        assert fgsm["n_attacked"] == 20  # the first attack sees every eligible sample
        # PGD sees exactly what FGSM left unbroken at this budget; a sample broken at a smaller
        # budget is attacked again (its score may still fall)
        assert pgd["n_attacked"] == 20 - fgsm["n_broken"]
    # something broke below the largest budget, so the larger budgets really re-attack it
    assert rows[("fgsm", 0.1)]["n_broken"] > 0


class Backwards(nn.Module):
    """FGSM's step overshoots: the loss is periodic in the input, so a larger step can land on
    the right class again (a deliberately non-monotone model for the per-attack rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([40.0]), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sin(self.w * x.flatten(1).mean(1, keepdim=True))
        return torch.cat([s, -s], dim=1)


def test_per_attack_rows_are_each_budgets_own_result() -> None:
    model = ModelAdapter(Backwards(), num_classes=2)
    # sin(40 * 0.05) = sin(2.0) > 0: class 0; cos(2.0) < 0, so the loss grows with every pixel
    # and FGSM adds +eps everywhere: at 0.06 the mean is 0.11 (sin(4.4) < 0: broken), at 0.16 it
    # is 0.21 (sin(8.4) > 0: the larger step lands on class 0 again)
    x = torch.full((8, 1, 4, 4), 0.05)
    loader = [{"image": x, "label": torch.zeros(8, dtype=torch.long)}]
    kw = {"attacks": ["fgsm"], "eps": [0.06, 0.16], "checks": False}
    own = evaluate(model, loader, **kw, per_attack="own")  # type: ignore[arg-type]
    rows = {r["eps"]: r for r in own.metrics["results"]}
    assert rows[0.06]["n_broken"] == 8 and rows[0.16]["n_broken"] == 0  # FGSM's own results
    assert rows[0.16]["mean_linf"] is None or math.isnan(rows[0.16]["mean_linf"])
    worst = {w["eps"]: w["robust_accuracy"] for w in own.metrics["worst_case"]}
    assert worst == {0.06: 0.0, 0.16: 0.0}  # the worst case stays cumulative
    assert own.metrics["threat_model"]["per_attack"] == "own"
    carried = evaluate(model, loader, **kw, per_attack="carried")  # type: ignore[arg-type]
    rows_c = {r["eps"]: r for r in carried.metrics["results"]}
    assert rows_c[0.16]["n_broken"] == 8  # the 0.06 examples carried into the larger ball
    assert rows_c[0.16]["mean_linf"] == pytest.approx(0.06, abs=1e-6)
    with pytest.raises(ValueError, match="per_attack must be 'own' or 'carried'"):
        evaluate(model, loader, **kw, per_attack="mixed")  # type: ignore[arg-type]


class Quantised(nn.Module):
    """Masks gradients: a staircase input quantisation has zero gradient everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.floor(x * 8) / 8)


def test_checks_flag_gradient_masking() -> None:
    base = tiny_cnn(2)
    model = ModelAdapter(Quantised(base.net), num_classes=2)
    loader = loader_for(base)
    res = run(
        model, loader, attacks=["fgsm", "pgd", {"name": "square", "n_queries": 100}], eps=[0.1, 0.3]
    )
    status = {c["code"]: c["status"] for c in res.metrics["checks"]}
    assert status["MR105"] == "warn"  # zero input gradients
    assert status["MR101"] == "fail"  # unbounded PGD cannot break a masked model
    assert status["MR103"] == "warn"  # the black-box attack finds what gradients miss
    healthy = run(base, loader)
    hs = {c["code"]: c["status"] for c in healthy.metrics["checks"]}
    assert hs["MR101"] == "pass" and hs["MR105"] == "pass" and hs["MR104"] == "pass"
    assert hs["MR106"] == "warn"  # only 24 samples


def test_resume_after_interruption(tmp_path: Path) -> None:
    model = tiny_cnn(2)
    loader = loader_for(model)
    full = run(model, loader)
    ckpt = tmp_path / "state.pt"
    calls = {"n": 0}

    def interrupt(ev: object) -> None:
        if getattr(ev, "stage", "") == "clean" and getattr(ev, "batch", 0) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(model, loader, checkpoint=ckpt, progress=interrupt)
    assert ckpt.exists()

    def count(ev: object) -> None:
        if getattr(ev, "stage", "") == "clean":
            calls["n"] += 1

    resumed = run(model, loader, checkpoint=ckpt, progress=count)
    assert calls["n"] == 1  # only the last batch was processed again
    for a, b in zip(full.metrics["results"], resumed.metrics["results"], strict=True):
        assert a["robust_accuracy"] == b["robust_accuracy"]
        assert a["n_broken"] == b["n_broken"]
    # nothing lost: the worst-case adversarial examples and the report examples are resumed too
    assert full.adversarial.keys() == resumed.adversarial.keys()
    for key, arrays in full.adversarial.items():
        for name, t in arrays.items():
            assert torch.equal(t, resumed.adversarial[key][name]), (key, name)
    assert full.metrics["examples"] == resumed.metrics["examples"]
    for a, b in zip(full.examples, resumed.examples, strict=True):
        assert (a.adversarial == b.adversarial).all() and a.id == b.id
    with pytest.raises(ValueError, match="different configuration"):
        run(model, loader, checkpoint=ckpt, eps=[0.2])


def test_write_run_folder(tmp_path: Path) -> None:
    model = tiny_cnn(2)
    res = run(model, loader_for(model))
    out = res.write(tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schema_version"] == 1
    assert metrics["worst_case"][0]["eps"] == EPS[0]
    html = (out / "report.html").read_text()
    assert "Robustness" in html and "MR101" in html
    assert (out / "config.yaml").exists()
    assert list((out / "adversarial").glob("*.npz"))
    assert not list(out.glob(".staging*"))
    with pytest.raises(FileExistsError, match="already contains a completed evaluation"):
        res.write(out)
    res.write(out, overwrite=True)


def test_api_three_lines_on_a_plain_module() -> None:
    net = tiny_cnn(2).net  # a bare nn.Module with inputs in [0, 1]
    x = batch(2, n=8)
    y = net(x).argmax(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    res = medrobust.evaluate(net, loader, attacks=["fgsm", "pgd"], eps=[1 / 255, 8 / 255])
    assert res.robust_accuracy("pgd", 8 / 255) <= res.robust_accuracy("pgd", 1 / 255)
    assert res.robust_accuracy() == res.metrics["worst_case"][-1]["robust_accuracy"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": [0.0]}, ValueError, "every eps must be a finite number > 0"),
        ({"eps": [-1]}, ValueError, "every eps must be"),
        ({"eps": []}, ValueError, "eps is empty"),
        ({"attacks": ["pgdx"]}, UnknownNameError, "Did you mean 'pgd'"),
        ({"attacks": []}, ValueError, "suite is empty"),
        ({"attacks": ["pgd", "pgd"]}, ValueError, "names an attack twice"),
        ({"attacks": [{"name": "pgd", "eps": 0.1}]}, ValueError, "set by the suite"),
        ({"mode": "fast"}, ValueError, "mode must be"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    model = tiny_cnn(2)
    with pytest.raises(error, match=match):
        run(model, loader_for(model), **kwargs)


def test_empty_loader() -> None:
    with pytest.raises(ValueError, match="yielded no samples"):
        run(tiny_cnn(2), [])


def test_bad_batches() -> None:
    model = tiny_cnn(2)
    x = batch(2, n=4)
    with pytest.raises(ValueError, match="NaN"):
        run(model, [{"image": x * float("nan"), "label": torch.zeros(4, dtype=torch.long)}])
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        run(model, [{"image": x, "label": torch.full((4,), 7)}])
    with pytest.raises(ValueError, match="'image' and 'label'"):
        run(model, [{"img": x}])


def test_black_box_attack_only_cross_checks_unbroken_samples() -> None:
    model = tiny_cnn(2)
    res = run(
        model, loader_for(model), attacks=["fgsm", "pgd", {"name": "square", "n_queries": 50}]
    )
    rows = {(r["attack"], r["eps"]): r for r in res.metrics["results"]}
    worst = {w["eps"]: w for w in res.metrics["worst_case"]}
    for e in EPS:
        sq, pgd = rows[("square", e)], rows[("pgd", e)]
        assert pgd["scope"] == "all" and sq["scope"] == "unbroken"
        # square saw only what fgsm and pgd left unbroken, and its row is cumulative: as the last
        # attack of the suite it equals the worst case
        unbroken = round(worst[e]["robust_accuracy"] * 24) + worst[e]["broken_by"]["square"]
        assert sq["n_attacked"] <= unbroken
        assert sq["robust_accuracy"] == worst[e]["robust_accuracy"]
