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

Seeding: the global PyTorch generator is forked (the caller's random state is restored
afterwards) and seeded with ``config.seed`` (dropout draws from it); the shuffling and the
recipe draw from their own seeded generators. Deterministic algorithms are switched on
(``warn_only``) during the call and the previous setting is restored. All generator states go
into ``last.pt`` every epoch, so ``resume=True`` continues an interrupted run and ends with
exactly the weights of an uninterrupted one (on the same device and software).

Loaders: pass data sets and ``fit`` builds the loaders with ``config.batch_size`` and a seeded
shuffle (recommended), or pass ``DataLoader`` objects with the same batch size; a training
loader whose ``RandomSampler`` has no generator is given the seeded one for the duration of the
call (see :mod:`medrobust.training.batches`).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medrobust._utils.dist import is_main, main_first
from medrobust._utils.io import write_text_atomic
from medrobust.defenses.recipes import Recipe, create_recipe
from medrobust.metrics import classification_metrics, dice_per_sample
from medrobust.models.adapter import ModelAdapter
from medrobust.models.card import DataInfo, ModelCard, TrainingInfo
from medrobust.models.checkpoint import load_state_dict_into, read_checkpoint, save_checkpoint
from medrobust.training.balance import resolve_class_weights
from medrobust.training.batches import (
    LoaderSetup,
    data_spacing,
    length,
    prepare_batch,
    split_labelled,
)
from medrobust.training.config import TrainConfig
from medrobust.training.distributed import reduce_sums, shard_loader, wrap_step
from medrobust.training.events import ProgressCallback, TrainEvent, TrainResult
from medrobust.training.finish import FinalChecks, check_best
from medrobust.training.setup import (
    check_arguments,
    check_run_dir,
    derived_seed,
    reproducible,
)
from medrobust.training.state import (
    STATE_KEY,
    Generators,
    Progress,
    check_resumable,
    write_history,
)
from medrobust.types import Task

__all__ = ["TrainEvent", "TrainResult", "fit"]

logger = logging.getLogger(__name__)

