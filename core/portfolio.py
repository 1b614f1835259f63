"""The portfolio snapshot: what the refresh job stores in Redis and `GET /portfolio/*`, `GET /trades`
and `GET /account/profile` serve.

A snapshot is Kite's answer (positions, holdings, margins, the day's trades or the user's profile;
MF instruments, orders, SIPs or holdings) as Kite sent it, with the time it was fetched. One refresh
fetches every kind of its group (the portfolio's, or the mutual funds'), so those snapshots are as
new as each other. Refreshes are deduplicated by a per-account generation: a refresh job bumps it when it
starts, so every request made before that start shares the job (it will fetch after the request),
and any request made after gets a new one (the running job may have fetched too early for it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ticker.core.contracts import Names

SnapshotKind = Literal["positions", "holdings", "margins", "trades", "profile",
                       "mf_instruments", "mf_orders", "mf_sips", "mf_holdings"]
# Refreshed together: the portfolio (also on a schedule) and the mutual funds (on request and after MF writes).
RefreshGroup = Literal["portfolio", "mf"]
SNAPSHOT_KINDS: tuple[SnapshotKind, ...] = ("positions", "holdings", "margins", "trades", "profile")
MF_SNAPSHOT_KINDS: tuple[SnapshotKind, ...] = ("mf_instruments", "mf_orders", "mf_sips", "mf_holdings")
KINDS_OF_GROUP: dict[str, tuple[SnapshotKind, ...]] = {"portfolio": SNAPSHOT_KINDS, "mf": MF_SNAPSHOT_KINDS}
GROUP_OF_KIND: dict[str, RefreshGroup] = {**dict.fromkeys(SNAPSHOT_KINDS, "portfolio"),
                                          **dict.fromkeys(MF_SNAPSHOT_KINDS, "mf")}
SNAPSHOT_TTL_SECONDS = 7 * 86_400  # long enough to serve through a weekend; an as_of tells the age


class PortfolioSnapshot(BaseModel):
    account_id: str
    kind: SnapshotKind
    as_of: datetime
    data: Any


class RefreshPayload(BaseModel, extra="forbid"):
    """The refresh job's payload: one account, or (scheduled runs) every active one."""

    account_id: str | None = Field(None, min_length=1, max_length=64)
    group: RefreshGroup = "portfolio"


def snapshot_key(names: Names, account_id: str, kind: str) -> str:
    return names.key("portfolio-snapshot", account_id, kind)


def generation_key(names: Names, account_id: str, group: RefreshGroup = "portfolio") -> str:
    extra = () if group == "portfolio" else (group,)
    return names.key("portfolio-refresh", account_id, *extra)


def refresh_parts(names: Names, account_id: str, generation: int,
                  group: RefreshGroup = "portfolio") -> tuple[str, ...]:
    """What a refresh job id derives from (`derived_job_id(JOB_REFRESH_PORTFOLIO, *parts)`). arq's job
    keys are not namespaced: the namespace keeps deployments sharing one Redis apart."""
    extra = () if group == "portfolio" else (group,)
    return names.namespace, account_id, str(generation), *extra


def order_fills(trades: Any, order_id: str | None) -> list[dict[str, Any]]:
    """The trades of one order out of a trades snapshot's data (Kite's `GET /trades` list)."""
    if order_id is None or not isinstance(trades, list):
        return []
    return [t for t in trades if isinstance(t, dict) and str(t.get("order_id")) == order_id]


def filled_quantity(fills: list[dict[str, Any]]) -> int:
    return sum(int(t.get("quantity") or 0) for t in fills)
