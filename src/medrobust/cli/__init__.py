"""The ``medrobust`` command: one typer application, one module per command group.

====================  =====================================================================
command               module
====================  =====================================================================
demo, train, evaluate :mod:`medrobust.cli.audit`
list                  :mod:`medrobust.cli.list`
explain               :mod:`medrobust.cli.explain`
evaluate-segmentation :mod:`medrobust.cli.segmentation`
defend                :mod:`medrobust.cli.defend`
detect fit|score      :mod:`medrobust.cli.detect`
====================  =====================================================================

Commands only parse options, call a pipeline (:mod:`medrobust.pipelines`) and print; they import
their pipelines inside the command functions, so ``medrobust --help`` imports no torch. Every
command exits non-zero with a one-line error (what was expected, what came) on bad input.
"""

from __future__ import annotations

import logging

import typer

from medrobust.cli import audit, defend, detect, explain, segmentation
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
app.add_typer(detect.app, name="detect")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medrobust`` console script.

    Args:
        argv: The arguments (None: ``sys.argv[1:]``).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_app(app, argv)
