"""Encoding shared by both stores: JSON columns, UTC timestamps, lease tokens, filters."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine.errors import StoreError
from engine.model.hook_payload import payload_json as hook_payload_json
from engine.model.records import (
    PROCESSED,
    PROCESSING_FAILED,
    TERMINAL_EXECUTION_STATUSES,
    Accepted,
    Enforcement,
    Execution,
    NewExecution,
    NewTriggerInstance,
    TriggerInstance,
)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class UnstorableValue(StoreError):
    """Raised when a value cannot be stored as JSON (NaN, a NUL character, a non-JSON type).

    The caller's data is at fault, not the database: ingest answers it as a client error.
    """


# Built once: json.dumps with options builds a new encoder per call, which costs a third
# of encoding a webhook payload. Encoding keeps no state, so threads may share it.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_json_default)

# A JSON-escaped NUL that is not itself an escaped backslash followed by "u0000".
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# One JSON escape: \\uXXXX (group 1: the hex), or a backslash and any one character.
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)")


def _has_lone_surrogate(text: str) -> bool:
    """Whether JSON `text` escapes a lone UTF-16 surrogate: a high one (D800-DBFF) not
    directly followed by an escaped low one (DC00-DFFF), or a low one on its own.
    Escapes are read left to right, so an escaped backslash is never taken for one."""
    high_ends = -1  # where the escape of an unpaired high surrogate ends, or -1
    for match in _ESCAPE.finditer(text):
        hex_digits = match.group(1)
        unit = int(hex_digits, 16) if hex_digits else -1
        if high_ends != -1:
            if match.start() != high_ends or not 0xDC00 <= unit <= 0xDFFF:
                return True
            high_ends = -1
            continue
        if 0xD800 <= unit <= 0xDBFF:
            high_ends = match.end()
        elif 0xDC00 <= unit <= 0xDFFF:
            return True
    return high_ends != -1


def dumps(value: Any, what: str = "value") -> str:
    """Compact JSON that both stores accept alike.

    Refuses NaN/Infinity and NUL characters, which PostgreSQL's jsonb cannot hold, so a
    payload is stored or refused the same way on SQLite and on PostgreSQL.
    """
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise UnstorableValue(f"cannot store {what} as JSON: {exc}") from exc
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise UnstorableValue(f"cannot store {what}: it contains a NUL character (\\u0000)")
    return text


def check_no_lone_surrogate(text: str, what: str) -> str:
    """`text` (JSON as dumps writes it), unless it holds a lone surrogate: UnstorableValue.

    Checked for trigger instances, which come from outside: SQLite would keep such a
    payload and PostgreSQL refuse it, so both refuse it alike.
    """
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(text):
        raise UnstorableValue(
            f"cannot store {what}: it contains a lone UTF-16 surrogate (\\ud800-\\udfff"
            " outside a pair), which is not text"
        )
    return text


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# SQLite keeps timestamps as fixed-width text so that string order is time order:
# YYYY-MM-DDTHH:MM:SS.ffffffZ in UTC.


def time_to_text(moment: datetime | None) -> str | None:
    # isoformat with fixed microseconds is that layout ("+00:00" cut to
    # "Z") at half the cost of strftime; two of these are written per webhook.
    if moment is None:
        return None
    return as_utc(moment).isoformat(timespec="microseconds")[:26] + "Z"


def time_from_text(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def parse_time(value: datetime | str, name: str) -> datetime:
    """A filter bound given as a datetime or an ISO 8601 string (``Z`` accepted)."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise StoreError(f"filter {name}: expected an ISO 8601 timestamp, got {value!r}")


def new_lease_token() -> str:
    return os.urandom(16).hex()


def log_entry(status: str, moment: datetime) -> dict[str, Any]:
    """One element of an execution's `log` (StackStorm's shape)."""
    return {"status": status, "timestamp": as_utc(moment).isoformat().replace("+00:00", "Z")}


def execution_links(
    new: NewExecution, instance_id: str | None = None, rule_ref: str | None = None
) -> tuple[str | None, str | None]:
    """(trigger_instance_id, rule_ref) copied out of the context so lists can filter on them.

    The context may name them as StackStorm does (``{"trigger_instance": {"id": ...},
    "rule": {"ref": ...}}``) or as plain strings; explicit arguments win.
    """
    context = new.context or {}
    if instance_id is None:
        instance_id = _ref_part(context.get("trigger_instance"), "id")
    if rule_ref is None:
        rule_ref = _ref_part(context.get("rule"), "ref")
    return instance_id, rule_ref


def _ref_part(value: Any, key: str) -> str | None:
    if isinstance(value, Mapping):
        value = value.get(key)
    return value if isinstance(value, str) else None


# --- trigger instance batches -------------------------------------------------------


def first_occurrences(batch: Sequence[NewTriggerInstance]) -> list[int]:
    """For each item, the index of the first item of the batch with its dedupe_key."""
    first_by_key: dict[str, int] = {}
    first_of = []
    for index, item in enumerate(batch):
        if item.dedupe_key is None:
            first_of.append(index)
        else:
            first_of.append(first_by_key.setdefault(item.dedupe_key, index))
    return first_of


def answers_for_batch(first_of: list[int], stored: Mapping[int, Accepted]) -> list[Accepted]:
    """Spread the answers of the first occurrences to the repeats within the batch."""
    answers = []
    for index, first in enumerate(first_of):
        original = stored[first]
        answers.append(original if first == index else Accepted(original.id, duplicate=True))
    return answers


