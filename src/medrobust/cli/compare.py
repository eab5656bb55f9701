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

    Raises:
        ValueError: For options that do not parse or settings the comparison rejects.
    """
    from medrobust.pipelines.compare_config import DEFAULT_MODELS, CompareConfig

    phantom = opts["data"] == "bus-phantom"
    data_params = params(opts["data_param"], "--data-param", fractions=True)
    shift = params(opts["shift_param"], "--shift-param", fractions=True)
    if not shift and phantom and opts["shift_data"] is None:
        shift = {"scanner": "shifted"}
    sizes = {"train": opts["n_train"], "val": opts["n_val"], "test": opts["n_test"]}
    models = list(opts["model"] or [])
    checkpoints = [str(p) for p in opts["checkpoint"] or []]
    if not models and not checkpoints:
        models = list(DEFAULT_MODELS)
    corruptions = names(opts["corruptions"]) if opts["corruptions"] else None
    return CompareConfig(
        data=opts["data"],
        data_params={**({"size": 64} if phantom else {}), **data_params},
        split_sizes=sizes if phantom else None,
        shift_params=shift or None,
        shift_data=opts["shift_data"],
        shift_split=opts["shift_split"],
        models=models,
        checkpoints=checkpoints,
        seeds=[int(s) for s in names(opts["seeds"])],
        epochs=opts["epochs"],
        batch_size=opts["batch_size"],
        lr=opts["lr"],
        attacks=names(opts["attacks"]),
        eps=budgets(opts["eps"]),
        adv_samples=opts["adv_samples"],
        corruptions=corruptions,
        corrupt_samples=opts["corrupt_samples"],
        minimal=opts["minimal"],
        reference=opts["reference"],
        modality=opts["modality"],
        seed=opts["seed"],
    )


def compare(
    model: Models = None,
    checkpoint: Checkpoints = None,
    data: Annotated[str, typer.Option(help="Data set name.")] = "bus-phantom",
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
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 8,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-3,
    attacks: Annotated[str, typer.Option(help="Attacks per budget.")] = "fgsm,deepfool,pgd",
    eps: Annotated[str, typer.Option(help="Linf budgets.")] = "1/255,2/255,4/255",
    adv_samples: Annotated[int, typer.Option(help="Test images attacked.")] = 100,
    corruptions: Annotated[
        str | None, typer.Option(help="Corruptions (default: all of the modality).")
    ] = None,
    corrupt_samples: Annotated[int, typer.Option(help="Test images corrupted.")] = 100,
    minimal: Annotated[
        bool, typer.Option(help="Measure the minimal perturbation (DeepFool L2, JSMA L0).")
    ] = True,
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
    """Compare models on clean accuracy, a shifted test split, natural corruptions and
    adversarial robustness, and say whether the accurate models are the robust ones.

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
    table = Table(title=f"Generalizability vs robustness (robust at {e})")
    for col in ("model", "params", "clean", "shifted", "corr. BE", f"robust {e}", "L2 to flip"):
        table.add_column(col, justify="right")

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * float(v):.1f}%"

    for r in cmp["table"]:
        l2 = r["deepfool_l2_median"]
        l2_text = "-" if l2 is None else "not flipped" if l2 == "inf" else f"{l2:.3g}"
        table.add_row(
            r["label"],
            f"{r['parameters']:,}" if r["parameters"] is not None else "-",
            pct(r["clean_accuracy"]),
            pct(r["shifted_accuracy"]),
            pct(r["corruption_mean_be"]),
            pct(r["robust"][e]["accuracy"]),
            l2_text,
        )
    return table
