"""The built-in `core` pack: package data, always loaded first, never shadowed silently."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from engine.config import load_settings
from engine.packs import load_packs
from engine.packs.loader import BUILTIN_CORE_DIR
from engine.runners import default_runners
from tests.support.packs import write_pack

# The pack core checks actions against the runner registry it is given.
RUNNERS = default_runners()

CORE_ACTIONS = {
    "core.announcement",
    "core.ask",
    "core.echo",
    "core.error",
    "core.http",
    "core.inject_trigger",
    "core.local",
    "core.noop",
    "core.pause",
    "core.sendwebhook",
    "core.uuid",
}

USER_CORE = """\
name: core
ref: core
description: A site's own core pack.
version: 9.9.9
author: a site
"""

USER_CORE_ACTION = """\
name: local
runner_type: noop
description: Does nothing (a replaced core.local).
"""


def pack_yaml(name: str) -> str:
    return f"name: {name}\ndescription: test pack\nversion: 1.0.0\nauthor: tests\n"


def test_the_core_pack_lives_inside_the_package() -> None:
    package = Path(engine.__file__).parent
    assert BUILTIN_CORE_DIR.is_relative_to(package)
    assert (BUILTIN_CORE_DIR / "pack.yaml").is_file()


def test_core_is_loaded_with_no_packs_dirs_at_all() -> None:
    packs, errors = load_packs([], runners=RUNNERS)
    assert errors == []
    assert list(packs.packs) == ["core"]
    assert {a.ref for a in packs.actions()} == CORE_ACTIONS
    assert packs.packs["core"].path == str(BUILTIN_CORE_DIR)


def test_core_comes_first_before_the_packs_of_the_directories(tmp_path: Path) -> None:
    write_pack(
        tmp_path,
        "zeta",
        {"actions/hi.yaml": "name: hi\nrunner_type: noop\n"},
        meta=pack_yaml("zeta"),
    )
    write_pack(tmp_path, "alpha", {}, meta=pack_yaml("alpha"))
    packs, errors = load_packs([tmp_path], runners=RUNNERS)
    assert errors == []
    assert list(packs.packs) == ["core", "alpha", "zeta"]
    assert packs.action("zeta.hi").runner_type == "noop"


def test_a_core_pack_in_a_packs_dir_is_refused_naming_both_paths(tmp_path: Path) -> None:
    user_core = write_pack(
        tmp_path, "core", {"actions/local.yaml": USER_CORE_ACTION}, meta=USER_CORE
    )
    write_pack(tmp_path, "other", {}, meta=pack_yaml("other"))
    packs, errors = load_packs([tmp_path], runners=RUNNERS)
    assert len(errors) == 1
    message = str(errors[0])
    assert str(user_core / "pack.yaml") in message
    assert str(BUILTIN_CORE_DIR) in message
    assert "override_core" in message
    # The built-in core is kept whole, and the rest of the directory still loads.
    assert packs.packs["core"].path == str(BUILTIN_CORE_DIR)
    assert packs.action("core.local").runner_type == "local-shell-cmd"
    assert "other" in packs.packs


def test_override_core_replaces_the_built_in_core_with_the_directory_one(tmp_path: Path) -> None:
    user_core = write_pack(
        tmp_path, "core", {"actions/local.yaml": USER_CORE_ACTION}, meta=USER_CORE
    )
    packs, errors = load_packs([tmp_path], override_core=True, runners=RUNNERS)
    assert errors == []
    assert list(packs.packs) == ["core"]
    assert packs.packs["core"].path == str(user_core.absolute())
    assert packs.packs["core"].metadata["version"] == "9.9.9"
    # Replaced whole: the built-in actions the site's core lacks are gone.
    assert {a.ref for a in packs.actions()} == {"core.local"}
    assert packs.action("core.local").runner_type == "noop"


def test_override_core_still_refuses_a_second_core_in_the_directories(tmp_path: Path) -> None:
    first = write_pack(tmp_path / "a", "core", {}, meta=USER_CORE)
    second = write_pack(tmp_path / "b", "core", {}, meta=USER_CORE)
    packs, errors = load_packs(
        [tmp_path / "a", tmp_path / "b"], override_core=True, runners=RUNNERS
    )
    assert packs.packs["core"].path == str(first.absolute())
    assert len(errors) == 1 and str(second / "pack.yaml") in str(errors[0])


def test_override_core_without_a_core_pack_keeps_the_built_in_one(tmp_path: Path) -> None:
    packs, errors = load_packs([tmp_path], override_core=True, runners=RUNNERS)
    assert errors == []
    assert {a.ref for a in packs.actions()} == CORE_ACTIONS


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("", {}, False),
        ("packs:\n  override_core: true\n", {}, True),
        ("", {"HOOKYARD_PACKS__OVERRIDE_CORE": "true"}, True),
    ],
)
def test_the_override_setting_is_read_from_config_and_environment(
    tmp_path: Path, text: str, environ: dict[str, str], expected: bool
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    assert load_settings(config, environ).packs.override_core is expected