def prepare_trigger_instance(item: NewTriggerInstance) -> tuple[NewTriggerInstance, str]:
    """The item with its payload encoded: done before queueing for group commit, so an
    unstorable payload fails its own caller only."""
    what = f"payload of trigger instance {item.id}"
    if item.post is not None:
        return item, check_no_lone_surrogate(hook_payload_json(item.post), what)
    return item, check_no_lone_surrogate(dumps(item.payload, what), what)


def check_final_status(status: str) -> None:
    if status not in (PROCESSED, PROCESSING_FAILED):
        raise StoreError(
            f"final status {status!r} is not one of {PROCESSED!r}, {PROCESSING_FAILED!r}"
        )


def check_terminal_status(status: str) -> None:
    if status not in TERMINAL_EXECUTION_STATUSES:
        raise StoreError(
            f"status {status!r} is not a final execution status;"
            f" use one of {', '.join(sorted(TERMINAL_EXECUTION_STATUSES))}"
        )


# --- rows to records -------------------------------------------------------------------
# Both drivers give rows addressable by column name; `to_time` turns the driver's
# timestamp value into an aware UTC datetime.

ToTime = Callable[[Any], datetime | None]


def trigger_instance_from_row(row: Any, to_time: ToTime) -> TriggerInstance:
    return TriggerInstance(
        id=row["id"],
        trigger=row["trigger"],
        payload=loads(row["payload"]),
        occurrence_time=to_time(row["occurrence_time"]),  # type: ignore[arg-type]
        status=row["status"],
        webhook=row["webhook"],
        dedupe_key=row["dedupe_key"],
        lease_token=row["lease_token"],
        claims=row["claims"],
    )


def enforcement_from_row(row: Any, to_time: ToTime) -> Enforcement:
    return Enforcement(
        id=row["id"],
        trigger_instance_id=row["trigger_instance_id"],
        rule_ref=row["rule_ref"],
        status=row["status"],
        enforced_at=to_time(row["enforced_at"]),  # type: ignore[arg-type]
        failure_reason=row["failure_reason"],
        execution_id=row["execution_id"],
        trace=loads(row["trace"]),
        rule_id=row["rule_id"],
    )


def execution_from_row(row: Any, to_time: ToTime) -> Execution:
    return Execution(
        id=row["id"],
        action=row["action"],
        parameters=loads(row["parameters"]),
        status=row["status"],
        context=loads(row["context"]),
        result=loads(row["result"]),
        created_at=to_time(row["created_at"]),
        started_at=to_time(row["started_at"]),
        finished_at=to_time(row["finished_at"]),
        attempt=row["attempt"],
        log=tuple(loads(row["log"])),
        lease_token=row["lease_token"],
        lease_expires_at=to_time(row["lease_expires_at"]),
        parent=row["parent_id"],
        run_after=to_time(row["run_after"]),
    )


# --- list filters -------------------------------------------------------------


@dataclass(frozen=True)
class FilterSpec:
    """How one documented filter name maps to a column: equality or a time bound."""

    column: str
    kind: str  # "eq" | "eq_or_null" (the value "null" matches no value) | "gt" | "lt"


TRIGGER_INSTANCE_FILTERS = {
    "trigger": FilterSpec("trigger", "eq"),
    "status": FilterSpec("status", "eq"),
    "webhook": FilterSpec("webhook", "eq"),
    "timestamp_gt": FilterSpec("occurrence_time", "gt"),
    "timestamp_lt": FilterSpec("occurrence_time", "lt"),
}
ENFORCEMENT_FILTERS = {
    "trigger_instance": FilterSpec("trigger_instance_id", "eq"),
    "rule_ref": FilterSpec("rule_ref", "eq"),
    "execution": FilterSpec("execution_id", "eq"),
    "enforced_at_gt": FilterSpec("enforced_at", "gt"),
    "enforced_at_lt": FilterSpec("enforced_at", "lt"),
}
EXECUTION_FILTERS = {
    "action": FilterSpec("action", "eq"),
    "status": FilterSpec("status", "eq"),
    "trigger_instance": FilterSpec("trigger_instance_id", "eq"),
    "rule": FilterSpec("rule_ref", "eq"),
    # StackStorm's `parent`: an execution id, or "null" for executions without a parent.
    "parent": FilterSpec("parent_id", "eq_or_null"),
    "timestamp_gt": FilterSpec("created_at", "gt"),
    "timestamp_lt": FilterSpec("created_at", "lt"),
}


@dataclass(frozen=True)
class Condition:
    """One parsed filter: `column op value`, or `column IN values` for a list."""

    column: str
    op: str  # "=" | ">" | "<" | "in" | "is null"
    value: Any


def parse_filters(filters: Mapping[str, Any], known: Mapping[str, FilterSpec]) -> list[Condition]:
    """Validate filter names and values; a None value means "no filter".

    Equality filters take a string or a list of strings (any of them); time bounds take a
    datetime or an ISO 8601 string and are returned as aware UTC datetimes.
    """
    conditions = []
    for name, value in filters.items():
        spec = known.get(name)
        if spec is None:
            raise StoreError(f"unknown filter {name!r}; known: {', '.join(known)}")
        if value is None:
            continue
        if spec.kind == "eq_or_null" and value in ("null", "None"):
            conditions.append(Condition(spec.column, "is null", None))
        elif spec.kind in ("eq", "eq_or_null"):
            if isinstance(value, list | tuple | set | frozenset):
                values = [str(v) for v in value]
                conditions.append(Condition(spec.column, "in", values))
            else:
                conditions.append(Condition(spec.column, "=", str(value)))
        else:
            op = ">" if spec.kind == "gt" else "<"
            conditions.append(Condition(spec.column, op, parse_time(value, name)))
    return conditions


def check_paging(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise StoreError(f"limit and offset must not be negative (got {limit}, {offset})")


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
