"""`st2kv` in templates: a pre-loaded view of the datastore, and the `decrypt_kv` filter.

Templates stay pure: the worker loads the datastore before rendering (engine.store.datastore)
and hands the result in as plain dicts; nothing here reads a store or a file. A secret
value is its ciphertext, a `SecretValue`, which only `| decrypt_kv` turns into plaintext;
the decryption function it carries sits in an underscore attribute, which the sandbox
never lets a template reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.errors import TemplateError
from engine.rules import templates

__all__ = [
    "KeyScope",
    "KvSnapshot",
    "SecretValue",
    "build_st2kv",
    "decrypt_kv",
    "revealing",
    "st2kv_from_snapshot",
]


class SecretValue(str):
    """A secret datastore value as templates see it: the ciphertext, nothing more."""

    _reveal: Callable[[str], str]

    def __new__(cls, ciphertext: str, reveal: Callable[[str], str]) -> SecretValue:
        value = super().__new__(cls, ciphertext)
        value._reveal = reveal
        return value


class KeyScope(dict):
    """The keys of one scope by name, read-only in the sandbox.

    As in StackStorm, a missing key reads as "" and a dotted key name can be reached
    attribute by attribute (`st2kv.system.app.token` finds the key "app.token"); an exact
    name wins over a dotted prefix. `st2kv.system['app.token']` works too.
    """

    def __missing__(self, name: Any) -> Any:
        if not isinstance(name, str):
            return ""
        prefix = name + "."
        nested = {
            key[len(prefix) :]: value for key, value in self.items() if key.startswith(prefix)
        }
        return KeyScope(nested) if nested else ""


class _RevealingScope(KeyScope):
    """A scope whose secret values read as their plaintext (see `revealing`)."""

    def __getitem__(self, name: Any) -> Any:
        value = super().__getitem__(name)
        if isinstance(value, SecretValue):
            return value._reveal(str(value))
        if isinstance(value, KeyScope) and not isinstance(value, _RevealingScope):
            return _RevealingScope(value)
        return value


def revealing(st2kv: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`st2kv` with secret values decrypted as they are read, for the places StackStorm
    decrypts by itself (a pack config item declared ``secret: true``). Only the keys a
    template reads are decrypted; ``| decrypt_kv`` on a revealed value is a no-op."""
    if st2kv is None:
        return None
    return {
        scope: _RevealingScope(keys) if isinstance(keys, KeyScope) else keys
        for scope, keys in st2kv.items()
    }


def build_st2kv(
    system: Iterable[tuple[str, Any]], user: Iterable[tuple[str, Any]]
) -> dict[str, KeyScope]:
    """What `st2kv` is in a template: {"system": ..., "user": ...} (name, value) pairs."""
    return {"system": KeyScope(system), "user": KeyScope(user)}


# st2kv as plain data, for a process that builds its own view (engine.workers.evaluator):
# (system pairs, user pairs), each pair (name, value, secret).
KvSnapshot = tuple[tuple[tuple[str, Any, bool], ...], tuple[tuple[str, Any, bool], ...]]


def st2kv_from_snapshot(snapshot: KvSnapshot, reveal: Callable[[str], str]) -> dict[str, KeyScope]:
    """The `st2kv` view of a snapshot; secret values are SecretValue opened by `reveal`."""

    def shown(value: Any, secret: bool) -> Any:
        return SecretValue(value, reveal) if secret else value

    system, user = snapshot
    return build_st2kv(
        [(name, shown(value, secret)) for name, value, secret in system],
        [(name, shown(value, secret)) for name, value, secret in user],
    )


def decrypt_kv(value: Any) -> str:
    """The plaintext of a secret datastore value; a non-secret value is returned as it is.

    Only values that came out of the datastore are decrypted: a ciphertext copied into a
    webhook payload stays ciphertext.
    """
    if isinstance(value, SecretValue):
        return value._reveal(str(value))
    if value is None or value == "":
        raise TemplateError(
            "decrypt_kv: the datastore item does not exist (or is empty); "
            "check its name and scope (st2kv.system.<name> or st2kv.user.<name>)"
        )
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        raise TemplateError(
            "decrypt_kv: got a group of keys, not one key; name the whole key (st2kv.system['a.b'])"
        )
    raise TemplateError(f"decrypt_kv: expected a datastore value, got a {type(value).__name__}")


templates.register_filter("decrypt_kv", decrypt_kv)
