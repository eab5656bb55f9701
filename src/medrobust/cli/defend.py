"""``medrobust defend``: the defence study (standard training, PGD-AT, fast AT and SSAT at
several labelled fractions, each audited with and without every detector, in one report that
opens with the answer: the cheapest of retrain / detect / both that reaches ``--target-risk``).

The job is :func:`medrobust.pipelines.study.run_study`; this module parses the options into its
:class:`~medrobust.pipelines.study.StudyConfig` and prints the result. Bad input raises
``ValueError``/``TypeError`` with a message naming what was expected and what came; the
``medrobust`` entry point prints it as one line and exits with status 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medrobust.cli._common import (
    AttackNames,
    DataParam,
    ModelParam,
    NormOpt,
    Threads,
    budgets,
    names,
    out_console,
    params,
    print_report,
    say,
    started,
)

__all__ = ["defend", "study_config"]

Recipes = Annotated[
    str, typer.Option(help="Comma-separated recipes (see `medrobust list defenses`).")
]
Fractions = Annotated[
    str, typer.Option(help="Comma-separated labelled fractions in (0, 1], e.g. 0.1,0.25,1.")
]
EqualSteps = Annotated[
    bool, typer.Option(help="Scale epochs by 1/fraction so every model makes as many steps.")
]
RecipeParam = Annotated[
    list[str] | None,
    typer.Option("--defense-param", help="Recipe parameter recipe.key=value, e.g. ssat.lam=1."),
]
DetectorNames = Annotated[
    str, typer.Option(help="Comma-separated detectors (see `medrobust list detectors`).")
]
DetectorParam = Annotated[
    list[str] | None,
    typer.Option(
        "--detector-param",
        help="Detector parameter detector.key=value, e.g. mahalanobis.noise=0.001 (repeatable; "
        "key=value alone with one detector).",
    ),
]
AdaptiveAttacks = Annotated[
    str,
    typer.Option(help="Comma-separated attacks that know the detector (medrobust list attacks)."),
]
TargetRisk = Annotated[
    float, typer.Option(help="Largest acceptable risk; the report names the cheapest option.")
]
TargetEps = Annotated[
    str | None, typer.Option(help="Budget of the answer (one of --eps; default the largest).")
]
PerAttack = Annotated[
    bool, typer.Option(help="Re-run each suite attack for per-attack detection rows.")
]


def fractions_list(text: str, what: str) -> list[float]:
    """Parse comma-separated fractions such as ``0.1,25%,1``.

    Raises:
        ValueError: For an item that is not a number, or an empty list.
    """
    out = []
    for item in names(text):
        try:
            out.append(float(item[:-1]) / 100 if item.endswith("%") else float(item))
        except ValueError as exc:
            raise ValueError(f"{what} must be numbers such as 0.1,0.25,1, got {item!r}") from exc
    if not out:
        raise ValueError(f"{what} is empty")
    return out


def detector_params(items: list[str] | None, detectors: list[str]) -> dict[str, dict[str, Any]]:
    """Per-detector parameters of ``--detector-param`` items (``detector.key=value``; a bare
    ``key=value`` when the study has one detector).

    Raises:
        ValueError: For an item that does not parse, or a bare key with several detectors.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, value in params(items, "--detector-param", fractions=True).items():
        if "." in key:
            name, param = key.split(".", 1)
        elif len(detectors) == 1:
            name, param = detectors[0], key
        else:
            raise ValueError(
                f"--detector-param must name the detector with several detectors "
                f"({','.join(detectors)}), e.g. {detectors[0]}.{key}=..., got {key!r}"
            )
        out.setdefault(name, {})[param] = value
    return out


def study_config(opts: Mapping[str, Any]) -> Any:
    """The study configuration of the ``defend`` options (keyed by parameter name).

    The phantom defaults to 32x32 images and the small CNN to width 8 unless the options say
    otherwise; ``--defense-param`` items name their recipe (``ssat.lam=1``).

    Raises:
        ValueError: For options that do not parse or settings the study rejects.
    """
    from medrobust._utils.validate import parse_eps
    from medrobust.pipelines.study import StudyConfig

    per_recipe: dict[str, dict[str, Any]] = {}
    for key, value in params(opts["defense_param"], "--defense-param", fractions=True).items():
        if "." not in key:
            raise ValueError(f"--defense-param must name the recipe, e.g. ssat.lam=1, got {key!r}")
        recipe, name = key.split(".", 1)
        per_recipe.setdefault(recipe, {})[name] = value
    phantom = opts["data"] == "bus-phantom"
    data_params = params(opts["data_param"], "--data-param", fractions=True)
    model_params = params(opts["model_param"], "--model-param", fractions=True)
    sizes = {"train": opts["n_train"], "val": opts["n_val"], "test": opts["n_test"]}
    detectors = names(opts["detectors"])
    target_eps = opts.get("target_eps")
    return StudyConfig(
        data=opts["data"],
        data_params={**({"size": 32} if phantom else {}), **data_params},
        split_sizes=sizes if phantom else None,
        model=opts["model"],
        model_params={**({"width": 8} if opts["model"] == "small-cnn" else {}), **model_params},
        recipes=tuple(names(opts["recipes"])),
        fractions=tuple(fractions_list(opts["fractions"], "--fractions")),
        epochs=opts["epochs"],
        equal_steps=opts["equal_steps"],
        batch_size=opts["batch_size"],
        lr=opts["lr"],
        seed=opts["seed"],
        train_eps=parse_eps(opts["train_eps"]),
        pgd_steps=opts["pgd_steps"],
        recipe_params=per_recipe,
        suite=opts["suite"],
        attacks=names(opts["attacks"]),
        eps=tuple(budgets(opts["eps"])),
        norm=opts["norm"],
        checks=opts["checks"],
        detectors=tuple(detectors),
        detector_params=detector_params(opts["detector_param"], detectors),
        fpr=opts["fpr"],
        adaptive=opts["adaptive"],
        adaptive_attacks=tuple(names(opts.get("adaptive_attacks") or "pgd-adaptive")),
        adaptive_params={"steps": opts["adaptive_steps"]},
        detection_per_attack=opts["per_attack"],
        write_audits=opts["audits"],
        target_risk=opts.get("target_risk", 0.2),
        target_eps=None if target_eps is None else parse_eps(target_eps),
    )


