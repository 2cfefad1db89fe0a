"""Turn an HTTP request's body into data, as StackStorm does: JSON, form fields or text.

The named-hook payload built around it is engine.model.hook_payload's.
"""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import parse_qsl

from engine.errors import IngestError
from engine.store import codec

MAX_JSON_DEPTH = 64
# Most fields a form body may have (ingest.max_form_fields); Django's default limit too.
MAX_FORM_FIELDS = 1000


def parse_body(content_type: str, raw: bytes, *, max_form_fields: int = MAX_FORM_FIELDS) -> Any:
    """The body as data: JSON (any root), form fields, or text. IngestError otherwise."""
    return parse_body_and_text(content_type, raw, max_form_fields=max_form_fields)[0]


def parse_body_and_text(
    content_type: str, raw: bytes, *, max_form_fields: int = MAX_FORM_FIELDS
) -> tuple[Any, str | None]:
    """(the body as data, its JSON text when that may be stored verbatim, else None).

    The text is given when the body is JSON the store may keep as the sender wrote it:
    it decodes to exactly the data (NaN, Infinity and out-of-range numbers are refused
    while parsing, so both agree) and holds no escaped NUL, which PostgreSQL cannot
    store. Re-encoding the parsed body was the largest cost of storing a webhook.
    """
    if not raw or raw.isspace():
        return {}, None
    mime = _mime(content_type)
    if _is_json(mime):
        return _parse_json(raw, assumed=not mime)
    if mime == "application/x-www-form-urlencoded":
        return _parse_form(raw, max_form_fields), None
    if mime == "text/plain":
        return _decode(raw, "text/plain"), None
    raise IngestError(
        f"unsupported Content-Type {mime!r}; send application/json, "
        "application/x-www-form-urlencoded or text/plain",
        415,
    )


def stored_body_text(
    content_type: str, raw: bytes, *, max_form_fields: int = MAX_FORM_FIELDS
) -> str:
    """The body as the JSON text to store: as the sender wrote it when it may be, else
    re-encoded. IngestError (400, 413, 415) or UnstorableValue when it cannot be stored."""
    body, text = parse_body_and_text(content_type, raw, max_form_fields=max_form_fields)
    if text is not None:  # as sent: holds no surrogate escape at all (_parse_json)
        return text
    return codec.check_no_lone_surrogate(codec.dumps(body, "the webhook body"), "the webhook body")


def _mime(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(mime: str) -> bool:
    return mime in ("", "application/json") or mime.endswith("+json")


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{what} body is not valid UTF-8 (byte {exc.start})") from None


class _UnstorableNumber(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise _UnstorableNumber(f"number {text[:40]} is out of range")
    if len(text) > _PLAIN_FLOAT_MAX or "e" in text or "E" in text:
        # Python reads 1e-16000 as 0.0, but PostgreSQL's jsonb keeps (or refuses) all its
        # digits: a body with such numbers is stored as the encoder writes it (repr).
        _parse_state.verbatim = False
    return value


def _refuse_constant(name: str) -> float:
    raise _UnstorableNumber(f"{name} is not a JSON number")


_INF = float("inf")
# Longer float literals are stored re-encoded, never as sent (see _finite_float).
_PLAIN_FLOAT_MAX = 32
# Per thread: whether the body being parsed may be stored as sent.
_parse_state = threading.local()
# Built once (json.loads with hooks builds a decoder per call). NaN and Infinity are not
# JSON, and a number too large for a float would be stored as infinity: both refused.
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)


def _parse_json(raw: bytes, *, assumed: bool) -> tuple[Any, str | None]:
    text: str | None = None
    if _utf8_without_bom(raw):  # not UTF-16/32, not UTF-8 with a BOM
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None  # not text at all: json.loads says where
    _parse_state.verbatim = True
    try:
        if text is not None:
            value = _DECODER.decode(text)
        else:
            value = json.loads(raw, parse_float=_finite_float, parse_constant=_refuse_constant)
    except _UnstorableNumber as exc:
        raise IngestError(f"JSON body cannot be stored: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else ""
        hint = " (no Content-Type was given, so JSON was assumed)" if assumed else ""
        raise IngestError(f"malformed JSON body{where}: {_reason(exc)}{hint}") from None
    except ValueError as exc:  # an integer past sys.get_int_max_str_digits()
        raise IngestError(f"JSON body cannot be read: {exc}") from None
    except RecursionError:
        raise _too_deep() from None
    _check_depth(raw, value)
    if not _parse_state.verbatim:
        text = None
    if text is not None and ("\\u0000" in text or "\\ud" in text or "\\uD" in text):
        # Left to the store's encoder, which tells a NUL from an escaped backslash, and
        # writes surrogates in the lower case its check for lone ones reads.
        text = None
    return value, text


def load_json(raw: bytes) -> Any:
    """The JSON data of an API request's body, refused as a webhook's is when it nests
    deeper than MAX_JSON_DEPTH levels: IngestError (400) then, or for a number too long to
    read; json.JSONDecodeError or UnicodeDecodeError (ValueErrors) when it is no JSON."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError as exc:  # an integer past sys.get_int_max_str_digits()
        raise IngestError(f"JSON body cannot be read: {exc}") from None
    _check_depth(raw, value)
    return value


def _too_deep() -> IngestError:
    return IngestError(f"JSON body nests deeper than {MAX_JSON_DEPTH} levels")


def _check_depth(raw: bytes, value: Any) -> None:
    # Nesting needs an opening bracket per level, so counting them (in C) spares the walk
    # for every body that could not nest too deep; brackets inside strings only over-count.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise _too_deep()


def _utf8_without_bom(raw: bytes) -> bool:
    """json.detect_encoding(raw) == "utf-8", answered at once for a body that starts with
    two ASCII characters, as JSON does (a BOM starts with a byte past ASCII, UTF-16 and
    UTF-32 have a NUL among the first two bytes); a tenth of a body's parse otherwise."""
    if len(raw) >= 2 and 0 < raw[0] < 0x80 and 0 < raw[1] < 0x80:
        return True
    return json.detect_encoding(raw) == "utf-8"


def _reason(exc: Exception) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return depth
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth - 1


def _parse_form(raw: bytes, max_fields: int) -> dict[str, Any]:
    # parse_qsl splits on "&" alone: one more field than separators, at most.
    if raw.count(b"&") >= max_fields:
        raise IngestError(
            f"form body has more than {max_fields} fields (the limit is ingest.max_form_fields)",
            413,
        )
    text = _decode(raw, "form")
    fields: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        existing = fields.get(key)
        if existing is None:
            fields[key] = value
        elif isinstance(existing, list):  # values are str: a list is a repeated key's
            existing.append(value)
        else:
            fields[key] = [existing, value]
    return fields
