"""``medrobust demo``, ``train`` and ``evaluate``: the classification (and segmentation) audit.

Every command prints progress with rich, writes results atomically, and exits non-zero with a
one-line error (what was expected, what came) on bad input. The jobs live in
:mod:`medrobust.pipelines.audit` and :mod:`medrobust.pipelines.segmentation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medrobust.cli._common import (
    EVALUATED,
    AllowLargeEps,
    AttackNames,
    CliError,
    Config,
    Data,
    DataParam,
    Eps,
    MaxSamples,
    ModelParam,
    NormOpt,
    Out,
    Overwrite,
    Resume,
    Split,
    Suite,
    default_out,
    names,
    out_console,
    params,
    print_report,
    progress,
    started,
    started_audit,
)

__all__ = ["demo", "evaluate", "train"]

Task = Annotated[
    str, typer.Option(help="classification (default) or segmentation (a UNet on lesion masks).")
]
Quick = Annotated[bool, typer.Option(help="A tiny run for smoke tests (seconds).")]
Model = Annotated[str, typer.Option(help="Model name (see `medrobust list models`).")]
Epochs = Annotated[int | None, typer.Option(help="Epochs.")]
Lr = Annotated[float | None, typer.Option(help="Learning rate.")]
Defense = Annotated[
    str | None,
    typer.Option(
        help="Training recipe (`medrobust list defenses`): pgd-at, trades, fast-at, ssat."
    ),
]
DefenseParam = Annotated[
    list[str] | None,
    typer.Option(
        "--defense-param", help="Recipe parameter key=value (repeatable), e.g. eps=4/255."
    ),
]
LabelledFraction = Annotated[
    float | None,
    typer.Option(
        help="Fraction of the training labels to use, in (0, 1]; SSAT learns from the rest."
    ),
]
ClassWeights = Annotated[
    str | None,
    typer.Option(
        "--class-weights",
        help="Weight the training cross-entropy per class: 'balanced' (inverse class frequency "
        "of the training labels) or one weight per class, e.g. 1,4. Recorded in the model card.",
    ),
]
BatchNormCheck = Annotated[
    str | None,
    typer.Option(
        "--batchnorm-check",
        help="After training, compare eval-mode and train-mode predictions of best.pt on "
        "training images: 'recompute' the BatchNorm running statistics when they fail "
        "(default), only 'warn', or 'off'. Recorded in the model card.",
    ),
]
Mode = Annotated[str, typer.Option(help="individual or cascade.")]
PerAttack = Annotated[
    str,
    typer.Option(
        help="Per-attack rows: 'own' (each attack's own result at every budget) or 'carried' "
        "(samples broken at a smaller budget carried over; cheaper). The worst case is the same "
        "cumulative one in both."
    ),
]

WindowOpt = Annotated[
    str | None,
    typer.Option(
        "--window",
        help="Intensity window mapped to [0, 1], in the data's units: 'low,high' (e.g. "
        "--window=-160,240 HU, --window 0,2200 for 16-bit counts), 'p0.5,p99.5' (percentiles), "
        "a CT preset (ct-abdomen, ct-lung, ct-bone, ct-brain, ...), 'dtype' or 'header' "
        "(DICOM). Recorded in the model card; evaluate reuses the card's by default.",
    ),
]


ModelFile = Annotated[
    Path | None,
    typer.Argument(
        help="The model: a medrobust checkpoint (best.pt), a TorchScript or torch.export "
        "archive (a program you must trust), or a plain state_dict with --arch; optional with "
        "--model-file."
    ),
]
Arch = Annotated[
    str | None,
    typer.Option(help="Zoo architecture of a plain state_dict (see `medrobust list models`)."),
]
UserModel = Annotated[
    str | None,
    typer.Option(
        "--model-file",
        help="Your Python factory 'my_model.py:build' returning an nn.Module (called with the "
        "--model-param values). This RUNS THE CODE IN THAT FILE; the weights file, if given, "
        "is then loaded into the module as a state_dict.",
    ),
]
ModelInput = Annotated[
    list[str] | None,
    typer.Option(
        "--model-input",
        help="Input space of a model without a medrobust card, key=value (repeatable): "
        "num_classes, in_channels, spatial_dims, size=224,224, bounds=0,1, mean=..., std=..., "
        "class_names=a,b, task. Unset values come from the data set.",
    ),
]


AllowSizeMismatch = Annotated[
    bool,
    typer.Option(
        help="Audit a classifier on inputs of another size than its model card's, or any "
        "model on data of another voxel spacing (refused by default: a data set that takes "
        "a size gets the card's)."
    ),
]
AllowClassMismatch = Annotated[
    bool,
    typer.Option(
        help="Audit on data whose class names differ from the model card's (refused by "
        "default: a class index would mean two things)."
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        help="Autocast dtype of the model's forward in the attacks: fp32, bf16 or fp16 "
        "(the perturbation stays fp32; bf16/fp16 change robust accuracy slightly)."
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile/--no-compile",
        help="Compile the model's forward with torch.compile in the attacks (once per "
        "model; falls back to eager with a warning if no compiler is available).",
    ),
]


def _class_weights(text: str) -> str | tuple[float, ...]:
    """``--class-weights``: ``balanced`` or comma-separated numbers."""
    if text.strip().lower() == "balanced":
        return "balanced"
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise CliError(
            f"--class-weights must be 'balanced' or numbers separated by commas (one per "
            f"class, e.g. 1,4), got {text!r}"
        ) from None


def _with_window(data_params: dict[str, Any], window: str | None) -> dict[str, Any]:
    """``data_params`` with ``window`` set (the window is checked here, before any work)."""
    if window is None:
        return data_params
    from medrobust.data.windows import parse_window

    parse_window(window)
    return {**data_params, "window": window}


# What an interrupted run keeps (the interrupt line of the error boundary).
_TRAINED = "the training checkpoint of the last finished epoch (train/last.pt)"


def print_summary(result: Any, report: Path) -> None:
    """Print the clean accuracy, the worst-case robust accuracy per budget, the flagged sanity
    checks and the report path of a classification audit."""
    from medrobust._utils.format import fmt_eps

    m = result.metrics
    table = Table(title="Worst-case robust accuracy", show_lines=False)
    table.add_column("eps", justify="right")
    table.add_column("robust accuracy", justify="right")
    table.add_column("95% CI", justify="right")
    for row in m["worst_case"]:
        lo, hi = row["ci95"]
        table.add_row(fmt_eps(row["eps"]), f"{row['robust_accuracy']:.3f}", f"{lo:.2f}-{hi:.2f}")
    out_console.print(
        f"clean accuracy: [bold]{m['clean']['accuracy']:.3f}[/bold] (n={m['clean']['n']})"
    )
    out_console.print(table)
    flagged = [c for c in m["checks"] if c["status"] != "pass"]
    for c in flagged:
        colour = "red" if c["status"] == "fail" else "yellow"
        out_console.print(f"[{colour}]{c['status'].upper()} {c['code']}[/{colour}] {c['message']}")
    print_report(report)


def demo(
    out: Out = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML run configuration overriding the demo's.")
    ] = None,
    task: Task = "classification",
    quick: Quick = False,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a model on the embedded breast-ultrasound phantom and audit it end to end."""
    if task not in ("classification", "segmentation"):
        raise CliError(f"--task must be 'classification' or 'segmentation', got {task!r}")
    if task == "segmentation" and config:
        raise CliError("--config applies to the classification demo only")
    run_dir = out or default_out("demo")
    if task == "segmentation":
        started(run_dir)
        from medrobust.pipelines.segmentation import run_segmentation_demo

        with progress() as reporter:
            seg, report = run_segmentation_demo(
                run_dir, reporter=reporter, quick=quick, overwrite=overwrite or resume
            )
        out_console.print(seg.summary())
        print_report(report)
        return
    started(run_dir, saved=f"{_TRAINED} and {EVALUATED}", resume="--resume", marker="train/last.pt")
    from medrobust.pipelines.audit import run_audit
    from medrobust.pipelines.config import RunConfig, demo_config

    cfg = RunConfig.from_yaml(config) if config else demo_config(quick=quick)
    with progress() as reporter:
        result, report = run_audit(
            cfg, run_dir, reporter=reporter, resume=resume, overwrite=overwrite
        )
    print_summary(result, report)


