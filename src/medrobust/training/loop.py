"""The seeded, resumable supervised training loop.

:func:`fit` trains a :class:`~medrobust.models.ModelAdapter` with a registered recipe, validates
after every epoch, keeps the best checkpoint by a monitored metric and writes a resumable
``last.pt`` after every epoch. A run folder holds::

    best.pt            medrobust checkpoint of the best epoch (card with metrics)
    model_card.json    the card of best.pt, and model_card.md for people
    last.pt            checkpoint of the last finished epoch + optimiser, schedule, RNG states
    history.json       per-epoch metrics
    train_config.json  the resolved TrainConfig

Every file is written atomically and loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler

from medrobust._utils.io import write_text_atomic
from medrobust.defenses.recipes import Recipe, create_recipe
from medrobust.metrics import classification_metrics, dice_per_sample
from medrobust.models.adapter import ModelAdapter
from medrobust.models.card import DataInfo, ModelCard, TrainingInfo
from medrobust.models.checkpoint import (
    load_state_dict_into,
    read_checkpoint,
    save_checkpoint,
)
from medrobust.training.config import RESUMABLE_CHANGES, TrainConfig
from medrobust.types import Task

__all__ = ["TrainEvent", "TrainResult", "fit"]

logger = logging.getLogger(__name__)

_STATE_KEY = "training_state"
_RUN_FILES = ("best.pt", "model_card.json", "model_card.md", "history.json")
_STATE_VERSION = 1


@dataclass(frozen=True)
class TrainEvent:
    """A progress event sent to the ``progress`` callback of :func:`fit`.

    Attributes:
        kind: ``"start"``, ``"step"`` (a training step finished), ``"val_step"`` (a
            validation batch finished), ``"epoch_end"`` or ``"end"``.
        epoch: Current epoch (1-based; the last finished epoch for ``"start"``/``"end"``).
        epochs: Total epochs of the run.
        step: Batch index within the epoch (1-based) for step events, else 0.
        total_steps: Batches per epoch of the current phase (0 if the loader has no length).
        loss: Loss of the step, or the epoch's mean training loss; None where not defined.
        metrics: The epoch's record for ``"epoch_end"``/``"end"``, the recipe's statistics for
            ``"step"``, else empty.
    """

    kind: str
    epoch: int
    epochs: int
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        run_dir: The run folder.
        best_checkpoint: ``best.pt`` (load it with :func:`medrobust.models.load_checkpoint`).
        last_checkpoint: ``last.pt``.
        history_path: ``history.json``.
        history: Per-epoch records (``epoch``, ``lr``, ``train_*``, ``val_*``, ``time_s``).
        monitor: The monitored metric.
        best_epoch: Epoch (1-based) of ``best.pt``.
        best_score: Its monitored value (None if undefined).
        epochs_run: Epochs finished in total (over resumed sessions).
        stopped_early: Whether the patience ran out.
        wall_time_s: Training wall time over all sessions.
    """

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history_path: Path
    history: list[dict[str, Any]]
    monitor: str
    best_epoch: int
    best_score: float | None
    epochs_run: int
    stopped_early: bool
    wall_time_s: float

    @property
    def best_metrics(self) -> dict[str, Any]:
        """The history record of the best epoch."""
        return dict(self.history[self.best_epoch - 1])


ProgressCallback = Callable[[TrainEvent], None]


