"""A workflow step as plain data (engine.workers.step_jobs, what a step process runs):
the conductors' answers, and whether a secret datastore value was decrypted into it."""

from __future__ import annotations

import textwrap

from engine.workers.step_jobs import CHAIN_START, START, STEP, StepJob, run_step
from engine.workflows.chain_spec import parse_chain
from engine.workflows.spec import parse_workflow

SNAPSHOT = ((("token", "CIPHERTEXT", True), ("greeting", "hi", False)), ())


def _decrypt(ciphertext: str) -> str:
    assert ciphertext == "CIPHERTEXT"
    return "plain-secret"


def _workflow(publish: str):
    return parse_workflow(
        textwrap.dedent(
            f"""\
            version: 1.0
            vars:
              - got: {publish}
            tasks:
              only:
                action: core.noop
            output:
              - got: <% ctx(got) %>
            """
        )
    )


def test_a_decrypting_start_is_marked_revealed_and_a_plain_one_is_not():
    job = StepJob(kind=START, action="t.w")
    secret = run_step(
        job, _workflow("<% st2kv('system.token', decrypt => true) %>"), SNAPSHOT, _decrypt, {}
    )
    assert secret.revealed and secret.state["contexts"][0]["got"] == "plain-secret"
    assert [r.task for r in secret.requests] == ["only"]
    cipher = run_step(job, _workflow("<% st2kv('system.token') %>"), SNAPSHOT, _decrypt, {})
    assert not cipher.revealed and cipher.state["contexts"][0]["got"] == "CIPHERTEXT"
    plain = run_step(job, _workflow("<% st2kv('system.greeting') %>"), SNAPSHOT, _decrypt, {})
    assert not plain.revealed


def test_a_step_ends_the_workflow_with_its_output():
    spec = _workflow("<% st2kv('system.greeting') %>")
    started = run_step(StepJob(kind=START, action="t.w"), spec, SNAPSHOT, _decrypt, {})
    ended = run_step(
        StepJob(
            kind=STEP,
            action="t.w",
            state=started.state,
            finished=(("only", 0, "succeeded", {}, None),),
        ),
        spec,
        SNAPSHOT,
        _decrypt,
        {},
    )
    assert ended.final == "succeeded" and ended.requests == []
    assert ended.result["output"] == {"got": "hi"}


def test_progress_names_the_task_and_the_expression():
    told: list[tuple] = []
    spec = _workflow("<% 1 + 1 %>")
    run_step(
        StepJob(kind=START, action="t.w"),
        spec,
        SNAPSHOT,
        _decrypt,
        {},
        lambda task, expression: told.append((task, expression)),
    )
    assert (None, "<% 1 + 1 %>") in told


def test_a_chain_decrypting_with_decrypt_kv_is_marked_revealed():
    chain = parse_chain(
        textwrap.dedent(
            """\
            vars:
              token: "{{ st2kv.system.token | decrypt_kv }}"
            chain:
              - name: only
                ref: core.noop
            """
        )
    )
    job = StepJob(kind=CHAIN_START, action="t.c")
    started = run_step(job, chain, SNAPSHOT, _decrypt, {"core.noop": {}})
    assert started.revealed and started.state["vars"]["token"] == "plain-secret"
    assert [r.name for r in started.requests] == ["only"]
