"""`hookyard purge`: delete finished records now, as the retention role does on its own.

Without options it applies the configured retention (`retention.*` in config.yaml) to
every kind that has one; `--kind` (repeatable) and `--older-than 7d` narrow and override
it; `--dry-run` counts what would go and deletes nothing. Straight on the store, or with
`--url` through a server's POST /api/v1/purge (an admin key). Work still to be done is
never purged (engine.store.ops.retention).
"""

from __future__ import annotations

import click

from engine.cli.local_store import api_client, run_on_server, run_on_store, target_options
from engine.cli.output import fail, print_json, print_table
from engine.config import RETENTION_KINDS
from engine.errors import ConfigError
from engine.model.records import utcnow
from engine.support.durations import duration_seconds
from engine.workers.retention import PurgePlan, run_plan


@click.command("purge")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(RETENTION_KINDS),
    help="What to purge (repeatable; default: every kind with a retention).",
)
@click.option("--older-than", help="Purge what is older than this (e.g. 7d, 12h).")
@click.option("--dry-run", is_flag=True, help="Count what would be purged; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@target_options
def purge_command(kinds, older_than, dry_run, as_json, url, config_file, store_url) -> None:
    """Delete finished records older than their retention (or --older-than)."""
    try:
        seconds = None if older_than is None else duration_seconds(older_than)
    except ValueError as exc:
        fail(f"--older-than: {exc}")
    if seconds == 0:
        fail("--older-than: give a duration longer than zero")
    if url:
        client = api_client(url, config_file, store_url)
        body = {"kinds": list(kinds), "older_than": older_than, "dry_run": dry_run}
        counts = run_on_server(lambda: client.post("/purge", body).data["purged"])
    else:

        async def work(store, settings):
            plan = PurgePlan.requested(utcnow(), settings.retention, kinds, seconds)
            return await run_plan(store, plan, settings.retention, dry_run=dry_run)

        counts = run_on_store(config_file, store_url, work, failures=(ConfigError,))
    if as_json:
        print_json({"purged": counts, "dry_run": dry_run})
        return
    header = "would purge" if dry_run else "purged"
    print_table(("kind", header), sorted(counts.items()))
