"""The action chain's language core: the chain file read with located problems
(engine.workflows.chain_spec) and the pure conductor (engine.workflows.chain)."""

from __future__ import annotations

import json
import textwrap

import pytest

from engine.errors import WorkflowError, WorkflowSpecError
from engine.workflows.chain import ChainConductor, ChainScope, LinkRequest
from engine.workflows.chain_spec import parse_chain

ECHOCHAIN_PARAM = """\
chain:
  - name: c1
    ref: core.local
    parameters:
      cmd: "echo c1, input {{input1}}"
    on-success: c2
    on-failure: c4
  - name: c2
    ref: core.local
    parameters:
      cmd: "echo c2 {{c1.stdout}}"
    on-success: c3
    on-failure: c4
  - name: c3
    ref: core.local
    parameters:
      cmd: "echo c3 {{c2.stdout}}"
    on-failure: c4
  - name: c4
    ref: core.local
    parameters:
      cmd: "echo fail c4"
default: c1
"""


INPUT = ChainScope(parameters={"input1": "in"})


def chain(text: str):
    return parse_chain(textwrap.dedent(text), "chain.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(WorkflowSpecError) as raised:
        chain(text)
    return [str(problem) for problem in raised.value.problems]


def step(conductor: ChainConductor, request: LinkRequest, status: str, result) -> list:
    """One link's end, the state round-tripped through JSON as the store keeps it."""
    state = json.loads(json.dumps(conductor.state))
    again = ChainConductor(conductor.spec, state, conductor.scope)
    requests = again.link_finished(request.name, status, result, execution_id=f"x-{request.name}")
    conductor.state = again.state
    return requests


# --- the chain file ------------------------------------------------------------------


def test_a_chain_file_reads_into_links_with_their_lines() -> None:
    spec = chain(ECHOCHAIN_PARAM)
    assert [link.name for link in spec.links] == ["c1", "c2", "c3", "c4"]
    assert spec.default == "c1"
    c1 = spec.link("c1")
    assert (c1.ref, c1.on_success, c1.on_failure, c1.line) == ("core.local", "c2", "c4", 2)
    assert c1.params == {"cmd": "echo c1, input {{input1}}"}


def test_without_default_the_first_link_no_other_leads_to_starts() -> None:
    spec = chain(
        """\
        chain:
          - {name: b, ref: core.noop}
          - {name: a, ref: core.noop, on-success: b}
        """
    )
    assert spec.default == "a"
    looped = chain(
        """\
        chain:
          - {name: a, ref: core.noop, on-success: b}
          - {name: b, ref: core.noop, on-success: a}
        """
    )
    assert looped.default == "a"


def test_params_is_the_old_name_of_parameters_and_both_are_refused() -> None:
    assert chain("chain:\n  - {name: a, ref: core.echo, params: {message: hi}}\n").links[
        0
    ].params == {"message": "hi"}
    [problem] = problems(
        "chain:\n  - {name: a, ref: core.echo, params: {message: x}, parameters: {message: y}}\n"
    )
    assert problem.startswith("chain.yaml:2:5: ") and '"params" or "parameters"' in problem


def test_every_problem_is_reported_with_its_file_and_line() -> None:
    found = problems(
        """\
        chain:
          - name: one
            ref: core.noop
            on-success: nowhere
          - name: one
            ref: core.noop
            on-failure: "{{ decided_later }}"
          - name: two
          - ref: core.noop
        default: missing
        extra: 1
        """
    )
    assert "chain.yaml:11:1: unknown key 'extra'; expected one of chain, default, vars" in found
    assert "chain.yaml:8:5: a link needs `ref` (a non-empty string)" in found
    assert "chain.yaml:9:5: a link needs `name` (a non-empty string)" in found
    assert (
        "chain.yaml:5: link name 'one' is given twice (first at line 2);"
        " link names must be unique in a chain"
    ) in found
    assert (
        'chain.yaml:2: unable to find link "nowhere" referenced in "on-success" in link "one";'
        " links: one"
    ) in found
    assert any(p.startswith('chain.yaml:10:10: unable to find link "missing"') for p in found)
    assert len(found) == 6  # the template target is left to run time, as in StackStorm


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "an action chain must be a mapping"),
        ("chain: []\n", "`chain` must be a non-empty list of links"),
        ("chain: [a, b]\n", "a link must be a mapping with `name` and `ref`"),
        ("chain:\n  - {name: a, ref: x, publish: [1]}\n", "`publish` must be a mapping"),
        ("chain:\n  - {name: a, ref: x, on-success: [b]}\n", "`on-success` must be the name"),
        ("chain: [{name: a, ref: x, with: 1}]\n", "unknown key 'with' in a link"),
        ("chain: [{name: a, ref: x}]\nvars: [1]\n", "`vars` must be a mapping"),
        ("chain: [\n", "invalid YAML"),
        ("a: &a [*a, *a]\n", "YAML aliases refer to a node that contains them"),
    ],
)
def test_malformed_chain_files_are_refused_saying_why(text: str, message: str) -> None:
    assert any(message in problem for problem in problems(text)), problems(text)


