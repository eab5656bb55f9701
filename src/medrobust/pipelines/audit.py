"""The end-to-end jobs behind the command line: train, evaluate, and the demo audit.

Each function takes typed settings and a progress reporter and returns paths/results; the CLI
only parses options and prints. The Python API of the same jobs is :func:`run_audit`, and
:func:`evaluate_checkpoint` audits a saved model of either task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medrobust._utils.dist import rank_path
from medrobust.attacks.precision import attack_speed
from medrobust.evaluation import AttackSpec, EvaluationResult
from medrobust.evaluation.suites import resolve_suite
from medrobust.models.adapter import ModelAdapter
from medrobust.pipelines.config import CheckpointAudit, RunConfig, dataset_parameters
from medrobust.pipelines.locking import EVALUATION_STATE, EXPLANATION_STATE, holds_run_lock
from medrobust.pipelines.reporter import Reporter
from medrobust.pipelines.results import evaluate

logger = logging.getLogger(__name__)


def load_split(
    data: str, params: Mapping[str, Any], split: str, sizes: Mapping[str, int] | None = None
) -> Dataset[Any]:
    """One split of a registered data set; ``sizes`` gives the split's ``n`` (images per split,
    for data sets that take one) unless ``params`` already sets it."""
    from medrobust.data import create_dataset

    p = dict(params)
    if sizes and split in sizes and "n" not in p:
        p["n"] = int(sizes[split])
    ds: Dataset[Any] = create_dataset(data, split=split, **p)
    return ds


def load_splits(config: RunConfig, splits: Sequence[str]) -> dict[str, Dataset[Any]]:
    """Build the named splits of the configured data set."""
    from medrobust.data import create_dataset

    return {s: create_dataset(config.data.name, split=s, **config.data.params) for s in splits}


def data_info(config: RunConfig, ds: Any, split: str) -> dict[str, Any]:
    """A description of a data split for metrics and model cards."""
    sample = ds[0]
    return {
        "name": config.data.name,
        "params": dict(config.data.params),
        "split": split,
        "n": len(ds),
        "class_names": list(getattr(ds, "class_names", []) or []),
        "image_shape": list(sample["image"].shape),
        "intensity": getattr(ds, "intensity", None),
    }


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Data set parameters as plain JSON values (paths and other objects as strings)."""
    import json

    out: dict[str, Any] = json.loads(json.dumps(dict(params), default=str))
    return out


