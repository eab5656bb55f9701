"""Command-line commands of the defences and detectors: ``medrobust defend`` (the study) and
``medrobust detect fit|score``.

``register(app)`` adds them to the ``medrobust`` typer application. Bad input raises
``ValueError``/``TypeError`` with a message naming what was expected and what came; the
``medrobust`` entry point prints it as one line and exits with status 2.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["register"]

_err = Console(stderr=True)
_out = Console()


def _say(text: str) -> None:
    from rich.markup import escape

    _err.print(f"[dim]{escape(text)}[/dim]")


def _params(items: list[str] | None, what: str) -> dict[str, Any]:
    """``key=value`` options; values are read as YAML scalars (numbers, booleans, null)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} must look like key=value, got {item!r}")
        k, v = item.split("=", 1)
        if not k.strip():
            raise ValueError(f"{what} {item!r} has an empty key")
        try:
            value = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            raise ValueError(f"{what} {item!r}: cannot read the value ({exc})") from exc
        if isinstance(value, str) and "/" in value:
            from medrobust.config import parse_eps

            with contextlib.suppress(ValueError):
                value = parse_eps(value)
        out[k.strip()] = value
    return out


def _eps_list(text: str) -> list[float]:
    from medrobust.config import parse_eps

    items = [e.strip() for e in text.split(",") if e.strip()]
    if not items:
        raise ValueError(f"--eps needs at least one budget, e.g. 1/255,2/255, got {text!r}")
    return [parse_eps(e) for e in items]


def _float_list(text: str, what: str) -> list[float]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(float(item[:-1]) / 100 if item.endswith("%") else float(item))
        except ValueError as exc:
            raise ValueError(f"{what} must be numbers such as 0.1,0.25,1, got {item!r}") from exc
    if not out:
        raise ValueError(f"{what} is empty")
    return out


def _names(text: str | None) -> list[str]:
    return [a.strip() for a in (text or "").split(",") if a.strip()]


def _dataset(name: str, split: str, params: dict[str, Any]) -> Any:
    from medrobust.data import create_dataset

    return create_dataset(name, split=split, **params)


def _data_params(card: Any, data: str, params: dict[str, Any]) -> dict[str, Any]:
    size = getattr(getattr(card, "data", None), "image_size", None)
    if data == getattr(getattr(card, "data", None), "name", None) and size and "size" not in params:
        params = {**params, "size": int(size[-1])}  # the resolution the model was trained on
    return params


def _risk_table(assessment: Any) -> Table:
    table = Table(title="System risk: P(wrong and undetected)")
    for col in ("eps", "classifier only", "+ detector", "+ detector (adaptive)", "false alarms"):
        table.add_column(col, justify="right")
    for r in assessment.risk:
        adaptive = r["system_risk_adaptive"]
        table.add_row(
            r["eps_display"],
            f"{r['classifier_risk']:.3f}",
            f"{r['system_risk']:.3f}",
            "-" if adaptive is None else f"{adaptive:.3f}",
            f"{r['false_alarm_rate']:.3f}",
        )
    return table


def _threads(n: int | None) -> None:
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)


