"""Hand-made metrics and examples shared by the reporting tests (and the sample report)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medrobust.reporting import ExampleImages

EVIL = "<script>alert(1)</script>"


def make_metrics(class_names: tuple[str, str] = ("benign", "malignant")) -> dict[str, Any]:
    """A complete schema-version-1 metrics dictionary with distinctive numbers."""
    eps = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
    disp = ["1/255", "2/255", "4/255", "8/255"]
    acc = {"fgsm": [0.8125, 0.6875, 0.5, 0.3125], "pgd": [0.75, 0.5625, 0.3125, 0.0625]}
    results = []
    for attack, accs in acc.items():
        for e, a in zip(eps, accs, strict=True):
            results.append(
                {
                    "attack": attack,
                    "eps": e,
                    "robust_accuracy": a,
                    "attack_success_rate": round(1 - a / 0.875, 6),
                    "n": 64,
                    "n_attacked": 56,
                    "mean_linf": e,
                    "mean_l2": e * 37.3,
                    "mean_l0": 4096.0,
                    "mean_ssim": 0.9871 - e,
                    "mean_psnr": 48.13 - 100 * e,
                    "time_s": 1.25 if attack == "fgsm" else 12.5,
                }
            )
    return {
        "schema_version": 1,
        "medrobust_version": "0.1.0",
        "created": "2025-03-04T10:20:30+00:00",
        "title": "Robustness audit: small-cnn on bus-phantom",
        "model": {
            "name": "small-cnn",
            "card": {
                "architecture": "4-layer CNN",
                "trained_on": "bus-phantom train split",
                "intended_use": "research only",
                "normalization": {"mean": [0.5], "std": [0.25]},
            },
        },
        "data": {
            "name": "bus-phantom",
            "split": "test",
            "n": 64,
            "class_names": list(class_names),
            "image_shape": [1, 64, 64],
        },
        "threat_model": {"norm": "linf", "bounds": [0.0, 1.0], "eps": eps, "eps_display": disp},
        "clean": {
            "accuracy": 0.875,
            "n": 64,
            "sensitivity": 0.8438,
            "specificity": 0.9062,
            "auc": 0.9321,
            "balanced_accuracy": 0.875,
        },
        "attacks": [
            {"name": "fgsm", "params": {}},
            {"name": "pgd", "params": {"steps": 10, "step_size": "eps/4", "restarts": 1}},
        ],
        "results": results,
        "worst_case": [
            {"eps": e, "robust_accuracy": a, "broken_by": {"fgsm": 3 + i, "pgd": 2 * i + 1}}
            for i, (e, a) in enumerate(zip(eps, [0.7344, 0.5469, 0.2969, 0.0469], strict=True))
        ],
        "checks": [
            {
                "code": "MR101",
                "title": "Robust accuracy falls with the budget",
                "status": "pass",
                "message": "monotone in eps for every attack",
            },
            {
                "code": "MR102",
                "title": "Iterative attack at least as strong as single-step",
                "status": "warn",
                "message": "fgsm beat pgd on 2 samples at eps=1/255",
            },
            {
                "code": "MR105",
                "title": "Unbounded attack reaches 100% success",
                "status": "fail",
                "message": "only 93.8% success at eps=1.0: possible gradient masking",
            },
        ],
        "examples": [
            {
                "index": 3,
                "id": "case-003",
                "label": 1,
                "clean_pred": 1,
                "adv_pred": 0,
                "attack": "pgd",
                "eps": 8 / 255,
                "file": "examples/000.png",
            },
            {
                "index": 11,
                "id": "case-011",
                "label": 0,
                "clean_pred": 0,
                "adv_pred": 1,
                "attack": "fgsm",
                "eps": 4 / 255,
                "file": None,
            },
        ],
        "timing": {"total_s": 83.4, "clean_s": 0.42, "attacks_s": 82.9},
    }


def _phantom(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[1:]], indexing="ij")
    r2 = sum(g**2 for g in grids)
    lesion = 0.55 * np.exp(-r2 / 0.15)
    speckle = rng.gamma(4.0, 0.05, size=shape)
    return np.clip(0.15 + lesion + speckle, 0, 1).astype(np.float32)


def make_examples(class_names: tuple[str, ...] = ("benign", "malignant")) -> list[ExampleImages]:
    """A grey 2-D, an RGB 2-D and a grey 3-D example with sign-noise perturbations."""
    rng = np.random.default_rng(0)
    out = []
    specs = [
        ((1, 64, 64), 8 / 255, "8/255", "pgd", "case-003", (1, 1, 0)),
        ((3, 48, 48), 4 / 255, "4/255", "fgsm", "case-011", (0, 0, 1)),
        ((1, 32, 32, 9), 8 / 255, "8/255", "pgd", "vol-7", (1, 1, 1)),
    ]
    for shape, eps, disp, attack, ident, (label, cp, ap) in specs:
        clean = _phantom(rng, shape)
        adv = np.clip(clean + eps * np.sign(rng.standard_normal(shape)), 0, 1).astype(np.float32)
        out.append(
            ExampleImages(
                clean=clean,
                adversarial=adv,
                label=label,
                clean_pred=cp,
                adv_pred=ap,
                attack=attack,
                eps=eps,
                id=ident,
                class_names=class_names,
                eps_display=disp,
            )
        )
    return out
