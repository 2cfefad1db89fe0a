"""Pure parts of who-may-post: keys and durations, webhook definitions, the log scrubber."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from engine.errors import ConfigError
from engine.http.hookdefs import load_definitions
from engine.model.apikeys import (
    KEY_PATTERN,
    ApiKeyError,
    extended_expiry,
    hash_key,
    key_prefix,
    lifetime_from_api,
    new_api_key,
    parse_duration,
)
from engine.support.logs import SecretScrubber

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_new_key_is_shown_once_and_stored_as_hash_with_prefix():
    record, key = new_api_key("ci", webhooks=["/github/push/"], lifetime=timedelta(days=1), now=NOW)
    assert KEY_PATTERN.fullmatch(key) and key_prefix(key) == record.prefix == key[:11]
    assert record.key_hash == hash_key(key) and key not in repr(record)
    assert record.webhooks == ("github/push",)
    assert record.expires_at == NOW + timedelta(days=1)
    assert record.matches(key) and not record.matches(key + "x")
    assert "key_hash" not in record.to_api() and key not in str(record.to_api())
    assert key_prefix("not-ours") is None and key_prefix("hy_short") is None
    with pytest.raises(ApiKeyError):
        new_api_key(" ")
    with pytest.raises(ApiKeyError):
        new_api_key("x", webhooks="github")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("1d12h", 129600)]
)
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "3w", "d", "0s", "10", "1d x"])
def test_bad_durations(text):
    with pytest.raises(ApiKeyError):
        parse_duration(text)


def test_api_lifetime_and_extension():
    assert lifetime_from_api({"count": 60, "interval": "seconds"}) == timedelta(seconds=60)
    for bad in ({"count": 0, "interval": "days"}, {"count": 1, "interval": "weeks"}, {"n": 1}):
        with pytest.raises(ApiKeyError):
            lifetime_from_api(bad)
    day = timedelta(days=1)
    assert extended_expiry(NOW + day, day, NOW) == NOW + 2 * day
    assert extended_expiry(NOW - day, day, NOW) == NOW + day
    assert extended_expiry(None, day, NOW) is None


def test_definitions_from_config_and_packs_with_env_secrets():
    config = {
        "github-push": {
            "auth": "signature",
            "signature": {"scheme": "github", "secret": "${GH}"},
            "dedupe": {"header": "X-GitHub-Delivery"},
        },
        "/partner/": {"apikey": {"in": "query", "name": "token"}},
        "open": {"auth": "none", "response": {"status": 200, "body": "{{ trigger_instance.id }}"}},
    }
    pack = SimpleNamespace(
        name="from-pack",
        pack="p",
        source=None,
        settings={"jwt": {"algorithms": ["HS256"], "secret": "k" * 32}},
    )
    defs = load_definitions(config, None, [pack], environ={"GH": "gh-secret-value"})
    assert set(defs) == {"github-push", "partner", "open", "from-pack"}
    github = defs["github-push"]
    assert github.secrets == ("gh-secret-value",)
    assert "x-hub-signature-256" in github.credential_headers
    assert defs["from-pack"].auth == "jwt"  # inferred from the one method given
    assert defs["partner"].apikey.place == "query"


def test_methods_and_challenge_definitions():
    defs = load_definitions(
        {
            "meta": {
                "methods": ["get", "POST", "GET"],
                "challenge": {
                    "query": "hub.challenge",
                    "verify_token": {"query": "hub.verify_token", "value": "${VERIFY}"},
                },
                "apikey": {"in": "query", "name": "Token"},
            },
            "plain": {},
        },
        None,
        environ={"VERIFY": "s3cret"},
    )
    meta = defs["meta"]
    assert meta.methods == ("GET", "POST")
    assert meta.challenge.verify_token == "s3cret" and "s3cret" in meta.secrets
    assert meta.credential_query == {"st2-api-key", "token", "hub.verify_token"}
    assert defs["plain"].methods == ("POST",) and defs["plain"].challenge is None


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"auth": "basic"}, "unknown auth 'basic'"),
        ({"auth": "signature"}, "needs a 'signature:' mapping"),
        ({"auth": "none", "signature": {"scheme": "github", "secret": "x"}}, "auth is 'none'"),
        ({"apikey": {"in": "path", "name": "k"}}, "a path key is the last segment"),
        ({"dedupe": {"source": "delivery_id"}}, "this hook has none"),
        ({"dedupe": {"header": "A", "source": "body_hash"}}, "expected {header"),
        ({"max_body": 0}, "positive number of bytes"),
        ({"response": {"status": 500}}, "2xx"),
        ({"response": {"body": "{{ oops"}}, "webhooks.h.response.body"),
        ({"signature": {"scheme": "github", "secret": "${MISSING_ONE}"}}, "MISSING_ONE"),
        ({"methods": "GET"}, "webhooks.h.methods: expected a list such as [GET, POST]"),
        ({"methods": []}, "expected a list"),
        ({"methods": ["GET", "TRACE"]}, "webhooks.h.methods[1]: 'TRACE' is not one of"),
        ({"methods": [None]}, "None is not one of"),
        ({"challenge": "hub.challenge"}, "webhooks.h.challenge: expected {query"),
        ({"challenge": {}}, "the query parameter to echo is required"),
        ({"challenge": {"query": "c", "echo": 1}}, "unknown option; valid: query, verify_token"),
        ({"challenge": {"query": "c", "verify_token": "t"}}, "expected {query: <parameter>"),
        ({"challenge": {"query": "c", "verify_token": {"query": "v"}}}, "value: <token>"),
    ],
)
def test_bad_definitions(settings, words):
    with pytest.raises(ConfigError) as error:
        load_definitions({"h": settings}, None, environ={})
    assert words in str(error.value)


def test_scrubber_hides_registered_secrets_and_key_shapes():
    scrubber = SecretScrubber()
    scrubber.register("s3cr3t-value", "abc")  # too short to scrub safely: ignored
    _, key = new_api_key("x")
    record = logging.LogRecord(
        "t", logging.INFO, "f", 1, "got %s and %s and abc", ("s3cr3t-value", key), None
    )
    record.header = f"Bearer {key}"
    assert scrubber.filter(record) is True
    message = record.getMessage()
    assert "s3cr3t-value" not in message and key not in message and "abc" in message
    assert key not in record.header
