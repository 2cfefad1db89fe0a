"""What the engine's child processes load: each heavy library a child does not need costs
its memory in every Hookyard process (issue 18's idle RSS). Real interpreters, importing
each child's module as `python -P -m` does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("asyncpg", "aiohttp", "jinja2", "jsonschema", "cryptography", "yaql")


def loaded_by(module: str) -> set[str]:
    probe = (
        f"import json, sys, {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        # Stores webhooks into SQLite: none of the rules core, HTTP or PostgreSQL driver.
        ("engine.ingest.writer_child", set()),
        # Decides rules (Jinja, jsonschema); decrypts a secret only when a rule reads one.
        ("engine.workers.evaluator_child", {"jinja2", "jsonschema"}),
        # A SQLite store in the serving process: no PostgreSQL driver.
        ("engine.store.sqlite", set()),
    ],
)
def test_a_child_loads_only_what_it_uses(module: str, allowed: set[str]) -> None:
    assert loaded_by(module) <= allowed


def test_the_postgres_store_still_loads_its_driver() -> None:
    assert "asyncpg" in loaded_by("engine.store.postgres")
