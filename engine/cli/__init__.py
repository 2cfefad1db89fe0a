"""The `hookyard` command: parses arguments and calls engine functions.

Each command group lives in its own module; errors a user can cause are one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import click

from engine.cli.apikeys import apikey_group
from engine.cli.deliveries import delivery_group
from engine.cli.keys import key_group
from engine.cli.resources import (
    enforcement_group,
    execution_group,
    rule_get,
    rule_list,
    trigger_instance_group,
    webhook_group,
)
from engine.cli.rules import rule_group
from engine.cli.run import run_command
from engine.cli.serve import serve_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hookyard", prog_name="hookyard")
def cli() -> None:
    """Hookyard: webhooks in, StackStorm-compatible rules, actions out."""


cli.add_command(rule_group)
cli.add_command(serve_command)
# Server-side commands: `hookyard rule list|get` join the local validate/test.
rule_group.add_command(rule_list)
rule_group.add_command(rule_get)
cli.add_command(run_command)
cli.add_command(execution_group)
cli.add_command(trigger_instance_group)
cli.add_command(enforcement_group)
cli.add_command(webhook_group)
cli.add_command(delivery_group)
cli.add_command(apikey_group)
cli.add_command(key_group)

from engine.cli.explain import explain_command  # noqa: E402  (kept beside its registration)

cli.add_command(explain_command)

from engine.cli import changes  # noqa: E402  (kept beside its registration)

rule_group.add_command(changes.rule_enable)
rule_group.add_command(changes.rule_disable)
rule_group.add_command(changes.rule_delete)
execution_group.add_command(changes.execution_cancel)
trigger_instance_group.add_command(changes.trigger_instance_re_emit)


def main() -> None:
    cli(prog_name="hookyard")

from engine.cli.signing import signing_key_group  # noqa: E402  (grouped with its registration)

cli.add_command(signing_key_group)
