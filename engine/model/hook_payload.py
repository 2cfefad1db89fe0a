"""The stored payload of a named-hook webhook: ``{"headers", "headers_lower", "body"}``
as StackStorm builds it (without the credential headers), plus the request's ``method``,
``path`` and ``query`` (a mapping; a parameter sent several times is a list), without the
credentials a query or a path may carry.

It is built from what the request carried (its header lines as received and the body's
JSON text) by pure functions, so that the ingest writer process
(engine.ingest.writer_child) builds exactly what the API process would, and the API
process's event loop does not spend its time on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any

# Never stored: credentials StackStorm strips, plus cookies.
CREDENTIAL_HEADERS = frozenset({"st2-api-key", "x-auth-token", "authorization", "cookie"})
# Never stored either: the query parameter StackStorm takes an API key from.
CREDENTIAL_QUERY = frozenset({"st2-api-key"})


@dataclass(slots=True)
class NamedHookPost:
    """What a named-hook request carried, enough to build its stored payload. (Not
    frozen, for speed: see engine.model.records.NewTriggerInstance.)"""

    # The header lines as the HTTP parser received them (aiohttp's request.raw_headers).
    raw_headers: tuple[tuple[bytes, bytes], ...]
    # Lower-case names never stored (a hook's WebhookDefinition.credential_headers).
    dropped: frozenset[str]
    # The body as JSON text: as the sender wrote it when that may be stored verbatim
    # (engine.ingest.bodies.parse_body_and_text), else re-encoded. None while the body is
    # still to be read from `body` by the process that stores it.
    body_text: str | None
    # The body as received and its Content-Type, when the storing process parses it.
    content_type: str = ""
    body: bytes = b""
    # The request line: method, path (without a key it carried) and the query parameters
    # in order (without the credential ones).
    method: str = "POST"
    path: str = ""
    query: tuple[tuple[str, str], ...] = ()


def decode_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header lines as text: UTF-8, as aiohttp decodes request.headers, and ISO-8859-1
    (HTTP's historical charset, RFC 9110 5.5) for a line that is not UTF-8, where aiohttp
    keeps surrogate escapes: those are not text, and PostgreSQL's jsonb refuses them."""
    return [(text(name), text(value)) for name, value in raw_headers]


def text(raw: bytes) -> str:
    """A header line's bytes as text: UTF-8, else ISO-8859-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_maps(
    headers: Iterable[tuple[str, str]], dropped: frozenset[str] = CREDENTIAL_HEADERS
) -> tuple[dict[str, str], dict[str, str]]:
    """(headers as sent, headers with lower-case names), without the `dropped` ones.

    A header sent several times is joined with ", " (RFC 9110 field combination), under
    the spelling of its first line.
    """
    original: dict[str, str] = {}
    lower: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in dropped:
            continue
        if key in lower:
            lower[key] = f"{lower[key]}, {value}"
            original[_first_spelling(original, key)] = lower[key]
        else:
            lower[key] = value
            original[name] = value
    return original, lower


def _first_spelling(original: dict[str, str], key: str) -> str:
    return next(name for name in original if name.lower() == key)


def payload_json(post: NamedHookPost) -> str:
    """The stored payload as JSON text, the body spliced in as the post carries it (its
    body must be parsed already: `body_text`).

    Header names and values are strings, written with the JSON encoder's own string
    escaper (what engine.store.codec.dumps writes for them, byte for byte) without the
    encoder's per-call set-up, which cost more than the headers themselves.
    """
    if post.body_text is None:
        raise ValueError("the post's body is not parsed yet")
    headers, headers_lower = header_maps(decode_headers(post.raw_headers), post.dropped)
    return (
        f'{{"headers":{_string_map(headers)},'
        f'"headers_lower":{_string_map(headers_lower)},"body":{post.body_text},'
        f'"method":{_json_string(post.method)},"path":{_json_string(post.path)},'
        f'"query":{json.dumps(query_map(post.query), ensure_ascii=True)}}}'
    )


def payload(post: NamedHookPost) -> dict[str, Any]:
    """The stored payload as data."""
    if post.body_text is None:
        raise ValueError("the post's body is not parsed yet")
    headers, headers_lower = header_maps(decode_headers(post.raw_headers), post.dropped)
    return {
        "headers": headers,
        "headers_lower": headers_lower,
        "body": json.loads(post.body_text),
        "method": post.method,
        "path": post.path,
        "query": query_map(post.query),
    }


def query_map(pairs: Iterable[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Query parameters as a mapping: a parameter sent once is its value, one sent several
    times the list of its values in order (as form bodies are read)."""
    found: dict[str, str | list[str]] = {}
    for name, value in pairs:
        if name not in found:
            found[name] = value
        elif isinstance(found[name], list):
            found[name].append(value)  # type: ignore[union-attr]
        else:
            found[name] = [found[name], value]  # type: ignore[list-item]
    return found


def request_parts(
    method: str, path: str, query: Iterable[tuple[str, str]], dropped_query: frozenset[str]
) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(method, path, query pairs) as stored: credential query parameters removed."""
    kept = tuple((name, value) for name, value in query if name.lower() not in dropped_query)
    return method, path, kept


def _string_map(mapping: dict[str, str]) -> str:
    return (
        "{" + ",".join([f"{_json_string(k)}:{_json_string(v)}" for k, v in mapping.items()]) + "}"
    )
