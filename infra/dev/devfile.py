"""`.ticker/dev.json`: where a running `ticker dev` is, read back by the one-shot commands.

`ticker dev` writes the URLs and keys it chose (embedded Redis and PostgreSQL, the generated API
and encryption keys) to `.ticker/dev.json`. `ticker tail`, `ticker accounts` and `ticker migrate`
started in that folder, or below it, fill every setting the environment (or `.env`) leaves unset
from that file, so they work next to `make dev` without copying anything by hand. Never in
production: there a missing setting is a mistake to report, not something to guess.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from ticker.infra.runtime.settings import Settings

DEV_FOLDER = ".ticker"
DEV_FILE = "dev.json"
# dev.json keys that are settings of the same name; the rest (health URLs, the example order) are not.
SETTING_KEYS = ("redis_url", "tick_redis_url", "tick_redis_cluster", "database_url", "api_key", "account_encryption_key", "redis_namespace",
                "publish_channel_prefix")


def find(start: Path | None = None) -> Path | None:
    """The nearest `.ticker/dev.json` in `start` (default: the working folder) or a folder above it."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEV_FOLDER / DEV_FILE
        if candidate.is_file():
            return candidate
    return None


def read(path: Path) -> dict[str, str]:
    """The settings a dev.json holds; an unreadable or foreign file holds none."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: doc[k] for k in SETTING_KEYS if isinstance(doc.get(k), str) and doc[k]}


def write(path: Path, info: dict[str, object]) -> None:
    """Write dev.json readable by its owner only (it holds the API key and the encryption key), whole
    or not at all: whoever waits for it to appear reads it complete."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info, indent=2))
    os.replace(partial, path)


def unset_in(settings: Settings, start: Path | None = None) -> tuple[Path | None, dict[str, str]]:
    """The nearest dev.json and the settings it holds that `settings` leaves unset ((None, {}) in
    production or without one). Whatever the environment or `.env` set is kept; an empty value
    (`REDIS_URL=` as in a copied .env.example) counts as unset."""
    if settings.environment == "production":
        return None, {}
    path = find(start)
    if path is None:
        return None, {}
    values = {k: v for k, v in read(path).items()
              if k not in settings.model_fields_set or getattr(settings, k) is None}
    return (path, values) if values else (None, {})


def shell_assignments(path: Path) -> str:
    """`U=... H=... A=...` for a shell (`eval "$(ticker dev --env)"`): the web URL and the trading and
    admin key headers the README's examples use. In dev the admin key is the trading key unless
    ADMIN_API_KEY was set."""
    doc = json.loads(path.read_text())
    key = doc["api_key"]
    admin = doc.get("admin_api_key") or key
    lines = {"U": doc["web_url"], "H": f"X-API-Key: {key}", "A": f"X-API-Key: {admin}"}
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in lines.items())
