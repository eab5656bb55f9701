"""The ``medrobust`` command: one typer application, one module per command group.

====================  =====================================================================
command               module
====================  =====================================================================
demo, train, evaluate :mod:`medrobust.cli.audit`
list                  :mod:`medrobust.cli.list`
explain               :mod:`medrobust.cli.explain`
evaluate-segmentation :mod:`medrobust.cli.segmentation`
defend                :mod:`medrobust.cli.defend`
compare               :mod:`medrobust.cli.compare`
detect fit|score      :mod:`medrobust.cli.detect`
====================  =====================================================================

Commands only parse options, call a pipeline (:mod:`medrobust.pipelines`) and print; they import
their pipelines inside the command functions, so ``medrobust --help`` imports no torch.

Every outcome has one exit status and at most one line on stderr (the error boundary,
:mod:`medrobust.cli._errors`): 0 success; 1 an unexpected failure, with the path of a log
holding the traceback; 2 a usage error (typer's usage message) or bad input (what was expected,
what came); 130 interrupted, with what was saved and how to continue.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import typer

from medrobust.cli import audit, compare, defend, detect, explain, segmentation
from medrobust.cli import list as list_group
from medrobust.cli._common import run_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="medrobust",
    help="Adversarial robustness of medical-imaging AI: audit, attack, explain, harden.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("demo")(audit.demo)
app.command("train")(audit.train)
app.command("evaluate")(audit.evaluate)
app.command("list")(list_group.list_components)
app.command("explain")(explain.explain)
app.command("evaluate-segmentation")(segmentation.evaluate_segmentation)
app.command("defend")(defend.defend)
app.command("compare")(compare.compare)
app.add_typer(detect.app, name="detect")


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``medrobust`` console script.

    Args:
        argv: The arguments (None: ``sys.argv[1:]``).

    Raises:
        SystemExit: Always, with the exit status (0, 1, 2 or 130).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_app(app, argv)
