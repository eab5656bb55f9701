"""``medrobust evaluate-segmentation``: the audit of a saved segmenter with every segmentation
option (targeted attacks, target kinds, noise baselines, sliding windows with their window
batch, overlap, gradient checkpointing and memory limit).

The job is :func:`medrobust.pipelines.segmentation.evaluate_segmentation_checkpoint`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from medrobust.cli._common import (
    AllowLargeEps,
    Checkpoint,
    CliError,
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

if TYPE_CHECKING:
    from medrobust.pipelines.windows import SlidingWindowOptions

__all__ = ["evaluate_segmentation", "roi", "sliding_windows"]

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

WindowCheckpoint = Annotated[
    bool | None,
    typer.Option(
        "--window-checkpoint/--no-window-checkpoint",
        help="Gradient checkpointing of the sliding windows during attacks: each window batch "
        "is recomputed in the backward pass instead of kept (less memory, about one more "
        "forward pass per step; default off). Needs --roi-size.",
    ),
]
MaxMemory = Annotated[
    str | None,
    typer.Option(
        help="Memory an attack step through the sliding windows may use, e.g. 6GiB, 512MiB or "
        "bytes; a volume estimated to need more is refused before the attack (default: the "
        "free memory). Needs --roi-size.",
    ),
]
SwBatchSize = Annotated[
    int | None,
    typer.Option(min=1, help="Sliding windows per network call (default 4). Needs --roi-size."),
]
Overlap = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=0.99,
        help="Overlap of neighbouring sliding windows, in [0, 0.99] (default 0.25). Needs "
        "--roi-size.",
    ),
]


def sliding_windows(
    roi_size: str | None,
    *,
    checkpoint: bool | None = None,
    max_memory: str | None = None,
    sw_batch_size: int | None = None,
    overlap: float | None = None,
) -> SlidingWindowOptions | None:
    """The sliding-window settings of the command line, checked before anything runs.

    Returns:
        The window size and options, or None without ``--roi-size``.

    Raises:
        CliError: For options without ``--roi-size`` or a size that cannot be read.
        ValueError: For a window size that is not integers.
    """
    flags = {
        "--window-checkpoint": checkpoint,
        "--max-memory": max_memory,
        "--sw-batch-size": sw_batch_size,
        "--overlap": overlap,
    }
    given = [flag for flag, value in flags.items() if value is not None]
    size = roi(roi_size)
    if size is None:
        if given:
            raise CliError(
                f"{', '.join(given)} only apply to sliding-window inference: pass --roi-size "
                "(e.g. --roi-size 64 or 64,64,32) or leave them out"
            )
        return None
    from medrobust.models.window_memory import parse_size
    from medrobust.pipelines.windows import SlidingWindowOptions

    try:
        limit = None if max_memory is None else parse_size(max_memory, "--max-memory")
    except ValueError as err:
        raise CliError(str(err)) from err
    return SlidingWindowOptions(
        size if isinstance(size, int) else tuple(size),
        sw_batch_size=sw_batch_size,
        overlap=overlap,
        checkpoint=checkpoint,
        max_memory=limit,
    )


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
    window_checkpoint: WindowCheckpoint = None,
    max_memory: MaxMemory = None,
    sw_batch_size: SwBatchSize = None,
    overlap: Overlap = None,
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
    window = sliding_windows(
        roi_size,
        checkpoint=window_checkpoint,
        max_memory=max_memory,
        sw_batch_size=sw_batch_size,
        overlap=overlap,
    )  # checked before anything runs
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
            roi_size=window,
            targets=names(targets),
            noise=names(noise),
            broken_fraction=broken_fraction,
            suite=suite,
        )
    out_console.print(result.summary())
    print_report(report)
