"""Webhook definitions: who may post to a hook and how it answers, checked at start.

From ``webhooks.<name>`` in config.yaml and a pack's ``webhooks/*.yaml`` (the same keys).
Unknown keys, schemes and placements fail at start with the file and line; secrets may be
``${ENV_VAR}`` references, expanded once from the environment (a missing one is an error
naming it). A hook without a definition takes an API key in the standard places.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, EngineError
from engine.http.jwt_auth import JwtVerifier
from engine.http.rate_limits import RateLimit
from engine.http.signatures import SignatureScheme, build_scheme
from engine.model.hook_payload import CREDENTIAL_HEADERS, CREDENTIAL_QUERY
from engine.model.names import MAX_NAME_CHARS, too_long
from engine.rules.rule import normalize_webhook_name
from engine.rules.templates import compile_template, is_template
from engine.rules.yamlsource import KEY, Located, format_path, parse_yaml
from engine.support.durations import rate_per_second

AUTH_MODES = ("apikey", "signature", "jwt", "none")
KEY_PLACES = ("header", "query", "path", "body")
DEDUPE_SOURCES = ("body_hash", "delivery_id")
SETTINGS = (
    "auth",
    "apikey",
    "signature",
    "jwt",
    "dedupe",
    "max_body",
    "response",
    "methods",
    "challenge",
    "rate_limit",
)
# The methods a hook may accept (POST alone unless its definition lists others).
HOOK_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CHALLENGE_OPTIONS = ("query", "verify_token")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class KeyPlacement:
    place: str  # header | query | path | body
    name: str = ""  # header, query parameter or body field name (unused for path)


@dataclass(frozen=True)
class Dedupe:
    header: str | None = None
    source: str | None = None  # body_hash | delivery_id


@dataclass(frozen=True)
class CustomResponse:
    status: int
    body: Any


@dataclass(frozen=True)
class Challenge:
    """A sender's endpoint check (Meta's GET with `hub.challenge`, Microsoft Graph's POST
    with `validationToken`): the value of query parameter `query` is echoed as text."""

    query: str
    # Meta sends back the token configured on its side in `hub.verify_token`: when set,
    # only a challenge carrying it is answered.
    verify_query: str | None = None
    verify_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class WebhookDefinition:
    name: str
    auth: str = "apikey"
    apikey: KeyPlacement | None = None
    signature: SignatureScheme | None = None
    jwt: JwtVerifier | None = None
    dedupe: Dedupe | None = None
    max_body: int | None = None
    response: CustomResponse | None = None
    methods: tuple[str, ...] = ("POST",)
    challenge: Challenge | None = None
    # Requests per second to this hook from every sender together (engine.http.rate_limits).
    rate_limit: RateLimit | None = None
    # Expanded secret values, registered with the log scrubber.
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @functools.cached_property
    def credential_headers(self) -> frozenset[str]:
        """Headers (lower-case) that carry a credential and are never stored: the ones
        every hook drops (engine.model.hook_payload.CREDENTIAL_HEADERS) and this hook's own."""
        names = set(CREDENTIAL_HEADERS)
        if self.signature is not None:
            names.update(self.signature.header_names)
        if self.jwt is not None:
            names.add(self.jwt.header)
        if self.apikey is not None and self.apikey.place == "header":
            names.add(self.apikey.name)
        return frozenset(name.lower() for name in names)

    @functools.cached_property
    def credential_query(self) -> frozenset[str]:
        """Query parameters (lower-case) that carry a credential and are never stored."""
        names = set(CREDENTIAL_QUERY)
        if self.apikey is not None and self.apikey.place == "query":
            names.add(self.apikey.name)
        if self.challenge is not None and self.challenge.verify_query is not None:
            names.add(self.challenge.verify_query)
        return frozenset(name.lower() for name in names)


@dataclass(frozen=True)
class _Source:
    """Where one hook's settings were written: located data and its path inside."""

    located: Located | None
    path: tuple[Any, ...]
    file: str

    def where(self, *path: Any, at_key: bool = False) -> str:
        full = (*self.path, *path)
        line = column = None
        if self.located is not None:
            line, column = self.located.position((*full, KEY) if at_key else full)
        place = ":".join(str(p) for p in (self.file, line, column) if p is not None)
        return f"{place}: {format_path(full)}"


def load_definitions(
    config: Mapping[str, Any] | None,
    config_file: str | None,
    pack_specs: Iterable[Any] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, WebhookDefinition]:
    """Every defined hook by name; ConfigError (with file:line) on the first problem.

    `pack_specs` are engine.packs WebhookSpec-like objects (name, settings, source, pack).
    """
    environ = os.environ if environ is None else environ
    definitions: dict[str, WebhookDefinition] = {}
    config = config or {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"{config_file or '<settings>'}: webhooks: expected a mapping of hooks")
    located = _locate(config_file)
    for raw_name, settings in config.items():
        source = _Source(located, ("webhooks", raw_name), config_file or "<settings>")
        definition = build_definition(str(raw_name), settings, source, environ)
        definitions[definition.name] = definition
    for spec in pack_specs:
        file = spec.source or f"pack {spec.pack}"
        source = _Source(_locate(spec.source), (), file)
        if spec.name in definitions:
            raise ConfigError(
                f"{file}: webhook {spec.name!r} is also defined in "
                f"{config_file or 'the settings'}; a hook has one definition"
            )
        definitions[spec.name] = build_definition(spec.name, spec.settings, source, environ)
    return definitions


