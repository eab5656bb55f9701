"""What every ``medrobust`` command shares: consoles, the error boundary of the entry point
(:mod:`medrobust.cli._errors`, re-exported), rich progress, option parsing helpers and the
option types used by several commands.

This module imports no torch (``medrobust --help`` stays fast); commands import their pipelines
inside the command functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from medrobust.cli._errors import EXIT_BAD_INPUT, CliError, run_app, secondary_rank, started
from medrobust.pipelines.locking import EVALUATION_STATE

#: What an audit keeps in its run folder to continue from after an interrupt.
EVALUATED = "the evaluation records of the finished batches"


def started_audit(folder: Path) -> Path:
    """:func:`started` for an audit of a saved model: it continues by itself from its per-batch
    state when the same command runs again."""
    return started(folder, saved=EVALUATED, resume="", marker=EVALUATION_STATE)


if TYPE_CHECKING:
    from medrobust.pipelines.reporter import Reporter

__all__ = [
    "EXIT_BAD_INPUT",
    "CliError",
    "console",
    "default_out",
    "names",
    "out_console",
    "params",
    "progress",
    "run_app",
    "say",
    "started",
    "started_audit",
]

#: Progress, messages and errors (stderr); silent on ranks above 0 of a torchrun launch.
console = Console(stderr=True, quiet=secondary_rank())
#: Results (stdout); silent on ranks above 0.
out_console = Console(quiet=secondary_rank())


def say(text: str) -> None:
    """Print a dim status line to stderr (markup in ``text`` is shown literally)."""
    from rich.markup import escape

    console.print(f"[dim]{escape(text)}[/dim]")


def default_out(kind: str) -> Path:
    """The default run folder of a command: ``runs/<kind>-<date>-<time>``."""
    return Path("runs") / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def names(text: str | None) -> list[str]:
    """Split a comma-separated option into its non-empty, stripped items."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def params(items: list[str] | None, what: str, *, fractions: bool = False) -> dict[str, Any]:
    """Parse repeatable ``key=value`` options (values read as YAML scalars, never evaluated).

    Args:
        items: The ``key=value`` strings.
        what: The option name for error messages (``"--data-param"``).
        fractions: Read values such as ``4/255`` as numbers (budgets); other strings stay.

    Raises:
        ValueError: For an item without ``=``, with an empty key, or a value YAML cannot read.
    """
    from medrobust._utils.validate import parse_eps, parse_params

    out = parse_params(items, what)
    if "" in out:
        empty = next(i for i in items or [] if not i.split("=", 1)[0].strip())
        raise ValueError(f"{what} {empty!r} has an empty key")
    if fractions:
        for key, value in out.items():
            if isinstance(value, str) and "/" in value:
                with contextlib.suppress(ValueError):
                    out[key] = parse_eps(value)
    return out


def budgets(text: str) -> list[float]:
    """Parse a comma-separated ``--eps`` option such as ``1/255,2/255``.

    Raises:
        ValueError: For an empty list, or a budget that is not a finite number > 0.
    """
    from medrobust._utils.validate import parse_budgets

    return parse_budgets(text)