def train(
    data: Data = "bus-phantom",
    model: Model = "small-cnn",
    data_param: DataParam = None,
    window: WindowOpt = None,
    model_param: ModelParam = None,
    epochs: Epochs = None,
    lr: Lr = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    defense: Defense = None,
    defense_param: DefenseParam = None,
    labelled_fraction: LabelledFraction = None,
    class_weights: ClassWeights = None,
    batchnorm_check: BatchNormCheck = None,
    config: Config = None,
    out: Out = None,
    resume: Resume = False,
    overwrite: Annotated[bool, typer.Option(help="Start over in a folder holding a run.")] = False,
) -> None:
    """Train a model with validation, best-checkpoint selection and resume."""
    run_dir = started(
        out or default_out("train"), saved=_TRAINED, resume="--resume", marker="train/last.pt"
    )
    from dataclasses import replace

    from medrobust.pipelines.audit import train_model
    from medrobust.pipelines.config import RunConfig, default_data_params

    cfg = RunConfig.from_yaml(config) if config else RunConfig()
    if not config:
        cfg.data.name, cfg.model.name = data, model
        cfg.data.params = default_data_params(data)  # size=64 only where the data set takes it
    cfg.data.params.update(_with_window(params(data_param, "--data-param"), window))
    cfg.model.params.update(params(model_param, "--model-param"))
    given = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if defense is not None:
        changes["recipe"], changes["recipe_params"] = defense, {}
    if defense_param:
        recipe_params = params(defense_param, "--defense-param", fractions=True)
        changes["recipe_params"] = {
            **changes.get("recipe_params", cfg.train.recipe_params),
            **recipe_params,
        }
    if labelled_fraction is not None:
        changes["labelled_fraction"] = labelled_fraction
    if class_weights is not None:
        changes["class_weights"] = _class_weights(class_weights)
    if batchnorm_check is not None:
        changes["batchnorm_check"] = batchnorm_check
    if changes:
        cfg.train = replace(cfg.train, **changes)
    with progress() as reporter:
        _, _, result = train_model(
            cfg, run_dir, reporter=reporter, resume=resume, overwrite=overwrite
        )
    out_console.print(
        f"best epoch {result.best_epoch}: {result.monitor} = {result.best_score}\n"
        f"checkpoint: [bold]{result.best_checkpoint.resolve()}[/bold]"
    )