# --- the conductor -------------------------------------------------------------------


def test_links_follow_on_success_with_earlier_results_and_parameters() -> None:
    spec = chain(ECHOCHAIN_PARAM)
    conductor, [first] = ChainConductor.start(spec, ChainScope(parameters={"input1": "foo"}))
    assert (first.name, first.action, first.parameters) == (
        "c1",
        "core.local",
        {"cmd": "echo c1, input foo"},
    )
    [second] = step(conductor, first, "succeeded", {"stdout": "c1, input foo"})
    assert second.parameters == {"cmd": "echo c2 c1, input foo"}
    [third] = step(conductor, second, "succeeded", {"stdout": "c2 c1, input foo"})
    assert third.index == 2 and third.link.on_failure == "c4"
    assert step(conductor, third, "succeeded", {"stdout": "c3"}) == []
    assert conductor.status == "succeeded"
    result = conductor.result()
    assert set(result) == {"tasks", "published"} and result["published"] == {}
    assert [(t["name"], t["state"], t["execution_id"]) for t in result["tasks"]] == [
        ("c1", "succeeded", "x-c1"),
        ("c2", "succeeded", "x-c2"),
        ("c3", "succeeded", "x-c3"),
    ]


def test_a_failure_follows_on_failure_and_the_chain_takes_the_last_links_status() -> None:
    conductor, [first] = ChainConductor.start(chain(ECHOCHAIN_PARAM), INPUT)
    [handler] = step(conductor, first, "failed", {"stderr": "no"})
    assert handler.name == "c4"
    step(conductor, handler, "succeeded", {})
    assert conductor.status == "succeeded"
    conductor, [first] = ChainConductor.start(chain(ECHOCHAIN_PARAM), INPUT)
    [handler] = step(conductor, first, "timeout", {})
    step(conductor, handler, "failed", {})
    assert conductor.status == "failed"


@pytest.mark.parametrize("status", ["failed", "timeout", "abandoned"])
def test_a_failure_without_on_failure_ends_the_chain(status: str) -> None:
    spec = chain("chain: [{name: a, ref: x, on-success: b}, {name: b, ref: x}]\n")
    conductor, [first] = ChainConductor.start(spec, ChainScope())
    assert step(conductor, first, status, {"error": "e"}) == []
    assert conductor.status == ("timeout" if status == "timeout" else "failed")
    assert "error" not in conductor.result()


def test_vars_and_publish_render_to_text_as_stackstorm_does() -> None:
    spec = chain(
        """\
        vars: {port: 9101, url: "http://{{ host }}"}
        chain:
          - name: a
            ref: x
            params: {n: "{{ port + 1 }}", as_list: "{{ [port] }}", url: "{{ url }}"}
            publish:
              paths: {auth_port: "{{ port + 1 }}", kept: 5, copy: "{{ a.out }}"}
              everything: "{{ __results.a.out }}{{ __context.port }}"
        """
    )
    conductor, [first] = ChainConductor.start(spec, ChainScope(parameters={"host": "h"}))
    # Parameters keep their type (StackStorm casts its text to the declared type).
    assert first.parameters == {"n": 9102, "as_list": [9101], "url": "http://h"}
    step(conductor, first, "succeeded", {"out": "O"})
    assert conductor.result()["published"] == {
        "paths": {"auth_port": "9102", "kept": 5, "copy": "O"},
        "everything": "O9101",
    }


def test_a_value_pulled_from_a_result_is_data_never_rendered_again() -> None:
    spec = chain(
        "chain: [{name: a, ref: x, on-success: b}, {name: b, ref: x, params: {m: '{{ a.out }}'}}]\n"
    )
    conductor, [first] = ChainConductor.start(spec, ChainScope())
    [second] = step(conductor, first, "succeeded", {"out": "{{ 7 * 7 }}"})
    assert second.parameters == {"m": "{{ 7 * 7 }}"}


def test_action_context_names_the_chain_execution() -> None:
    spec = chain(
        "chain: [{name: a, ref: x, params: {p: '{{ action_context.parent.execution_id }}'}}]\n"
    )
    scope = ChainScope(action_context={"parent": {"execution_id": "E1", "user": "u"}})
    _, [first] = ChainConductor.start(spec, scope)
    assert first.parameters == {"p": "E1"}