_RUN_FILES = ("best.pt", "model_card.json", "model_card.md", "history.json")


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

    Seeding, determinism and loaders: see the module docstring.

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
        unlabelled: Unlabelled training images (a map-style data set; labels are never read)
            for a semi-supervised recipe such as ``"ssat"``. With ``config.labelled_fraction
            < 1`` the training ``Dataset`` is split per class, seeded by ``config.seed``; the
            rest joins the unlabelled images of recipes that use them.

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
    check_arguments(model, config, card_info, progress, unlabelled)
    run = check_run_dir(Path(run_dir), resume=resume, overwrite=overwrite)
    device = config.resolve_device()
    trainer = _Trainer(model, config, run, device, dict(card_info or {}), progress)
    was_training = model.training
    try:
        with reproducible(device):
            return trainer.run(train_loader, val_loader, resume=resume, unlabelled=unlabelled)
    finally:
        trainer.restore_loaders()
        model.train(was_training)


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
        self.spacing: list[float] | None = None
        self.loaders: LoaderSetup | None = None
        self.class_weights: dict[str, Any] | None = None
        self.val_pred: torch.Tensor | None = None
        self.val_labels: torch.Tensor | None = None
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
        if data_info.spacing is None and self.spacing is not None:
            data_info.spacing = list(self.spacing)
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
            class_weights=self.class_weights,
        )
        numeric = {
            k: (float(v) if v is not None else None)
            for k, v in metrics.items()
            if k.startswith(("train_", "val_")) and (v is None or isinstance(v, (int, float)))
        }
        return ModelCard.from_model(
            self.model, data=data_info, training=training, metrics=numeric, **info
        )

    def restore_loaders(self) -> None:
        if self.loaders is not None:
            self.loaders.restore()

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
        out = prepare_batch(batch, self.model, self.device, where)
        if self.image_size is None:
            self.image_size = list(out["image"].shape[2:])
        return out

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
        total = length(loader)
        sums: dict[str, float] = {}
        n_seen = 0
        steps = 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        for step, raw in enumerate(loader, start=1):
            batch = self._prepare(raw, "train", epoch, step)
            opt.zero_grad(set_to_none=True)
            loss, stats = self.step(batch, global_step, epoch)
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
        sums, n_seen = reduce_sums(sums, n_seen)  # over the processes of a distributed run
        return {f"train_{k}": v / n_seen for k, v in sums.items()}, global_step

    @torch.no_grad()
    def _validate(self, loader: DataLoader[Any], epoch: int) -> dict[str, float]:
        self.model.eval()
        total = length(loader)
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
            self.val_pred, self.val_labels = torch.cat(logits_all).argmax(1), torch.cat(labels_all)
            out = classification_metrics(torch.cat(logits_all), self.val_labels)
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

    # ------------------------------------------------------------------ main

    def _start(
        self,
        train_data: DataLoader[Any] | Dataset[Any],
        val_data: DataLoader[Any] | Dataset[Any],
        unlabelled: Dataset[Any] | None,
    ) -> tuple[DataLoader[Any], DataLoader[Any]]:
        """Seed the generators, split the labels, build the loaders and set up the recipe."""
        cfg = self.config
        torch.manual_seed(cfg.seed)  # the forked global generator (dropout)
        data_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, 1))
        recipe_gen = torch.Generator(device=self.device).manual_seed(derived_seed(cfg.seed, 2))
        self.gens = Generators(self.device, data_gen, recipe_gen)
        train_data, unlabelled = split_labelled(
            train_data, unlabelled, cfg, self.recipe, derived_seed(cfg.seed, 3)
        )
        if unlabelled is not None:
            self.recipe.set_unlabelled(unlabelled)
            self.split_sizes["unlabelled"] = len(unlabelled)  # type: ignore[arg-type]
        self.loaders = LoaderSetup(cfg, data_gen)
        train_loader = shard_loader(self.loaders.build(train_data, train=True), data_gen)
        val_loader = self.loaders.build(val_data, train=False)
        self.gens.loader = self.loaders.loader_generators
        self.spacing = data_spacing(train_loader)
        self.split_sizes.update(
            {
                name: len(loader.dataset)
                for name, loader in (("train", train_loader), ("val", val_loader))
                if hasattr(loader.dataset, "__len__")
            }
        )
        self.model.to(self.device)
        self.opt = self._optimizer()
        self.sched = self._scheduler(self.opt)
        self.class_weights = resolve_class_weights(cfg.class_weights, train_loader, self.model)
        if self.class_weights is not None:
            self.recipe.set_class_weights(self.class_weights["weights"])
        self.recipe.setup(self.model, generator=recipe_gen)
        self.step = wrap_step(self.model, self.recipe, sync_batchnorm=cfg.sync_batchnorm)
        return train_loader, val_loader

    def _resume_or_reset(self, resume: bool) -> Progress:
        """The progress of the run in ``run_dir`` (resumed), or a clean start."""
        if resume:
            progress = self._load_state(self.run_dir / "last.pt")
            logger.info("resuming %s after epoch %d", self.run_dir, progress.epoch)
        else:  # a fresh run (possibly overwrite=True): drop the files of an earlier run
            for name in (*_RUN_FILES, "last.pt") if is_main() else ():
                (self.run_dir / name).unlink(missing_ok=True)
            progress = Progress()
        if is_main():  # rank 0 writes the run folder of a distributed run
            self.run_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.config.to_dict(), indent=2) + "\n"
            write_text_atomic(self.run_dir / "train_config.json", text)
        return progress

    def _epoch(
        self, epoch: int, loaders: tuple[DataLoader[Any], DataLoader[Any]], p: Progress, t: float
    ) -> None:
        """Train and validate one epoch, update ``p`` and write ``best.pt``/``last.pt``."""
        cfg = self.config
        t0 = time.perf_counter()
        lr = float(self.opt.param_groups[0]["lr"])
        train_stats, p.global_step = self._train_epoch(loaders[0], self.opt, epoch, p.global_step)
        self.sched.step()
        val_stats = self._validate(loaders[1], epoch)
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, **train_stats, **val_stats}
        record["time_s"] = time.perf_counter() - t0
        p.history.append(record)
        p.epoch = epoch
        wall = p.wall_before + time.perf_counter() - t
        score = record.get(cfg.monitor)
        if self._better(score, p.best_score, first=p.best_epoch == 0):
            p.best_score, p.best_epoch, p.since_best = score, epoch, 0
            card = self._card(metrics=record, best_epoch=epoch, epochs=epoch, wall=wall)
            if is_main():
                save_checkpoint(self.run_dir / "best.pt", self.model, card, write_card=True)
        else:
            p.since_best += 1
        if cfg.patience is not None and p.since_best >= cfg.patience:
            p.stopped = True
        state = {
            **p.to_state(wall),
            "config": cfg.to_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "recipe": self.recipe.state_dict(),
            "rng": self.gens.state(),
            "image_size": self.image_size,
        }
        card = self._card(metrics=record, best_epoch=p.best_epoch, epochs=epoch, wall=wall)
        if is_main():
            save_checkpoint(self.run_dir / "last.pt", self.model, card, extra={STATE_KEY: state})
            write_history(self.run_dir / "history.json", p.history)
        numbers: dict[str, float | None] = {
            k: v for k, v in record.items() if isinstance(v, (int, float))
        }
        loss = record.get("train_loss")
        self._emit(TrainEvent("epoch_end", epoch, cfg.epochs, loss=loss, metrics=numbers))

    def run(
        self,
        train_data: DataLoader[Any] | Dataset[Any],
        val_data: DataLoader[Any] | Dataset[Any],
        *,
        resume: bool,
        unlabelled: Dataset[Any] | None = None,
    ) -> TrainResult:
        cfg = self.config
        loaders = self._start(train_data, val_data, unlabelled)
        p = self._resume_or_reset(resume)
        self._emit(TrainEvent("start", p.epoch, cfg.epochs, total_steps=length(loaders[0])))
        session_start = time.perf_counter()
        for epoch in range(p.epoch + 1, cfg.epochs + 1) if not p.stopped else range(0):
            self._epoch(epoch, loaders, p, session_start)
            if p.stopped:
                logger.info("early stop after epoch %d (patience %s)", epoch, cfg.patience)
                break
        checks = main_first(lambda: self._check_best(loaders, p))  # rank 0 may rewrite best.pt
        history_path = self.run_dir / "history.json"
        if is_main():
            write_history(history_path, p.history)
        best = p.best_score
        result = TrainResult(
            run_dir=self.run_dir,
            best_checkpoint=self.run_dir / "best.pt",
            last_checkpoint=self.run_dir / "last.pt",
            history_path=history_path,
            history=p.history,
            monitor=cfg.monitor,
            best_epoch=p.best_epoch,
            best_score=None if best is None or not math.isfinite(best) else best,
            epochs_run=len(p.history),
            stopped_early=p.stopped,
            wall_time_s=p.wall_before + time.perf_counter() - session_start,
            batchnorm=checks.batchnorm,
            warnings=tuple(checks.warnings),
        )
        self._emit(TrainEvent("end", len(p.history), cfg.epochs, metrics=dict(p.history[-1])))
        return result

    def _check_best(
        self, loaders: tuple[DataLoader[Any], DataLoader[Any]], p: Progress
    ) -> FinalChecks:
        """BatchNorm statistics and one predicted class, on ``best.pt`` (see training/finish)."""
        if p.best_epoch == 0 or not (self.run_dir / "best.pt").is_file():
            return FinalChecks()

        def batches(limit: int | None) -> Iterator[dict[str, Any]]:
            for step, raw in enumerate(itertools.islice(loaders[0], limit), start=1):
                yield self._prepare(raw, "train", p.best_epoch, step)

        def validate() -> tuple[dict[str, float], torch.Tensor | None, torch.Tensor | None]:
            self.val_pred = self.val_labels = None
            return self._validate(loaders[1], p.best_epoch), self.val_pred, self.val_labels

        return check_best(self.model, self.config, self.run_dir / "best.pt", batches, validate)

    def _load_state(self, path: Path) -> Progress:
        """Restore weights, optimiser, schedule, recipe and generators from ``last.pt``."""
        payload = read_checkpoint(path, map_location="cpu")
        state = payload["extra"].get(STATE_KEY)
        check_resumable(path, state, self.config)
        load_state_dict_into(self.model, payload["state_dict"])
        self.model.to(self.device)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.recipe.load_state_dict(state["recipe"])
        self.gens.set_state(state["rng"])
        if state.get("image_size") is not None:
            self.image_size = list(state["image_size"])
        return Progress.from_state(state)