def _locate(file: str | None) -> Located | None:
    if not file:
        return None
    try:
        return parse_yaml(Path(file).read_text(encoding="utf-8"), file)
    except (OSError, EngineError):
        return None  # the settings loaded already; positions are a courtesy


def build_definition(
    raw_name: str, settings: Any, source: _Source, environ: Mapping[str, str]
) -> WebhookDefinition:
    name = normalize_webhook_name(raw_name)
    if not name:
        raise ConfigError(f"{source.where(at_key=True)}: a hook needs a name")
    if len(name) > MAX_NAME_CHARS:
        raise ConfigError(
            f"{source.where(at_key=True)}: the hook name {too_long(len(name), MAX_NAME_CHARS)}"
        )
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise ConfigError(f"{source.where()}: expected a mapping of {', '.join(SETTINGS)}")
    for key in settings:
        if key not in SETTINGS:
            raise ConfigError(
                f"{source.where(key, at_key=True)}: unknown webhook setting; "
                f"valid: {', '.join(SETTINGS)}"
            )
    secrets: list[str] = []
    expanded = {k: _expand(v, source, (k,), environ, secrets) for k, v in settings.items()}
    auth = _auth_mode(expanded, source)
    signature = jwt = None
    if expanded.get("signature") is not None:
        signature = _built(build_scheme, expanded["signature"], source, "signature")
    if expanded.get("jwt") is not None:
        jwt = _built(_jwt, expanded["jwt"], source, "jwt")
    return WebhookDefinition(
        name=name,
        auth=auth,
        apikey=_placement(expanded.get("apikey"), source),
        signature=signature,
        jwt=jwt,
        dedupe=_dedupe(expanded.get("dedupe"), source, signature),
        max_body=_max_body(expanded.get("max_body"), source),
        response=_response(expanded.get("response"), source),
        methods=_methods(expanded.get("methods"), source),
        challenge=_challenge(expanded.get("challenge"), source),
        rate_limit=_rate_limit(expanded.get("rate_limit"), source),
        secrets=tuple(secrets),
    )


def _jwt(config: Any, *, where: str) -> JwtVerifier:
    return JwtVerifier(config, where=where)


def _built(factory, config: Any, source: _Source, key: str):
    where = format_path((*source.path, key))
    try:
        return factory(config, where=where)
    except ConfigError as exc:
        # The builders name the option as `<where>.<option>: ...`; point at its line.
        message = str(exc)
        option = re.match(re.escape(where) + r"\.([A-Za-z_]+)", message)
        path = (key, option.group(1)) if option else (key,)
        prefix = source.where(*path).rsplit(": ", 1)[0]
        raise ConfigError(f"{prefix}: {message}") from None


def _expand(
    value: Any, source: _Source, path: tuple[Any, ...], environ: Mapping[str, str], seen: list
) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            variable = match.group(1)
            if variable not in environ:
                raise ConfigError(
                    f"{source.where(*path)}: environment variable {variable} is not set"
                )
            seen.append(environ[variable])
            return environ[variable]

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, Mapping):
        return {k: _expand(v, source, (*path, k), environ, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, source, (*path, i), environ, seen) for i, v in enumerate(value)]
    return value


def _auth_mode(settings: Mapping[str, Any], source: _Source) -> str:
    auth = settings.get("auth")
    if auth is None:
        # Omitted: the one method configured, else an API key.
        given = [m for m in ("signature", "jwt") if settings.get(m) is not None]
        auth = given[0] if len(given) == 1 else "apikey"
    if auth not in AUTH_MODES:
        raise ConfigError(
            f"{source.where('auth')}: unknown auth {auth!r}; valid: {', '.join(AUTH_MODES)}"
        )
    for method in ("signature", "jwt"):
        if auth == method and settings.get(method) is None:
            raise ConfigError(f"{source.where('auth')}: auth {method} needs a '{method}:' mapping")
        if auth != method and settings.get(method) is not None:
            raise ConfigError(
                f"{source.where(method, at_key=True)}: '{method}' is set but auth is {auth!r}; "
                f"set auth: {method} or remove it"
            )
    if auth != "apikey" and settings.get("apikey") is not None:
        raise ConfigError(
            f"{source.where('apikey', at_key=True)}: 'apikey' placement is set but auth is {auth!r}"
        )
    return auth


