"""The two Dialect tables: every store method has an operation in each dialect, taking
the same arguments — SQLite's a plain function (run on the store's threads), PostgreSQL's
a coroutine (awaited on a pool connection). SqlStore calls both alike."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from engine.store.dialect import Dialect
from engine.store.postgres import POSTGRES
from engine.store.sqlite import SQLITE

OPERATIONS = [field.name for field in dataclasses.fields(Dialect)]


def _required(operation) -> list[str]:
    return [
        name
        for name, parameter in inspect.signature(operation).parameters.items()
        if parameter.default is inspect.Parameter.empty
    ]


@pytest.mark.parametrize("name", OPERATIONS)
def test_both_dialects_take_the_same_arguments(name: str) -> None:
    assert _required(getattr(SQLITE, name)) == _required(getattr(POSTGRES, name))
    assert _required(getattr(SQLITE, name))[0] == "conn"


@pytest.mark.parametrize("name", OPERATIONS)
def test_sqlite_operations_are_functions_and_postgres_ones_coroutines(name: str) -> None:
    assert not inspect.iscoroutinefunction(getattr(SQLITE, name))
    assert inspect.iscoroutinefunction(getattr(POSTGRES, name))
