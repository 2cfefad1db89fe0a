"""Bearer JWT verification for webhooks whose senders authenticate with a token.

The accepted algorithms come from config only, never from the token's header: that is
what defeats `alg: none` and the HS256-signed-with-the-RSA-public-key confusion. `exp`
is always required. Everything a token can get wrong becomes a `TokenError` (401) whose
message says which check failed and nothing about the key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import jwt
from jwt.algorithms import get_default_algorithms

from engine.errors import AuthError, ConfigError

_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_KEY_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_OPTIONS = ("algorithms", "secret", "public_key", "audience", "issuer", "header", "leeway")
# Only a name this plain is echoed back when a token's algorithm is refused.
_PRINTABLE_ALG = re.compile(r"[A-Za-z0-9]{1,16}")


class TokenError(AuthError):
    """Raised when a request's JWT is missing, malformed, expired or not acceptable."""

    REASONS: ClassVar[tuple[str, ...]] = (
        "missing",
        "malformed",
        "algorithm",
        "signature",
        "expired",
        "not_yet_valid",
        "claims",
        "audience",
        "issuer",
    )

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS, reason
        super().__init__(message, status=401)
        self.reason = reason
        # RFC 6750 §3: no error code when the request carried no token at all.
        self.challenge = (
            'Bearer realm="hookyard"'
            if reason == "missing"
            else 'Bearer realm="hookyard", error="invalid_token"'
        )


class JwtVerifier:
    """Checks the bearer token of a request against one webhook's `jwt:` settings."""

    def __init__(self, config: Mapping[str, Any], *, where: str) -> None:
        if not isinstance(config, Mapping):
            raise ConfigError(f"{where}: expected a mapping with 'algorithms' and a key")
        for key in config:
            if key not in _OPTIONS:
                raise ConfigError(
                    f"{where}.{key}: unknown jwt option; valid options: {', '.join(_OPTIONS)}"
                )
        self.algorithms = _algorithms(config.get("algorithms"), where)
        self._key = _key(config, self.algorithms, where)
        self.audience = _optional_text(config, "audience", where)
        self.issuer = _optional_text(config, "issuer", where)
        self.header = _optional_text(config, "header", where) or "Authorization"
        leeway = config.get("leeway", 0)
        if isinstance(leeway, bool) or not isinstance(leeway, int | float) or leeway < 0:
            raise ConfigError(f"{where}.leeway: expected a non-negative number of seconds")
        self.leeway = float(leeway)

    def __repr__(self) -> str:
        return f"JwtVerifier(algorithms={self.algorithms!r}, header={self.header!r})"

    def verify(self, headers: Mapping[str, str], now: float | None = None) -> dict[str, Any]:
        """Return the token's claims, or raise TokenError saying what was wrong."""
        token = self._token(headers)
        self._check_algorithm(token)
        required = ["exp"]
        if self.audience is not None:
            required.append("aud")
        if self.issuer is not None:
            required.append("iss")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": required,
                    "enforce_minimum_key_length": True,
                    # Times are checked below against `now`, which pyjwt cannot take.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAlgorithmError:
            raise self._algorithm_refused(token) from None
        except jwt.InvalidSignatureError:
            raise TokenError("signature", "token signature invalid") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenError("claims", f"token has no {error.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenError("audience", "token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise TokenError("issuer", "token issuer not accepted") from None
        except jwt.DecodeError:
            raise TokenError("malformed", "malformed bearer token") from None
        except jwt.InvalidTokenError:
            raise TokenError("claims", "token claims invalid") from None
        self._check_times(claims, time.time() if now is None else now)
        return claims

    def _token(self, headers: Mapping[str, str]) -> str:
        wanted = self.header.lower()
        values = [value for key, value in headers.items() if key.lower() == wanted]
        if len(values) != 1 or not values[0].strip():
            raise TokenError("missing", "missing bearer token")
        scheme, _, rest = values[0].strip().partition(" ")
        if scheme.lower() == "bearer":
            token = rest.strip()
        elif wanted == "authorization":
            # Basic or another scheme in Authorization is not a token we were asked for.
            raise TokenError("missing", "missing bearer token")
        else:
            token = values[0].strip()
        if not token:
            raise TokenError("missing", "missing bearer token")
        return token

    def _check_algorithm(self, token: str) -> None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenError("malformed", "malformed bearer token") from None
        if header.get("alg") not in self.algorithms:
            raise self._algorithm_refused(token)

    @staticmethod
    def _algorithm_refused(token: str) -> TokenError:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.DecodeError:
            alg = None
        shown = alg if isinstance(alg, str) and _PRINTABLE_ALG.fullmatch(alg) else "(unnamed)"
        return TokenError("algorithm", f"token algorithm {shown} not allowed")

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        for claim in ("exp", "nbf", "iat"):
            value = claims.get(claim)
            if claim in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise TokenError("claims", f"token claim {claim!r} is not a number")
        if claims["exp"] <= now - self.leeway:
            raise TokenError("expired", "token expired")
        if "nbf" in claims and claims["nbf"] > now + self.leeway:
            raise TokenError("not_yet_valid", "token not yet valid")
        if "iat" in claims and claims["iat"] > now + self.leeway:
            raise TokenError("not_yet_valid", "token issued in the future")


def _algorithms(value: Any, where: str) -> list[str]:
    field = f"{where}.algorithms"
    allowed = ", ".join(_HMAC_ALGORITHMS + _KEY_ALGORITHMS)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{field}: required, a list such as [HS256] or [RS256]")
    for name in value:
        if isinstance(name, str) and name.lower() == "none":
            raise ConfigError(f"{field}: 'none' would accept unsigned tokens; choose: {allowed}")
        if name not in _HMAC_ALGORITHMS + _KEY_ALGORITHMS:
            raise ConfigError(f"{field}: unknown algorithm {name!r}; valid: {allowed}")
    hmac_used = [name for name in value if name in _HMAC_ALGORITHMS]
    if hmac_used and len(hmac_used) != len(value):
        # One key cannot be both a shared secret and a public key; mixing the two families
        # is how a public key ends up verifying an attacker's HMAC.
        raise ConfigError(f"{field}: do not mix HS* with RS*/PS*/ES*/EdDSA algorithms")
    return list(value)


def _key(config: Mapping[str, Any], algorithms: list[str], where: str) -> Any:
    uses_secret = algorithms[0] in _HMAC_ALGORITHMS
    wanted, unwanted = ("secret", "public_key") if uses_secret else ("public_key", "secret")
    if config.get(unwanted) is not None:
        raise ConfigError(
            f"{where}.{unwanted}: not used with {', '.join(algorithms)}; use {wanted}"
        )
    raw = config.get(wanted)
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{where}.{wanted}: required for {', '.join(algorithms)}")
    if not uses_secret and "PRIVATE KEY" in raw:
        raise ConfigError(f"{where}.public_key: holds a private key; give the public key")
    registry = get_default_algorithms()
    prepared = None
    for name in algorithms:
        algorithm = registry[name]
        try:
            prepared = algorithm.prepare_key(raw)
        except (jwt.InvalidKeyError, ValueError, TypeError):
            raise ConfigError(f"{where}.{wanted}: not a valid key for {name}") from None
        if algorithm.check_key_length(prepared) is not None:
            raise ConfigError(f"{where}.{wanted}: too short for {name} (see RFC 7518 3.2)")
    return prepared


def _optional_text(config: Mapping[str, Any], key: str, where: str) -> str | None:
    value = config.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where}.{key}: expected a non-empty string")
    return value