@contextmanager
def progress() -> Iterator[Reporter]:
    """A rich progress display with a training bar and an evaluation bar, as a pipeline
    :class:`~medrobust.pipelines.reporter.Reporter`.

    The display starts with its first bar, so a command that fails before any progress prints
    nothing but its error line.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from medrobust.pipelines.reporter import Reporter

    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    prog = Progress(*columns, console=console, transient=False)
    bars = _Bars(prog)
    try:
        yield Reporter(
            train=bars.on_train,
            evaluate=bars.on_eval,
            message=lambda text: prog.console.print(f"[dim]{text}[/dim]"),
        )
    finally:
        if bars.tasks:
            prog.stop()


class _Bars:
    """The training and evaluation bars of :func:`progress`."""

    def __init__(self, prog: Any) -> None:
        """Draw on ``prog`` (a rich Progress)."""
        self.prog = prog
        self.tasks: dict[str, Any] = {}
        #: The batch of the last clean or attack event (targeted events belong to it).
        self.batch = 0

    def add(self, name: str, description: str, total: int | None) -> None:
        """Add the bar ``name`` (starting the display with the first bar)."""
        if not self.tasks:
            self.prog.start()
        self.tasks[name] = self.prog.add_task(description, total=total, info="")

    def on_train(self, ev: Any) -> None:
        """Show a training event (start, step, epoch end)."""
        prog, tasks = self.prog, self.tasks
        if ev.kind == "start":
            self.add("train", "training", ev.epochs)
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

    def on_eval(self, ev: Any) -> None:
        """Show an evaluation event (an attack at a budget, a targeted attack toward a target
        kind, or the sanity checks); when the console is not a terminal (a log file, a CI
        job), where the bar is not drawn, each attack also prints one plain line."""
        from medrobust._utils.format import fmt_eps

        prog, tasks = self.prog, self.tasks
        if "eval" not in tasks:
            self.add("eval", "evaluating", ev.n_batches)
        if ev.stage == "clean":
            self.batch = ev.batch
        info = None
        if ev.stage == "attack":
            self.batch = ev.batch
            info = f"batch {ev.batch + 1}: {ev.attack} at eps={fmt_eps(ev.eps or 0)}"
            prog.update(tasks["eval"], completed=ev.batch, info=info)
        elif ev.stage == "targeted":  # a targeted attack of the current batch
            info = f"batch {self.batch + 1}: {ev.attack} (targeted)"
            prog.update(tasks["eval"], info=info)
        elif ev.stage == "checks":
            prog.update(
                tasks["eval"], completed=ev.n_batches or ev.batch, info="sanity checks done"
            )
        if info is not None and not prog.console.is_terminal:
            total = f"/{ev.n_batches}" if ev.n_batches and ev.stage == "attack" else ""
            prog.console.print(
                f"evaluating {info.replace(': ', total + ': ', 1)}", markup=False, highlight=False
            )


def print_report(report: Path) -> None:
    """Print the absolute path of a run's ``report.html``."""
    out_console.print(f"report: [bold]{report.resolve()}[/bold]")


# Option types shared by several commands (defaults stay with each command).
Checkpoint = Annotated[Path, typer.Argument(help="A medrobust checkpoint (best.pt).")]
Classifier = Annotated[Path, typer.Argument(help="The classifier (a medrobust best.pt).")]
Data = Annotated[str, typer.Option(help="Data set name (see `medrobust list datasets`).")]
DataParam = Annotated[
    list[str] | None,
    typer.Option("--data-param", help="Data set parameter key=value (repeatable), e.g. size=64."),
]
ModelParam = Annotated[
    list[str] | None,
    typer.Option("--model-param", help="Model parameter key=value (repeatable)."),
]
Split = Annotated[str, typer.Option(help="Split to evaluate.")]
Suite = Annotated[str, typer.Option(help="Named attack suite (quick, standard, thorough).")]
AttackNames = Annotated[
    str | None,
    typer.Option(help="Comma-separated attack names instead of a suite, e.g. fgsm,pgd."),
]
Eps = Annotated[str, typer.Option(help="Comma-separated budgets, e.g. 1/255,2/255,4/255.")]
NormOpt = Annotated[str, typer.Option(help="linf or l2.")]
MaxSamples = Annotated[int | None, typer.Option(help="Evaluate at most this many samples.")]
BatchSize = Annotated[int, typer.Option(help="Batch size.")]
Seed = Annotated[int, typer.Option(help="Seed.")]
Threads = Annotated[
    int | None,
    typer.Option(help="Torch CPU threads (1 is fastest for small models on a busy machine)."),
]
Out = Annotated[Path | None, typer.Option(help="Run folder (default runs/<command>-<time>).")]
Overwrite = Annotated[bool, typer.Option(help="Replace results already in --out.")]
AllowLargeEps = Annotated[
    bool,
    typer.Option(help="Accept an Linf budget above the model's input range (refused by default)."),
]
Resume = Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")]
Config = Annotated[Path | None, typer.Option(help="YAML run configuration.")]