def test_top_level_failures_end_the_chain_with_an_error_and_no_task_entry() -> None:
    spec = chain(
        """\
        chain:
          - {name: a, ref: core.noop, on-success: b}
          - {name: b, ref: core.missing}
        """
    )
    scope = ChainScope(action_exists=lambda ref: ref != "core.missing")
    conductor, [first] = ChainConductor.start(spec, scope)
    assert step(conductor, first, "succeeded", {}) == []
    assert conductor.status == "failed"
    result = conductor.result()
    assert [t["name"] for t in result["tasks"]] == ["a"]
    assert result["error"].startswith(
        'Failed to run task "b". Action with reference "core.missing" doesn\'t exist.'
    )


def test_a_params_template_that_fails_fails_the_chain_naming_link_and_parameter() -> None:
    spec = chain("chain: [{name: a, ref: x, params: {cmd: '{{ nothing.here }}'}}]\n")
    conductor, requests = ChainConductor.start(spec, ChainScope())
    assert requests == [] and conductor.status == "failed"
    assert conductor.result()["error"].startswith(
        'Failed to run task "a". Parameter rendering failed. Failed rendering value for action'
        ' parameter "cmd" in task "a" (template string={{ nothing.here }}): '
    )


def test_vars_that_do_not_render_fail_the_chain_before_any_link() -> None:
    conductor, requests = ChainConductor.start(
        chain("vars: {a: '{{ 1 / 0 }}'}\nchain: [{name: a, ref: x}]\n"), ChainScope()
    )
    assert requests == [] and conductor.status == "failed"
    assert conductor.result()["error"].startswith("Failed initializing ``vars`` in chain.")


def test_a_publish_that_does_not_render_fails_the_chain_after_the_links_entry() -> None:
    spec = chain("chain: [{name: a, ref: x, publish: {p: '{{ a.nope.deeper }}'}, on-success: a}]\n")
    conductor, [first] = ChainConductor.start(spec, ChainScope())
    assert step(conductor, first, "succeeded", {}) == []
    assert conductor.status == "failed" and len(conductor.result()["tasks"]) == 1
    assert (
        'Failed rendering value for publish parameter "p" in task "a"'
        in (conductor.result()["error"])
    )


def test_a_chain_that_loops_forever_stops_at_max_links() -> None:
    spec = chain("chain: [{name: a, ref: x, on-success: a}]\n")
    conductor, [request] = ChainConductor.start(spec, ChainScope(max_links=5))
    ran = 1
    while next_requests := step(conductor, request, "succeeded", {}):
        [request] = next_requests
        ran += 1
    assert ran == 5 and conductor.status == "failed"
    assert (
        "The chain has run 5 links, its limit (workers.max_chain_links)"
        in (conductor.result()["error"])
    )


def test_a_target_template_is_rendered_at_run_time() -> None:
    spec = chain(
        """\
        chain:
          - {name: a, ref: x, on-success: "{{ next }}"}
          - {name: b, ref: x}
        """
    )
    conductor, [first] = ChainConductor.start(spec, ChainScope(parameters={"next": "b"}))
    [second] = step(conductor, first, "succeeded", {})
    assert second.name == "b"
    conductor, [first] = ChainConductor.start(spec, ChainScope(parameters={"next": "z"}))
    assert step(conductor, first, "succeeded", {}) == []
    assert 'Unable to find node with name "z"' in conductor.result()["error"]


def test_cancel_waits_for_the_running_link_then_ends_canceled() -> None:
    conductor, [first] = ChainConductor.start(chain(ECHOCHAIN_PARAM), INPUT)
    conductor.cancel()
    assert conductor.status == "running"
    assert step(conductor, first, "succeeded", {}) == []
    assert conductor.status == "canceled"
    assert [t["name"] for t in conductor.result()["tasks"]] == ["c1"]
    conductor, [first] = ChainConductor.start(chain(ECHOCHAIN_PARAM), INPUT)
    assert step(conductor, first, "canceled", None) == []
    assert conductor.status == "canceled"


def test_display_published_false_leaves_published_out() -> None:
    conductor, [first] = ChainConductor.start(
        chain("chain: [{name: a, ref: x}]\n"), ChainScope(display_published=False)
    )
    step(conductor, first, "succeeded", {})
    assert set(conductor.result()) == {"tasks"}