def _placement(value: Any, source: _Source) -> KeyPlacement | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source.where('apikey')}: expected {{in: header|query|path|body}}")
    for key in value:
        if key not in ("in", "name"):
            raise ConfigError(
                f"{source.where('apikey', key, at_key=True)}: unknown option; valid: in, name"
            )
    place = value.get("in")
    if place not in KEY_PLACES:
        raise ConfigError(
            f"{source.where('apikey', 'in')}: {place!r} is not one of: {', '.join(KEY_PLACES)}"
        )
    name = value.get("name")
    if place == "path":
        if name is not None:
            raise ConfigError(
                f"{source.where('apikey', 'name')}: a path key is the last segment; no name"
            )
        return KeyPlacement("path")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{source.where('apikey', 'name')}: required for in: {place}")
    return KeyPlacement(place, name.strip())


def _dedupe(value: Any, source: _Source, signature: SignatureScheme | None) -> Dedupe | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ConfigError(
            f"{source.where('dedupe')}: expected {{header: <name>}} or "
            f"{{source: {' | '.join(DEDUPE_SOURCES)}}}"
        )
    (key, setting), *_ = value.items()
    if key == "header" and isinstance(setting, str) and setting.strip():
        return Dedupe(header=setting.strip())
    if key == "source" and setting in DEDUPE_SOURCES:
        if setting == "delivery_id" and signature is None:
            raise ConfigError(
                f"{source.where('dedupe', 'source')}: delivery_id comes from a signature "
                "scheme; this hook has none"
            )
        return Dedupe(source=setting)
    if key not in ("header", "source"):
        raise ConfigError(
            f"{source.where('dedupe', key, at_key=True)}: unknown option; valid: header, source"
        )
    raise ConfigError(
        f"{source.where('dedupe', key)}: expected a header name or one of "
        f"{', '.join(DEDUPE_SOURCES)}"
    )


def _rate_limit(value: Any, source: _Source) -> RateLimit | None:
    """`100/s`, or `{rate: 100/s, burst: 200}`."""
    if value is None:
        return None
    options = value if isinstance(value, Mapping) else {"rate": value}
    for key in options:
        if key not in ("rate", "burst"):
            where = source.where("rate_limit", key, at_key=True)
            raise ConfigError(f"{where}: unknown option; valid: rate, burst")
    try:
        rate = rate_per_second(options.get("rate"))
    except ValueError as exc:
        raise ConfigError(f"{source.where('rate_limit', 'rate')}: {exc}") from None
    if not rate:
        raise ConfigError(f"{source.where('rate_limit', 'rate')}: give a rate above 0")
    burst = options.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int | float) or burst < 0:
        raise ConfigError(f"{source.where('rate_limit', 'burst')}: expected a number of requests")
    return RateLimit(rate, float(burst))


def _max_body(value: Any, source: _Source) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{source.where('max_body')}: expected a positive number of bytes")
    return value


def _methods(value: Any, source: _Source) -> tuple[str, ...]:
    if value is None:
        return ("POST",)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{source.where('methods')}: expected a list such as [GET, POST]")
    methods: list[str] = []
    for index, method in enumerate(value):
        name = method.upper() if isinstance(method, str) else method
        if name not in HOOK_METHODS:
            raise ConfigError(
                f"{source.where('methods', index)}: {method!r} is not one of "
                f"{', '.join(HOOK_METHODS)}"
            )
        if name not in methods:
            methods.append(name)
    return tuple(methods)


def _challenge(value: Any, source: _Source) -> Challenge | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{source.where('challenge')}: expected {{query: <parameter>, verify_token: "
            "{query: <parameter>, value: <token>}}"
        )
    for key in value:
        if key not in CHALLENGE_OPTIONS:
            raise ConfigError(
                f"{source.where('challenge', key, at_key=True)}: unknown option; "
                f"valid: {', '.join(CHALLENGE_OPTIONS)}"
            )
    query = value.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ConfigError(
            f"{source.where('challenge', 'query')}: the query parameter to echo is required "
            "(e.g. hub.challenge, validationToken)"
        )
    verify = value.get("verify_token")
    if verify is None:
        return Challenge(query.strip())
    if (
        not isinstance(verify, Mapping)
        or set(verify) != {"query", "value"}
        or not all(isinstance(verify[k], str) and verify[k].strip() for k in ("query", "value"))
    ):
        raise ConfigError(
            f"{source.where('challenge', 'verify_token')}: expected {{query: <parameter>, "
            "value: <token>}} (e.g. {query: hub.verify_token, value: ${META_VERIFY_TOKEN}})"
        )
    return Challenge(query.strip(), verify["query"].strip(), verify["value"])


def _response(value: Any, source: _Source) -> CustomResponse | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source.where('response')}: expected {{status: 200, body: ...}}")
    for key in value:
        if key not in ("status", "body"):
            raise ConfigError(
                f"{source.where('response', key, at_key=True)}: unknown option; valid: status, body"
            )
    status = value.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 299:
        raise ConfigError(f"{source.where('response', 'status')}: expected a 2xx status")
    body = value.get("body")
    _check_templates(body, source, ("response", "body"))
    return CustomResponse(status, body)


def _check_templates(value: Any, source: _Source, path: tuple[Any, ...]) -> None:
    if isinstance(value, str) and is_template(value):
        try:
            compile_template(value)
        except EngineError as exc:
            raise ConfigError(f"{source.where(*path)}: {exc}") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_templates(item, source, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_templates(item, source, (*path, index))
