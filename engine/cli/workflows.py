"""`hookyard workflow inspect`: the static checks of an Orquesta workflow file."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.output import print_json
from engine.workflows.inspect import InspectionProblem, inspect_workflow

# As `hookyard rule validate`: 0 when every file is clean, 1 when any has a problem.
EXIT_OK, EXIT_PROBLEMS = 0, 1


@click.group("workflow")
def workflow_group() -> None:
    """Orquesta workflows: check definition files locally."""


@workflow_group.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_command(files: tuple[str, ...], as_json: bool) -> None:
    """Check workflow FILES; print every problem as file:line:col: field: message.

    Reports syntax errors, expressions that do not compile, tasks never reached from the
    start tasks, and ctx() names read but never set, all at once. Exit 1 on any problem.
    """
    found: list[InspectionProblem] = []
    for file in files:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            found.append(InspectionProblem("syntax", f"cannot read the file: {reason}", file))
            continue
        found.extend(inspect_workflow(text, file))
    if as_json:
        print_json({"problems": [problem.to_dict() for problem in found]})
    else:
        for problem in found:
            click.echo(str(problem), err=True)
        if found:
            click.echo(f"{len(found)} problem(s) in {len(files)} file(s)", err=True)
        else:
            click.echo(f"ok: {len(files)} workflow file(s)")
    raise SystemExit(EXIT_PROBLEMS if found else EXIT_OK)
