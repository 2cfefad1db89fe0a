"""A pack of action chains for the tests: StackStorm's own example chains (the files in
st2_chains/, copied unchanged from StackStorm/st2 contrib/examples/actions/chains/, with
their action metadata as contrib/examples/actions/*.meta.yaml declares it) and our own
chains for what the examples do not cover."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

ST2_CHAINS = Path(__file__).with_name("st2_chains")

# name -> (chain file in st2_chains/, parameters), as StackStorm's examples declare them.
ST2_EXAMPLES = {
    "echochain": ("echochain.yaml", "skip_notify:\n    default:\n      - c2\n"),
    "echochain-param": (
        "echochain_param.yaml",
        "input1:\n    type: string\n    required: true\n",
    ),
    "chain-sequential": (
        "chain_sequential.yaml",
        "name:\n    required: true\n    type: string\n    default: Lakshmi\n"
        "  skip_notify:\n    default: [task1, task2, task3]\n",
    ),
    "publish_data": (
        "publish_data.yaml",
        "system_info_path:\n    type: string\n    required: true\n    default: /system-info\n",
    ),
    "chain-test-cancel": (
        "chain_test_cancel.yaml",
        "tempfile:\n    type: string\n    required: true\n"
        "  message:\n    type: string\n    required: true\n",
    ),
    "chain-test-pause-resume": (
        "chain_test_pause_resume.yaml",
        "tempfile:\n    type: string\n    required: true\n"
        "  message:\n    type: string\n    required: true\n",
    ),
    "regex_jinja_filter": ("regex_jinja_filter.yaml", ""),
    "time_jinja_filter": ("time_jinja_filter.yaml", ""),
    "version_jinja_filter": ("version_jinja_filter.yaml", ""),
    # Both name an on-failure link "c4" that they do not have: StackStorm's runner refuses
    # them before they run ("Unable to find node with name "c4" ..."); so does Hookyard, at
    # load. `task_failure` and `top_level_failure` below are them without "c4".
    "echochain_task_failure": ("echochain_task_failure.yaml", ""),
    "echochain_top_level_failure": ("echochain_top_level_failure.yaml", ""),
}

# Our chains: name -> (chain file text, parameters).
CHAINS = {
    "task_failure": (
        """\
        chain:
          - name: c1
            ref: core.local
            parameters: {cmd: "echo c1"}
            on-success: c2
          - name: c2
            ref: core.local
            parameters:
              cmd: "echo 'all aboard the fail boat' >&2; exit 1"
            on-success: c3
          - name: c3
            ref: core.local
            parameters: {cmd: "echo c3"}
        """,
        "",
    ),
    "top_level_failure": (
        """\
        chain:
          - name: c1
            ref: core.local
            parameters: {cmd: "echo c1"}
            on-success: c2
          - name: c2
            ref: core.invalid-action
            on-success: c3
          - name: c3
            ref: core.local
            parameters: {cmd: "echo c3"}
        """,
        "",
    ),
    # A failed link with an on-failure link that succeeds: the chain succeeds (StackStorm's
    # status is the last link's).
    "handled": (
        """\
        chain:
          - name: boom
            ref: core.local
            params: {cmd: "echo oops; exit 2"}
            on-success: never
            on-failure: cleanup
          - name: never
            ref: core.noop
          - name: cleanup
            ref: core.local
            params: {cmd: "echo cleaned after {{ boom.stdout }}"}
            publish:
              code: "{{ boom.return_code }}"
        """,
        "",
    ),
    "vars_and_results": (
        """\
        vars:
          greeting: "hello {{ who }}"
          port: 9101
        chain:
          - name: first
            ref: core.local
            params: {cmd: "echo {{ greeting }} {{ port + 1 }}"}
            publish: {said: "{{ first.stdout }}", twice: ["{{ first.stdout }}", 2]}
            on-success: second
          - name: second
            ref: core.echo
            params:
              message: "{{ __results.first.stdout }}|{{ said }}|{{ action_context.parent.user }}"
        """,
        "who:\n    type: string\n    default: mona\n",
    ),
    # Each link takes 0.4 s: a kill -9 mid-chain lands while a link runs.
    "slow_links": (
        "chain:\n"
        + "".join(
            f"  - name: link{n}\n    ref: core.local\n"
            f'    params: {{cmd: "sleep 0.4; echo {n} >> {{{{ log }}}}"}}\n'
            + (f"    on-success: link{n + 1}\n" if n < 8 else "")
            for n in range(1, 9)
        ),
        "log:\n    type: string\n    required: true\n",
    ),
    # StackStorm's chain_test_cancel: link one waits while the file exists.
    "waiting": (
        """\
        chain:
          - name: task1
            ref: core.local
            params: {cmd: "while [ -e '{{tempfile}}' ]; do sleep 0.1; done"}
            on-success: task2
          - name: task2
            ref: core.local
            params:
              cmd: echo "{{message}}"
        """,
        "tempfile:\n    type: string\n    required: true\n"
        "  message:\n    type: string\n    default: done\n",
    ),
    "forever": (
        """\
        chain:
          - name: again
            ref: core.noop
            on-success: again
        """,
        "",
    ),
    "looping_params": (
        """\
        chain:
          - name: huge
            ref: core.echo
            params:
              message: >-
                {% for i in range(100000000) %}{% for j in range(100000000) %}x{% endfor %}
                {% endfor %}
        """,
        "",
    ),
    "huge_params": (
        """\
        chain:
          - name: huge
            ref: core.echo
            params:
              message: "{{ 'x' * 100000000 }}"
        """,
        "",
    ),
    "nested": (
        """\
        chain:
          - name: inner
            ref: chains.echochain-param
            params: {input1: "from outside"}
            on-success: after
          - name: after
            ref: core.echo
            params: {message: "links: {{ inner.tasks | length }}"}
        """,
        "",
    ),
    # StackStorm's chain_test_cancel_with_subworkflow, with a workflow of ours.
    "with_subworkflow": (
        """\
        chain:
          - name: task1
            ref: flows.two_sleeps
            on-success: task2
          - name: task2
            ref: core.noop
        """,
        "",
    ),
    # A result holding shell syntax: data in the next link's command when a trigger started
    # the chain; written as it is when a person did (as in StackStorm).
    "hostile_result": (
        """\
        chain:
          - name: first
            ref: core.echo
            params: {message: "x'; echo owned > {{ marker }}; echo '"}
            on-success: second
          - name: second
            ref: core.local
            params: {cmd: "echo got {{ first.stdout }}"}
        """,
        "marker:\n    type: string\n    required: true\n",
    ),
    # StackStorm's chain_test_pause_resume_with_subchain, shaped for these tests.
    "with_subchain": (
        """\
        chain:
          - name: task1
            ref: chains.chain-test-pause-resume
            params: {tempfile: "{{ tempfile }}", message: "{{ message }}"}
            on-success: task2
          - name: task2
            ref: core.local
            params:
              cmd: echo "{{ task1.tasks[1].result.stdout }} again"
        """,
        "tempfile:\n    type: string\n    required: true\n"
        "  message:\n    type: string\n    required: true\n",
    ),
    # A secret parameter: the chain's stored state is sealed, and still steps.
    "secret_param": (
        """\
        vars: {copy: "{{ password }}", size: "{{ password | length }}"}
        chain:
          - name: one
            ref: core.noop
            on-success: two
          - name: two
            ref: core.echo
            params: {message: "{{ size }} characters"}
        """,
        "password:\n    type: string\n    secret: true\n    required: true\n",
    ),
    "broken": (
        """\
        chain:
          - name: one
            ref: core.noop
            on-success: nowhere
          - name: one
            ref: core.noop
        """,
        "",
    ),
}


# Orquesta workflows in the same pack, calling chains: name -> (workflow, parameters).
WORKFLOWS = {
    "calls_chain": (
        """\
        version: 1.0
        tasks:
          inner:
            action: chains.echochain-param input1="from a workflow"
            next:
              - publish:
                  - said: <% result().tasks[2].result.stdout %>
        output:
          - said: <% ctx(said) %>
        """,
        "",
    ),
    "waits_in_a_chain": (
        """\
        version: 1.0
        input: [tempfile]
        tasks:
          inner:
            action: chains.waiting tempfile=<% ctx(tempfile) %>
        """,
        "tempfile:\n    type: string\n    required: true\n",
    ),
}


def write_chain_pack(packs_dir: Path, ref: str = "chains") -> Path:
    """The pack `ref` with one action-chain action per chain above, and one orquesta
    action per workflow."""
    pack = packs_dir / ref
    actions = pack / "actions"
    (actions / "chains").mkdir(parents=True, exist_ok=True)
    (pack / "pack.yaml").write_text(
        f"name: {ref}\nversion: 1.0.0\ndescription: tests\nauthor: tests\nemail: t@example.com\n"
    )
    files = {
        name: ((ST2_CHAINS / file).read_text(), params)
        for name, (file, params) in ST2_EXAMPLES.items()
    }
    files.update({name: (textwrap.dedent(text), params) for name, (text, params) in CHAINS.items()})
    for name, (text, params) in files.items():
        (actions / "chains" / f"{name}.yaml").write_text(text)
        meta = f"name: {name}\nrunner_type: action-chain\nentry_point: chains/{name}.yaml\n"
        if params:
            meta += f"parameters:\n  {params}"
        (actions / f"{name}.meta.yaml").write_text(meta)
    for name, (text, params) in WORKFLOWS.items():
        (actions / "chains" / f"{name}.yaml").write_text(textwrap.dedent(text))
        meta = f"name: {name}\nrunner_type: orquesta\nentry_point: chains/{name}.yaml\n"
        if params:
            meta += f"parameters:\n  {params}"
        (actions / f"{name}.meta.yaml").write_text(meta)
    return pack


ST2_EXAMPLES_PACK = ST2_CHAINS.parent / "st2_examples" / "examples"
# The Orquesta workflows StackStorm's chain examples link to (from tests/support/st2_examples).
LINKED_WORKFLOWS = ("orquesta-test-cancel", "orquesta-test-pause-resume")


def write_examples_chain_pack(packs_dir: Path) -> Path:
    """StackStorm's example chains that link to other actions of its `examples` pack
    (st2_chains/examples/, unchanged but its pack.yaml), with the Orquesta workflows they
    call, as a pack named `examples` — the name their refs (`examples.forloop_*`...) use."""
    pack = packs_dir / "examples"
    shutil.copytree(ST2_CHAINS / "examples", pack)
    actions = pack / "actions"
    for name in LINKED_WORKFLOWS:
        meta = ST2_EXAMPLES_PACK / "actions" / f"{name}.yaml"
        (actions / meta.name).write_text(meta.read_text())
        flow = Path("workflows", "tests", f"{name}.yaml")
        (actions / flow).parent.mkdir(parents=True, exist_ok=True)
        (actions / flow).write_text((ST2_EXAMPLES_PACK / "actions" / flow).read_text())
    return pack
