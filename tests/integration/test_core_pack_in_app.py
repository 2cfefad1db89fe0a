"""The built-in core pack in a running app: there with no packs folder, not shadowed by a
`core` pack in packs_dirs unless packs.override_core says so, and kept across a reload."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from engine.config import Settings, load_settings
from engine.http.app import create_app
from engine.http.context import RUNTIME
from engine.packs.loader import BUILTIN_CORE_DIR

SITE_CORE_PACK = """\
name: core
ref: core
description: A site's own core pack.
version: 2.0.0
author: a site
"""
SITE_CORE_LOCAL = "name: local\nrunner_type: noop\ndescription: A site's core.local.\n"


def write_site_core(folder: Path) -> Path:
    pack = folder / "core"
    (pack / "actions").mkdir(parents=True)
    (pack / "pack.yaml").write_text(SITE_CORE_PACK)
    (pack / "actions" / "local.yaml").write_text(SITE_CORE_LOCAL)
    return pack


def settings_in(folder: Path, config: str = "") -> Settings:
    """Settings as `hookyard serve` builds them from `folder`/config.yaml."""
    (folder / "config.yaml").write_text(config)
    changes = {
        "store.url": f"sqlite:///{folder}/hookyard.db",
        "ingest.writer_process": False,
        "auth.enabled": False,
        "roles": ["api"],
    }
    return load_settings(folder / "config.yaml", {}).replace(**changes)


async def get(client: TestClient, path: str) -> dict:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_no_packs_folder_still_serves_the_built_in_core_actions(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)  # packs_dirs: [packs], a folder that does not exist
    async with TestClient(TestServer(create_app(settings))) as client:
        runtime = client.server.app[RUNTIME]
        assert runtime.load_errors == []
        core = await get(client, "/api/v1/packs/core")
        assert core["path"] == str(BUILTIN_CORE_DIR)
        local = await get(client, "/api/v1/actions/core.local")
        assert local["runner_type"] == "local-shell-cmd"

        reloaded = await client.post("/api/v1/reload")
        assert (await reloaded.json())["errors"] == []
        assert runtime.packs.action("core.local").runner_type == "local-shell-cmd"


async def test_a_core_pack_in_packs_dirs_is_an_error_and_the_built_in_one_stays(
    tmp_path: Path,
) -> None:
    site_core = write_site_core(tmp_path / "packs")
    async with TestClient(TestServer(create_app(settings_in(tmp_path)))) as client:
        [error] = [str(e) for e in client.server.app[RUNTIME].load_errors]
        assert str(site_core / "pack.yaml") in error and str(BUILTIN_CORE_DIR) in error
        assert "packs.override_core: true" in error
        local = await get(client, "/api/v1/actions/core.local")
        assert local["runner_type"] == "local-shell-cmd"

        reloaded = await (await client.post("/api/v1/reload")).json()
        assert any(str(site_core) in e for e in reloaded["errors"]), reloaded
        local = await get(client, "/api/v1/actions/core.local")
        assert local["runner_type"] == "local-shell-cmd"


async def test_override_core_serves_the_site_core_pack_instead(tmp_path: Path) -> None:
    site_core = write_site_core(tmp_path / "packs")
    settings = settings_in(tmp_path, "packs:\n  override_core: true\n")
    async with TestClient(TestServer(create_app(settings))) as client:
        assert client.server.app[RUNTIME].load_errors == []
        core = await get(client, "/api/v1/packs/core")
        assert (core["path"], core["version"]) == (str(site_core), "2.0.0")
        local = await get(client, "/api/v1/actions/core.local")
        assert local["runner_type"] == "noop"
        missing = await client.get("/api/v1/actions/core.http")
        assert missing.status == 404