def register(app: typer.Typer) -> None:
    """Add ``defend`` and the ``detect`` group (``fit``, ``score``) to ``app``.

    Args:
        app: The ``medrobust`` typer application.
    """
    detect = typer.Typer(
        help="Detectors of adversarial inputs: fit one on clean images, score it with attacks.",
        no_args_is_help=True,
    )
    app.add_typer(detect, name="detect")

    @app.command("defend")
    def defend(
        data: Annotated[str, typer.Option(help="Data set name.")] = "bus-phantom",
        data_param: Annotated[
            list[str] | None,
            typer.Option(
                "--data-param", help="Data set parameter key=value (repeatable), e.g. size=64."
            ),
        ] = None,
        n_train: Annotated[int, typer.Option(help="Training images (phantom).")] = 320,
        n_val: Annotated[int, typer.Option(help="Validation images (phantom).")] = 100,
        n_test: Annotated[int, typer.Option(help="Test images (phantom).")] = 100,
        model: Annotated[str, typer.Option(help="Architecture.")] = "small-cnn",
        model_param: Annotated[
            list[str] | None,
            typer.Option("--model-param", help="Model parameter key=value (repeatable)."),
        ] = None,
        recipes: Annotated[
            str, typer.Option(help="Comma-separated recipes (see `medrobust list defenses`).")
        ] = "standard,pgd-at,fast-at,ssat",
        fractions: Annotated[
            str, typer.Option(help="Comma-separated labelled fractions in (0, 1], e.g. 0.1,0.25,1.")
        ] = "0.1,0.25,1",
        epochs: Annotated[int, typer.Option(help="Epochs at 100% labels.")] = 8,
        equal_steps: Annotated[
            bool,
            typer.Option(help="Scale epochs by 1/fraction so every model makes as many steps."),
        ] = True,
        batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 32,
        lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-3,
        train_eps: Annotated[str, typer.Option(help="Training budget, e.g. 4/255.")] = "4/255",
        pgd_steps: Annotated[int, typer.Option(help="PGD-AT steps.")] = 7,
        defense_param: Annotated[
            list[str] | None,
            typer.Option(
                "--defense-param", help="Recipe parameter recipe.key=value, e.g. ssat.lam=1."
            ),
        ] = None,
        suite: Annotated[
            str, typer.Option(help="Audit suite (quick, standard, thorough).")
        ] = "quick",
        attacks: Annotated[
            str | None, typer.Option(help="Comma-separated attacks instead of a suite.")
        ] = None,
        eps: Annotated[str, typer.Option(help="Evaluation budgets.")] = "1/255,2/255,4/255",
        norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
        checks: Annotated[bool, typer.Option(help="Run the audit's sanity checks.")] = True,
        detector: Annotated[
            str, typer.Option(help="Detector (see `medrobust list detectors`).")
        ] = "uad",
        detector_param: Annotated[
            list[str] | None,
            typer.Option("--detector-param", help="Detector parameter key=value (repeatable)."),
        ] = None,
        fpr: Annotated[
            float, typer.Option(help="Clean false-positive rate of the detector.")
        ] = 0.05,
        adaptive: Annotated[
            bool, typer.Option(help="Attack each guarded model adaptively.")
        ] = True,
        adaptive_steps: Annotated[int, typer.Option(help="Steps of the adaptive attack.")] = 10,
        per_attack: Annotated[
            bool, typer.Option(help="Re-run each suite attack for per-attack detection rows.")
        ] = False,
        threads: Annotated[
            int | None,
            typer.Option(
                help="Torch CPU threads (1 is fastest for small models on a busy machine)."
            ),
        ] = None,
        audits: Annotated[bool, typer.Option(help="Write each model's audit report.")] = True,
        seed: Annotated[int, typer.Option(help="Seed.")] = 0,
        out: Annotated[Path, typer.Option(help="Study folder.")] = Path("runs/defend"),
        overwrite: Annotated[bool, typer.Option(help="Replace a completed study.")] = False,
        resume: Annotated[bool, typer.Option(help="Continue an interrupted study.")] = False,
    ) -> None:
        """The defence study: standard training, PGD-AT, fast AT and SSAT at several labelled
        fractions, each audited with and without a detector, in one report."""
        from medrobust.config import parse_eps
        from medrobust.defenses.study import StudyConfig, run_study

        per_recipe: dict[str, dict[str, Any]] = {}
        for key, value in _params(defense_param, "--defense-param").items():
            if "." not in key:
                raise ValueError(
                    f"--defense-param must name the recipe, e.g. ssat.lam=1, got {key!r}"
                )
            recipe, name = key.split(".", 1)
            per_recipe.setdefault(recipe, {})[name] = value
        phantom = data == "bus-phantom"
        data_params = {**({"size": 32} if phantom else {}), **_params(data_param, "--data-param")}
        cfg = StudyConfig(
            data=data,
            data_params=data_params,
            split_sizes={"train": n_train, "val": n_val, "test": n_test} if phantom else None,
            model=model,
            model_params={
                **({"width": 8} if model == "small-cnn" else {}),
                **_params(model_param, "--model-param"),
            },
            recipes=tuple(_names(recipes)),
            fractions=tuple(_float_list(fractions, "--fractions")),
            epochs=epochs,
            equal_steps=equal_steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            train_eps=parse_eps(train_eps),
            pgd_steps=pgd_steps,
            recipe_params=per_recipe,
            suite=suite,
            attacks=_names(attacks),
            eps=tuple(_eps_list(eps)),
            norm=norm,
            checks=checks,
            detector=detector,
            detector_params=_params(detector_param, "--detector-param"),
            fpr=fpr,
            adaptive=adaptive,
            adaptive_params={"steps": adaptive_steps},
            detection_per_attack=per_attack,
            write_audits=audits,
        )
        _threads(threads)
        result = run_study(cfg, out, overwrite=overwrite, resume=resume, progress=_say)
        table = Table(title="Defence study")
        eps_keys = result.metrics["threat_model"]["eps_display"]
        for col in (
            "model",
            "train s",
            "cost",
            "clean",
            *[f"robust {e}" for e in eps_keys],
            f"risk {eps_keys[-1]}",
            "+ detector",
        ):
            table.add_column(col, justify="right")
        last = result.metrics["threat_model"]["eps"][-1]
        risk = {r["model"]: r for r in result.metrics["risk"] if math.isclose(r["eps"], last)}
        for row in result.metrics["defenses"]:
            r = risk[row["model"]]
            sys_risk = (
                r["system_risk_adaptive"]
                if r["system_risk_adaptive"] is not None
                else r["system_risk"]
            )
            table.add_row(
                row["model"],
                f"{row['wall_time_s']:.1f}",
                "-" if row["cost_ratio"] is None else f"{row['cost_ratio']:.2f}x",
                f"{row['clean_accuracy']:.3f}",
                *[f"{row['robust_accuracy'][e]:.3f}" for e in eps_keys],
                f"{r['classifier_risk']:.3f}",
                f"{sys_risk:.3f}",
            )
        _out.print(table)
        for line in result.metrics["study"]["summary"]:
            _out.print(line)
        _out.print(f"report: [bold]{result.report.resolve()}[/bold]")

    @detect.command("fit")
    def detect_fit(
        checkpoint: Annotated[Path, typer.Argument(help="The classifier (a medrobust best.pt).")],
        out: Annotated[Path, typer.Option(help="Folder for the fitted detector.")],
        detector: Annotated[str, typer.Option(help="Detector name.")] = "uad",
        param: Annotated[
            list[str] | None,
            typer.Option("--param", help="Detector parameter key=value (repeatable)."),
        ] = None,
        data: Annotated[str, typer.Option(help="Data set of clean images.")] = "bus-phantom",
        data_param: Annotated[
            list[str] | None,
            typer.Option("--data-param", help="Data set parameter key=value (repeatable)."),
        ] = None,
        split: Annotated[str, typer.Option(help="Split of the clean fit images.")] = "train",
        calibration_split: Annotated[
            str,
            typer.Option(
                help="Split that sets the threshold ('none': hold out part of the fit split)."
            ),
        ] = "val",
        fpr: Annotated[float, typer.Option(help="Clean false-positive rate.")] = 0.05,
        batch_size: Annotated[int, typer.Option(help="Batch size.")] = 100,
        threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
        overwrite: Annotated[bool, typer.Option(help="Replace a detector in --out.")] = False,
    ) -> None:
        """Fit a detector on clean images (no labels, no adversarial examples for UAD)."""
        from torch.utils.data import DataLoader

        from medrobust.detectors import create_detector
        from medrobust.models import load_checkpoint

        _threads(threads)
        if (out / "detector.json").exists() and not overwrite:
            raise FileExistsError(
                f"{out} already holds a detector; pass --overwrite or choose another --out"
            )
        model, card = load_checkpoint(checkpoint)
        model.eval()
        params = _data_params(card, data, _params(data_param, "--data-param"))
        clean = _dataset(data, split, params)
        cal = (
            None
            if calibration_split.lower() == "none"
            else _dataset(data, calibration_split, params)
        )
        det = create_detector(detector, fpr=fpr, batch_size=batch_size, **_params(param, "--param"))
        _say(f"fitting {detector!r} on {len(clean)} clean {split} images")
        det.fit(
            model,
            DataLoader(clean, batch_size=batch_size),
            calibration=None if cal is None else DataLoader(cal, batch_size=batch_size),
        )
        det.save(out)
        info = det.describe()
        _out.print(
            f"detector {detector!r}: threshold {info['threshold']:.4g} at {100 * fpr:g}% clean "
            f"false positives ({info['n_fit']} fit, {info['n_calibration']} calibration images, "
            f"{info['time_s']:.1f} s)\nsaved: [bold]{out.resolve()}[/bold]"
        )

    @detect.command("score")
    def detect_score(
        checkpoint: Annotated[Path, typer.Argument(help="The classifier (a medrobust best.pt).")],
        detector_dir: Annotated[Path, typer.Argument(help="A folder written by `detect fit`.")],
        data: Annotated[str, typer.Option(help="Data set.")] = "bus-phantom",
        data_param: Annotated[
            list[str] | None,
            typer.Option("--data-param", help="Data set parameter key=value (repeatable)."),
        ] = None,
        split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
        suite: Annotated[
            str, typer.Option(help="Audit suite (quick, standard, thorough).")
        ] = "quick",
        attacks: Annotated[
            str | None, typer.Option(help="Comma-separated attacks instead of a suite.")
        ] = None,
        eps: Annotated[str, typer.Option(help="Budgets.")] = "1/255,2/255,4/255,8/255",
        norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
        adaptive: Annotated[bool, typer.Option(help="Run the adaptive attack.")] = True,
        adaptive_steps: Annotated[int, typer.Option(help="Steps of the adaptive attack.")] = 50,
        adaptive_weight: Annotated[
            float, typer.Option(help="Weight of the detector penalty of the adaptive attack.")
        ] = 1.0,
        max_samples: Annotated[int | None, typer.Option(help="At most this many samples.")] = None,
        batch_size: Annotated[int, typer.Option(help="Batch size.")] = 100,
        seed: Annotated[int, typer.Option(help="Attack seed.")] = 0,
        threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
        out: Annotated[Path | None, typer.Option(help="Run folder.")] = None,
        overwrite: Annotated[bool, typer.Option(help="Replace results in --out.")] = False,
    ) -> None:
        """Audit a detector-guarded model: detection AUROC and TPR at 5% FPR per attack and
        budget, and the system risk with and without the detector, adaptive attack included."""
        from datetime import datetime

        from torch.utils.data import DataLoader, Subset

        from medrobust.detectors import load_detector
        from medrobust.evaluation import evaluate
        from medrobust.evaluation.risk import assess_detector
        from medrobust.evaluation.suites import resolve_suite
        from medrobust.models import load_checkpoint

        _threads(threads)
        model, card = load_checkpoint(checkpoint)
        model.eval()
        det = load_detector(detector_dir, model)
        ds = _dataset(data, split, _data_params(card, data, _params(data_param, "--data-param")))
        if max_samples is not None:
            if max_samples < 1:
                raise ValueError(f"--max-samples must be >= 1, got {max_samples}")
            ds = Subset(ds, range(min(max_samples, len(ds))))
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
        attack_list: list[Any] = _names(attacks)
        if not attack_list:
            attack_list = resolve_suite(suite, norm, model.num_classes).attacks
        budgets = _eps_list(eps)
        _say(f"auditing {checkpoint} on {len(ds)} {split} images")
        card_dict = card.to_dict() if hasattr(card, "to_dict") else {}
        result = evaluate(
            model,
            loader,
            attacks=attack_list,
            eps=budgets,
            norm=norm,
            seed=seed,
            keep_adversarial=len(ds),
            model_info=card_dict,
            title=f"Robustness audit with detector {det.name!r}",
        )
        _say("measuring the detector (each attack, then the adaptive attack)")
        assessment = assess_detector(
            model,
            det,
            loader,
            result,
            attacks=attack_list,
            adaptive=adaptive,
            adaptive_params={"steps": adaptive_steps, "weight": adaptive_weight},
            batch_size=batch_size,
            progress=_say,
        )
        result.metrics.update(assessment.to_metrics())
        run_dir = out or Path("runs") / f"detect-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        result.write(
            run_dir,
            overwrite=overwrite,
            extra_sections=assessment.report_sections(),
            config_extra={"checkpoint": str(checkpoint), "detector": det.describe()},
        )
        _out.print(f"clean accuracy: {result.metrics['clean']['accuracy']:.3f}")
        _out.print(_risk_table(assessment))
        _out.print(f"report: [bold]{(run_dir / 'report.html').resolve()}[/bold]")
