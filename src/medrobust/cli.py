"""The ``medrobust`` command: demo, train, evaluate, list.

Every command prints progress with rich, writes results atomically, and exits non-zero with a
one-line error (what was expected, what came) on bad input.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

app = typer.Typer(
    name="medrobust",
    help="Adversarial robustness of medical-imaging AI: audit, attack, explain, harden.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """An error to show as one line and exit with :data:`EXIT_BAD_INPUT`."""


@contextmanager
def _progress() -> Iterator[Any]:
    """A progress reporter with a training bar and an evaluation bar."""
    from medrobust.pipeline import Reporter

    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as prog:
        tasks: dict[str, Any] = {}

        def on_train(ev: Any) -> None:
            if ev.kind == "start":
                tasks["train"] = prog.add_task("training", total=ev.epochs, info="")
                prog.update(tasks["train"], completed=ev.epoch)
            elif ev.kind == "step" and "train" in tasks:
                loss = f"loss {ev.loss:.3f}" if ev.loss is not None else ""
                prog.update(
                    tasks["train"],
                    info=f"epoch {ev.epoch}/{ev.epochs} step {ev.step}/{ev.total_steps} {loss}",
                )
            elif ev.kind == "epoch_end" and "train" in tasks:
                acc = ev.metrics.get("val_accuracy")
                prog.update(
                    tasks["train"],
                    completed=ev.epoch,
                    info=f"epoch {ev.epoch}: val accuracy {acc:.3f}" if acc is not None else "",
                )

        def on_eval(ev: Any) -> None:
            if "eval" not in tasks:
                tasks["eval"] = prog.add_task("evaluating", total=ev.n_batches, info="")
            if ev.stage == "attack":
                from medrobust._utils.format import fmt_eps

                prog.update(
                    tasks["eval"],
                    completed=ev.batch,
                    info=f"batch {ev.batch + 1}: {ev.attack} at eps={fmt_eps(ev.eps or 0)}",
                )
            elif ev.stage == "checks":
                prog.update(
                    tasks["eval"], completed=ev.n_batches or ev.batch, info="sanity checks done"
                )

        yield Reporter(
            train=on_train,
            evaluate=on_eval,
            message=lambda text: prog.console.print(f"[dim]{text}[/dim]"),
        )


def _default_out(kind: str) -> Path:
    return Path("runs") / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _parse_params(items: list[str] | None, what: str) -> dict[str, Any]:
    """Parse ``key=value`` options; values are read as YAML scalars (numbers, booleans)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise CliError(f"{what} must look like key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            raise CliError(f"{what} {item!r}: cannot read the value ({exc})") from exc
    return out


def _print_summary(result: Any, report: Path) -> None:
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
    out_console.print(f"report: [bold]{report.resolve()}[/bold]")


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/demo-<time>).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML run configuration overriding the demo's.")
    ] = None,
    task: Annotated[
        str,
        typer.Option(help="classification (default) or segmentation (a UNet on lesion masks)."),
    ] = "classification",
    quick: Annotated[bool, typer.Option(help="A tiny run for smoke tests (seconds).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace results already in --out.")] = False,
) -> None:
    """Train a model on the embedded breast-ultrasound phantom and audit it end to end."""
    from medrobust.config import RunConfig, demo_config
    from medrobust.pipeline import run_audit

    if task not in ("classification", "segmentation"):
        raise CliError(f"--task must be 'classification' or 'segmentation', got {task!r}")
    run_dir = out or _default_out("demo")
    if task == "segmentation":
        if config:
            raise CliError("--config applies to the classification demo only")
        from medrobust.segmentation_pipeline import run_segmentation_demo

        with _progress() as reporter:
            seg, report = run_segmentation_demo(
                run_dir, reporter=reporter, quick=quick, overwrite=overwrite or resume
            )
        out_console.print(seg.summary())
        out_console.print(f"report: [bold]{report.resolve()}[/bold]")
        return
    cfg = RunConfig.from_yaml(config) if config else demo_config(quick=quick)
    with _progress() as reporter:
        result, report = run_audit(
            cfg, run_dir, reporter=reporter, resume=resume, overwrite=overwrite
        )
    _print_summary(result, report)


