"""Which way our calls to Kite's REST API leave: straight out, or through a proxy.

Since April 2026 Kite accepts order requests (place, modify, cancel) only from a static IP the
account registered. A PaaS gives its dynos no fixed address, so `KITE_PROXY_URL` names an HTTP
proxy that has one (CONNECT for https, as every Kite call is): order and GTT writes go through it,
and with `KITE_PROXY_ALL=true` every REST call does. Everything else (quotes, history, the order
book) may leave from any address, and going direct keeps it off the proxy's path.

The proxy URL may carry credentials; they are sent as Proxy-Authorization and never shown:
`describe()` gives only host and port.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ticker.infra.runtime.logs import register_secret
from ticker.infra.runtime.settings import Settings


@dataclass(frozen=True)
class Egress:
    proxy: str | None = None  # scheme://host:port, no credentials
    headers: dict[str, str] | None = field(default=None, repr=False)  # Proxy-Authorization, when given
    all_rest: bool = False

    def proxy_for(self, order_path: bool) -> str | None:
        """The proxy a call goes through (None: direct). `order_path`: an order or GTT write."""
        if self.proxy is None or not (order_path or self.all_rest):
            return None
        return self.proxy

    def describe(self) -> dict[str, object]:
        """For /health: the order path's egress and whether other REST calls share it."""
        if self.proxy is None:
            return {"order_path": "direct", "other_rest": "direct"}
        where = self.proxy.split("://", 1)[1]
        return {"order_path": "proxy", "proxy": where, "other_rest": "proxy" if self.all_rest else "direct"}


def parse_proxy(url: str, all_rest: bool = False) -> Egress:
    """An Egress from `http://[user:pass@]host:port` (the port defaults to 80 / 443)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("a proxy URL looks like http://[user:pass@]host:port")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    headers = None
    if parts.username is not None:
        password = unquote(parts.password or "")
        register_secret(password)
        token = base64.b64encode(f"{unquote(parts.username)}:{password}".encode()).decode()
        register_secret(token)
        headers = {"Proxy-Authorization": f"Basic {token}"}
    return Egress(f"{parts.scheme}://{host}:{port}", headers, all_rest)


def egress_from(settings: Settings) -> Egress:
    if settings.kite_proxy_url is None:
        return Egress()
    return parse_proxy(settings.kite_proxy_url.get_secret_value(), settings.kite_proxy_all)
