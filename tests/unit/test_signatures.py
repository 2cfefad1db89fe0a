"""Signature schemes, checked against signatures made by the providers' own libraries/vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe
from multidict import CIMultiDict

from engine.errors import AuthError, ConfigError, RegistryError
from engine.http.signatures import (
    SignatureError,
    VerifiedRequest,
    build_scheme,
    register_scheme,
    scheme_names,
)

WHERE = "config.yaml:12: webhooks.hook.signature"
NOW = 1_700_000_000
BODY = b'{"event": "push", "n": 1}'
OTHER_BODY = b'{"event": "push", "n": 2}'


def refused(scheme, headers, body=BODY, now=NOW) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        scheme.verify(headers, body, now)
    return caught.value


# --- registry and config -------------------------------------------------------


def test_every_documented_scheme_is_registered():
    assert scheme_names() == ["github", "hmac", "shopify", "slack", "standard-webhooks", "stripe"]


def test_a_second_scheme_with_a_taken_name_is_refused():
    with pytest.raises(RegistryError, match="github"):
        register_scheme("github", {}, lambda options, where: None)


def test_unknown_scheme_names_where_and_the_choices():
    with pytest.raises(ConfigError) as caught:
        build_scheme({"scheme": "gitlab", "secret": "s"}, where=WHERE)
    message = str(caught.value)
    assert message.startswith(WHERE + ".scheme:")
    assert "'gitlab'" in message
    assert "github, hmac, shopify, slack, standard-webhooks, stripe" in message


def test_missing_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match=r"signature\.scheme: missing"):
        build_scheme({"secret": "s"}, where=WHERE)


def test_unknown_option_names_the_field_and_the_valid_options():
    with pytest.raises(ConfigError) as caught:
        build_scheme({"scheme": "github", "secret": "s", "tolerance": 5}, where=WHERE)
    assert str(caught.value).startswith(WHERE + ".tolerance: unknown option")
    assert "valid options: secret" in str(caught.value)


def test_missing_secret_is_a_config_error():
    with pytest.raises(ConfigError, match=r"signature\.secret: required"):
        build_scheme({"scheme": "stripe"}, where=WHERE)


def test_empty_secret_from_an_unset_variable_is_a_config_error():
    with pytest.raises(ConfigError, match="secret: empty"):
        build_scheme({"scheme": "github", "secret": ""}, where=WHERE)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("algorithm", "md5", "not one of: sha1, sha256, sha512"),
        ("encoding", "base32", "not one of: hex, base64"),
        ("header", 5, "expected a string"),
    ],
)
def test_hmac_options_are_checked(option, value, expected):
    config = {"scheme": "hmac", "secret": "s", "header": "X-Sig", option: value}
    with pytest.raises(ConfigError, match=expected):
        build_scheme(config, where=WHERE)


@pytest.mark.parametrize("tolerance", [0, -5, True, "300"])
def test_tolerance_must_be_a_positive_number(tolerance):
    with pytest.raises(ConfigError, match="tolerance"):
        build_scheme({"scheme": "slack", "secret": "s", "tolerance": tolerance}, where=WHERE)


def test_standard_webhooks_secret_must_be_base64():
    with pytest.raises(ConfigError, match="whsec_"):
        build_scheme({"scheme": "standard-webhooks", "secret": "whsec_!!!"}, where=WHERE)


def test_secrets_do_not_appear_in_repr():
    scheme = build_scheme({"scheme": "github", "secret": "hunter2-secret"}, where=WHERE)
    assert "hunter2" not in repr(scheme)


def test_signature_error_is_a_401_auth_error():
    scheme = build_scheme({"scheme": "github", "secret": "s"}, where=WHERE)
    error = refused(scheme, {})
    assert isinstance(error, AuthError)
    assert error.status == 401


# --- github ----------------------------------------------------------------------

GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.fixture
def github():
    return build_scheme({"scheme": "github", "secret": GITHUB_SECRET}, where=WHERE)


def test_github_accepts_its_published_example(github):
    headers = CIMultiDict(
        {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "72d3162e-cc78"}
    )
    assert github.verify(headers, GITHUB_BODY, NOW) == VerifiedRequest("github", "72d3162e-cc78")


def test_header_names_are_case_insensitive_in_a_plain_dict(github):
    headers = {"x-hub-signature-256": GITHUB_SIGNATURE}
    assert github.verify(headers, GITHUB_BODY, NOW).delivery_id is None


def test_github_lists_both_signature_headers_for_stripping(github):
    assert set(github.header_names) == {"X-Hub-Signature-256", "X-Hub-Signature"}


def test_missing_signature_says_which_header(github):
    error = refused(github, {"X-GitHub-Delivery": "1"}, GITHUB_BODY)
    assert (error.reason, str(error)) == ("missing", "missing X-Hub-Signature-256 header")


@pytest.mark.parametrize(
    "signature",
    [
        GITHUB_SIGNATURE[:-2],  # truncated
        GITHUB_SIGNATURE.upper().replace("SHA256=", "sha256="),  # upper-case hex
        GITHUB_SIGNATURE.replace("sha256=", "sha1="),  # wrong prefix
        GITHUB_SIGNATURE.removeprefix("sha256="),  # no prefix
        "sha256=" + "zz" * 32,  # not hex
        "sha256=" + base64.b64encode(bytes.fromhex(GITHUB_SIGNATURE[7:])).decode(),
    ],
)
def test_malformed_github_signatures_are_refused(github, signature):
    error = refused(github, {"X-Hub-Signature-256": signature}, GITHUB_BODY)
    assert error.reason == "malformed"
    assert "X-Hub-Signature-256" in str(error)
    assert GITHUB_SIGNATURE[7:] not in str(error)


def test_valid_signature_over_another_body_is_a_mismatch(github):
    error = refused(github, {"X-Hub-Signature-256": GITHUB_SIGNATURE}, b"Hello, World?")
    assert (error.reason, str(error)) == ("mismatch", "signature does not match the body")


def test_a_signature_made_with_another_secret_is_a_mismatch():
    scheme = build_scheme({"scheme": "github", "secret": "another secret"}, where=WHERE)
    error = refused(scheme, {"X-Hub-Signature-256": GITHUB_SIGNATURE}, GITHUB_BODY)
    assert error.reason == "mismatch"
    assert "another secret" not in str(error)


def test_a_header_given_twice_is_refused(github):
    headers = CIMultiDict()
    headers.add("X-Hub-Signature-256", GITHUB_SIGNATURE)
    headers.add("x-hub-signature-256", "sha256=" + "0" * 64)
    assert refused(github, headers, GITHUB_BODY).reason == "malformed"


# --- generic hmac ----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_generic_hmac_accepts_each_algorithm_and_encoding(algorithm, encoding):
    config = {
        "scheme": "hmac",
        "secret": "generic-secret",
        "header": "X-Signature",
        "algorithm": algorithm,
        "prefix": f"{algorithm}=",
        "encoding": encoding,
    }
    scheme = build_scheme(config, where=WHERE)
    digest = hmac.new(b"generic-secret", BODY, getattr(hashlib, algorithm)).digest()
    encoded = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    headers = {"x-signature": f"{algorithm}={encoded}"}
    assert scheme.verify(headers, BODY, NOW) == VerifiedRequest("hmac", None)
    assert scheme.header_names == ("X-Signature",)
    assert refused(scheme, headers, OTHER_BODY).reason == "mismatch"


def test_generic_hmac_refuses_a_digest_of_the_wrong_algorithm():
    config = {"scheme": "hmac", "secret": "k", "header": "X-Sig", "algorithm": "sha512"}
    scheme = build_scheme(config, where=WHERE)
    sha256_hex = hmac.new(b"k", BODY, hashlib.sha256).hexdigest()
    assert refused(scheme, {"X-Sig": sha256_hex}).reason == "malformed"


# --- shopify ---------------------------------------------------------------------


def test_shopify_accepts_base64_hmac_and_reports_the_event_id():
    scheme = build_scheme({"scheme": "shopify", "secret": "shpss_secret"}, where=WHERE)
    signature = base64.b64encode(hmac.new(b"shpss_secret", BODY, hashlib.sha256).digest())
    headers = {"X-Shopify-Hmac-Sha256": signature.decode(), "X-Shopify-Event-Id": "ev-1"}
    assert scheme.verify(headers, BODY, NOW) == VerifiedRequest("shopify", "ev-1")
    assert refused(scheme, headers, OTHER_BODY).reason == "mismatch"
    truncated = {"X-Shopify-Hmac-Sha256": signature.decode()[:-4]}
    assert refused(scheme, truncated).reason == "malformed"
    hex_instead = {"X-Shopify-Hmac-Sha256": hmac.new(b"x", BODY, hashlib.sha256).hexdigest()}
    assert refused(scheme, hex_instead).reason == "malformed"


# --- stripe ----------------------------------------------------------------------

STRIPE_SECRET = "whsec_test_secret_for_hookyard"


@pytest.fixture
def stripe_scheme():
    return build_scheme({"scheme": "stripe", "secret": STRIPE_SECRET}, where=WHERE)


def stripe_header(body: bytes = BODY, timestamp: int = NOW, secret: str = STRIPE_SECRET) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=timestamp
    )


def test_stripe_accepts_a_header_made_by_the_stripe_library(stripe_scheme):
    headers = {"Stripe-Signature": stripe_header()}
    assert stripe_scheme.verify(headers, BODY, NOW + 299) == VerifiedRequest("stripe", None)
    # The same header passes Stripe's own verifier, so both agree on the format.
    assert stripe.WebhookSignature.verify_header(BODY, headers["Stripe-Signature"], STRIPE_SECRET)


def test_stripe_accepts_when_any_v1_matches(stripe_scheme):
    good = stripe_header().split(",v1=")[1]
    header = f"t={NOW},v1={'0' * 64},v1={good},v0={'1' * 64}"
    assert stripe_scheme.verify({"Stripe-Signature": header}, BODY, NOW).scheme == "stripe"


@pytest.mark.parametrize("timestamp", [NOW - 301, NOW + 301])
def test_stripe_refuses_stale_and_future_timestamps(stripe_scheme, timestamp):
    error = refused(stripe_scheme, {"Stripe-Signature": stripe_header(timestamp=timestamp)})
    assert (error.reason, str(error)) == (
        "stale",
        "signature timestamp outside the 300 s tolerance",
    )


def test_stripe_tolerance_is_configurable():
    scheme = build_scheme(
        {"scheme": "stripe", "secret": STRIPE_SECRET, "tolerance": 30}, where=WHERE
    )
    error = refused(scheme, {"Stripe-Signature": stripe_header(timestamp=NOW - 31)})
    assert str(error) == "signature timestamp outside the 30 s tolerance"


def test_stripe_signature_over_another_body_or_time_is_a_mismatch(stripe_scheme):
    header = stripe_header(OTHER_BODY)
    assert refused(stripe_scheme, {"Stripe-Signature": header}).reason == "mismatch"
    moved = stripe_header().replace(f"t={NOW}", f"t={NOW + 1}")
    assert refused(stripe_scheme, {"Stripe-Signature": moved}).reason == "mismatch"


@pytest.mark.parametrize(
    "header",
    [
        f"v1={'0' * 64}",  # no timestamp
        f"t={NOW}",  # no v1
        f"t={NOW},v0={'0' * 64}",  # only the legacy scheme
        f"t=soon,v1={'0' * 64}",  # non-numeric timestamp
        f"t={NOW},t={NOW},v1={'0' * 64}",  # ambiguous timestamp
        "garbage",
    ],
)
def test_stripe_malformed_headers(stripe_scheme, header):
    assert refused(stripe_scheme, {"Stripe-Signature": header}).reason == "malformed"


def test_stripe_upper_case_or_truncated_v1_does_not_match(stripe_scheme):
    timestamp, signature = stripe_header().split(",v1=")
    for bad in (signature.upper(), signature[:-1]):
        header = f"{timestamp},v1={bad}"
        assert refused(stripe_scheme, {"Stripe-Signature": header}).reason == "mismatch"


# --- slack -----------------------------------------------------------------------

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
def slack():
    return build_scheme({"scheme": "slack", "secret": SLACK_SECRET}, where=WHERE)


def slack_headers(body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    basestring = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(SLACK_SECRET.encode(), basestring, hashlib.sha256).hexdigest()
    return {"X-Slack-Signature": f"v0={digest}", "X-Slack-Request-Timestamp": str(timestamp)}


def test_slack_accepts_its_documented_basestring(slack):
    assert slack.verify(slack_headers(), BODY, NOW - 300) == VerifiedRequest("slack", None)


@pytest.mark.parametrize("timestamp", [NOW - 301, NOW + 301])
def test_slack_refuses_stale_and_future_timestamps(slack, timestamp):
    assert refused(slack, slack_headers(timestamp=timestamp)).reason == "stale"


def test_slack_abuse(slack):
    headers = slack_headers()
    assert refused(slack, headers, OTHER_BODY).reason == "mismatch"
    no_stamp = {"X-Slack-Signature": headers["X-Slack-Signature"]}
    assert str(refused(slack, no_stamp)) == "missing X-Slack-Request-Timestamp header"
    for stamp in ("17e8", "-1", "1700000000.5", " "):
        bad = {**headers, "X-Slack-Request-Timestamp": stamp}
        assert refused(slack, bad).reason in {"malformed", "missing"}
    for signature in (
        headers["X-Slack-Signature"].replace("v0=", "v1="),
        headers["X-Slack-Signature"][:-1],
        "v0=" + headers["X-Slack-Signature"][3:].upper(),
    ):
        bad = {**headers, "X-Slack-Signature": signature}
        assert refused(slack, bad).reason == "malformed"


# --- standard webhooks -----------------------------------------------------------

WHSEC = "whsec_" + base64.b64encode(b"a 24-byte-or-longer secret key!!").decode()


@pytest.fixture
def standard():
    return build_scheme({"scheme": "standard-webhooks", "secret": WHSEC}, where=WHERE)


def standard_headers(body: bytes = BODY, timestamp: int = NOW, msg_id: str = "msg_2b") -> dict:
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = standardwebhooks.Webhook(WHSEC).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_standard_webhooks_accepts_the_reference_library(standard):
    headers = standard_headers()
    result = standard.verify(CIMultiDict(headers), BODY, NOW)
    assert result == VerifiedRequest("standard-webhooks", "msg_2b")
    assert standard.header_names == ("webhook-signature",)


def test_standard_webhooks_secret_without_padding_or_prefix_works():
    unpadded = WHSEC.removeprefix("whsec_").rstrip("=")
    scheme = build_scheme({"scheme": "standard-webhooks", "secret": unpadded}, where=WHERE)
    assert scheme.verify(standard_headers(), BODY, NOW).delivery_id == "msg_2b"


def test_standard_webhooks_accepts_if_any_signature_matches(standard):
    headers = standard_headers()
    wrong = "v1," + base64.b64encode(b"\0" * 32).decode()
    other_version = "v1a,c29tZXRoaW5nIGVsc2U="
    headers["webhook-signature"] = f"{wrong} {other_version} {headers['webhook-signature']}"
    assert standard.verify(headers, BODY, NOW).delivery_id == "msg_2b"


@pytest.mark.parametrize("timestamp", [NOW - 301, NOW + 301])
def test_standard_webhooks_refuses_stale_and_future(standard, timestamp):
    error = refused(standard, standard_headers(timestamp=timestamp))
    assert error.reason == "stale"


def test_standard_webhooks_tolerance_is_configurable():
    config = {"scheme": "standard-webhooks", "secret": WHSEC, "tolerance": 600}
    scheme = build_scheme(config, where=WHERE)
    assert scheme.verify(standard_headers(timestamp=NOW - 500), BODY, NOW).scheme
    assert refused(scheme, standard_headers(timestamp=NOW - 601)).reason == "stale"


def test_standard_webhooks_id_is_signed(standard):
    headers = {**standard_headers(), "webhook-id": "msg_other"}
    assert refused(standard, headers).reason == "mismatch"


def test_standard_webhooks_abuse(standard):
    headers = standard_headers()
    assert refused(standard, headers, OTHER_BODY).reason == "mismatch"
    for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        without = {k: v for k, v in headers.items() if k != missing}
        error = refused(standard, without)
        assert (error.reason, str(error)) == ("missing", f"missing {missing} header")
    signature = headers["webhook-signature"]
    cases = {
        "malformed": [
            signature.replace("v1,", "v2,"),
            signature.replace(",", "="),
            signature.upper(),
        ],
        "mismatch": [
            signature[:-6],
            signature.replace("v1,", "v1,!"),
            "v1," + signature[3:].upper(),
        ],
    }
    for reason, signatures in cases.items():
        for bad in signatures:
            assert refused(standard, {**headers, "webhook-signature": bad}).reason == reason
    non_numeric = {**headers, "webhook-timestamp": "yesterday"}
    assert refused(standard, non_numeric).reason == "malformed"


def test_error_messages_never_carry_the_expected_signature(standard):
    headers = standard_headers()
    expected = headers["webhook-signature"].split(",")[1]
    for body in (BODY, OTHER_BODY):
        for now in (NOW, NOW + 1000):
            try:
                standard.verify({**headers, "webhook-id": "x"}, body, now)
            except SignatureError as error:
                assert expected not in str(error)
                assert WHSEC.removeprefix("whsec_") not in str(error)
