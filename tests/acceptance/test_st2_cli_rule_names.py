"""The official `st2` CLI (st2client 3.9.0) creates, shows, disables, enables and deletes
rules whose names StackStorm's own fixtures use (`st2.person.joe`, `rule space`) against
a real `hookyard serve`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import start_server
from tests.support.st2 import INSTALL_TIMEOUT, St2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(INSTALL_TIMEOUT + 120)]

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "st2_rules" / "generic"


@pytest.mark.parametrize(
    ("source", "ref"),
    [
        ("rule3.yaml", "wolfpack.st2.person.joe"),  # StackStorm's file, unchanged
        ("rule space", "wolfpack.rule space"),
    ],
)
def test_st2_rule_commands_with_stackstorm_names(serve, st2_cli, tmp_path, source, ref):
    server, api_key = start_server(serve)
    st2 = St2(st2_cli, server.url, api_key, tmp_path / "home")
    if source.endswith(".yaml"):
        rule_file = FIXTURES / source
    else:
        rule_file = tmp_path / "rule.json"
        rule_file.write_text(
            json.dumps(
                {
                    "name": source,
                    "pack": "wolfpack",
                    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "space"}},
                    "action": {"ref": "core.noop"},
                }
            )
        )
    created = st2.json("rule", "create", str(rule_file))
    assert created["ref"] == ref and created["source"] == "api"
    shown = st2.json("rule", "get", ref)
    assert shown["name"] == ref.partition(".")[2]
    st2.ok("rule", "disable", ref)
    assert st2.json("rule", "get", ref)["enabled"] is False
    st2.ok("rule", "enable", ref)
    assert st2.json("rule", "get", ref)["enabled"] is True
    st2.ok("rule", "delete", ref)
    assert ref not in st2.ok("rule", "list")