def fit(
    model: ModelAdapter,
    train_loader: DataLoader[Any] | Dataset[Any],
    val_loader: DataLoader[Any] | Dataset[Any],
    config: TrainConfig,
    run_dir: str | Path,
    *,
    card_info: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = False,
    overwrite: bool = False,
    unlabelled: Dataset[Any] | None = None,
) -> TrainResult:
    """Train ``model`` with the recipe of ``config``, validating and checkpointing every epoch.

    Seeding: the global PyTorch generator is forked (the caller's random state is restored
    afterwards) and seeded with ``config.seed`` (dropout draws from it); the shuffling and the
    recipe draw from their own seeded generators. Deterministic algorithms are switched on
    (``warn_only``) during the call and the previous setting is restored. All generator states
    go into ``last.pt`` every epoch, so ``resume=True`` continues an interrupted run and ends
    with exactly the weights of an uninterrupted one (on the same device and software).

    Loaders: pass data sets and ``fit`` builds the loaders with ``config.batch_size`` and a
    seeded shuffle (recommended), or pass ``DataLoader`` objects with the same batch size; a
    training loader whose ``RandomSampler`` has no generator is given the seeded one for the
    duration of the call.

    Args:
        model: The model (built with :func:`medrobust.models.create_model`, or give
            ``architecture`` in ``card_info``); trained in place and moved to the device. Its
            train/eval mode is restored at the end; it holds the last epoch's weights.
        train_loader: Training ``DataLoader`` or ``Dataset`` yielding batch-convention dicts.
        val_loader: Validation ``DataLoader`` or ``Dataset``.
        config: The settings.
        run_dir: Folder for checkpoints and history (created if missing).
        card_info: Extra model card fields, e.g. ``{"data": {"name": "busi-phantom",
            "seed": 0}, "notes": "..."}``. Split sizes and image size are filled in when
            missing.
        progress: Called with a :class:`TrainEvent` at start, after every step, every
            validation batch, every epoch and at the end. An exception raised by it stops the
            run (``last.pt`` of the last finished epoch stays valid).
        resume: Continue the run in ``run_dir`` from ``last.pt``. Only ``epochs``,
            ``patience``, ``device`` and ``num_workers`` may differ from the saved config.
        overwrite: Allow starting a fresh run in a folder that already holds one; its
            ``best.pt``, ``last.pt``, ``history.json`` and model card files are deleted first.
        unlabelled: Unlabelled training images (a map-style data set; labels, if present, are
            never read) for a semi-supervised recipe such as ``"ssat"``. With
            ``config.labelled_fraction < 1`` the training set (which must then be a
            ``Dataset``) is split per class, seeded by ``config.seed``: the labelled part is
            trained on and the rest, without labels, joins the unlabelled images of recipes
            that use them (other recipes leave it out).

    Returns:
        A :class:`TrainResult`.

    Raises:
        TypeError: If ``model`` is not a ModelAdapter or ``config`` not a TrainConfig.
        ValueError: For empty loaders, batches that do not match the model (shape, channels,
            bounds, label range), a monitor the task does not provide, a resume config that
            differs from the saved one, an empty unlabelled set, unlabelled data for a recipe
            that does not use it, or a semi-supervised recipe without unlabelled data.
        FileNotFoundError: If ``resume`` is set but ``run_dir`` has no ``last.pt``.
        FileExistsError: If ``run_dir`` already holds a run and neither ``resume`` nor
            ``overwrite`` is set.
        FloatingPointError: If the loss becomes NaN or infinite (names epoch and step).

    References:
        Prechelt, "Early Stopping - But When?", 1998 (patience-based model selection).
    """
    if not isinstance(model, ModelAdapter):
        raise TypeError(
            f"model must be a medrobust ModelAdapter, got {type(model).__name__}; build it with "
            "medrobust.models.create_model"
        )
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if card_info is not None and not isinstance(card_info, Mapping):
        raise TypeError(f"card_info must be a dict or None, got {type(card_info).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")
    if unlabelled is not None:
        if isinstance(unlabelled, DataLoader) or not isinstance(unlabelled, Dataset):
            raise TypeError(
                f"unlabelled must be a map-style torch Dataset, got {type(unlabelled).__name__}"
            )
        if not hasattr(unlabelled, "__len__") or len(unlabelled) == 0:
            raise ValueError(
                "the unlabelled data set is empty; give it some images or leave unlabelled=None"
            )
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise NotADirectoryError(f"run_dir {run} exists and is not a folder")
    last_path = run / "last.pt"
    if resume and not last_path.is_file():
        raise FileNotFoundError(
            f"cannot resume: {last_path} does not exist; start without resume=True"
        )
    if not resume and not overwrite and (last_path.exists() or (run / "best.pt").exists()):
        raise FileExistsError(
            f"{run} already holds a training run; pass resume=True to continue it, "
            "overwrite=True to start again, or choose another folder"
        )
    device = config.resolve_device()
    trainer = _Trainer(model, config, run, device, dict(card_info or {}), progress)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    was_training = model.training
    fork_devices: list[int] = []
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            return trainer.run(train_loader, val_loader, resume=resume, unlabelled=unlabelled)
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        trainer.restore_loaders()
        model.train(was_training)


