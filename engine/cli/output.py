"""Terminal output shared by the CLI commands: tables, lists, objects, JSON, errors.

A list shows as a table (plain aligned columns when piped) and says on stderr when the
server holds more than shown; one object shows as `key: value` lines, nested data as
YAML; `--json` prints the server's JSON instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol

import click
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

DEFAULT_LIMIT = 50


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
    style = _STATUS_STYLES.get(text)
    return Text(text, style=style) if style else Text(text)


# --- lists and objects from the server ------------------------------------------


def limit_option(function):
    """The `-n/--limit` option of a list command."""
    return click.option(
        "-n",
        "--limit",
        type=click.IntRange(min=1),
        default=DEFAULT_LIMIT,
        show_default=True,
        help="How many to show, newest first.",
    )(function)


def field(item: Any, dotted: str) -> Any:
    """`item["a"]["b"]` for "a.b", None where a step is missing."""
    value = item
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def when(timestamp: str | None) -> str:
    """An ISO-8601 UTC timestamp as `YYYY-MM-DD HH:MM:SS` for a table."""
    if not timestamp:
        return ""
    return timestamp.replace("T", " ")[:19]


def cell(value: Any) -> str:
    """A value as a table shows it: empty for None, long ones cut."""
    return "" if value is None else short(value)


class ListReply(Protocol):
    """A list as the server answered it (engine.cli.client.Reply)."""

    data: Any
    total: int | None


def show_list(
    reply: ListReply,
    as_json: bool,
    columns: Sequence[tuple[str, str]],
    what: str,
) -> None:
    """A table of `columns` (header, dotted field; fields ending in _at/_time/timestamp are
    times) or the JSON, and a note on stderr when the server holds more than shown."""
    items = reply.data or []
    if as_json:
        print_json(items)
    elif not items:
        click.echo(f"no {what}")
    else:
        rows = [[_render(item, path) for _, path in columns] for item in items]
        print_table([header for header, _ in columns], rows)
    if reply.total is not None and reply.total > len(items):
        click.echo(f"showing {len(items)} of {reply.total} {what}; use -n to see more", err=True)


def _render(item: Any, path: str) -> str:
    value = field(item, path)
    if path.endswith(("_at", "_time", "timestamp")):
        return when(value)
    return cell(value)


class _ReadableDumper(yaml.SafeDumper):
    """YAML for people: command output with several lines shows as a `|` block."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_ReadableDumper.add_representer(str, _represent_text)


def show_object(data: dict[str, Any], as_json: bool, order: Sequence[str] = ()) -> None:
    """`key: value` lines, `order` first; objects and lists as indented JSON."""
    if as_json:
        print_json(data)
        return
    keys = [k for k in order if k in data] + sorted(k for k in data if k not in order)
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        value = data[key]
        if isinstance(value, dict | list) and value:
            text = yaml.dump(value, Dumper=_ReadableDumper, allow_unicode=True)
            click.echo(f"{key}:")
            click.echo("\n".join("  " + line for line in text.splitlines()))
        else:
            shown = "" if value is None else value if isinstance(value, str) else json.dumps(value)
            click.echo(f"{key + ':':<{width + 1}} {shown}".rstrip())
