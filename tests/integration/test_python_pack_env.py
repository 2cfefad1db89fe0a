"""The environment of a pack's Python actions through the real app: the pack's `lib/` and
the action's own `lib/` importable (as StackStorm), StackStorm's own `isprime` unchanged."""

from __future__ import annotations

from pathlib import Path

from tests.support.app import app_client, settings_for
from tests.support.packs import write_pack
from tests.support.waiting import wait_execution

ST2_PYENV = Path(__file__).resolve().parents[1] / "support" / "st2_pyenv"

LIBDEMO = {
    "lib/shared_helper.py": """\
        def shout(text):
            return text.upper() + "!"
        """,
    "actions/lib/__init__.py": "",
    "actions/lib/local_helper.py": """\
        def whisper(text):
            return text.lower() + "..."
        """,
    "actions/nested/talk.py": """\
        from shared_helper import shout
        from st2common.runners.base_action import Action


        class Talk(Action):
            def run(self, text):
                return {"shout": shout(text)}
        """,
    "actions/talk.yaml": """\
        name: talk
        runner_type: python-script
        entry_point: nested/talk.py
        parameters:
          text: {type: string, required: true}
        """,
    "actions/mumble.py": """\
        from lib.local_helper import whisper
        from shared_helper import shout
        from st2common.runners.base_action import Action


        class Mumble(Action):
            def run(self, text):
                return {"whisper": whisper(text), "shout": shout(text)}
        """,
    "actions/mumble.yaml": """\
        name: mumble
        runner_type: python-script
        entry_point: mumble.py
        parameters:
          text: {type: string, required: true}
        """,
}


async def run_action(client, action: str, parameters: dict) -> dict:
    body = {"action": action, "parameters": parameters}
    created = await client.post("/api/v1/executions", json=body)
    assert created.status == 201, await created.text()
    return await wait_execution(client, (await created.json())["id"])


async def test_stackstorms_isprime_imports_the_packs_lib_and_runs(tmp_path):
    settings = settings_for(tmp_path, packs=[ST2_PYENV], roles=("api", "actions"))
    async with app_client(settings) as client:
        prime = await run_action(client, "examples.isprime", {"value": 7919})
        assert prime["status"] == "succeeded", prime["result"]
        assert prime["result"]["result"] is True
        composite = await run_action(client, "examples.isprime", {"value": 7917})
        assert composite["result"]["result"] is False
        below_two = await run_action(client, "examples.isprime", {"value": 1})
        assert below_two["status"] == "succeeded" and below_two["result"]["result"] is False


async def test_the_packs_lib_and_the_actions_lib_are_importable(tmp_path):
    write_pack(tmp_path / "packs", "libdemo", LIBDEMO)
    settings = settings_for(tmp_path, packs=[tmp_path / "packs"], roles=("api", "actions"))
    async with app_client(settings) as client:
        done = await run_action(client, "libdemo.mumble", {"text": "Hi"})
        assert done["status"] == "succeeded", done["result"]
        assert done["result"]["result"] == {"whisper": "hi...", "shout": "HI!"}
        # An action in a subfolder finds the pack's lib/ too (the pack is found by its
        # pack.yaml, not by a fixed depth).
        nested = await run_action(client, "libdemo.talk", {"text": "yo"})
        assert nested["status"] == "succeeded", nested["result"]
        assert nested["result"]["result"] == {"shout": "YO!"}