def _derived_seed(seed: int, stream: int) -> int:
    return (seed * 1_000_003 + 7919 * stream) % (2**63)


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class _Trainer:
    def __init__(
        self,
        model: ModelAdapter,
        config: TrainConfig,
        run_dir: Path,
        device: torch.device,
        card_info: dict[str, Any],
        progress: ProgressCallback | None,
    ) -> None:
        self.model = model
        self.config = config
        self.run_dir = run_dir
        self.device = device
        self.progress = progress
        self.card_info = card_info
        self.split_sizes: dict[str, int] = {}
        self.image_size: list[int] | None = None
        self._restore: list[tuple[RandomSampler, torch.Generator | None]] = []
        self.loader_generators: list[torch.Generator] = []
        forbidden = sorted({"training", "metrics"} & set(card_info))
        if forbidden:
            raise ValueError(f"card_info must not set {forbidden}; fit fills them in")
        # Fail early when the card cannot be built (architecture unknown, bad fields).
        self._card(metrics={}, best_epoch=None, epochs=0, wall=0.0)
        self.recipe: Recipe = create_recipe(config.recipe, **config.recipe_params)
        self.available = self._available_metrics()
        if config.monitor not in self.available:
            raise ValueError(
                f"monitor {config.monitor!r} is not available for this "
                f"{model.task.value} model with {model.num_classes} classes and recipe "
                f"{config.recipe!r}; available: {sorted(self.available)}"
            )

    # ------------------------------------------------------------------ setup helpers

    def _available_metrics(self) -> set[str]:
        names = {"train_loss", "val_loss"}
        if self.model.task is Task.SEGMENTATION:
            names.add("val_dice")
        else:
            names |= {"val_accuracy", "val_balanced_accuracy"}
            if self.model.num_classes == 2:
                names |= {"val_sensitivity", "val_specificity", "val_auc"}
        names |= {f"val_{n}" for n in self.recipe.validation_metrics}
        return names

    def _card(
        self, *, metrics: Mapping[str, Any], best_epoch: int | None, epochs: int, wall: float
    ) -> ModelCard:
        info = dict(self.card_info)
        data = info.pop("data", None)
        data_info = DataInfo.from_dict(data) if isinstance(data, Mapping) else data
        if data_info is None:
            data_info = DataInfo()
        if not isinstance(data_info, DataInfo):
            raise TypeError(
                f"card_info['data'] must be a dict or DataInfo, got {type(data_info).__name__}"
            )
        if not data_info.split_sizes and self.split_sizes:
            data_info.split_sizes = dict(self.split_sizes)
        if data_info.image_size is None and self.image_size is not None:
            data_info.image_size = list(self.image_size)
        cfg = self.config
        training = TrainingInfo(
            epochs=epochs,
            optimizer=cfg.optimizer,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay,
            recipe=cfg.recipe,
            recipe_params=dict(cfg.recipe_params),
            seed=cfg.seed,
            best_epoch=best_epoch,
            wall_time_s=wall,
        )
        numeric = {
            k: (float(v) if v is not None else None)
            for k, v in metrics.items()
            if k.startswith(("train_", "val_")) and (v is None or isinstance(v, (int, float)))
        }
        return ModelCard.from_model(
            self.model, data=data_info, training=training, metrics=numeric, **info
        )

    def _loader(self, data: DataLoader[Any] | Dataset[Any], *, train: bool) -> DataLoader[Any]:
        cfg = self.config
        role = "train" if train else "val"
        if isinstance(data, DataLoader):
            loader = data
            if train and loader.batch_size is not None and loader.batch_size != cfg.batch_size:
                raise ValueError(
                    f"the {role} loader has batch_size {loader.batch_size} but config.batch_size "
                    f"is {cfg.batch_size}; make them equal (or pass the data set and let fit "
                    "build the loader)"
                )
            if train:
                sampler = loader.sampler
                if isinstance(sampler, RandomSampler) and sampler.generator is None:
                    self._restore.append((sampler, None))
                    sampler.generator = self.data_gen
                seen: list[torch.Generator] = []
                for gen in (loader.generator, getattr(sampler, "generator", None)):
                    if (
                        isinstance(gen, torch.Generator)
                        and gen is not self.data_gen
                        and all(gen is not g for g in seen)
                    ):
                        seen.append(gen)
                self.loader_generators = seen
        elif isinstance(data, Dataset):
            if hasattr(data, "__len__") and len(data) == 0:
                raise ValueError(f"the {role} loader is empty (0 batches); the data set is empty")
            loader = DataLoader(
                data,
                batch_size=cfg.batch_size,
                shuffle=train,
                generator=self.data_gen if train else None,
                num_workers=cfg.num_workers,
            )
        else:
            raise TypeError(
                f"{role}_loader must be a torch DataLoader or Dataset, got {type(data).__name__}"
            )
        try:
            n_batches = len(loader)
        except TypeError:
            n_batches = -1
        if n_batches == 0:
            raise ValueError(f"the {role} loader is empty (0 batches); give it some samples")
        return loader

    def _split_labelled(
        self, train: DataLoader[Any] | Dataset[Any], unlabelled: Dataset[Any] | None
    ) -> DataLoader[Any] | Dataset[Any]:
        """Apply ``labelled_fraction`` and hand the unlabelled images to the recipe."""
        from medrobust.defenses.data import labelled_split

        cfg = self.config
        if cfg.labelled_fraction < 1.0:
            if isinstance(train, DataLoader) or not isinstance(train, Dataset):
                raise TypeError(
                    f"labelled_fraction={cfg.labelled_fraction} needs the training set as a "
                    f"map-style Dataset (fit splits it), got {type(train).__name__}"
                )
            train, rest = labelled_split(train, cfg.labelled_fraction, _derived_seed(cfg.seed, 3))
            if rest is not None and self.recipe.uses_unlabelled:
                unlabelled = rest if unlabelled is None else ConcatDataset([rest, unlabelled])
            elif rest is not None:
                logger.info(
                    "labelled_fraction=%s: %d images left out (recipe %r uses no unlabelled data)",
                    cfg.labelled_fraction,
                    len(rest),
                    cfg.recipe,
                )
        if unlabelled is not None:
            self.recipe.set_unlabelled(unlabelled)
            self.split_sizes["unlabelled"] = len(unlabelled)  # type: ignore[arg-type]
        return train

    def restore_loaders(self) -> None:
        for sampler, gen in self._restore:
            sampler.generator = gen
        self._restore = []

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        cfg = self.config

        def factor(epoch: int) -> float:
            if cfg.scheduler == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * min(epoch, cfg.epochs) / cfg.epochs))
            if cfg.scheduler == "multistep":
                return float(cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m))
            return 1.0

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)

    # ------------------------------------------------------------------ batches

    def _prepare(self, batch: Any, role: str, epoch: int, step: int) -> dict[str, Any]:
        where = f"{role} batch {step} of epoch {epoch}"
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"{where} is a {type(batch).__name__}; data sets must yield dicts with 'image' "
                "and 'label' (and 'mask' for segmentation), see medrobust.types"
            )
        seg = self.model.task is Task.SEGMENTATION
        need = ("image", "mask") if seg else ("image", "label")
        missing = [k for k in need if k not in batch]
        if missing:
            raise ValueError(f"{where} lacks key(s) {missing}; it has {sorted(map(str, batch))}")
        out = {
            k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()
        }
        images = out["image"]
        self.model.check_input(images, f"images of the {where}")
        if seg:
            self._check_mask(out["mask"], images, where)
        else:
            self.model.check_labels(out["label"], images.shape[0], f"labels of the {where}")
        if self.image_size is None:
            self.image_size = list(images.shape[2:])
        return out

    def _check_mask(self, mask: Any, images: torch.Tensor, where: str) -> None:
        if (
            not isinstance(mask, torch.Tensor)
            or mask.is_floating_point()
            or (mask.dtype == torch.bool)
        ):
            raise ValueError(
                f"masks of the {where} must be integer class-index tensors, got "
                f"{getattr(mask, 'dtype', type(mask).__name__)}"
            )
        want = (images.shape[0], *images.shape[2:])
        if tuple(mask.shape) != want:
            raise ValueError(
                f"masks of the {where} must have shape {want}, got {tuple(mask.shape)}"
            )
        k = self.model.num_classes
        lo, hi = int(mask.min()), int(mask.max())
        if lo < 0 or hi >= k:
            raise ValueError(
                f"masks of the {where} must be in [0, {k - 1}] for a {k}-class model, got "
                f"values in [{lo}, {hi}]"
            )

    def _emit(self, event: TrainEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    # ------------------------------------------------------------------ epochs

    def _train_epoch(
        self,
        loader: DataLoader[Any],
        opt: torch.optim.Optimizer,
        epoch: int,
        global_step: int,
    ) -> tuple[dict[str, float], int]:
        cfg = self.config
        self.model.train()
        total = _length(loader)
        sums: dict[str, float] = {}
        n_seen = 0
        steps = 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        for step, raw in enumerate(loader, start=1):
            batch = self._prepare(raw, "train", epoch, step)
            opt.zero_grad(set_to_none=True)
            loss, stats = self.recipe.loss(self.model, batch, step=global_step, epoch=epoch)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError(
                    f"recipe {self.config.recipe!r} must return a scalar loss tensor, got "
                    f"{type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}"
                )
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the training loss became {value} at epoch {epoch}, step {step} (global "
                    f"step {global_step}); lower the learning rate, set max_grad_norm, or check "
                    "the data for NaN/inf values"
                )
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            global_step += 1
            steps += 1
            bs = int(batch["image"].shape[0])
            n_seen += bs
            sums["loss"] = sums.get("loss", 0.0) + value * bs
            step_stats: dict[str, float | None] = {}
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v) * bs
                step_stats[k] = float(v)
            self._emit(TrainEvent("step", epoch, cfg.epochs, step, total, value, step_stats))
        if steps == 0:
            raise ValueError(f"the train loader yielded no batches in epoch {epoch}")
        return {f"train_{k}": v / n_seen for k, v in sums.items()}, global_step

    @torch.no_grad()
    def _validate(self, loader: DataLoader[Any], epoch: int) -> dict[str, float]:
        self.model.eval()
        total = _length(loader)
        seg = self.model.task is Task.SEGMENTATION
        logits_all: list[torch.Tensor] = []
        labels_all: list[torch.Tensor] = []
        loss_sum, dice_sum, dice_n, n_seen = 0.0, 0.0, 0, 0
        extra: dict[str, float] = {}
        seg_loss = None
        if seg:
            from monai.losses import DiceCELoss

            seg_loss = DiceCELoss(to_onehot_y=True, softmax=True)
        steps = 0
        for step, raw in enumerate(loader, start=1):
            batch = self._prepare(raw, "val", epoch, step)
            logits = self.model(batch["image"])
            bs = int(batch["image"].shape[0])
            if seg_loss is not None:
                mask = batch["mask"]
                loss_sum += float(seg_loss(logits, mask.unsqueeze(1))) * bs
                d = dice_per_sample(logits, mask)
                ok = torch.isfinite(d)
                dice_sum += float(d[ok].sum())
                dice_n += int(ok.sum())
            else:
                logits_all.append(logits.detach().float().cpu())
                labels_all.append(batch["label"].detach().cpu())
            for k, v in self.recipe.validation_stats(self.model, batch).items():
                if k not in self.recipe.validation_metrics:
                    raise ValueError(
                        f"recipe {self.config.recipe!r} returned validation metric {k!r} not "
                        f"listed in its validation_metrics {list(self.recipe.validation_metrics)}"
                    )
                extra[k] = extra.get(k, 0.0) + float(v) * bs
            n_seen += bs
            steps += 1
            self._emit(TrainEvent("val_step", epoch, self.config.epochs, step, total))
        if steps == 0:
            raise ValueError(f"the val loader yielded no batches in epoch {epoch}")
        if seg:
            out = {"loss": loss_sum / n_seen, "dice": dice_sum / dice_n if dice_n else math.nan}
        else:
            out = classification_metrics(torch.cat(logits_all), torch.cat(labels_all))
        out.update({k: v / n_seen for k, v in extra.items()})
        return {f"val_{k}": v for k, v in out.items()}

    def _better(self, score: float | None, best: float | None, first: bool) -> bool:
        if first:
            return True
        if score is None or not math.isfinite(score):
            return False
        if best is None or not math.isfinite(best):
            return True
        return score < best if self.config.monitor_mode == "min" else score > best

    # ------------------------------------------------------------------ RNG state

    def _rng_state(self) -> dict[str, Any]:
        cuda: torch.Tensor | None = None
        if self.device.type == "cuda":
            cuda = torch.cuda.get_rng_state(self.device)
        return {
            "torch": torch.get_rng_state(),
            "cuda": cuda,
            "data": self.data_gen.get_state(),
            "recipe": self.recipe_gen.get_state(),
            "loader": [g.get_state() for g in self.loader_generators],
        }

    def _set_rng_state(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if self.device.type == "cuda" and state.get("cuda") is not None:
            torch.cuda.set_rng_state(state["cuda"], self.device)
        self.data_gen.set_state(state["data"])
        self.recipe_gen.set_state(state["recipe"])
        saved = list(state.get("loader", []))
        if len(saved) != len(self.loader_generators):
            raise ValueError(
                f"the training loader has {len(self.loader_generators)} generator(s) but the "
                f"checkpoint saved {len(saved)}; resume with the same kind of loader"
            )
        for gen, s in zip(self.loader_generators, saved, strict=True):
            gen.set_state(s)

    # ------------------------------------------------------------------ main

    def run(
        self,
        train_data: DataLoader[Any] | Dataset[Any],
        val_data: DataLoader[Any] | Dataset[Any],
        *,
        resume: bool,
        unlabelled: Dataset[Any] | None = None,
    ) -> TrainResult:
        cfg = self.config
        model = self.model
        torch.manual_seed(cfg.seed)  # the forked global generator (dropout)
        self.data_gen = torch.Generator().manual_seed(_derived_seed(cfg.seed, 1))
        self.recipe_gen = torch.Generator(device=self.device).manual_seed(
            _derived_seed(cfg.seed, 2)
        )
        train_data = self._split_labelled(train_data, unlabelled)
        train_loader = self._loader(train_data, train=True)
        val_loader = self._loader(val_data, train=False)
        self.split_sizes.update(
            {
                name: len(loader.dataset)
                for name, loader in (("train", train_loader), ("val", val_loader))
                if hasattr(loader.dataset, "__len__")
            }
        )
        model.to(self.device)
        opt = self._optimizer()
        sched = self._scheduler(opt)
        self.recipe.setup(model, generator=self.recipe_gen)

        history: list[dict[str, Any]] = []
        start_epoch, global_step = 0, 0
        best_score: float | None = None
        best_epoch, since_best, stopped, wall_before = 0, 0, False, 0.0
        last_path = self.run_dir / "last.pt"
        best_path = self.run_dir / "best.pt"
        history_path = self.run_dir / "history.json"
        if resume:
            state = self._load_state(last_path, opt, sched)
            history = [dict(r) for r in state["history"]]
            start_epoch = int(state["epoch"])
            global_step = int(state["global_step"])
            best_score = state["best_score"]
            best_epoch = int(state["best_epoch"])
            since_best = int(state["epochs_since_best"])
            stopped = bool(state["stopped_early"])
            wall_before = float(state["wall_time_s"])
            if state.get("image_size") is not None:
                self.image_size = list(state["image_size"])
            logger.info("resuming %s after epoch %d", self.run_dir, start_epoch)
        else:  # a fresh run (possibly overwrite=True): drop the files of an earlier run
            for name in (*_RUN_FILES, "last.pt"):
                (self.run_dir / name).unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            self.run_dir / "train_config.json", json.dumps(cfg.to_dict(), indent=2) + "\n"
        )
        self._emit(TrainEvent("start", start_epoch, cfg.epochs, total_steps=_length(train_loader)))
        session_start = time.perf_counter()
        epochs = range(start_epoch + 1, cfg.epochs + 1) if not stopped else range(0)
        for epoch in epochs:
            t0 = time.perf_counter()
            lr = float(opt.param_groups[0]["lr"])
            train_stats, global_step = self._train_epoch(train_loader, opt, epoch, global_step)
            sched.step()
            val_stats = self._validate(val_loader, epoch)
            record: dict[str, Any] = {"epoch": epoch, "lr": lr, **train_stats, **val_stats}
            record["time_s"] = time.perf_counter() - t0
            history.append(record)
            wall = wall_before + time.perf_counter() - session_start
            score = record.get(cfg.monitor)
            if self._better(score, best_score, first=best_epoch == 0):
                best_score, best_epoch, since_best = score, epoch, 0
                card = self._card(metrics=record, best_epoch=epoch, epochs=epoch, wall=wall)
                save_checkpoint(best_path, model, card, write_card=True)
            else:
                since_best += 1
            if cfg.patience is not None and since_best >= cfg.patience:
                stopped = True
            state = {
                "version": _STATE_VERSION,
                "epoch": epoch,
                "global_step": global_step,
                "best_score": best_score,
                "best_epoch": best_epoch,
                "epochs_since_best": since_best,
                "stopped_early": stopped,
                "wall_time_s": wall,
                "config": cfg.to_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "recipe": self.recipe.state_dict(),
                "rng": self._rng_state(),
                "history": history,
                "image_size": self.image_size,
            }
            card = self._card(metrics=record, best_epoch=best_epoch, epochs=epoch, wall=wall)
            save_checkpoint(last_path, model, card, extra={_STATE_KEY: state})
            self._write_history(history_path, history)
            self._emit(
                TrainEvent(
                    "epoch_end",
                    epoch,
                    cfg.epochs,
                    loss=record.get("train_loss"),
                    metrics={k: v for k, v in record.items() if isinstance(v, (int, float))},
                )
            )
            if stopped:
                logger.info("early stop after epoch %d (patience %s)", epoch, cfg.patience)
                break
        self._write_history(history_path, history)
        result = TrainResult(
            run_dir=self.run_dir,
            best_checkpoint=best_path,
            last_checkpoint=last_path,
            history_path=history_path,
            history=history,
            monitor=cfg.monitor,
            best_epoch=best_epoch,
            best_score=None if best_score is None or not math.isfinite(best_score) else best_score,
            epochs_run=len(history),
            stopped_early=stopped,
            wall_time_s=wall_before + time.perf_counter() - session_start,
        )
        self._emit(TrainEvent("end", len(history), cfg.epochs, metrics=dict(history[-1])))
        return result

    def _load_state(
        self,
        path: Path,
        opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LambdaLR,
    ) -> dict[str, Any]:
        payload = read_checkpoint(path, map_location="cpu")
        state = payload["extra"].get(_STATE_KEY)
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"{path} holds no training state of this medrobust version; it cannot be resumed"
            )
        saved = TrainConfig.from_dict(state["config"]).to_dict()
        now = self.config.to_dict()
        diffs = [
            f"{k}: saved {saved[k]!r}, now {now[k]!r}"
            for k in now
            if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]
        ]
        if diffs:
            raise ValueError(
                f"cannot resume {path} with a different config ({'; '.join(diffs)}); only "
                f"{sorted(RESUMABLE_CHANGES)} may change"
            )
        if int(state["epoch"]) > self.config.epochs:
            raise ValueError(
                f"{path} has already trained {state['epoch']} epochs, more than "
                f"config.epochs={self.config.epochs}"
            )
        load_state_dict_into(self.model, payload["state_dict"])
        self.model.to(self.device)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        self.recipe.load_state_dict(state["recipe"])
        self._set_rng_state(state["rng"])
        return dict(state)

    @staticmethod
    def _write_history(path: Path, history: Iterable[Mapping[str, Any]]) -> None:
        rows = [{k: _json_value(v) for k, v in r.items()} for r in history]
        write_text_atomic(path, json.dumps(rows, indent=2, allow_nan=False) + "\n")


def _length(loader: DataLoader[Any]) -> int:
    try:
        return len(loader)
    except TypeError:
        return 0
