"""What the mutual-fund checks need to know, read from the account's MF snapshots in Redis (written by
the `refresh_portfolio` job, group "mf"): the funds' rules, whether the account holds a fund, and which
fund a SIP is in. The web checks a request with them before it is accepted and the MF job again before
it calls Kite; with no snapshot yet, the request's shape is all there is to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.core.mutual_funds import MfFund, funds_of, holds
from ticker.core.portfolio import PortfolioSnapshot, SnapshotKind, snapshot_key


@dataclass(frozen=True)
class MfFacts:
    funds: dict[str, MfFund] | None  # None: the account's MF instruments are not known yet
    holdings: list[dict[str, Any]] | None
    sips: list[dict[str, Any]] | None

    def held(self, tradingsymbol: str) -> bool | None:
        return None if self.holdings is None else holds(self.holdings, tradingsymbol)

    def fund_of_sip(self, sip_id: str) -> MfFund | None:
        """The fund of a SIP as last seen, when both are known."""
        sip = next((s for s in self.sips or [] if str(s.get("sip_id")) == sip_id), None)
        if sip is None or self.funds is None:
            return None
        return self.funds.get(str(sip.get("tradingsymbol")))


async def _data(redis: Redis, names: Names, account_id: str, kind: SnapshotKind) -> Any:
    raw = await redis.get(snapshot_key(names, account_id, kind))
    return None if raw is None else PortfolioSnapshot.model_validate_json(raw).data


async def mf_facts(redis: Redis, names: Names, account_id: str) -> MfFacts:
    funds = await _data(redis, names, account_id, "mf_instruments")
    return MfFacts(funds=None if funds is None else funds_of(funds),
                   holdings=await _data(redis, names, account_id, "mf_holdings"),
                   sips=await _data(redis, names, account_id, "mf_sips"))
