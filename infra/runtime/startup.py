"""Process start-up shared by every `ticker` command: settings, logging, secret registration."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from ticker.infra.runtime.logs import register_secret, setup_logging
from ticker.infra.runtime.settings import Settings, SettingsError, load_settings


def init_process(**overrides: object) -> Settings:
    """Load settings (exit 2 with a readable message when invalid) and configure logging."""
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"ticker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure(settings)
    return settings


def configure(settings: Settings) -> None:
    """Logging as the settings say, and every secret they hold kept out of the logs."""
    setup_logging(settings.log_level, settings.log_format)
    for secret in (settings.api_key, settings.admin_api_key, settings.kite_api_secret, settings.kite_access_token,
                   settings.account_encryption_key, settings.jwt_secret):
        if secret is not None:
            for part in secret.get_secret_value().split(","):
                register_secret(part.strip())


def stop_event() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT, so a process can stop taking work and drain."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, event.set)
    return event