@holds_run_lock("out_dir")
def train_model(
    config: RunConfig,
    out_dir: Path,
    *,
    reporter: Reporter | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> tuple[ModelAdapter, Any, Any]:
    """Train the configured model on the configured data set.

    Returns:
        ``(best model, its ModelCard, TrainResult)``.
    """
    from medrobust.models import create_model, load_checkpoint
    from medrobust.training import fit

    rep = reporter or Reporter()
    t0 = time.perf_counter()
    rep.say(f"preparing data set {config.data.name!r}")
    splits = load_splits(config, ["train", "val"])
    train_ds = splits["train"]
    rep.say(f"data ready in {time.perf_counter() - t0:.1f} s ({len(train_ds)} training images)")  # type: ignore[arg-type]
    model = create_model(
        config.model.name,
        num_classes=int(train_ds.num_classes),  # type: ignore[attr-defined]
        in_channels=int(train_ds.in_channels),  # type: ignore[attr-defined]
        spatial_dims=int(train_ds.spatial_dims),  # type: ignore[attr-defined]
        class_names=list(train_ds.class_names),  # type: ignore[attr-defined]
        seed=config.train.seed,
        **config.model.params,
    )
    info = data_info(config, train_ds, "train")
    from medrobust.training import RECIPES

    if model.task.value == "multitask" and config.train.recipe == "standard":
        # a multi-task network trains both heads jointly (CE + Dice + BCE)
        config.train = replace(config.train, recipe="multitask")
        rep.say("multi-task model: training with the 'multitask' recipe")

    unlabelled = None
    recipe_tags = RECIPES.get(config.train.recipe).tags
    if "semi-supervised" in recipe_tags and config.train.labelled_fraction == 1.0:
        from medrobust.defenses.data import UnlabelledView

        unlabelled = UnlabelledView(train_ds)  # every label kept: the images double as the stream
    result = fit(
        model,
        train_ds,
        splits["val"],
        config.train,
        out_dir / "train",
        card_info={
            "data": {
                "name": config.data.name,
                "seed": config.data.params.get("seed"),
                "description": f"{config.data.name} {info['params']}",
                "intensity": info["intensity"],
                "params": _plain_params(config.data.params),
            }
        },
        progress=rep.train,
        resume=resume,
        overwrite=overwrite,
        unlabelled=unlabelled,
    )
    best, card = load_checkpoint(result.best_checkpoint)
    return best, card, result


@holds_run_lock("out_dir")
def evaluate_model(
    model: ModelAdapter,
    card: Any,
    config: RunConfig,
    out_dir: Path,
    *,
    reporter: Reporter | None = None,
    overwrite: bool = False,
    config_extra: Mapping[str, Any] | None = None,
) -> tuple[EvaluationResult, Path]:
    """Audit ``model`` on the evaluation split and write the run folder.

    The evaluation checkpoints its records after every batch into ``out_dir`` and resumes from
    them if interrupted and started again with the same settings.

    Returns:
        ``(result, path of report.html)``.
    """
    rep = reporter or Reporter()
    ev = config.evaluation
    ds = load_splits(config, [config.data.eval_split])[config.data.eval_split]
    if ev.attacks:
        attacks: list[Any] = list(ev.attacks)
        skipped: dict[str, str] = {}
    else:
        suite = resolve_suite(str(ev.suite), ev.norm, model.num_classes)
        attacks, skipped = suite.attacks, suite.skipped
        for name, why in skipped.items():
            rep.say(f"suite {suite.name!r}: skipping {name}: {why}")
    if ev.speed():  # precision / compile: every attack runs the model's forward that way
        attacks = [{**AttackSpec.parse(a).to_dict(), **ev.speed()} for a in attacks]
    loader = DataLoader(ds, batch_size=ev.batch_size, shuffle=False, num_workers=0)
    state = out_dir / EVALUATION_STATE
    expl_state = out_dir / EXPLANATION_STATE
    card_dict = card.to_dict() if hasattr(card, "to_dict") else dict(card or {})
    info = data_info(config, ds, config.data.eval_split)
    result = evaluate(
        model,
        loader,
        attacks=attacks,
        eps=ev.eps,
        norm=ev.norm,
        mode=ev.mode,
        per_attack=ev.per_attack,
        seed=ev.seed,
        max_samples=ev.max_samples,
        n_examples=ev.n_examples,
        checks=ev.checks,
        allow_large_eps=ev.allow_large_eps,
        checkpoint=state,
        progress=rep.evaluate,
        model_info=card_dict,
        data_info=info,
        title=f"Robustness audit: {card_dict.get('architecture', 'model')} on {config.data.name}",
    )
    if skipped:
        result.metrics["suite"] = {"name": ev.suite, "skipped": skipped}
    sections: list[Any] = []
    files: dict[str, bytes] = {}
    if ev.explanations > 0:
        from medrobust.evaluation.explanation import evaluate_explanations
        from medrobust.reporting.sections.explanation import explanation_section

        rep.say(f"attacking the Grad-CAM explanations of up to {ev.explanations} samples")
        expl = evaluate_explanations(
            model,
            loader,
            eps=ev.eps,
            norm=ev.norm,
            steps=10,
            max_samples=ev.explanations,
            seed=ev.seed,
            checkpoint=expl_state,
        )
        result.metrics["explanations"] = expl.metrics
        sections.append(explanation_section(expl.metrics, expl.examples, expl.class_names))
        files["explanations/maps.npz"] = expl.maps_npz()
    extra = {"run": config.to_dict(), **dict(config_extra or {})}
    result.write(
        out_dir,
        overwrite=overwrite,
        config_extra=extra,
        extra_sections=sections,
        extra_files=files,
    )
    rank_path(state).unlink(missing_ok=True)
    rank_path(expl_state).unlink(missing_ok=True)
    return result, out_dir / "report.html"


@holds_run_lock("out_dir")
def run_audit(
    config: RunConfig,
    out_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> tuple[EvaluationResult, Path]:
    """Train the configured model and audit it (what ``medrobust demo`` runs).

    Returns:
        ``(result, path of report.html)``.
    """
    out = Path(out_dir)
    torch_threads = torch.get_num_threads()
    model, card, train_result = train_model(
        config, out, reporter=reporter, resume=resume, overwrite=overwrite
    )
    (reporter or Reporter()).say(
        f"trained in {train_result.wall_time_s:.1f} s; best epoch {train_result.best_epoch} "
        f"({train_result.monitor} = {train_result.best_score})"
    )
    extra = {
        "training": {
            "best_epoch": train_result.best_epoch,
            "wall_time_s": train_result.wall_time_s,
            "torch_threads": torch_threads,
        }
    }
    return evaluate_model(
        model,
        card,
        config,
        out,
        reporter=reporter,
        overwrite=overwrite or resume,
        config_extra=extra,
    )


@dataclass
class AuditOutcome:
    """What :func:`evaluate_checkpoint` returns.

    Attributes:
        task: The model's task (``"classification"``, ``"segmentation"``, ``"multitask"``).
        result: The evaluation (an ``EvaluationResult`` or a ``SegmentationEvaluation``).
        report: The path of ``report.html``.
    """

    task: str
    result: Any
    report: Path


@holds_run_lock("out_dir")
def evaluate_checkpoint(
    checkpoint: str | Path | None,
    settings: CheckpointAudit,
    out_dir: Path,
    *,
    reporter: Reporter | None = None,
    overwrite: bool = False,
) -> AuditOutcome:
    """Audit a saved model (what ``medrobust evaluate`` runs).

    A segmenter gets the segmentation audit (Dice under attack, targeted attacks, noise) in the
    same run-folder layout, with ``pgd-seg``, ``apgd-seg``, ``asma`` and ``dag`` unless
    ``settings.attacks`` names others. The model is audited at the input size of its card
    (any data set that takes a ``size`` gets it unless ``settings.data_params`` names one);
    a classifier whose card size differs from the data's is refused unless
    ``settings.allow_size_mismatch``; a segmenter run on inputs larger than those it was trained
    on (patches vs whole volumes) gets a warning, recorded in the run's config.

    Args:
        checkpoint: A medrobust checkpoint (``best.pt``), a TorchScript or ``torch.export``
            archive, or a state dict (with ``settings.arch`` or ``settings.model_file``); None
            with a ``settings.model_file`` whose factory loads its own weights.
        settings: Data, attacks, budgets and how to read the model.
        out_dir: The run folder (an interrupted classifier audit there is resumed).
        reporter: Progress callbacks.
        overwrite: Replace results already in ``out_dir``.

    Returns:
        The task, the result and the report path.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        ValueError: For invalid settings, or a classifier whose trained input size differs
            from the data's (without ``allow_size_mismatch``).
    """
    model, card = load_audited_model(checkpoint, settings)
    extra: dict[str, Any] = {"checkpoint": None if checkpoint is None else str(checkpoint)}
    if settings.arch or settings.model_file:
        extra["model_source"] = {"arch": settings.arch, "model_file": settings.model_file}
    settings = replace(settings, data_params=card_data_params(settings, card, reporter))
    check = check_input_size(settings, card, model.task.value)
    if check is not None:
        extra["input_check"] = check
        (reporter or Reporter()).say(f"warning: {check['message']}")
    from medrobust.pipelines.card_check import check_card_data

    if notes := check_card_data(settings, card, model.task.value):  # channels, classes, spacing
        extra["card_check"] = notes
        for note in notes:
            (reporter or Reporter()).say(f"note: {note['message']}")
    if model.task.value == "segmentation":
        from medrobust.evaluation.suites import SEGMENTATION_SUITES
        from medrobust.pipelines.segmentation import (
            DEFAULT_TARGETED,
            DEFAULT_UNTARGETED,
            evaluate_segmentation_model,
        )

        # a segmentation suite names the untargeted attacks; ``attacks`` then adds targeted ones
        suite = settings.suite if settings.suite in SEGMENTATION_SUITES else None
        default = DEFAULT_TARGETED if suite else (*DEFAULT_UNTARGETED, *DEFAULT_TARGETED)
        attacks = settings.attacks or list(default)
        cfg = replace(settings, attacks=attacks).run_config(segmentation=True)
        with attack_speed(**cfg.evaluation.speed()):
            seg, report = evaluate_segmentation_model(
                model,
                card,
                cfg,
                out_dir,
                reporter=reporter,
                overwrite=overwrite,
                config_extra=extra,
                suite=suite,
            )
        return AuditOutcome("segmentation", seg, report)
    cfg = settings.run_config()
    result, report = evaluate_model(
        model, card, cfg, out_dir, reporter=reporter, overwrite=overwrite, config_extra=extra
    )
    return AuditOutcome(model.task.value, result, report)


def card_data_params(
    settings: CheckpointAudit, card: Any, reporter: Reporter | None = None
) -> dict[str, Any]:
    """The data parameters of an audit with the model card's input size and window filled in.

    A data set that takes a ``size`` and was not given one gets the card's (square or cubic)
    training size, whichever data set the model was trained on; the same data set, when it
    takes a ``window`` and was not given one, gets the window the model was trained with (when
    the card records one), so that eps means the same as in training (another data set may
    have other units, so it only gets a note).

    Args:
        settings: The audit settings (data set name and parameters).
        card: The model card (``card.data.image_size``, e.g. ``[64, 64]``, and
            ``card.data.intensity``).
        reporter: Told what was taken from the card.
    """
    params = dict(settings.data_params)
    accepted = dataset_parameters(settings.data)
    say = (reporter or Reporter()).say
    trained = list(card.data.image_size or [])
    if "size" not in params and "size" in accepted and trained and len(set(trained)) == 1:
        params["size"] = int(trained[0])
        say(f"data set {settings.data!r} at size {trained[0]}: the input size of the model card")
    window = ((card.data.intensity or {}).get("window") or {}).get("spec")
    if "window" not in params and "window" in accepted and window:
        if settings.data == card.data.name:
            params["window"] = str(window)
            say(f"intensity window {window!r}: the window of the model card")
        else:  # the window is in the units of the training data, which may differ
            say(
                f"the model was trained with the intensity window {window!r} on "
                f"{card.data.name!r}; give --window in the units of {settings.data!r}"
            )
    return params


def load_audited_model(checkpoint: str | Path | None, settings: CheckpointAudit) -> tuple[Any, Any]:
    """The model of an audit: a medrobust checkpoint, a TorchScript or ``torch.export`` archive,
    a state dict with ``settings.arch`` or the user's factory ``settings.model_file``; the input
    space not given in ``settings.model_input`` is taken from the data set (read only when
    needed).

    Returns:
        ``(adapter, model card)``.
    """
    from medrobust.models.loading import InputSpec, ModelSource, load_model

    def from_data() -> InputSpec:
        from medrobust.data import create_dataset

        ds: Any = create_dataset(settings.data, split=settings.split, **settings.data_params)
        size = [int(s) for s in ds[0]["image"].shape[1:]]
        return InputSpec(
            num_classes=int(ds.num_classes),
            in_channels=int(ds.in_channels),
            spatial_dims=int(ds.spatial_dims),
            size=size,
            class_names=list(ds.class_names),
        )

    source = ModelSource(
        path=None if checkpoint is None else Path(checkpoint),
        arch=settings.arch,
        model_file=settings.model_file,
        params=settings.model_params,
        inputs=InputSpec.from_params(settings.model_input),
    )
    return load_model(source, from_data)


def check_input_size(settings: CheckpointAudit, card: Any, task: str) -> dict[str, Any] | None:
    """Compare the spatial size of the audit's data with the size the model was trained on.

    Args:
        settings: The audit settings (data set, parameters, split, ``allow_size_mismatch``).
        card: The model card (``card.data.image_size``).
        task: The model's task.

    Returns:
        None when the sizes agree (or the card records none), else a record
        ``{"trained": [...], "data": [...], "message": ...}`` for a segmenter or an allowed
        mismatch.

    Raises:
        ValueError: For a classifier (or multi-task model) whose trained size differs from the
            data's, unless
            ``settings.allow_size_mismatch`` (the message says how to fix it).
    """
    from medrobust.data import create_dataset

    trained = list(card.data.image_size or [])
    if not trained:
        return None
    ds = create_dataset(settings.data, split=settings.split, **settings.data_params)
    shape = [int(s) for s in ds[0]["image"].shape[1:]]
    if shape == trained:
        return None
    fmt = "x".join
    message = (
        f"the model was trained on {fmt(map(str, trained))} inputs (model card) but data set "
        f"{settings.data!r} "
        f"({settings.split}) gives {fmt(map(str, shape))} inputs"
    )
    if task != "segmentation" and not settings.allow_size_mismatch:
        hint = (
            f"pass --data-param size={trained[-1]}"
            if "size" in dataset_parameters(settings.data)
            else "resample the data to the trained size"
        )
        raise ValueError(
            f"{message}: the results would not describe the model as trained; {hint}, or "
            "--allow-size-mismatch to audit it at this size anyway"
        )
    if task == "segmentation":
        message += (
            "; it is run on the whole input without sliding-window inference, so Dice may "
            "be lower than on the trained size (pass a patch size to the data set to match)"
        )
    logger.warning("%s", message)
    return {"trained": trained, "data": shape, "message": message}


__all__ = [
    "AuditOutcome",
    "Reporter",
    "evaluate_checkpoint",
    "evaluate_model",
    "run_audit",
    "train_model",
]
