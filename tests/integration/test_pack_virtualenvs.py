"""Per-pack virtualenvs: the real `hookyard pack setup-virtualenv` (python -m venv, pip
installing a wheel built in the test's folder, no network), then the real app running the
pack's Python action with that venv's interpreter while another pack keeps the engine's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.app import app_client, settings_for
from tests.support.packs import write_pack
from tests.support.waiting import get_json, wait_execution, wait_until
from tests.support.wheels import build_wheel

ROOT = Path(__file__).resolve().parents[2]
# venv + ensurepip + pip install on a loaded machine: generous, not a timing assertion.
SETUP_TIMEOUT = 300

WHICH_PYTHON = {
    "actions/where.yaml": "name: where\nrunner_type: python-script\nentry_point: where.py\n",
    "actions/where.py": """\
        import sys

        from st2common.runners.base_action import Action


        class Where(Action):
            def run(self):
                try:
                    import hookyard_tiny
                    tiny = hookyard_tiny.ANSWER
                except ImportError as exc:
                    tiny = str(exc)
                return {"prefix": sys.prefix, "tiny": tiny}
        """,
}


# A sensor that tells, once, which Python runs it and whether it sees the venv's package.
VENV_SENSOR = {
    "triggers/seen.yaml": "name: seen\n",
    "sensors/looker.yaml": (
        "class_name: Looker\nentry_point: looker.py\npoll_interval: 60\n"
        "trigger_types: [venvdemo.seen]\n"
    ),
    "sensors/looker.py": """\
        import sys

        from st2reactor.sensor.base import PollingSensor


        class Looker(PollingSensor):
            def setup(self):
                pass

            def poll(self):
                import hookyard_tiny
                self.sensor_service.dispatch(
                    "venvdemo.seen", {"prefix": sys.prefix, "tiny": hookyard_tiny.ANSWER}
                )
        """,
}


def pack_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "engine", "pack", *args,
         "--config", str(tmp_path / "config.yaml")],
        env=env, capture_output=True, text=True, timeout=SETUP_TIMEOUT,
    )  # fmt: skip


def setup_virtualenv(tmp_path: Path, ref: str) -> subprocess.CompletedProcess[str]:
    return pack_command(tmp_path, "setup-virtualenv", ref)


def write_packs(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "hookyard_tiny", "1.0", "ANSWER = 42\n")
    packs = tmp_path / "packs"
    venvdemo = {**WHICH_PYTHON, **VENV_SENSOR, "requirements.txt": f"{wheel}\n"}
    write_pack(packs, "venvdemo", venvdemo)
    write_pack(packs, "plain", WHICH_PYTHON)
    broken = {**WHICH_PYTHON, "requirements.txt": "./wheels/missing-1.0-py3-none-any.whl\n"}
    write_pack(packs, "brokenreqs", broken)
    (tmp_path / "config.yaml").write_text("packs_dirs: [packs]\n")


async def run_where(client, action: str) -> dict:
    created = await client.post("/api/v1/executions", json={"action": action})
    assert created.status == 201, await created.text()
    done = await wait_execution(client, (await created.json())["id"])
    assert done["status"] == "succeeded", done["result"]
    return done["result"]["result"]


async def test_a_pack_runs_in_its_virtualenv_and_a_failed_install_touches_nothing(tmp_path):
    write_packs(tmp_path)
    venvs = tmp_path / "data" / "virtualenvs"

    built = setup_virtualenv(tmp_path, "venvdemo")
    assert built.returncode == 0, built.stderr
    assert f"virtualenv {venvs / 'venvdemo'} ready" in built.stdout

    failed = setup_virtualenv(tmp_path, "brokenreqs")
    assert failed.returncode != 0
    assert "pack 'brokenreqs': virtualenv not set up: pip install -r" in failed.stderr
    # pip's own words, naming the file it could not find.
    assert "missing-1.0-py3-none-any.whl" in failed.stderr and "ERROR" in failed.stderr
    assert not (venvs / "brokenreqs").exists() and not (venvs / ".brokenreqs.building").exists()

    roles = ("api", "actions", "sensors")
    settings = settings_for(tmp_path, packs=[tmp_path / "packs"], roles=roles)
    async with app_client(settings) as client:

        async def sensed() -> list:
            return await get_json(client, "/api/v1/triggerinstances", trigger="venvdemo.seen")

        [seen] = await wait_until(sensed, "the venv sensor's dispatch", timeout=60)
        assert seen["payload"] == {"prefix": str(venvs / "venvdemo"), "tiny": 42}
        inside = await run_where(client, "venvdemo.where")
        assert inside == {"prefix": str(venvs / "venvdemo"), "tiny": 42}
        # The other packs run as before, with the engine's interpreter.
        for ref in ("plain", "brokenreqs"):
            outside = await run_where(client, f"{ref}.where")
            assert outside["prefix"] == sys.prefix
            assert outside["tiny"] == "No module named 'hookyard_tiny'"


def test_setup_virtualenv_refuses_an_unknown_pack(tmp_path):
    write_pack(tmp_path / "packs", "plain", WHICH_PYTHON)
    (tmp_path / "config.yaml").write_text("packs_dirs: [packs]\n")
    for ref in ("nosuch", "../plain"):
        result = setup_virtualenv(tmp_path, ref)
        assert result.returncode != 0
        assert f"no pack {ref!r} in the packs folders ({tmp_path / 'packs'})" in result.stderr
    assert not (tmp_path / "data").exists()


def test_install_copies_packs_builds_their_venvs_and_remove_takes_them_away(tmp_path):
    wheel = build_wheel(tmp_path, "hookyard_tiny", "1.0", "ANSWER = 42\n")
    sources = tmp_path / "sources"
    write_pack(sources, "venvdemo", {**WHICH_PYTHON, "requirements.txt": f"{wheel}\n"})
    write_pack(sources, "plain", WHICH_PYTHON)
    write_pack(sources, "brokenreqs", {**WHICH_PYTHON, "requirements.txt": "./nothing.whl\n"})
    (sources / "notapack").mkdir()
    (tmp_path / "config.yaml").write_text("packs_dirs: [packs, mine]\n")
    packs, venvs = tmp_path / "packs", tmp_path / "data" / "virtualenvs"

    paths = [str(sources / name) for name in ("venvdemo", "brokenreqs", "notapack")]
    result = pack_command(tmp_path, "install", *paths)
    assert result.returncode != 0
    assert f"pack 'venvdemo': installed at {packs / 'venvdemo'}" in result.stdout
    assert "nothing.whl" in result.stderr  # pip's own error for the broken pack
    assert f"{sources / 'notapack'} is not a pack: it has no pack.yaml" in result.stderr
    assert "2 of 3 packs not installed" in result.stderr
    assert sorted(p.name for p in packs.iterdir()) == ["venvdemo"]
    assert sorted(p.name for p in venvs.iterdir()) == ["venvdemo"]

    linked = pack_command(tmp_path, "install", "--link", str(sources / "plain"))
    assert linked.returncode == 0, linked.stderr
    assert (packs / "plain").is_symlink() and not (venvs / "plain").exists()
    again = pack_command(tmp_path, "install", str(sources / "venvdemo"))
    assert again.returncode != 0 and "already installed at" in again.stderr

    # A pack in another packs folder is the user's: remove leaves it alone.
    write_pack(tmp_path / "mine", "ownpack", WHICH_PYTHON)
    refused = pack_command(tmp_path, "remove", "ownpack")
    assert refused.returncode != 0 and "remove it by hand" in refused.stderr
    assert (tmp_path / "mine" / "ownpack" / "pack.yaml").is_file()

    for ref in ("venvdemo", "plain"):
        removed = pack_command(tmp_path, "remove", ref)
        assert removed.returncode == 0, removed.stderr
    assert list(packs.iterdir()) == [] and list(venvs.iterdir()) == []
    assert (sources / "plain" / "pack.yaml").is_file(), "removing a link keeps its target"
    assert pack_command(tmp_path, "remove", "venvdemo").returncode != 0
