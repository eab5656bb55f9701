"""``medrobust evaluate-segmentation``: the audit of a saved segmenter with every segmentation
option (targeted attacks, target kinds, noise baselines, sliding windows).

The job is :func:`medrobust.pipelines.segmentation.evaluate_segmentation_checkpoint`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from medrobust.cli._common import (
    AllowLargeEps,
    Checkpoint,
    DataParam,
    Eps,
    MaxSamples,
    NormOpt,
    Out,
    Overwrite,
    Split,
    default_out,
    names,
    out_console,
    params,
    print_report,
    progress,
    started_audit,
)
from medrobust.cli.audit import AllowClassMismatch, AllowSizeMismatch

__all__ = ["evaluate_segmentation", "roi"]

SegData = Annotated[str, typer.Option(help="Data set with masks.")]
SegAttacks = Annotated[
    str, typer.Option(help="Comma-separated segmentation attacks (untargeted and targeted).")
]
Targets = Annotated[
    str, typer.Option(help="Target kinds of targeted attacks: background, other, swap, dilate.")
]
Noise = Annotated[
    str,
    typer.Option(help="Noise baselines at matched SSIM: gaussian, rician, speckle (empty: none)."),
]
SegSuite = Annotated[
    str | None,
    typer.Option(
        help="Frozen segmentation suite for the untargeted attacks: seg-standard or "
        "seg-thorough (SEA-style scheduling); --attacks then names only targeted attacks."
    ),
]
BrokenFraction = Annotated[
    float,
    typer.Option(
        help="A sample is broken when its Dice under attack falls below this fraction of its "
        "clean Dice, in (0, 1]."
    ),
]
RoiSize = Annotated[
    str | None,
    typer.Option(
        help="Sliding-window size, e.g. 64 or 64,64,32, for volumes larger than the training patch."
    ),
]


def roi(text: str | None) -> int | list[int] | None:
    """Parse ``--roi-size``: one size for every axis, or one size per axis.

    Raises:
        ValueError: If the sizes are not integers.
    """
    if not text:
        return None
    try:
        sizes = [int(s) for s in names(text)]
    except ValueError as err:
        raise ValueError(f"--roi-size must be integers like 64 or 64,64,32, got {text!r}") from err
    return sizes[0] if len(sizes) == 1 else sizes


def evaluate_segmentation(
    checkpoint: Checkpoint,
    data: SegData = "bus-phantom",
    data_param: DataParam = None,
    split: Split = "test",
    attacks: SegAttacks = "pgd-seg,apgd-seg,asma,dag",
    suite: SegSuite = None,
    broken_fraction: BrokenFraction = 0.5,
    targets: Targets = "background,other",
    noise: Noise = "gaussian,rician,speckle",
    eps: Eps = "1/255,2/255,4/255,8/255",
    norm: NormOpt = "linf",
    roi_size: RoiSize = None,
    max_samples: MaxSamples = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of attacks, targets and noise.")] = 0,
    out: Out = None,
    overwrite: Overwrite = False,
    allow_large_eps: AllowLargeEps = False,
    allow_size_mismatch: AllowSizeMismatch = False,
    allow_class_mismatch: AllowClassMismatch = False,
) -> None:
    """Audit a saved segmentation model: Dice per budget, targeted attacks, noise."""
    if suite is not None and attacks == "pgd-seg,apgd-seg,asma,dag":
        attacks = "asma,dag"  # the suite names the untargeted attacks
    run_dir = started_audit(out or default_out("evaluate-segmentation"))
    from medrobust.pipelines.config import CheckpointAudit
    from medrobust.pipelines.segmentation import evaluate_segmentation_checkpoint

    settings = CheckpointAudit(
        data=data,
        data_params=params(data_param, "--data-param"),
        split=split,
        attacks=names(attacks),
        eps=names(eps),
        norm=norm,
        max_samples=max_samples,
        batch_size=batch_size,
        seed=seed,
        allow_large_eps=allow_large_eps,
        allow_size_mismatch=allow_size_mismatch,
        allow_class_mismatch=allow_class_mismatch,
    )
    with progress() as reporter:
        result, report = evaluate_segmentation_checkpoint(
            checkpoint,
            settings,
            run_dir,
            reporter=reporter,
            overwrite=overwrite,
            roi_size=roi(roi_size),
            targets=names(targets),
            noise=names(noise),
            broken_fraction=broken_fraction,
            suite=suite,
        )
    out_console.print(result.summary())
    print_report(report)