def defend(
    data: Annotated[str, typer.Option(help="Data set name.")] = "bus-phantom",
    data_param: DataParam = None,
    n_train: Annotated[int, typer.Option(help="Training images (phantom).")] = 320,
    n_val: Annotated[int, typer.Option(help="Validation images (phantom).")] = 100,
    n_test: Annotated[int, typer.Option(help="Test images (phantom).")] = 100,
    model: Annotated[str, typer.Option(help="Architecture.")] = "small-cnn",
    model_param: ModelParam = None,
    recipes: Recipes = "standard,pgd-at,fast-at,ssat",
    fractions: Fractions = "0.1,0.25,1",
    epochs: Annotated[int, typer.Option(help="Epochs at 100% labels.")] = 8,
    equal_steps: EqualSteps = True,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-3,
    train_eps: Annotated[str, typer.Option(help="Training budget, e.g. 4/255.")] = "4/255",
    pgd_steps: Annotated[int, typer.Option(help="PGD-AT steps.")] = 7,
    defense_param: RecipeParam = None,
    suite: Annotated[str, typer.Option(help="Audit suite (quick, standard, thorough).")] = "quick",
    attacks: AttackNames = None,
    eps: Annotated[str, typer.Option(help="Evaluation budgets.")] = "1/255,2/255,4/255",
    norm: NormOpt = "linf",
    checks: Annotated[bool, typer.Option(help="Run the audit's sanity checks.")] = True,
    detectors: DetectorNames = "uad",
    detector_param: DetectorParam = None,
    fpr: Annotated[float, typer.Option(help="Clean false-positive rate of the detector.")] = 0.05,
    adaptive: Annotated[bool, typer.Option(help="Attack each guarded model adaptively.")] = True,
    adaptive_attacks: AdaptiveAttacks = "pgd-adaptive",
    adaptive_steps: Annotated[int, typer.Option(help="Steps of the adaptive attacks.")] = 10,
    target_risk: TargetRisk = 0.2,
    target_eps: TargetEps = None,
    per_attack: PerAttack = False,
    threads: Threads = None,
    audits: Annotated[bool, typer.Option(help="Write each model's audit report.")] = True,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Study folder.")] = Path("runs/defend"),
    overwrite: Annotated[bool, typer.Option(help="Replace a completed study.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted study.")] = False,
) -> None:
    """The defence study: standard training, PGD-AT, fast AT and SSAT at several labelled
    fractions, each audited with and without every detector, in one report that names the
    cheapest of retrain / detect / both reaching the target risk."""
    from medrobust.pipelines.reporter import set_threads
    from medrobust.pipelines.study import run_study

    cfg = study_config(locals())
    started(
        out,
        saved="the training checkpoint of each model's last finished epoch",
        resume="--resume",
        marker="models/*/train/last.pt",
    )
    set_threads(threads)
    result = run_study(cfg, out, overwrite=overwrite, resume=resume, progress=say)
    out_console.print(study_table(result.metrics))
    for line in result.metrics["study"]["answer"]["sentences"]:
        out_console.print(line, markup=False, highlight=False)
    print_report(result.report)


def study_table(metrics: Mapping[str, Any]) -> Table:
    """The study's table: per model, its cost, clean and robust accuracy, and its risk at the
    answer's budget alone and with each detector (the pair risk: false alarms counted, under
    the strongest attack measured)."""
    table = Table(title="Defence study")
    eps_keys = metrics["threat_model"]["eps_display"]
    answer = metrics["study"]["answer"]
    detectors = list(metrics["study"]["config"]["detectors"])
    for col in (
        "model",
        "train s",
        "cost",
        "clean",
        *[f"robust {e}" for e in eps_keys],
        f"risk {answer['eps_display']}",
        *[f"+ {d}" for d in detectors],
    ):
        table.add_column(col, justify="right")
    risk = {
        (r["model"], r["detector"]): r
        for r in metrics["risk"]
        if math.isclose(r["eps"], answer["eps"], rel_tol=1e-9)
    }
    for row in metrics["defenses"]:
        pair = []
        for d in detectors:
            r = risk[(row["model"], d)]
            adaptive = r.get("pair_risk_adaptive")
            pair.append(f"{(r['pair_risk'] if adaptive is None else adaptive):.3f}")
        table.add_row(
            row["model"],
            f"{row['wall_time_s']:.1f}",
            "-" if row["cost_ratio"] is None else f"{row['cost_ratio']:.2f}x",
            f"{row['clean_accuracy']:.3f}",
            *[f"{row['robust_accuracy'][e]:.3f}" for e in eps_keys],
            f"{1.0 - row['robust_accuracy'][answer['eps_display']]:.3f}",
            *pair,
        )
    return table