@app.command()
def train(
    data: Annotated[
        str, typer.Option(help="Data set name (see `medrobust list datasets`).")
    ] = "bus-phantom",
    model: Annotated[
        str, typer.Option(help="Model name (see `medrobust list models`).")
    ] = "small-cnn",
    data_param: Annotated[
        list[str] | None,
        typer.Option(
            "--data-param", help="Data set parameter key=value (repeatable), e.g. size=128."
        ),
    ] = None,
    model_param: Annotated[
        list[str] | None,
        typer.Option("--model-param", help="Model parameter key=value (repeatable)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    defense: Annotated[
        str | None,
        typer.Option(
            help="Training recipe (`medrobust list defenses`): pgd-at, trades, fast-at, ssat."
        ),
    ] = None,
    defense_param: Annotated[
        list[str] | None,
        typer.Option(
            "--defense-param", help="Recipe parameter key=value (repeatable), e.g. eps=4/255."
        ),
    ] = None,
    labelled_fraction: Annotated[
        float | None,
        typer.Option(
            help="Fraction of the training labels to use, in (0, 1]; SSAT learns from the rest."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML run configuration.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default runs/train-<time>).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Start over in a folder holding a run.")] = False,
) -> None:
    """Train a model with validation, best-checkpoint selection and resume."""
    from dataclasses import replace

    from medrobust.config import RunConfig
    from medrobust.pipeline import train_model

    cfg = RunConfig.from_yaml(config) if config else RunConfig()
    if not config:
        cfg.data.name, cfg.model.name = data, model
    cfg.data.params.update(_parse_params(data_param, "--data-param"))
    cfg.model.params.update(_parse_params(model_param, "--model-param"))
    changes: dict[str, Any] = {
        k: v
        for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}.items()
        if v is not None
    }
    if defense is not None:
        changes["recipe"], changes["recipe_params"] = defense, {}
    if defense_param:
        from medrobust.config import parse_eps

        params = _parse_params(defense_param, "--defense-param")
        params = {
            k: (parse_eps(v) if isinstance(v, str) and "/" in v else v) for k, v in params.items()
        }
        changes["recipe_params"] = {
            **changes.get("recipe_params", cfg.train.recipe_params),
            **params,
        }
    if labelled_fraction is not None:
        changes["labelled_fraction"] = labelled_fraction
    if changes:
        cfg.train = replace(cfg.train, **changes)
    run_dir = out or _default_out("train")
    with _progress() as reporter:
        _, _, result = train_model(
            cfg, run_dir, reporter=reporter, resume=resume, overwrite=overwrite
        )
    out_console.print(
        f"best epoch {result.best_epoch}: {result.monitor} = {result.best_score}\n"
        f"checkpoint: [bold]{result.best_checkpoint.resolve()}[/bold]"
    )


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A medrobust checkpoint (best.pt).")],
    data: Annotated[str, typer.Option(help="Data set name.")] = "bus-phantom",
    data_param: Annotated[
        list[str] | None,
        typer.Option("--data-param", help="Data set parameter key=value (repeatable)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    suite: Annotated[
        str, typer.Option(help="Named attack suite (quick, standard, thorough).")
    ] = "standard",
    attacks: Annotated[
        str | None,
        typer.Option(help="Comma-separated attack names instead of a suite, e.g. fgsm,pgd."),
    ] = None,
    eps: Annotated[
        str, typer.Option(help="Comma-separated budgets, e.g. 1/255,2/255,4/255.")
    ] = "1/255,2/255,4/255,8/255",
    norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
    mode: Annotated[str, typer.Option(help="individual or cascade.")] = "individual",
    max_samples: Annotated[
        int | None, typer.Option(help="Evaluate at most this many samples.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 100,
    seed: Annotated[int, typer.Option(help="Attack seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default runs/evaluate-<time>).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results already in --out.")] = False,
) -> None:
    """Audit a saved model on a named data set (resumes an interrupted run in --out)."""
    from medrobust.config import DataSection, EvaluationSection, RunConfig
    from medrobust.models import load_checkpoint
    from medrobust.pipeline import evaluate_model

    model, card = load_checkpoint(checkpoint)
    params = _parse_params(data_param, "--data-param")
    if model.task.value == "segmentation":
        # the same run folder and report, with the segmentation audit (Dice under attack,
        # targeted attacks, noise); `evaluate-segmentation` exposes its extra options
        from medrobust.segmentation_pipeline import evaluate_segmentation_model

        seg_attacks = attacks or "pgd-seg,apgd-seg,asma,dag"
        ev_seg = EvaluationSection.from_dict(
            {
                "suite": None,
                "attacks": [a.strip() for a in seg_attacks.split(",") if a.strip()],
                "eps": [e for e in eps.split(",") if e.strip()],
                "norm": norm,
                "max_samples": max_samples,
                "batch_size": batch_size,
                "seed": seed,
            }
        )
        cfg_seg = RunConfig(
            data=DataSection(name=data, params=params, eval_split=split), evaluation=ev_seg
        )
        run_dir = out or _default_out("evaluate")
        with _progress() as reporter:
            seg, report = evaluate_segmentation_model(
                model,
                card,
                cfg_seg,
                run_dir,
                reporter=reporter,
                overwrite=overwrite,
                config_extra={"checkpoint": str(checkpoint)},
            )
        out_console.print(seg.summary())
        out_console.print(f"report: [bold]{report.resolve()}[/bold]")
        return
    trained_size = card.data.image_size
    if data == card.data.name and trained_size and "size" not in params:
        params["size"] = int(trained_size[-1])  # evaluate at the resolution it was trained on
    ev = EvaluationSection.from_dict(
        {
            "suite": None if attacks else suite,
            "attacks": [a.strip() for a in attacks.split(",") if a.strip()] if attacks else [],
            "eps": [e for e in eps.split(",") if e.strip()],
            "norm": norm,
            "mode": mode,
            "max_samples": max_samples,
            "batch_size": batch_size,
            "seed": seed,
        }
    )
    cfg = RunConfig(data=DataSection(name=data, params=params, eval_split=split), evaluation=ev)
    run_dir = out or _default_out("evaluate")
    with _progress() as reporter:
        result, report = evaluate_model(
            model,
            card,
            cfg,
            run_dir,
            reporter=reporter,
            overwrite=overwrite,
            config_extra={"checkpoint": str(checkpoint)},
        )
    _print_summary(result, report)


LISTABLE = (
    "attacks",
    "models",
    "datasets",
    "objectives",
    "suites",
    "checks",
    "defenses",
    "detectors",
)


@app.command("list")
def list_cmd(
    what: Annotated[str, typer.Argument(help=f"One of: all, {', '.join(LISTABLE)}.")] = "all",
) -> None:
    """List the registered attacks, models, data sets, objectives, suites and checks."""
    kinds = LISTABLE if what == "all" else (what,)
    for kind in kinds:
        if kind not in LISTABLE:
            import difflib

            close = difflib.get_close_matches(kind, LISTABLE, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CliError(f"cannot list {kind!r}{hint}; choose one of: all, {', '.join(LISTABLE)}")
        table = Table(title=kind, title_justify="left", show_header=False, box=None)
        table.add_column("name", style="bold cyan")
        table.add_column("summary")
        for name, summary in _listing(kind):
            table.add_row(name, summary)
        out_console.print(table)


def _listing(kind: str) -> list[tuple[str, str]]:
    if kind == "attacks":
        from medrobust.attacks import ATTACKS

        return [(e.name, e.summary) for e in ATTACKS.entries()]
    if kind == "objectives":
        from medrobust.attacks import OBJECTIVES

        return [(e.name, e.summary) for e in OBJECTIVES.entries()]
    if kind == "models":
        from medrobust.models import MODELS

        return [(e.name, e.summary) for e in MODELS.entries()]
    if kind == "datasets":
        from medrobust.data import DATASETS

        return [(e.name, e.summary) for e in DATASETS.entries()]
    if kind == "defenses":
        from medrobust.training import RECIPES, list_recipes

        list_recipes()  # loads recipe plug-ins
        return [(e.name, e.summary) for e in RECIPES.entries()]
    if kind == "detectors":
        from medrobust.detectors import DETECTORS

        return [(e.name, e.summary) for e in DETECTORS.entries()]
    if kind == "suites":
        from medrobust.evaluation.suites import _SUITES

        return [
            (
                name,
                "linf: "
                + ", ".join(a["name"] for a in s["linf"])
                + " | l2: "
                + ", ".join(a["name"] for a in s["l2"]),
            )
            for name, s in sorted(_SUITES.items())
        ]
    from medrobust.evaluation.checks import CHECKS

    return [(code, f"{title}: {text}") for code, (title, text) in CHECKS.items()]


def _register_commands() -> None:
    """Add the commands that live beside their features (segmentation, defences)."""
    from medrobust.defenses.cli import register as register_defenses
    from medrobust.explain.cli import register as register_explain
    from medrobust.segmentation_cli import register as register_segmentation

    register_explain(app)
    register_segmentation(app)
    register_defenses(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medrobust`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except CliError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_BAD_INPUT)
    except (
        ValueError,
        TypeError,
        KeyError,
        FileNotFoundError,
        FileExistsError,
        FloatingPointError,
    ) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        console.print(f"[red]error:[/red] {msg}")
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted[/yellow]: run the same command with --resume to continue"
        )
        sys.exit(130)
    except Exception as exc:  # click usage errors and aborts
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
