"""Structured logging with a redaction filter.

Secrets and PII never reach a log line: known secret values registered at startup are replaced
literally, and patterns (key=value pairs for sensitive keys, Kite auth headers, emails, Indian
phone numbers, Fernet tokens) are masked in messages and in `extra` fields alike.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from typing import Any

import orjson

MASK = "***"
SENSITIVE_KEYS = re.compile(
    r"(access_token|api_secret|secret|password|passwd|totp|otp|request_token|api_key|authorization|"
    r"enctoken|checksum|pin|jwt|user_id|email|phone)",
    re.I,
)
_PATTERNS = [
    # key=value / "key": "value" for sensitive keys
    re.compile(
        r"""(?P<k>(?:access_token|api_secret|password|totp_secret|totp|request_token|checksum|enctoken|secret)"""
        r"""["']?\s*[:=]\s*["']?)(?P<v>[^\s"'&,}]+)""",
        re.I,
    ),
    # Authorization: token api_key:access_token
    re.compile(r"(?P<k>token\s+[\w-]+:)(?P<v>[\w-]+)", re.I),
    re.compile(r"(?P<k>Bearer\s+)(?P<v>[\w.-]+)", re.I),
]
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
# A mobile number stands alone: ten digits inside a longer word (a hex job id, a hash) are not one.
_PHONE = re.compile(r"(?<![0-9A-Za-z])(?:\+?91[\s-]?)?[6-9]\d{9}(?![0-9A-Za-z])")
_FERNET = re.compile(r"gAAAAA[\w-]{20,}={0,2}")

_known: set[str] = set()
_known_lock = threading.Lock()
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears from now on (min 6 chars to avoid noise)."""
    if value and len(value) >= 6:
        with _known_lock:
            _known.add(value)


def redact(text: str) -> str:
    for secret in tuple(_known):
        if secret in text:
            text = text.replace(secret, MASK)
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m["k"] + MASK, text)
    text = _FERNET.sub(MASK, text)
    text = _EMAIL.sub(MASK, text)
    return _PHONE.sub(MASK, text)


def _redact_value(key: str, value: Any) -> Any:
    if SENSITIVE_KEYS.search(key) and value not in (None, "", False):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites the record in place so every handler and formatter sees the masked version."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STD_ATTRS:
                setattr(record, key, _redact_value(key, value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS:
                doc[key] = value
        if record.exc_text:
            doc["exc"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STD_ATTRS)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line} {extras}" if extras else line
        return f"{line}\n{record.exc_text}" if record.exc_text else line


class QuietRetries(logging.Filter):
    """For a library that logs a full traceback on every retry while a server is down (asyncpg's pool
    refilling its minimum size): one line, at most once per `every` seconds; our own `Outage` says
    when the dependency is back."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = record.getMessage()
        if now - self._last.get(key, -self.every) < self.every:
            return False
        if len(self._last) > 100:  # a bounded memory of messages
            self._last.clear()
        self._last[key] = now
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()} ({type(record.exc_info[1]).__name__})"
            record.args = None
        record.exc_info, record.exc_text = None, None
        return True


def setup_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "asyncio", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    pool_log = logging.getLogger("asyncpg.pool")
    pool_log.filters[:] = [QuietRetries()]
