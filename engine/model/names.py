"""How long the names users give may be, in one place.

StackStorm sets no limit; without one a 900,000-character rule name was stored, made every
rule listing megabytes long, and could not be deleted (its ref no longer fits in a request
line). Every entry point (rule and pack files, the API, the CLI) refuses a longer name with
a message naming the field and the limit.

- names (rules, packs, actions, API keys, hooks, outbound subscriptions): 255 characters;
- references `pack.name` (action refs, rule refs, trigger types): 511 (two names and a dot);
- datastore key names: 512 (StackStorm keys are often dotted paths, so a little longer).
"""

from __future__ import annotations

from engine.errors import NameTooLong

MAX_NAME_CHARS = 255
MAX_REF_CHARS = 2 * MAX_NAME_CHARS + 1
MAX_KEY_NAME_CHARS = 512


def too_long(length: int, limit: int) -> str:
    """The message for a value `length` characters long where `limit` is allowed."""
    return (
        f"is {length:,} characters long; the limit is {limit} characters "
        "(see 'Limits' in the README)"
    )


def check_length(value: str, what: str, limit: int = MAX_NAME_CHARS) -> str:
    """`value` if it is at most `limit` characters; NameTooLong naming `what` otherwise."""
    if isinstance(value, str) and len(value) > limit:
        raise NameTooLong(f"{what} {too_long(len(value), limit)}")
    return value
