"""Terminal output helpers shared by the CLI commands: tables, JSON, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on a terminal; plain aligned columns when piped (stable for grep/awk)."""
    if sys.stdout.isatty():
        _rich_table(headers, rows)
        return
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * w for w in widths))


def _rich_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(header_style="bold")
    for header in headers:
        # Fold long values (rule refs, criteria keys) rather than cutting them off.
        table.add_column(str(header), overflow="fold")
    status_columns = {i for i, h in enumerate(headers) if str(h).lower() in _STATUS_HEADERS}
    for row in rows:
        table.add_row(
            *[
                _styled(str(cell)) if i in status_columns else str(cell)
                for i, cell in enumerate(row)
            ]
        )
    Console().print(table)


_STATUS_HEADERS = {"status", "result", "state", "outcome"}


# Statuses a reader scans for, coloured the way operators expect.
_STATUS_STYLES = {
    "succeeded": "green",
    "processed": "green",
    "matched": "green",
    "pass": "green",
    "failed": "red",
    "timeout": "red",
    "abandoned": "red",
    "processing_failed": "red",
    "FAIL": "red",
    "canceled": "yellow",
    "canceling": "yellow",
    "running": "cyan",
}


def _styled(text: str):
    from rich.text import Text

    style = _STATUS_STYLES.get(text)
    return Text(text, style=style) if style else Text(text)
