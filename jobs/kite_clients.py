"""The worker's per-account Kite clients (ticker.infra.kite.clients), one set per process."""

from __future__ import annotations

from ticker.infra.kite.clients import AccountUnavailable, KiteClients
from ticker.jobs.context import Deps

__all__ = ["AccountUnavailable", "KiteClients", "kite_clients"]


def kite_clients(deps: Deps) -> KiteClients:
    if deps.kite_clients is None:
        deps.kite_clients = KiteClients(deps.accounts, deps.settings, deps.kite_http)
    return deps.kite_clients
