"""The segmentation demo: train a UNet on the breast-ultrasound phantom's lesion masks and audit
it under untargeted and targeted attacks and noise (what ``medrobust demo --task segmentation``
runs), and the evaluation of a saved segmenter on a named data set (``medrobust evaluate`` and
``medrobust evaluate-segmentation``).

The run folder holds ``train/`` (checkpoints and history), ``report.html``, ``metrics.json``,
``config.yaml`` and ``adversarial/*.npz``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medrobust._utils.dist import rank_path
from medrobust.models.adapter import ModelAdapter
from medrobust.pipelines.config import CheckpointAudit
from medrobust.pipelines.locking import EVALUATION_STATE, holds_run_lock
from medrobust.pipelines.reporter import Reporter
from medrobust.pipelines.results import SegmentationAudit, evaluate_segmentation
from medrobust.pipelines.windows import SlidingWindowOptions, as_window

__all__ = [
    "demo_settings",
    "evaluate_segmentation_checkpoint",
    "evaluate_segmentation_model",
    "evaluate_segmenter",
    "run_segmentation_demo",
    "split_attacks",
]


def demo_settings(quick: bool = False) -> dict[str, Any]:
    """The settings of the segmentation demo (``quick``: a tiny run for smoke tests).

    Returns:
        A dict with ``data``, ``model``, ``train`` and ``evaluation`` entries.
    """
    if quick:
        return {
            "data": {
                "name": "bus-phantom",
                "size": 32,
                "n_train": 32,
                "n_val": 8,
                "n_test": 4,
                "seed": 0,
            },
            "model": {
                "name": "unet",
                "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
            },
            "train": {"epochs": 1, "batch_size": 16, "lr": 3e-3, "seed": 0},
            "evaluation": {
                "attacks": [{"name": "pgd-seg", "steps": 3}],
                "eps": [2 / 255, 8 / 255],
                "targeted": [{"name": "asma", "steps": 5}, {"name": "dag", "steps": 5}],
                "targets": ["background", "other"],
                "noise": ["gaussian", "speckle"],
                "n_examples": 2,
                "batch_size": 4,
            },
        }
    return {
        "data": {
            "name": "bus-phantom",
            "size": 64,
            "n_train": 288,
            "n_val": 48,
            "n_test": 12,
            "seed": 0,
        },
        "model": {
            "name": "unet",
            "params": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1},
        },
        "train": {"epochs": 10, "batch_size": 32, "lr": 3e-3, "seed": 0},
        "evaluation": {
            "attacks": [{"name": "pgd-seg", "steps": 10}, {"name": "apgd-seg", "steps": 10}],
            "eps": [1 / 255, 2 / 255, 4 / 255, 8 / 255],
            "targeted": [
                {"name": "asma", "steps": 150},
                {"name": "dag", "steps": 150, "gamma": 1 / 255},
            ],
            "targets": ["background", "other"],
            "noise": ["gaussian", "rician", "speckle"],
            "n_examples": 4,
            "batch_size": 12,
        },
    }


@holds_run_lock("out_dir")
def run_segmentation_demo(
    out_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    quick: bool = False,
    overwrite: bool = False,
) -> tuple[SegmentationAudit, Path]:
    """Train a UNet on the phantom's lesion masks and audit it (``medrobust demo --task
    segmentation``).

    Args:
        out_dir: The run folder.
        reporter: A :class:`medrobust.pipelines.reporter.Reporter` (progress callbacks), or None.
        quick: A tiny run for smoke tests (seconds).
        overwrite: Replace results already in ``out_dir``.

    Returns:
        ``(result, path of report.html)``.

    Raises:
        FileExistsError: If ``out_dir`` already holds a run and ``overwrite`` is false.
    """
    out = Path(out_dir)
    rep = reporter or Reporter()
    cfg = demo_settings(quick)
    if (out / "metrics.json").exists() and not overwrite:
        raise FileExistsError(
            f"{out} already contains a completed evaluation (metrics.json); choose another "
            "output folder or pass overwrite=True (--overwrite)"
        )
    t0 = time.perf_counter()
    d = cfg["data"]
    class_names = ["background", "lesion"]
    best, card, tr, test = _train_demo_unet(cfg, out, rep, overwrite=overwrite)
    ev = cfg["evaluation"]
    loader = DataLoader(test, batch_size=ev["batch_size"], shuffle=False, num_workers=0)
    result = evaluate_segmenter(
        best,
        loader,
        ev,
        model_info=card.to_dict(),
        data_info={
            "name": "bus-phantom",
            "split": "test",
            "n": len(test),
            "class_names": class_names,
            "image_shape": list(test[0]["image"].shape),
            "params": {"size": d["size"], "seed": d["seed"]},
        },
        title=f"Segmentation robustness audit: {cfg['model']['name']} on the bus-phantom lesions",
        progress=rep.evaluate,
    )
    result.metrics["timing"]["training_s"] = tr.wall_time_s
    result.metrics["timing"]["total_s"] = time.perf_counter() - t0
    result.write(
        out,
        overwrite=overwrite,
        config_extra={"demo": cfg, "training": {"best_epoch": tr.best_epoch}},
    )
    return result, out / "report.html"


def _train_demo_unet(
    cfg: Mapping[str, Any], out: Path, rep: Reporter, *, overwrite: bool
) -> tuple[ModelAdapter, Any, Any, Any]:
    """Simulate the phantom's splits and train the demo's UNet on its lesion masks.

    Returns:
        ``(best model, its card, the TrainResult, the test split)``.
    """
    from medrobust.data import BusPhantom
    from medrobust.models import create_model, load_checkpoint
    from medrobust.training import TrainConfig, fit

    d = cfg["data"]
    rep.say(f"simulating the breast-ultrasound phantom ({d['size']}x{d['size']}, lesion masks)")
    splits = {
        split: BusPhantom(split, n=d[f"n_{split}"], size=d["size"], seed=d["seed"])
        for split in ("train", "val", "test")
    }
    model = create_model(
        cfg["model"]["name"],
        num_classes=2,
        in_channels=1,
        spatial_dims=2,
        class_names=["background", "lesion"],
        seed=cfg["train"]["seed"],
        **cfg["model"]["params"],
    )
    config = TrainConfig.from_dict({**cfg["train"], "monitor": "val_dice"})
    rep.say(f"training a {cfg['model']['name']} for {config.epochs} epoch(s)")
    tr = fit(
        model,
        splits["train"],
        splits["val"],
        config,
        out / "train",
        card_info={
            "data": {
                "name": "bus-phantom",
                "seed": d["seed"],
                "description": "bus-phantom lesion masks (background, lesion)",
            }
        },
        progress=rep.train,
        overwrite=overwrite,
    )
    best, card = load_checkpoint(tr.best_checkpoint)
    rep.say(
        f"trained in {tr.wall_time_s:.1f} s; best epoch {tr.best_epoch} (val Dice {tr.best_score})"
    )
    return best, card, tr, splits["test"]


def evaluate_segmenter(
    model: ModelAdapter,
    loader: DataLoader[Any] | Dataset[Any],
    settings: Mapping[str, Any],
    *,
    model_info: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    title: str | None = None,
    progress: Any = None,
    roi_size: int | Sequence[int] | SlidingWindowOptions | None = None,
) -> SegmentationAudit:
    """Audit a segmenter with settings as in :func:`demo_settings` (``"evaluation"`` entry).

    Args:
        model: The segmentation adapter.
        loader: A DataLoader (or a data set, batched with ``settings["batch_size"]``).
        settings: ``attacks`` (or ``suite``, a frozen segmentation suite), ``eps``, ``norm``,
            ``targeted``, ``targets``, ``noise``, ``broken_fraction``, ``n_examples``,
            ``max_samples``, ``seed``, ``batch_size`` (all optional).
        model_info: The model card as a dict.
        data_info: The data description.
        title: Report title.
        progress: Progress callback (see
            :func:`~medrobust.evaluation.segmentation.evaluate_segmentation`).
        roi_size: Run the model by sliding windows of this size (volumes larger than the
            training patch), or :class:`~medrobust.pipelines.windows.SlidingWindowOptions`
            (window size, windows per call, overlap, gradient checkpointing, memory limit).

    Returns:
        The evaluation.
    """
    from medrobust.models.segmentation import sliding_window

    window = as_window(roi_size)
    if isinstance(loader, Dataset) and not isinstance(loader, DataLoader):
        loader = DataLoader(
            loader, batch_size=int(settings.get("batch_size", 8)), shuffle=False, num_workers=0
        )
    if window is not None:
        model = sliding_window(model, window.roi_size, **window.options())
    suite = settings.get("suite")
    attacks = suite if suite is not None else settings.get("attacks", ("pgd-seg",))
    extra = {"mode": settings["mode"]} if "mode" in settings else {}
    with torch.random.fork_rng(devices=[]):
        return evaluate_segmentation(
            model,
            loader,
            attacks=attacks,
            broken_fraction=float(settings.get("broken_fraction", 0.5)),
            eps=settings.get("eps", (1 / 255, 2 / 255, 4 / 255, 8 / 255)),
            norm=settings.get("norm", "linf"),
            targeted=settings.get("targeted", ("asma", "dag")),
            targets=settings.get("targets", ("background", "other")),
            noise=settings.get("noise", ("gaussian", "rician", "speckle")),
            seed=int(settings.get("seed", 0)),
            max_samples=settings.get("max_samples"),
            n_examples=int(settings.get("n_examples", 4)),
            allow_large_eps=bool(settings.get("allow_large_eps", False)),
            checkpoint=settings.get("checkpoint"),
            progress=progress,
            model_info=model_info,
            data_info=data_info,
            title=title,
            **extra,
        )


#: Attacks of a segmentation audit when the configuration names none (or a classification suite).
DEFAULT_UNTARGETED: tuple[str, ...] = ("pgd-seg", "apgd-seg")
DEFAULT_TARGETED: tuple[str, ...] = ("asma", "dag")


def split_attacks(
    attacks: Sequence[str | Mapping[str, Any]],
) -> tuple[list[str | Mapping[str, Any]], list[str | Mapping[str, Any]]]:
    """Sort attack specs into untargeted and targeted segmentation attacks (by registry tag).

    Raises:
        ValueError: For an attack that is not a segmentation attack.
    """
    from medrobust.attacks import ATTACKS

    untargeted: list[str | Mapping[str, Any]] = []
    targeted: list[str | Mapping[str, Any]] = []
    for spec in attacks:
        name = spec if isinstance(spec, str) else str(spec.get("name", ""))
        entry = ATTACKS.get(name)
        if "segmentation" not in entry.tags:
            raise ValueError(
                f"attack {entry.name!r} is not a segmentation attack; choose among "
                f"{', '.join(ATTACKS.list(tag='segmentation'))}"
            )
        (targeted if "targeted" in entry.tags else untargeted).append(spec)
    return untargeted, targeted


def _attack_lists(
    ev: Any, suite: str | None, rep: Reporter
) -> tuple[list[str | Mapping[str, Any]], list[str | Mapping[str, Any]]]:
    """The untargeted and targeted attacks of a saved segmenter's audit: with a segmentation
    ``suite``, only targeted attacks beside it; else the configured attacks, or the defaults.

    Raises:
        ValueError: For untargeted attacks named beside a suite, or non-segmentation attacks.
    """
    if suite is not None:
        untargeted, targeted = split_attacks(ev.attacks or DEFAULT_TARGETED)
        if untargeted:
            raise ValueError(
                f"suite {suite!r} names the untargeted attacks; list only targeted attacks "
                f"beside it, got {untargeted}"
            )
        rep.say(f"segmentation audit with the {suite} suite (SEA-style scheduling)")
        return untargeted, targeted
    if ev.attacks:
        return split_attacks(ev.attacks)
    rep.say(
        f"segmentation audit with {', '.join((*DEFAULT_UNTARGETED, *DEFAULT_TARGETED))} (suite "
        f"{ev.suite!r} is for classifiers)"
    )
    return list(DEFAULT_UNTARGETED), list(DEFAULT_TARGETED)


@holds_run_lock("out_dir")
def evaluate_segmentation_model(
    model: ModelAdapter,
    card: Any,
    config: Any,
    out_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    overwrite: bool = False,
    config_extra: Mapping[str, Any] | None = None,
    roi_size: int | Sequence[int] | SlidingWindowOptions | None = None,
    targets: Sequence[str] = ("background", "other"),
    noise: Sequence[str] = ("gaussian", "rician", "speckle"),
    broken_fraction: float = 0.5,
    suite: str | None = None,
) -> tuple[SegmentationAudit, Path]:
    """Audit a saved segmenter on the configured data set and write the run folder (what
    ``medrobust evaluate`` does for segmentation models).

    Args:
        model: The segmentation adapter (e.g. from :func:`~medrobust.models.load_checkpoint`).
        card: Its model card (or a dict).
        config: A :class:`medrobust.pipelines.config.RunConfig`: ``data`` (name, params, eval
            split) and ``evaluation`` (``attacks``: segmentation attacks, untargeted and
            targeted; with none, the segmentation suite named by ``suite`` (``seg-standard``,
            ``seg-thorough``) with ``asma`` and ``dag``, or with a classification suite,
            ``pgd-seg``, ``apgd-seg``, ``asma`` and ``dag``; ``eps``, ``norm``,
            ``max_samples``, ``batch_size``, ``seed``, ``n_examples``).
        out_dir: The run folder.
        reporter: A :class:`medrobust.pipelines.reporter.Reporter`, or None.
        overwrite: Replace an earlier evaluation in ``out_dir``.
        config_extra: More entries for ``config.yaml``.
        roi_size: Evaluate (and attack) by sliding windows of this size, or
            :class:`~medrobust.pipelines.windows.SlidingWindowOptions` (``--sw-batch-size``,
            ``--overlap``, ``--window-checkpoint``, ``--max-memory`` on the command line).
        targets: Target kinds of the targeted attacks.
        noise: Noise kinds compared at matched SSIM.
        broken_fraction: A sample is broken below this fraction of its clean Dice.
        suite: A segmentation suite for the untargeted attacks (overrides ``config``'s).

    Returns:
        ``(result, path of report.html)``.

    Raises:
        ValueError: For a non-segmentation model or data without masks, or attacks that are not
            segmentation attacks.
    """
    from medrobust.data import create_dataset
    from medrobust.evaluation.suites import SEGMENTATION_SUITES

    window = as_window(roi_size)  # checked before the data set is built
    rep = reporter or Reporter()
    ev = config.evaluation
    split = config.data.eval_split
    ds = create_dataset(config.data.name, split=split, **config.data.params)
    if not getattr(ds, "has_masks", False):
        raise ValueError(
            f"data set {config.data.name!r} has no masks; a segmentation model needs a data set "
            "with masks (e.g. bus-phantom, volume-phantom, nifti, mni152-tissue)"
        )
    if suite is None and ev.suite in SEGMENTATION_SUITES:
        suite = ev.suite
    untargeted, targeted = _attack_lists(ev, suite, rep)
    card_dict = card.to_dict() if hasattr(card, "to_dict") else dict(card or {})
    sample = ds[0]
    info = {
        "name": config.data.name,
        "params": dict(config.data.params),
        "split": split,
        "n": len(ds),
        "class_names": list(getattr(ds, "class_names", []) or []),
        "image_shape": list(sample["image"].shape),
    }
    settings = {
        "attacks": untargeted,
        "suite": suite,
        "broken_fraction": broken_fraction,
        "targeted": targeted,
        "targets": list(targets),
        "noise": list(noise),
        "eps": list(ev.eps),
        "norm": ev.norm,
        "seed": ev.seed,
        "max_samples": ev.max_samples,
        "n_examples": ev.n_examples,
        "batch_size": ev.batch_size,
        "allow_large_eps": ev.allow_large_eps,
        "checkpoint": Path(out_dir) / EVALUATION_STATE,
    }
    loader = DataLoader(ds, batch_size=ev.batch_size, shuffle=False, num_workers=0)
    result = evaluate_segmenter(
        model,
        loader,
        settings,
        model_info=card_dict,
        data_info=info,
        title=f"Segmentation robustness audit: {card_dict.get('architecture', 'model')} on "
        f"{config.data.name}",
        progress=rep.evaluate,
        roi_size=window,
    )
    out = Path(out_dir)
    extra = {
        "run": config.to_dict() if hasattr(config, "to_dict") else {},
        "roi_size": None if window is None else window.to_dict()["roi_size"],
        "sliding_window": None if window is None else window.options(),
        **dict(config_extra or {}),
    }
    result.write(out, overwrite=overwrite, config_extra=extra)
    rank_path(out / EVALUATION_STATE).unlink(missing_ok=True)
    return result, out / "report.html"


@holds_run_lock("out_dir")
def evaluate_segmentation_checkpoint(
    checkpoint: str | Path,
    settings: CheckpointAudit,
    out_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    overwrite: bool = False,
    roi_size: int | Sequence[int] | SlidingWindowOptions | None = None,
    targets: Sequence[str] = ("background", "other"),
    noise: Sequence[str] = ("gaussian", "rician", "speckle"),
    broken_fraction: float = 0.5,
    suite: str | None = None,
) -> tuple[SegmentationAudit, Path]:
    """Audit a saved segmenter with every segmentation option (``medrobust
    evaluate-segmentation``).

    Args:
        checkpoint: A medrobust checkpoint of a segmentation model.
        settings: Data, attacks (untargeted and targeted), budgets and batching.
        out_dir: The run folder.
        reporter: A :class:`medrobust.pipelines.reporter.Reporter`, or None.
        overwrite: Replace an earlier evaluation in ``out_dir``.
        roi_size: Evaluate (and attack) by sliding windows of this size, or
            :class:`~medrobust.pipelines.windows.SlidingWindowOptions` (``--sw-batch-size``,
            ``--overlap``, ``--window-checkpoint``, ``--max-memory`` on the command line).
        targets: Target kinds of the targeted attacks.
        noise: Noise kinds compared at matched SSIM.
        broken_fraction: A sample is broken below this fraction of its clean Dice.
        suite: A segmentation suite (``seg-standard``, ``seg-thorough``) for the untargeted
            attacks; ``settings.attacks`` then names only targeted ones.

    Returns:
        ``(result, path of report.html)``.

    Raises:
        ValueError: If the checkpoint holds a model of another task, or for invalid settings.
    """
    from medrobust.models import load_checkpoint

    roi_size = as_window(roi_size)  # checked before the checkpoint is read
    model, card = load_checkpoint(checkpoint)
    if model.task.value != "segmentation":
        raise ValueError(f"{checkpoint} holds a {model.task.value} model; use `medrobust evaluate`")
    from medrobust.pipelines.card_check import check_card_data

    extra: dict[str, Any] = {"checkpoint": str(checkpoint)}
    if notes := check_card_data(settings, card, "segmentation"):  # channels, classes, spacing
        extra["card_check"] = notes
    return evaluate_segmentation_model(
        model,
        card,
        settings.run_config(segmentation=True),
        out_dir,
        reporter=reporter,
        overwrite=overwrite,
        config_extra=extra,
        roi_size=roi_size,
        targets=targets,
        noise=noise,
        broken_fraction=broken_fraction,
        suite=suite,
    )
