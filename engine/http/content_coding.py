"""Request bodies sent with a Content-Encoding: decoded here, within the body limit.

The app reads bodies as they were sent: create_app turns aiohttp's own decompression off.
With it on, a webhook's body was read as Content-Length bytes of the *decoded* stream, so
a gzip body was stored cut to its compressed length (and answered 202); and a request
refused before its body was read had the rest of its body inflated by aiohttp only to be
discarded. Here a body is inflated at most to its limit plus one byte: a gzip bomb costs
no more than the limit before its 413.

gzip (and x-gzip, RFC 9110 8.4.1.3) and deflate are decoded; any other coding, or more
than one, is refused with 415.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from engine.errors import IngestError

DECODED_CODINGS = ("gzip", "x-gzip", "deflate")
# Most gzip members one body may hold: zlib copies the rest of the body at each member's
# end, so thousands of tiny members would cost quadratic time (before authentication).
MAX_GZIP_MEMBERS = 100


def content_coding(headers: Mapping[str, str]) -> str | None:
    """The request's content coding to decode (None: sent as is); IngestError (415) for a
    coding this server does not decode."""
    value = headers.get("Content-Encoding")
    if value is None:
        return None
    codings = [part.strip().lower() for part in value.split(",") if part.strip()]
    codings = [coding for coding in codings if coding != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in DECODED_CODINGS:
        return codings[0]
    raise IngestError(
        f"Content-Encoding {value!r} is not supported; send the body uncompressed, or "
        "compressed once with gzip or deflate",
        415,
    )


def decode_body(raw: bytes, coding: str, limit: int) -> bytes:
    """`raw` decoded from `coding`: IngestError 413 as soon as the decoded body passes
    `limit` bytes, 400 when `raw` is not complete `coding` data."""
    if coding == "deflate" and not _is_zlib(raw):
        wbits = -zlib.MAX_WBITS  # raw deflate, as some senders write "deflate"
    elif coding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        wbits = 16 + zlib.MAX_WBITS
    parts: list[bytes] = []
    size = 0
    rest = raw
    members = 0
    while True:  # a gzip body may be several members, one after the other
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise IngestError(
                f"body has more than {MAX_GZIP_MEMBERS} gzip members; compress it as one"
            )
        decoder = zlib.decompressobj(wbits)
        try:
            part = decoder.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise IngestError(f"body is not valid {coding} data: {exc}") from None
        size += len(part)
        if size > limit or decoder.unconsumed_tail:
            raise IngestError(
                f"body is over the limit of {limit} bytes once decoded (Content-Encoding {coding})",
                413,
            )
        parts.append(part)
        if not decoder.eof:
            raise IngestError(f"body ends before the end of its {coding} data")
        rest = decoder.unused_data
        if not rest or wbits != 16 + zlib.MAX_WBITS:
            break
    if rest:
        raise IngestError(f"body has {len(rest)} bytes after the end of its {coding} data")
    return b"".join(parts)


def _is_zlib(raw: bytes) -> bool:
    # RFC 1950: the compression method is 8 and the first two bytes are a multiple of 31.
    return len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
