"""A pack of workflows that a webhook sender's payload can make expensive, and the rules
that start them from webhooks: for the tests of the workflow step budget
(engine.workers.step_pool)."""

from __future__ import annotations

import textwrap
from pathlib import Path

# Each publishes something computed from the payload's `s` (and `n`).
ORQUESTA = {
    # A C-level sort of a list built from the payload: no expression limit sees it (each
    # filter call is one Python call), only the budget outside the process stops it.
    "sorter": "{{ ctx('s') | list | sort | join | length }}",
    # A string repeated a sender-chosen number of times (YAQL's memory quota refuses it).
    "repeater": "<% ctx(s) * ctx(n) %>",
    # Catastrophic backtracking on the sender's string (the regex time limit stops it).
    "backtracker": "<% regex_match(ctx(s), '^(a|aa)+$') %>",
    # Nothing heavy: it must keep finishing while the others fail.
    "quick": "<% ctx(s).len() %>",
}

CHAIN = """\
chain:
  - name: only
    ref: core.echo
    params:
      message: "{{ s | list | sort | join }}"
"""


def _orquesta(expression: str) -> str:
    return textwrap.dedent(
        f"""\
        version: 1.0
        input:
          - s
          - n
        tasks:
          first:
            action: core.noop
            next:
              - publish:
                  - computed: "{expression}"
        output:
          - computed: <% ctx(computed) %>
        """
    )


def write_abuse_pack(packs_dir: Path) -> Path:
    """The pack `abuse`: one orquesta action per ORQUESTA entry, `abuse.chain_sorter`."""
    pack = packs_dir / "abuse"
    actions = pack / "actions"
    (actions / "workflows").mkdir(parents=True, exist_ok=True)
    (pack / "pack.yaml").write_text(
        "name: abuse\nversion: 1.0.0\ndescription: tests\nauthor: tests\nemail: t@example.com\n"
    )
    parameters = "parameters:\n  s:\n    type: string\n  n:\n    type: integer\n"
    for name, expression in ORQUESTA.items():
        (actions / "workflows" / f"{name}.yaml").write_text(_orquesta(expression))
        (actions / f"{name}.yaml").write_text(
            f"name: {name}\nrunner_type: orquesta\nentry_point: workflows/{name}.yaml\n"
            + parameters
        )
    (actions / "chain_sorter.yaml").write_text(
        "name: chain_sorter\nrunner_type: action-chain\nentry_point: chains/chain_sorter.yaml\n"
        + parameters
    )
    (actions / "chains").mkdir(exist_ok=True)
    (actions / "chains" / "chain_sorter.yaml").write_text(CHAIN)
    return pack


def abuse_rules() -> dict[str, str]:
    """Rules (for tests.support.app.settings_for) sending /webhooks/<name> to abuse.<name>
    with the body's s and n."""
    rules = {}
    for name in (*ORQUESTA, "chain_sorter"):
        rules[name] = (
            f"name: {name}\npack: t\n"
            f"trigger: {{type: core.st2.webhook, parameters: {{url: {name}}}}}\n"
            f"action:\n  ref: abuse.{name}\n  parameters:\n"
            '    s: "{{ trigger.body.s }}"\n'
            '    n: "{{ trigger.body.n | default(1) }}"\n'
        )
    return rules
