"""``medrobust explain``: Grad-CAM maps of a saved model, clean and attacked, in a run folder.

The job is :func:`medrobust.pipelines.explain.run_explain`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from medrobust.cli._common import (
    Checkpoint,
    Data,
    DataParam,
    NormOpt,
    Out,
    Overwrite,
    budgets,
    default_out,
    names,
    params,
    print_report,
    progress,
    started,
)

__all__ = ["explain"]

ExplainAttacks = Annotated[str, typer.Option(help="Comma-separated explanation attacks.")]
Steps = Annotated[int, typer.Option(help="Gradient steps per attack.")]
Layer = Annotated[
    str | None, typer.Option(help="Grad-CAM layer (default: the model's documented layer).")
]
Method = Annotated[str, typer.Option(help="gradcam or gradcam++.")]
TopK = Annotated[float, typer.Option(help="Top-k size as a fraction of the pixels.")]
NExamples = Annotated[int, typer.Option(help="Samples in the overlay figure.")]


def explain(
    checkpoint: Checkpoint,
    data: Data = "bus-phantom",
    data_param: DataParam = None,
    split: Annotated[str, typer.Option(help="Split to explain.")] = "test",
    attacks: ExplainAttacks = "gradcam-kept,gradcam-flip",
    eps: Annotated[
        str, typer.Option(help="Comma-separated budgets, e.g. 1/255,2/255,4/255,8/255.")
    ] = "1/255,2/255,4/255,8/255",
    norm: NormOpt = "linf",
    steps: Steps = 20,
    layer: Layer = None,
    method: Method = "gradcam",
    k: TopK = 0.05,
    max_samples: Annotated[
        int | None, typer.Option(help="Explain at most this many samples.")
    ] = 64,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the attacks and the noise.")] = 0,
    n_examples: NExamples = 4,
    save_maps: Annotated[bool, typer.Option(help="Write maps.npz.")] = True,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """Grad-CAM maps of a saved model, clean and under explanation attacks, with a report."""
    run_dir = started(out or default_out("explain"))
    from medrobust.pipelines.explain import ExplainSettings, run_explain

    attack_names = names(attacks)
    if not attack_names:
        raise ValueError(f"--attacks must name at least one attack, got {attacks!r}")
    settings = ExplainSettings(
        data=data,
        data_params=params(data_param, "--data-param"),
        split=split,
        attacks=attack_names,
        eps=budgets(eps),
        norm=norm,
        steps=steps,
        layer=layer,
        method=method,
        k=k,
        max_samples=max_samples,
        batch_size=batch_size,
        seed=seed,
        n_examples=n_examples,
        save_maps=save_maps,
    )
    with progress() as reporter:
        report = run_explain(
            checkpoint,
            run_dir,
            settings,
            overwrite=overwrite,
            progress=reporter.evaluate,
        )
    print_report(report)