def test_an_end_for_a_link_not_running_is_refused() -> None:
    conductor, [_running] = ChainConductor.start(chain(ECHOCHAIN_PARAM), INPUT)
    with pytest.raises(WorkflowError, match="link 'c2' is not running"):
        conductor.link_finished("c2", "succeeded", {})
    with pytest.raises(WorkflowError, match="chain state version"):
        ChainConductor(conductor.spec, {"version": 99}, ChainScope())


def test_a_shell_command_quotes_what_a_result_inserts() -> None:
    spec = chain(
        "chain: [{name: a, ref: x, on-success: b},"
        " {name: b, ref: core.local,"
        " params: {cmd: 'echo {{ a.stdout }}', other: '{{ a.stdout }}'}}]\n"
    )
    scope = ChainScope(
        parameter_kinds=lambda ref: {"cmd": "shell-command"} if ref == "core.local" else {}
    )
    conductor, [first] = ChainConductor.start(spec, scope)
    [second] = step(conductor, first, "succeeded", {"stdout": "x; touch /tmp/owned"})
    assert second.parameters == {
        "cmd": "echo 'x; touch /tmp/owned'",
        "other": "x; touch /tmp/owned",
    }


def test_pause_holds_the_next_link_back_until_resume() -> None:
    conductor, [first] = ChainConductor.start(chain(ECHOCHAIN_PARAM), INPUT)
    conductor.pause()
    assert conductor.status == "pausing"
    assert step(conductor, first, "succeeded", {"stdout": "one"}) == []
    assert conductor.status == "paused"
    with pytest.raises(WorkflowError, match="a paused chain cannot be paused"):
        conductor.pause()
    [second] = conductor.resume()
    assert second.name == "c2" and second.parameters == {"cmd": "echo c2 one"}
    assert conductor.status == "running"
    step(conductor, second, "succeeded", {"stdout": "two"})
    with pytest.raises(WorkflowError, match="a running chain cannot be resumed"):
        conductor.resume()


def test_a_pause_whose_link_was_the_last_ends_the_chain_and_cancel_drops_a_held_link() -> None:
    spec = chain("chain: [{name: a, ref: x}]\n")
    conductor, [first] = ChainConductor.start(spec, ChainScope())
    conductor.pause()
    step(conductor, first, "succeeded", {})
    assert conductor.status == "succeeded"
    conductor, [first] = ChainConductor.start(chain(ECHOCHAIN_PARAM), INPUT)
    conductor.pause()
    step(conductor, first, "succeeded", {"stdout": "one"})
    conductor.cancel()
    assert conductor.status == "canceled" and conductor.state["held"] is None
    with pytest.raises(WorkflowError, match="a canceled chain cannot be resumed"):
        conductor.resume()


def test_stackstorms_filters_work_in_params_and_inside_a_quoted_shell_command() -> None:
    spec = chain(
        """\
        chain:
          - name: a
            ref: core.local
            params:
              cmd: "echo {{ '1.6.0' | version_bump_minor }} {{ said }}"
              took: "{{ 12345 | to_human_time_from_seconds }}"
        """
    )
    scope = ChainScope(
        parameters={"said": "$(reboot)"},
        parameter_kinds=lambda ref: {"cmd": "shell-command"},
    )
    _, [first] = ChainConductor.start(spec, scope)
    assert first.parameters == {"cmd": "echo 1.7.0 '$(reboot)'", "took": "3h25m45s"}


def test_parameter_names_and_template_syntax_are_checked_at_load_saying_where() -> None:
    found = problems(
        """\
        chain:
          - name: one
            ref: core.local
            params:
              cmd: "echo {{ unclosed"
              1: two
            on-success: two
          - name: two
            ref: core.echo
            parameters:
              message: ["fine {{ one.stdout }}", {deep: "{% if %}"}]
            publish:
              said: "{{ two.stdout | upper }"
        """
    )
    assert found == [
        'chain.yaml:5:12: `params` "cmd": template syntax error: unexpected end of template,'
        " expected 'end of print statement'.",
        "chain.yaml:6:7: `params` names must be strings, not '1'",
        'chain.yaml:11:49: `parameters` "message": template syntax error: Expected an'
        " expression, got 'end of statement block'",
        "chain.yaml:13:13: `publish` \"said\": template syntax error: unexpected '}'",
    ]
    [problem] = problems("vars:\n  a: '{{ x'\nchain:\n  - {name: a, ref: x}\n")
    assert problem.startswith('chain.yaml:2:6: `vars` "a": template syntax error: ')
    # Filters are known at run time only: an unknown one is not a syntax error.
    spec = chain("chain:\n  - {name: a, ref: x, params: {m: '{{ 1 | not_yet_known }}'}}\n")
    assert spec.links[0].params == {"m": "{{ 1 | not_yet_known }}"}
