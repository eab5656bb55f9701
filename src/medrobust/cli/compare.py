"""``medrobust compare``: generalizability vs robustness of several models (Paschali et al.).

The job is :func:`medrobust.pipelines.compare.run_compare`; this module parses the options into
its :class:`~medrobust.pipelines.compare_config.CompareConfig` and prints the ranking and the
finding. Bad input raises ``ValueError`` with a message naming what was expected and what came;
the ``medrobust`` entry point prints it as one line and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medrobust.cli._common import (
    DataParam,
    Threads,
    budgets,
    names,
    out_console,
    params,
    print_report,
    say,
    started,
)

__all__ = ["compare", "compare_config"]

Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="A zoo architecture to train, optionally with parameters: small-cnn:width=16 "
        "(repeatable; default: four small networks of three families).",
    ),
]
Checkpoints = Annotated[
    list[Path] | None,
    typer.Option("--checkpoint", help="A saved classifier (best.pt) to compare (repeatable)."),
]
Shift = Annotated[
    list[str] | None,
    typer.Option(
        "--shift-param",
        help="Data parameter key=value of the shifted test split (repeatable; phantom default "
        "scanner=shifted).",
    ),
]


def compare_config(opts: Mapping[str, Any]) -> Any:
    """The comparison settings of the ``compare`` options (keyed by parameter name).

    Options left at None take the task's defaults (:class:`CompareConfig` for classification,
    :meth:`CompareConfig.for_segmentation` for segmentation).

    Raises:
        ValueError: For options that do not parse or settings the comparison rejects.
    """
    from medrobust.pipelines.compare_config import CompareConfig

    task = opts["task"]
    if task not in ("classification", "segmentation"):
        raise ValueError(f"--task must be classification or segmentation, got {task!r}")
    seg = task == "segmentation"
    data = opts["data"] or ("mni152-tissue" if seg else "bus-phantom")
    phantom = data == "bus-phantom"
    out: dict[str, Any] = {"data": data, "task": task}
    data_params = params(opts["data_param"], "--data-param", fractions=True)
    if opts["data"] is not None or data_params:
        out["data_params"] = {**({"size": 64} if phantom else {}), **data_params}
    shift = params(opts["shift_param"], "--shift-param", fractions=True)
    if shift or opts["shift_data"] is not None:
        out["shift_params"] = shift or None
    else:  # the phantom's other scanner; no shift known for other data sets
        out["shift_params"] = {"scanner": "shifted"} if phantom else None
    out["split_sizes"] = (
        {"train": opts["n_train"], "val": opts["n_val"], "test": opts["n_test"]}
        if phantom
        else None
    )
    if opts["model"] or opts["checkpoint"]:
        out["models"] = list(opts["model"] or [])
        out["checkpoints"] = [str(p) for p in opts["checkpoint"] or []]
    simple = {
        "shift_data": opts["shift_data"],
        "shift_split": opts["shift_split"],
        "seeds": [int(s) for s in names(opts["seeds"])],
        "epochs": opts["epochs"],
        "batch_size": opts["batch_size"],
        "lr": opts["lr"],
        "attacks": names(opts["attacks"]) if opts["attacks"] else None,
        "eps": budgets(opts["eps"]),
        "adv_samples": opts["adv_samples"],
        "corruptions": names(opts["corruptions"]) if opts["corruptions"] else None,
        "corrupt_samples": opts["corrupt_samples"],
        "minimal": opts["minimal"],
        "reference": opts["reference"],
        "modality": opts["modality"],
        "seed": opts["seed"],
    }
    out.update({k: v for k, v in simple.items() if v is not None})
    return CompareConfig.for_segmentation(**out) if seg else CompareConfig(**out)


def compare(
    model: Models = None,
    checkpoint: Checkpoints = None,
    task: Annotated[
        str, typer.Option(help="classification (accuracy) or segmentation (Dice).")
    ] = "classification",
    data: Annotated[
        str | None,
        typer.Option(help="Data set (default: bus-phantom; segmentation: mni152-tissue)."),
    ] = None,
    data_param: DataParam = None,
    n_train: Annotated[int, typer.Option(help="Training images (phantom).")] = 400,
    n_val: Annotated[int, typer.Option(help="Validation images (phantom).")] = 100,
    n_test: Annotated[int, typer.Option(help="Test images (phantom).")] = 200,
    shift_param: Shift = None,
    shift_data: Annotated[
        str | None, typer.Option(help="Another data set as the shifted test split.")
    ] = None,
    shift_split: Annotated[str, typer.Option(help="Split of the shifted data.")] = "test",
    seeds: Annotated[str, typer.Option(help="Training seeds, e.g. 0,1,2.")] = "0",
    epochs: Annotated[int | None, typer.Option(help="Training epochs (task default).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    attacks: Annotated[
        str | None,
        typer.Option(help="Attacks per budget (default fgsm,deepfool,pgd; segmentation pgd-seg)."),
    ] = None,
    eps: Annotated[str, typer.Option(help="Linf budgets.")] = "1/255,2/255,4/255",
    adv_samples: Annotated[int, typer.Option(help="Test images attacked.")] = 100,
    corruptions: Annotated[
        str | None, typer.Option(help="Corruptions (default: all of the modality).")
    ] = None,
    corrupt_samples: Annotated[int, typer.Option(help="Test images corrupted.")] = 100,
    minimal: Annotated[
        bool | None,
        typer.Option(help="Measure the minimal perturbation (DeepFool L2, JSMA L0; classifiers)."),
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Reference model of the relative corruption error.")
    ] = None,
    modality: Annotated[
        str | None, typer.Option(help="Imaging modality (default: the data set's).")
    ] = None,
    threads: Threads = None,
    seed: Annotated[int, typer.Option(help="Seed of attacks and corruptions.")] = 0,
    out: Annotated[Path, typer.Option(help="Comparison folder.")] = Path("runs/compare"),
    overwrite: Annotated[bool, typer.Option(help="Start over in --out.")] = False,
) -> None:
    """Compare models on clean accuracy (or Dice), a shifted test split, natural corruptions
    and adversarial robustness, and say whether the best models are the robust ones.

    Reruns in --out reuse every finished model, so an interrupted comparison continues where
    it stopped."""
    from medrobust.pipelines.compare import run_compare
    from medrobust.pipelines.reporter import set_threads

    cfg = compare_config(locals())
    started(out, saved="each finished model's results (models/*/result.json)", resume="")
    set_threads(threads)
    result = run_compare(cfg, out, overwrite=overwrite, progress=say)
    out_console.print(compare_table(result.metrics))
    out_console.print(result.finding)
    print_report(result.report)


def compare_table(metrics: Mapping[str, Any]) -> Table:
    """The ranking table printed by ``medrobust compare``."""
    cmp = metrics["comparison"]
    from medrobust._utils.format import fmt_eps

    e = fmt_eps(cmp["headline_eps"])
    metric = cmp.get("metric", "accuracy")
    table = Table(title=f"Generalizability vs robustness ({metric}; robust at {e})")
    corr = "corr. BE" if metric == "accuracy" else "corr. Dice"
    for col in ("model", "params", "clean", "shifted", corr, f"robust {e}", "L2 to flip"):
        table.add_column(col, justify="right")

    def pct(v: Any) -> str:
        if v is None:
            return "-"
        return f"{100 * float(v):.1f}%" if metric == "accuracy" else f"{float(v):.3f}"

    for r in cmp["table"]:
        l2 = r["deepfool_l2_median"]
        l2_text = "-" if l2 is None else "not flipped" if l2 == "inf" else f"{l2:.3g}"
        table.add_row(
            r["label"],
            f"{r['parameters']:,}" if r["parameters"] is not None else "-",
            pct(r["clean"]),
            pct(r["shifted"]),
            pct(r["corruption"]),
            pct(r["robust"][e]["score"]),
            l2_text,
        )
    return table