def evaluate(
    checkpoint: ModelFile = None,
    data: Data = "bus-phantom",
    data_param: DataParam = None,
    window: WindowOpt = None,
    split: Split = "test",
    suite: Suite = "standard",
    attacks: AttackNames = None,
    eps: Eps = "1/255,2/255,4/255,8/255",
    norm: NormOpt = "linf",
    mode: Mode = "individual",
    per_attack: PerAttack = "own",
    max_samples: MaxSamples = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 100,
    seed: Annotated[int, typer.Option(help="Attack seed.")] = 0,
    out: Out = None,
    overwrite: Overwrite = False,
    allow_large_eps: AllowLargeEps = False,
    allow_size_mismatch: AllowSizeMismatch = False,
    allow_class_mismatch: AllowClassMismatch = False,
    arch: Arch = None,
    model_file: UserModel = None,
    model_param: ModelParam = None,
    model_input: ModelInput = None,
    precision: Precision = "fp32",
    compile_forward: Compile = False,
) -> None:
    """Audit a saved model on a named data set (resumes an interrupted run in --out).

    The model may be a medrobust checkpoint, a TorchScript or torch.export archive, a plain
    state_dict with --arch, or your own factory with --model-file.

    A segmentation model gets the segmentation audit (Dice under attack, targeted attacks,
    noise); ``evaluate-segmentation`` exposes its extra options.
    """
    if checkpoint is None and model_file is None:
        raise CliError("give the model file (e.g. best.pt), or --model-file my_model.py:build")
    run_dir = started_audit(out or default_out("evaluate"))
    from medrobust.pipelines.audit import evaluate_checkpoint
    from medrobust.pipelines.config import CheckpointAudit

    settings = CheckpointAudit(
        data=data,
        data_params=_with_window(params(data_param, "--data-param"), window),
        split=split,
        suite=suite,
        attacks=names(attacks),
        eps=names(eps),
        norm=norm,
        mode=mode,
        per_attack=per_attack,
        max_samples=max_samples,
        batch_size=batch_size,
        seed=seed,
        allow_large_eps=allow_large_eps,
        allow_size_mismatch=allow_size_mismatch,
        allow_class_mismatch=allow_class_mismatch,
        arch=arch,
        model_file=model_file,
        model_params=params(model_param, "--model-param"),
        model_input=params(model_input, "--model-input"),
        precision=precision,
        compile=compile_forward,
    )

    with progress() as reporter:
        outcome = evaluate_checkpoint(
            checkpoint,
            settings,
            run_dir,
            reporter=reporter,
            overwrite=overwrite,
        )
    if outcome.task == "segmentation":
        out_console.print(outcome.result.summary())
        print_report(outcome.report)
    else:
        print_summary(outcome.result, outcome.report)
