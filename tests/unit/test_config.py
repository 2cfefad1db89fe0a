from __future__ import annotations

import pytest

from engine.config import ServerSettings, Settings, load_settings
from engine.errors import ConfigError


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings == Settings(base_dir=".")
    assert settings.store.url == "sqlite:///data/hookyard.db"


def test_file_and_environment_overrides(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("server: {port: 9000}\nrules_dirs: [a, b]\ningest: {max_body: 10}\n")
    settings = load_settings(
        path,
        environ={
            "HOOKYARD_SERVER__HOST": "0.0.0.0",
            "HOOKYARD_INGEST__MAX_BODY": "2048",
            "HOOKYARD_ROLES": "api,rules",
            "HOOKYARD_TEST_PG": "ignored",
            "OTHER": "x",
        },
    )
    assert settings.server.port == 9000
    assert settings.server.host == "0.0.0.0"
    assert settings.ingest.max_body == 2048
    assert settings.rules_dirs == ("a", "b")
    assert settings.roles == ("api", "rules")
    assert settings.base_dir == str(tmp_path)
    assert settings.resolve_path("a") == tmp_path / "a"


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("server: {prot: 1}\n", {}, "server.prot: unknown setting"),
        ("server: {port: eighty}\n", {}, "server.port: expected a number"),
        ("- a\n", {}, "top level must be a mapping"),
        ("", {"HOOKYARD_SERVER__PORT": "1.5"}, "expected a whole number"),
        ("", {"HOOKYARD_NOPE": "1"}, "nope: unknown setting"),
        ("roles: [api, cooking]\n", {}, "unknown role 'cooking'"),
        ("server: [1]\n", {}, "server: expected a mapping"),
        ("store: {busy_timeout: 0}\n", {}, "store.busy_timeout: must be greater than 0"),
        ("", {"HOOKYARD_STORE__BATCH_MAX": "-1"}, "store.batch_max: must be greater than 0"),
        (
            "workers: {workflow_step_timeout: 0}\n",
            {},
            "workers.workflow_step_timeout: must be greater than 0",
        ),
        (
            "",
            {"HOOKYARD_WORKERS__WORKFLOW_STEP_PROCESSES": "0"},
            "workers.workflow_step_processes: must be greater than 0",
        ),
    ],
)
def test_invalid_settings_name_the_key(tmp_path, text, env, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=env)
    assert message in str(info.value)


def test_replace_with_dotted_keys():
    settings = Settings().replace(**{"store.url": "postgresql://x/y", "roles": ["api"]})
    assert settings.store.url == "postgresql://x/y"
    assert settings.roles == ("api",)


def test_shipped_config_file_is_valid_and_matches_defaults():
    from pathlib import Path

    shipped = load_settings(Path(__file__).parents[2] / "config.yaml", environ={})
    assert shipped.replace(base_dir=".") == Settings()


def test_the_public_api_url_is_the_listener_unless_set() -> None:
    assert ServerSettings().public_api_url() == "http://127.0.0.1:8080/api/v1"
    assert ServerSettings(host="::1", port=9000).public_api_url() == "http://[::1]:9000/api/v1"
    behind_proxy = ServerSettings(api_url="https://hooks.example.com/api/v1/")
    assert behind_proxy.public_api_url() == "https://hooks.example.com/api/v1"
