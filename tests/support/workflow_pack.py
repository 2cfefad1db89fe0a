"""A pack of Orquesta workflows for the tests: written into a packs directory."""

from __future__ import annotations

import textwrap
from pathlib import Path


def sequential(count: int, action: str = "core.noop") -> str:
    tasks = []
    for number in range(1, count + 1):
        after = f"\n    next:\n      - do: task{number + 1}" if number < count else ""
        tasks.append(f"  task{number}:\n    action: {action}{after}")
    return (
        "version: 1.0\ninput:\n  - name\ntasks:\n"
        + "\n".join(tasks)
        + ("\noutput:\n  - greeting: <% ctx(name) %>\n")
    )


WORKFLOWS = {
    # A sender's value in a shell command: quoted, never run (engine.workflows.expressions).
    "shout": """\
        version: 1.0
        input:
          - name
        tasks:
          say:
            action: core.local
            input:
              cmd: echo <% ctx().name %>
            next:
              - publish:
                  - said: <% result().stdout %>
        output:
          - said: <% ctx().said %>
        """,
    "noop10": sequential(10),
    "slow8": sequential(8, 'core.local cmd="sleep 0.3"'),
    "echo": """\
        version: 1.0
        input:
          - name
        tasks:
          greet:
            action: core.local cmd="echo hello <% ctx(name) %>"
            next:
              - when: <% succeeded() %>
                publish:
                  - said: <% result().stdout %>
                do: shout
          shout:
            action: core.local
            input:
              cmd: echo <% ctx(said) %>!
            next:
              - publish:
                  - shouted: <% result().stdout %>
        output:
          - said: <% ctx(said) %>
          - shouted: <% ctx(shouted) %>
        """,
    "branches": """\
        version: 1.0
        tasks:
          start:
            action: core.noop
            next:
              - do: left, right
          left:
            action: core.local cmd="echo L"
            next:
              - publish: [l: <% result().stdout %>]
                do: both
          right:
            action: core.local cmd="echo R"
            next:
              - publish: [r: <% result().stdout %>]
                do: both
          both:
            join: all
            action: core.noop
        output:
          - joined: <% ctx(l) + ctx(r) %>
        """,
    "failing": """\
        version: 1.0
        tasks:
          boom:
            action: core.local cmd="exit 3"
            next:
              - when: <% succeeded() %>
                do: never
          never:
            action: core.noop
        output:
          - reached: false
        """,
    "looping": """\
        version: 1.0
        vars:
          - huge: <% range(100000000).select(str($)).join(",") %>
        tasks:
          only:
            action: core.noop
        """,
    "growing": """\
        version: 1.0
        vars:
          - word: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        tasks:
          only:
            action: core.noop
            next:
              - publish:
                  - word: <% ctx(word) + ctx(word) %>
                do: only
        """,
    "slow_one": """\
        version: 1.0
        tasks:
          wait:
            action: core.local cmd="sleep 5"
        """,
    "two_sleeps": """\
        version: 1.0
        tasks:
          first:
            action: core.local cmd="sleep 5"
          second:
            action: core.local cmd="sleep 5"
        output:
          - done: true
        """,
    "delayed": """\
        version: 1.0
        tasks:
          first:
            action: core.noop
            next:
              - do: later
          later:
            delay: 1
            action: core.noop
        """,
    "kv": """\
        version: 1.0
        tasks:
          only:
            action: core.noop
        output:
          - greeting: <% st2kv('system.greeting') %>
          - mine: <% st2kv('user.mine') %>
          - unscoped: <% st2kv('mine') %>
          - missing: <% st2kv('system.nope', default => 'fallback') %>
          - who: <% ctx(st2).user %>
          - api: <% ctx(st2).api_url %>
        """,
    "items": """\
        version: 1.0
        input:
          - count: 1000
          - concurrency: 50
        tasks:
          each:
            with:
              items: n in <% range(ctx(count)) %>
              concurrency: <% ctx(concurrency) %>
            action: core.noop
        output:
          - runs: <% len(task(each).result.items) %>
        """,
    "nested": """\
        version: 1.0
        tasks:
          inner:
            action: flows.echo
            input:
              name: nested
            next:
              - publish:
                  - inner_said: <% result().output.said %>
        output:
          - inner_said: <% ctx(inner_said) %>
        """,
    "slow_items": """\
        version: 1.0
        input:
          - count: 12
          - concurrency: 3
        tasks:
          each:
            with:
              items: n in <% range(ctx(count)) %>
              concurrency: <% ctx(concurrency) %>
            action: core.local cmd="sleep 0.2; echo <% item(n) %>"
        output:
          - said: <% task(each).result.items.select($.result.stdout) %>
        """,
    "broken": """\
        version: 1.0
        tasks:
          one:
            action: core.noop
            next:
              - do: nowhere
        """,
}


def write_workflow_pack(packs_dir: Path, ref: str = "flows") -> Path:
    """The pack `ref` with one orquesta action per workflow above, plus `flows.plain`."""
    pack = packs_dir / ref
    actions = pack / "actions"
    (actions / "workflows").mkdir(parents=True, exist_ok=True)
    (pack / "pack.yaml").write_text(
        f"name: {ref}\nversion: 1.0.0\ndescription: tests\nauthor: tests\nemail: t@example.com\n"
    )
    for name, text in WORKFLOWS.items():
        (actions / "workflows" / f"{name}.yaml").write_text(textwrap.dedent(text))
        (actions / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""\
                name: {name}
                runner_type: orquesta
                entry_point: workflows/{name}.yaml
                parameters:
                  name:
                    type: string
                    default: world
                  count:
                    type: integer
                    default: 1000
                  concurrency:
                    type: integer
                    default: 50
                """
            )
        )
    (actions / "plain.yaml").write_text("name: plain\nrunner_type: noop\n")
    (actions / "workflows" / "secretive.yaml").write_text(
        "version: 1.0\ninput:\n  - token\ntasks:\n  only:\n    action: core.noop\n"
        "output:\n  - length: <% len(ctx(token)) %>\n"
    )
    (actions / "secretive.yaml").write_text(
        "name: secretive\nrunner_type: orquesta\nentry_point: workflows/secretive.yaml\n"
        "parameters:\n  token:\n    type: string\n    secret: true\n"
    )
    return pack
