"""Roles and grants (engine.model.roles): what a grant covers and which role a new key gets."""

from __future__ import annotations

import pytest

from engine.model.roles import (
    ADMIN,
    OBSERVER,
    OPERATOR,
    RESERVED_USERS,
    WEBHOOK,
    Grants,
    RoleError,
    check_role,
)


def test_grants_cover_packs_and_action_refs_by_glob():
    grants = Grants(packs=("examples", "ops-*"), actions=("core.http", "util.n*"))
    for ref in ("examples.hello", "ops-db.backup", "core.http", "util.noop"):
        assert grants.covers(ref), ref
    for ref in ("core.local", "examples2.hello", "core.httpx", "util.echo", "Examples.hello"):
        assert not grants.covers(ref), ref
    assert not Grants().covers("core.noop")
    assert grants.describe() == "examples, ops-*, core.http, util.n*"
    assert Grants().describe() == "none"


def test_grants_from_the_api_are_checked():
    assert Grants.from_api({"packs": ["a", "a"], "actions": []}) == Grants(packs=("a",))
    assert Grants.from_api(None) == Grants()
    for bad in ({"pack": ["a"]}, {"packs": "a"}, {"packs": [""]}, {"actions": ["a b"]}, ["a"]):
        with pytest.raises(RoleError):
            Grants.from_api(bad)


def test_the_role_a_new_key_gets():
    none = Grants()
    assert check_role(None, grants=none, scoped=False, name="x") == OBSERVER
    assert check_role(None, grants=none, scoped=True, name="x") == WEBHOOK
    assert check_role(None, grants=Grants(packs=("a",)), scoped=False, name="x") == OPERATOR
    assert check_role(ADMIN, grants=none, scoped=False, name="hookyard") == ADMIN
    for role, grants, scoped, name in (
        ("root", none, False, "x"),
        (OBSERVER, Grants(packs=("a",)), False, "x"),
        (OPERATOR, none, True, "x"),
        (OPERATOR, none, False, "hookyard"),
        (OBSERVER, none, False, "api"),
    ):
        with pytest.raises(RoleError):
            check_role(role, grants=grants, scoped=scoped, name=name)


def test_reserved_users_are_the_ones_the_engine_acts_as():
    from engine.http.executions_api import API_USER
    from engine.rules.enforce import RULE_USER

    assert set(RESERVED_USERS) == {RULE_USER, API_USER}
