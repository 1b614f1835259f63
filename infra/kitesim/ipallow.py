"""Kite's static-IP rule (SEBI's retail-algo rules, from 1 April 2026): order requests come only from
an address the account registered.

Only order endpoints are checked (placement, modification, cancellation, and here GTT placement,
modification and deletion, which place orders too); the order book, positions, quotes and the
ticker WebSocket answer any address. With an allowlist set, an order request from any other source
address is refused with HTTP 403 `PermissionException` before it reaches the rate limits or the
order book. Kite publishes no exact wording for this refusal; the message names the address seen
and the fix. With no allowlist (the default) every address may place orders.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable

from ticker.infra.kitesim.envelopes import KiteError

ORDER_ROUTES = frozenset({
    "POST /orders/{variety}",
    "PUT /orders/{variety}/{order_id}",
    "DELETE /orders/{variety}/{order_id}",
    "POST /gtt/triggers",
    "PUT /gtt/triggers/{trigger_id}",
    "DELETE /gtt/triggers/{trigger_id}",
})
MAX_IPS = 64


def parse_ips(values: Iterable[str]) -> frozenset[str]:
    """Normalised addresses (IPv4 or IPv6); ValueError names the first that is not one."""
    out = set()
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            out.add(str(ipaddress.ip_address(text)))
        except ValueError:
            raise ValueError(f"not an IP address: {text[:64]!r}") from None
    if len(out) > MAX_IPS:
        raise ValueError(f"at most {MAX_IPS} addresses")
    return frozenset(out)


class OrderIpAllowlist:
    def __init__(self, ips: Iterable[str] = ()) -> None:
        self.ips = parse_ips(ips)
        self.refused: Counter[str] = Counter()  # source address -> order requests refused

    def set(self, ips: Iterable[str]) -> None:
        self.ips = parse_ips(ips)

    def check(self, route_key: str, remote: str | None) -> None:
        """Raise Kite's refusal when an order route is called from an address not on the list."""
        if not self.ips or route_key not in ORDER_ROUTES:
            return
        seen = _normal(remote)
        if seen in self.ips:
            return
        self.refused[seen] += 1
        raise KiteError(403, "PermissionException",
                        f"Order requests are not allowed from IP {seen}: it is not a static IP registered for "
                        "this app. Register it under IP Whitelist on the Kite Connect developer console.")

    def describe(self) -> dict:
        return {"ips": sorted(self.ips), "refused": dict(self.refused)}


def _normal(remote: str | None) -> str:
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or "unknown"
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.2 on a dual-stack socket
    return str(mapped or address)
