"""The `hookyard` command: parses arguments and calls engine functions.

Each command group lives in its own module, one per resource; errors a user can cause
are one line on stderr and a non-zero exit, never a traceback. Local commands (rule
validate/test, serve, apikey, key, signing-key) work on the config and store directly;
the others talk to a running server (--url / HOOKYARD_URL, HOOKYARD_API_KEY).
"""

from __future__ import annotations

import click

from engine.cli.actions import action_group, pack_group
from engine.cli.apikeys import apikey_group
from engine.cli.backup import backup_command, migrate_command, restore_command
from engine.cli.datastore import key_group
from engine.cli.deliveries import delivery_group
from engine.cli.enforcements import enforcement_group
from engine.cli.executions import execution_group
from engine.cli.explain import explain_command
from engine.cli.inquiries import inquiry_group
from engine.cli.pack_install import install_command, remove_command, setup_virtualenv_command
from engine.cli.purge import purge_command
from engine.cli.rules import rule_group
from engine.cli.run import run_command
from engine.cli.sensors import sensor_group, trigger_group
from engine.cli.serve import serve_command
from engine.cli.signing import signing_key_group
from engine.cli.subscriptions import subscription_group
from engine.cli.trigger_instances import trigger_instance_group
from engine.cli.webhooks import webhook_group
from engine.cli.workflows import workflow_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hookyard", prog_name="hookyard")
def cli() -> None:
    """Hookyard: webhooks in, StackStorm-compatible rules, actions out."""


for command in (
    serve_command,
    rule_group,
    run_command,
    action_group,
    pack_group,
    execution_group,
    trigger_instance_group,
    enforcement_group,
    webhook_group,
    delivery_group,
    subscription_group,
    explain_command,
    apikey_group,
    key_group,
    purge_command,
    backup_command,
    restore_command,
    migrate_command,
    signing_key_group,
    workflow_group,
    sensor_group,
    trigger_group,
    inquiry_group,
):
    cli.add_command(command)
for pack_command in (install_command, remove_command, setup_virtualenv_command):
    pack_group.add_command(pack_command)


def main() -> None:
    cli(prog_name="hookyard")
