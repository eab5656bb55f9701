"""Segmentation commands of the ``medrobust`` program.

``register(app)`` adds ``medrobust evaluate-segmentation``: the audit of a saved segmenter with
every segmentation option (targeted attacks, target kinds, noise baselines, sliding windows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def register(app: typer.Typer) -> None:
    """Add the segmentation commands to the ``medrobust`` typer app."""

    @app.command("evaluate-segmentation")
    def evaluate_segmentation_cmd(
        checkpoint: Annotated[Path, typer.Argument(help="A medrobust checkpoint of a segmenter.")],
        data: Annotated[str, typer.Option(help="Data set with masks.")] = "bus-phantom",
        data_param: Annotated[
            list[str] | None,
            typer.Option("--data-param", help="Data set parameter key=value (repeatable)."),
        ] = None,
        split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
        attacks: Annotated[
            str,
            typer.Option(help="Comma-separated segmentation attacks (untargeted and targeted)."),
        ] = "pgd-seg,apgd-seg,asma,dag",
        targets: Annotated[
            str,
            typer.Option(help="Target kinds of targeted attacks: background, other, swap, dilate."),
        ] = "background,other",
        noise: Annotated[
            str,
            typer.Option(
                help="Noise baselines at matched SSIM: gaussian, rician, speckle (empty: none)."
            ),
        ] = "gaussian,rician,speckle",
        eps: Annotated[
            str, typer.Option(help="Comma-separated budgets, e.g. 1/255,4/255.")
        ] = "1/255,2/255,4/255,8/255",
        norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
        roi_size: Annotated[
            str | None,
            typer.Option(
                help="Sliding-window size, e.g. 64 or 64,64,32, for volumes larger than the "
                "training patch."
            ),
        ] = None,
        max_samples: Annotated[
            int | None,
            typer.Option(help="Evaluate at most this many samples."),
        ] = None,
        batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 8,
        seed: Annotated[int, typer.Option(help="Seed of attacks, targets and noise.")] = 0,
        out: Annotated[
            Path | None,
            typer.Option(help="Run folder (default runs/evaluate-segmentation-<time>)."),
        ] = None,
        overwrite: Annotated[bool, typer.Option(help="Replace results already in --out.")] = False,
    ) -> None:
        """Audit a saved segmentation model: Dice per budget, targeted attacks, noise."""
        from datetime import datetime

        from medrobust.cli import _parse_params, _progress, out_console
        from medrobust.config import DataSection, EvaluationSection, RunConfig
        from medrobust.models import load_checkpoint
        from medrobust.segmentation_pipeline import evaluate_segmentation_model

        model, card = load_checkpoint(checkpoint)
        if model.task.value != "segmentation":
            raise ValueError(
                f"{checkpoint} holds a {model.task.value} model; use `medrobust evaluate`"
            )
        params = _parse_params(data_param, "--data-param")
        ev = EvaluationSection.from_dict(
            {
                "suite": None,
                "attacks": _split(attacks),
                "eps": _split(eps),
                "norm": norm,
                "max_samples": max_samples,
                "batch_size": batch_size,
                "seed": seed,
            }
        )
        cfg = RunConfig(data=DataSection(name=data, params=params, eval_split=split), evaluation=ev)
        roi: int | list[int] | None = None
        if roi_size:
            try:
                sizes = [int(s) for s in _split(roi_size)]
            except ValueError as err:
                raise ValueError(
                    f"--roi-size must be integers like 64 or 64,64,32, got {roi_size!r}"
                ) from err
            roi = sizes[0] if len(sizes) == 1 else sizes
        run_dir = out or Path("runs") / f"evaluate-segmentation-{datetime.now():%Y%m%d-%H%M%S}"
        with _progress() as reporter:
            result, report = evaluate_segmentation_model(
                model,
                card,
                cfg,
                run_dir,
                reporter=reporter,
                overwrite=overwrite,
                config_extra={"checkpoint": str(checkpoint)},
                roi_size=roi,
                targets=_split(targets),
                noise=_split(noise),
            )
        out_console.print(result.summary())
        out_console.print(f"report: [bold]{report.resolve()}[/bold]")
