"""A pack of Orquesta workflows whose tasks fail until a file exists: re-run from tasks
(`POST /api/v1/executions/<id>/re_run` with `tasks`) succeeds once the test creates it."""

from __future__ import annotations

import textwrap
from pathlib import Path

WORKFLOWS = {
    # first -> check -> last; check fails until the file `flag` exists.
    "gated": """\
        version: 1.0
        input:
          - flag
        tasks:
          first:
            action: core.local
            input:
              cmd: echo one
            next:
              - when: <% succeeded() %>
                publish:
                  - one: <% result().stdout %>
                do: check
          check:
            action: core.local
            input:
              cmd: test -f <% ctx(flag) %> && echo two
            next:
              - when: <% succeeded() %>
                publish:
                  - two: <% result().stdout %>
                do: last
          last:
            action: core.local
            input:
              cmd: echo three
            next:
              - publish:
                  - three: <% result().stdout %>
        output:
          - one: <% ctx(one) %>
          - two: <% ctx(two) %>
          - three: <% ctx(three) %>
          - first_said: <% task(first).result.stdout %>
        """,
    # One item per name; an item fails until the file <dir>/<name> exists.
    "gated_items": """\
        version: 1.0
        input:
          - dir
          - names
        tasks:
          each:
            with: <% ctx(names) %>
            action: core.local
            input:
              cmd: test -f <% ctx(dir) %>/<% item() %> && echo <% item() %>
            next:
              - when: <% succeeded() %>
                publish:
                  - said: <% result().select($.stdout) %>
        output:
          - said: <% ctx(said) %>
        """,
    # `gated` with a secret input: its stored state is sealed.
    "secret_gated": """\
        version: 1.0
        input:
          - flag
          - token
        tasks:
          check:
            action: core.local
            input:
              cmd: test -f <% ctx(flag) %>
        output:
          - length: <% len(ctx(token)) %>
        """,
    "sleepy": """\
        version: 1.0
        tasks:
          nap:
            action: core.local
            input:
              cmd: sleep 20
        """,
}

PARAMETERS = """\
parameters:
  flag:
    type: string
  dir:
    type: string
  names:
    type: array
  token:
    type: string
    secret: true
"""


def write_rerun_pack(packs_dir: Path, ref: str = "reruns") -> Path:
    """The pack `ref`: one orquesta action per workflow above, and the chain `ref.chain`."""
    pack = packs_dir / ref
    actions = pack / "actions"
    (actions / "workflows").mkdir(parents=True, exist_ok=True)
    (pack / "pack.yaml").write_text(
        f"name: {ref}\nversion: 1.0.0\ndescription: tests\nauthor: tests\nemail: t@example.com\n"
    )
    for name, text in WORKFLOWS.items():
        (actions / "workflows" / f"{name}.yaml").write_text(textwrap.dedent(text))
        (actions / f"{name}.yaml").write_text(
            f"name: {name}\nrunner_type: orquesta\nentry_point: workflows/{name}.yaml\n"
            + PARAMETERS
        )
    (actions / "chains").mkdir(exist_ok=True)
    (actions / "chains" / "chain.yaml").write_text("chain:\n  - name: only\n    ref: core.noop\n")
    (actions / "chain.yaml").write_text(
        "name: chain\nrunner_type: action-chain\nentry_point: chains/chain.yaml\n"
    )
    return pack
