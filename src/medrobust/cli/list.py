"""``medrobust list``: the registered attacks, models, data sets, objectives, suites, checks,
defences and detectors.

The listing comes from the cached catalogue (:mod:`medrobust.pipelines.catalogue`), so a warm
listing imports no torch.
"""

from __future__ import annotations

from typing import Annotated

import typer

from medrobust.cli._common import CliError, out_console

__all__ = ["list_components"]

_KINDS_HELP = (
    "attacks, models, datasets, objectives, suites, checks, defenses, detectors, corruptions"
)


def list_components(
    what: Annotated[str, typer.Argument(help=f"One of: all, {_KINDS_HELP}.")] = "all",
) -> None:
    """List the registered attacks, models, data sets, objectives, suites and checks."""
    import difflib

    from rich.table import Table

    from medrobust.pipelines.catalogue import KINDS, load_catalogue

    kinds = KINDS if what == "all" else (what,)
    if what != "all" and what not in KINDS:
        close = difflib.get_close_matches(what, KINDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CliError(f"cannot list {what!r}{hint}; choose one of: all, {', '.join(KINDS)}")
    catalogue = load_catalogue()
    for kind in kinds:
        table = Table(title=kind, title_justify="left", show_header=False, box=None)
        table.add_column("name", style="bold cyan")
        table.add_column("summary")
        for entry in catalogue[kind]:
            table.add_row(entry["name"], entry.get("summary", ""))
        out_console.print(table)
