"""The named-hook payload and what both stores can hold: pure functions, no I/O."""

from __future__ import annotations

import json

import pytest

from engine.errors import IngestError
from engine.ingest.bodies import _utf8_without_bom, stored_body_text
from engine.model.hook_payload import (
    CREDENTIAL_HEADERS,
    NamedHookPost,
    decode_headers,
    header_maps,
    payload,
    payload_json,
)
from engine.store.codec import UnstorableValue, check_no_lone_surrogate, dumps

RAW = (
    (b"Host", b"example.test"),
    (b"X-Multi", b"one"),
    (b"Authorization", b"Bearer secret"),
    (b"x-multi", b"two"),
    (b"X-Odd", b"caf\xe9"),
    (b"X-Utf8", "café".encode()),
)


def test_payload_json_and_payload_agree_and_drop_credentials() -> None:
    post = NamedHookPost(RAW, CREDENTIAL_HEADERS, '{"a": [1, 2.5]}')
    text = payload_json(post)
    assert json.loads(text) == payload(post)
    assert "secret" not in text
    data = payload(post)
    assert data["headers"]["X-Multi"] == "one, two"
    assert data["headers_lower"]["x-multi"] == "one, two"
    assert data["headers"]["X-Utf8"] == "café"
    assert data["body"] == {"a": [1, 2.5]}


def test_a_header_that_is_not_utf8_is_read_as_latin1() -> None:
    assert dict(decode_headers(RAW))["X-Odd"] == "café"
    headers, _ = header_maps(decode_headers(RAW))
    check_no_lone_surrogate(dumps(headers), "headers")  # storable on both stores


def test_a_post_whose_body_is_not_parsed_yet_cannot_be_built() -> None:
    post = NamedHookPost(RAW, CREDENTIAL_HEADERS, None, "application/json", b"{}")
    with pytest.raises(ValueError, match="not parsed"):
        payload_json(post)


@pytest.mark.parametrize(
    ("text", "lone"),
    [
        ('"\\ud83d\\ude00"', False),  # a pair: an emoji
        ('"\\\\ud800"', False),  # an escaped backslash, then the letters
        ('"\\ud800"', True),
        ('"x\\udc00"', True),
        ('"\\ud800\\ud800\\udc00"', True),  # the first high one has no low one
        ('"\\\\\\ud800"', True),  # an escaped backslash, then a real escape
        ('"\\\\ud800\\udc00"', True),  # "ud800" is text there: the low one is alone
        ('"\\ud800 \\udc00"', True),  # not adjacent
        ('"\\uD83D\\uDE00"', False),  # upper case, as a sender may write it
    ],
)
def test_lone_surrogates_are_told_from_pairs_and_escaped_backslashes(text, lone) -> None:
    if lone:
        with pytest.raises(UnstorableValue, match="lone UTF-16 surrogate"):
            check_no_lone_surrogate(text, "v")
    else:
        assert check_no_lone_surrogate(text, "v") == text


@pytest.mark.parametrize("escape", ["\\ud800", "\\uD800", "\\uDFFF"])
def test_a_json_body_with_a_lone_surrogate_escape_is_refused(escape) -> None:
    with pytest.raises(UnstorableValue, match="lone UTF-16 surrogate"):
        stored_body_text("application/json", f'{{"a": "{escape}"}}'.encode())


def test_a_body_with_a_surrogate_pair_in_upper_case_is_stored_as_its_value() -> None:
    text = stored_body_text("application/json", b'{"a": "\\uD83D\\uDE00"}')
    assert json.loads(text) == {"a": "\U0001f600"}


def test_stored_body_text_keeps_a_plain_body_as_sent_and_refuses_bad_ones() -> None:
    assert stored_body_text("application/json", b'{"a" : 1}') == '{"a" : 1}'
    assert json.loads(stored_body_text("application/x-www-form-urlencoded", b"a=1&a=2")) == {
        "a": ["1", "2"]
    }
    with pytest.raises(IngestError) as malformed:
        stored_body_text("application/json", b"{")
    assert malformed.value.status == 400
    with pytest.raises(IngestError) as unsupported:
        stored_body_text("application/xml", b"<a/>")
    assert unsupported.value.status == 415


def test_the_ascii_shortcut_reads_encodings_as_json_detect_encoding_does() -> None:
    # Every first two bytes, with endings that matter to detect_encoding (NULs, BOM
    # bytes), and every one-byte body.
    endings = [b"", b"\x00", b"\x00\x00", b"a", b"\xbb\xbf", b"\xfe\xff", b"{}", b"\x00a\x00"]
    for first in range(256):
        assert _utf8_without_bom(bytes([first])) == (
            json.detect_encoding(bytes([first])) == "utf-8"
        )
        for second in range(256):
            for ending in endings:
                raw = bytes([first, second]) + ending
                assert _utf8_without_bom(raw) == (json.detect_encoding(raw) == "utf-8"), raw


@pytest.mark.parametrize(
    "raw",
    [
        '{"a": "é"}'.encode("utf-16"),  # with its BOM
        '{"a": "é"}'.encode("utf-16-le"),
        '{"a": "é"}'.encode("utf-32"),
        b'\xef\xbb\xbf{"a": "\xc3\xa9"}',  # UTF-8 with a BOM
    ],
)
def test_bodies_in_other_encodings_are_read_and_stored_re_encoded(raw) -> None:
    text = stored_body_text("application/json", raw)
    assert json.loads(text) == {"a": "é"}
