"""Who may do what with an API key: roles and run grants, in StackStorm's RBAC terms (pure).

- `admin`: everything.
- `operator`: reads the API; runs the actions its grants cover (a pack name or an action
  ref, each may be a glob: `examples`, `core.http`, `examples.*`); cancels its own
  executions; re-emits trigger instances; writes its own user-scoped datastore values.
- `observer`: reads the API (no secrets of others, no other user's values); writes nothing.
- `webhook`: posts webhooks only (those in the key's `webhooks`/`triggers`, or all), no API.

A key acts as the user named by its name (`context.user` of what it runs, the owner of its
user-scoped values), so names that other parts of the engine use as users are reserved.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ADMIN = "admin"
OPERATOR = "operator"
OBSERVER = "observer"
WEBHOOK = "webhook"
ROLES = (ADMIN, OPERATOR, OBSERVER, WEBHOOK)
# The role a key gets when none is asked for: the least that is still useful.
DEFAULT_ROLE = OBSERVER

# Users the engine acts as itself: the rule user (engine.rules.enforce.RULE_USER) and
# the user of executions an admin starts without one (engine.http.executions_api.API_USER).
RESERVED_USERS = ("hookyard", "api")
MAX_GRANT_CHARS = 200


class RoleError(ValueError):
    """Raised when a role or a grant is not one we know (the caller wraps it)."""


@dataclass(frozen=True)
class Grants:
    """What an operator may run: packs and action refs (globs allowed)."""

    packs: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.packs or self.actions)

    def covers(self, ref: str) -> bool:
        pack = ref.split(".", 1)[0]
        return any(fnmatch.fnmatchcase(pack, p) for p in self.packs) or any(
            fnmatch.fnmatchcase(ref, a) for a in self.actions
        )

    def describe(self) -> str:
        """`examples, core.http` (packs then actions), or `none`."""
        return ", ".join((*self.packs, *self.actions)) or "none"

    def to_api(self) -> dict[str, list[str]]:
        return {"packs": list(self.packs), "actions": list(self.actions)}

    @classmethod
    def from_api(cls, value: Any) -> Grants:
        """`{"packs": [...], "actions": [...]}` (either may be left out) or None."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise RoleError('grants must be {"packs": ["examples"], "actions": ["core.http"]}')
        unknown = sorted(set(value) - {"packs", "actions"})
        if unknown:
            raise RoleError(f"grants.{unknown[0]}: unknown field; expected packs and actions")
        return cls(
            packs=_patterns(value.get("packs"), "grants.packs"),
            actions=_patterns(value.get("actions"), "grants.actions"),
        )


def _patterns(values: Any, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, list | tuple):
        raise RoleError(f"{what} must be a list of names or globs")
    for value in values:
        if (
            not isinstance(value, str)
            or not value.strip()
            or value != value.strip()
            or len(value) > MAX_GRANT_CHARS
            or any(char.isspace() or ord(char) < 32 for char in value)
        ):
            raise RoleError(
                f"{what}: {str(value)[:40]!r} is not a pack name, action ref or glob "
                f"(no spaces, at most {MAX_GRANT_CHARS} characters)"
            )
    return tuple(dict.fromkeys(values))


def check_role(role: Any, *, grants: Grants, scoped: bool, name: str) -> str:  # the role, checked
    """The role a new key gets: `role` if given (else webhook for a key limited to hooks or
    triggers, else DEFAULT_ROLE), checked against its grants, scopes and name."""
    if role is None:
        role = WEBHOOK if scoped else (OPERATOR if grants else DEFAULT_ROLE)
    if role not in ROLES:
        raise RoleError(f"unknown role {role!r}; use one of: {', '.join(ROLES)}")
    if grants and role != OPERATOR:
        raise RoleError(f"grants (--pack, --action) are for the operator role, not {role}")
    if scoped and role != WEBHOOK:
        raise RoleError(
            "a key limited to webhooks or triggers is a posting key (role webhook); "
            f"it cannot also have the {role} role"
        )
    if role != ADMIN and name in RESERVED_USERS:
        raise RoleError(
            f"the name {name!r} is the engine's own user; a {role} key with it would act "
            "as the engine: choose another name"
        )
    return role


def reads_api(role: str) -> bool:
    return role in (ADMIN, OPERATOR, OBSERVER)


def posts_webhooks(role: str, *, migrated: bool = False) -> bool:
    """Whether a key may post webhooks. A key that became an observer when roles arrived
    (`migrated`) keeps posting until an admin sets its role: it posted before, and an
    upgrade must not start refusing a sender's events."""
    return role in (ADMIN, OPERATOR, WEBHOOK) or (migrated and role == OBSERVER)
