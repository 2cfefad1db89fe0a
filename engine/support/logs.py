"""Logging, configured once at start-up: readable text on a terminal, or JSON lines.

Modules log with `extra={"trigger_instance": ..., "rule": ..., "execution": ...}`; the JSON
format carries those fields so every line about an event can be found by its ids.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else was passed in `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            # exc_text is the scrubbed traceback when the SecretScrubber saw the record.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


# Anything shaped like a Hookyard API key (see engine.model.apikeys.KEY_PATTERN).
_API_KEY_SHAPE = re.compile(r"hy_[A-Za-z0-9]{8}[A-Za-z0-9]{8,}")
SCRUBBED = "***"


class SecretScrubber(logging.Filter):
    """Replaces registered secrets and anything shaped like an API key in log records.

    Webhook secrets are registered when definitions load; API keys are caught by their
    shape (so keys seen in requests need no registration and cannot grow a list).
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def secrets(self) -> list[str]:
        """The registered values (handed to the ingest writer process, which logs too)."""
        with self._lock:
            return sorted(self._secrets)

    def register(self, *secrets: str) -> None:
        # Very short values would scrub ordinary words; a secret that short is no secret.
        wanted = {s for s in secrets if isinstance(s, str) and len(s) >= 6}
        with self._lock:
            if wanted - self._secrets:
                self._secrets |= wanted
                longest_first = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, longest_first)))

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(SCRUBBED, text)
        return _API_KEY_SHAPE.sub("hy_" + SCRUBBED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, self.scrub(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


# One per process: every handler configure_logging installs uses it.
scrubber = SecretScrubber()


def register_secrets(*secrets: str) -> None:
    """Never log these values (webhook secrets, signing keys...)."""
    scrubber.register(*secrets)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(scrubber)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per request: too much at webhook rates.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
