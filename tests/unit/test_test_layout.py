"""The tests' own layout: shared helpers live in tests/support and the conftest.py files,
so no test module imports another, and the helpers that used to be written once per file
are written once in all."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# Helpers that were each defined in several test files; one definition each now.
SHARED_HELPERS = {"settings_for", "write_pack", "wait_processed", "wait_execution"}


def python_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if ".venv" not in path.parts)


def imported_modules(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "fixture") or (
        isinstance(target, ast.Name) and target.id == "fixture"
    )


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    # By the module's own name too: pytest's import mode makes `import test_x` work.
    test_modules = {path.stem for path in python_files() if path.stem.startswith("test_")}
    offenders = [
        f"{path.relative_to(TESTS)} imports {module}"
        for path in python_files()
        for module in imported_modules(ast.parse(path.read_text(), str(path)))
        if module.rpartition(".")[2] in test_modules | {"conftest"}
    ]
    assert offenders == []


def test_each_shared_helper_and_the_client_fixture_is_defined_once() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for path in python_files():
        for node in ast.parse(path.read_text(), str(path)).body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.name in SHARED_HELPERS:
                homes[node.name].append(str(path.relative_to(TESTS)))
            if node.name == "client" and any(map(is_fixture, node.decorator_list)):
                homes["client fixture"].append(str(path.relative_to(TESTS)))
    assert {name: files for name, files in homes.items() if len(files) > 1} == {}
    assert set(homes) == SHARED_HELPERS | {"client fixture"}


def test_the_checks_see_what_they_look_for() -> None:
    # Guards against a walk that finds nothing: both forms of import, and a fixture.
    tree = ast.parse(
        "import tests.integration.test_x\n"
        "from tests.acceptance.conftest import serve\n"
        "@pytest.fixture\nasync def client(): ...\n"
    )
    assert imported_modules(tree) == ["tests.integration.test_x", "tests.acceptance.conftest"]
    assert is_fixture(tree.body[-1].decorator_list[0])


def test_test_module_names_are_unique_across_the_folders() -> None:
    # The test folders are not packages: pytest imports each test module by its bare name,
    # so two test_x.py in different folders cannot both be collected.
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in python_files():
        if path.name.startswith("test_"):
            by_name[path.name].append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
