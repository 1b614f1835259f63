"""Names shared by the process rooms: Redis channels and keys, arq queues, job names, control messages.

The streamer, the jobs and the HTTP layer never import each other; they agree through this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

# --- arq queues and job function names ---------------------------------------------------------
ORDERS_QUEUE_SUFFIX = "orders"
DEFAULT_QUEUE_SUFFIX = "default"

JOB_PLACE_ORDER = "place_order"
JOB_MODIFY_ORDER = "modify_order"
JOB_CANCEL_ORDER = "cancel_order"
JOB_FETCH_HISTORY = "fetch_history"
JOB_REFRESH_INSTRUMENTS = "refresh_instruments"
JOB_REFRESH_TOKENS = "refresh_tokens"
JOB_EXCHANGE_REQUEST_TOKEN = "exchange_request_token"
JOB_SYNC_ORDERS = "sync_orders"
JOB_CLEANUP = "cleanup"
JOB_REBALANCE_STRIKES = "rebalance_strikes"
JOB_PORTFOLIO = "portfolio"
JOB_REFRESH_PORTFOLIO = "refresh_portfolio"
JOB_PLACE_GTT = "place_gtt"
JOB_MODIFY_GTT = "modify_gtt"
JOB_DELETE_GTT = "delete_gtt"
JOB_ORDER_MARGINS = "order_margins"
JOB_PLACE_MF_ORDER = "place_mf_order"
JOB_CANCEL_MF_ORDER = "cancel_mf_order"
JOB_PLACE_MF_SIP = "place_mf_sip"
JOB_MODIFY_MF_SIP = "modify_mf_sip"
JOB_CANCEL_MF_SIP = "cancel_mf_sip"

GTT_JOBS = frozenset({JOB_PLACE_GTT, JOB_MODIFY_GTT, JOB_DELETE_GTT})
MF_JOBS = frozenset({JOB_PLACE_MF_ORDER, JOB_CANCEL_MF_ORDER, JOB_PLACE_MF_SIP, JOB_MODIFY_MF_SIP, JOB_CANCEL_MF_SIP})
# The orders queue (short poll delay) carries every job a trader waits on before acting.
ORDER_JOBS = frozenset({JOB_PLACE_ORDER, JOB_MODIFY_ORDER, JOB_CANCEL_ORDER, *GTT_JOBS, *MF_JOBS, JOB_ORDER_MARGINS})


ORDERS_SHARD = "orders"  # the shard of order updates on a sharded tick bus
DIRECTORY_SHARD = "shards"


@dataclass(frozen=True)
class Names:
    """Every Redis channel and key the system uses, derived from two settings.

    `prefix` is PUBLISH_CHANNEL_PREFIX (what tick subscribers listen to); `namespace` holds
    internal keys (queues, leases, limits) so two deployments can share one Redis.
    """

    prefix: str = "ticker:nifty"
    namespace: str = "ticker"

    # --- the tick bus on a Redis Cluster (TICK_REDIS_CLUSTER) ---
    def shard(self, tag: str) -> Names:
        """The names of one shard of a sharded tick bus: every channel, history stream and the
        sequence hash of the shard carry the hash tag `{tag}`, so they live in one slot (one
        master) and one script can touch them all. Ticks and chains are sharded by underlying
        (NIFTY, BANKNIFTY, a stock's symbol); order updates are their own shard, `ORDERS_SHARD`."""
        return Names(f"{self.prefix}:{{{tag}}}", self.namespace)

    @property
    def shards(self) -> str:
        """Set of the shards a sharded tick bus has carried (consumers subscribe to each)."""
        return f"{self.prefix}:{{{DIRECTORY_SHARD}}}:members"

    @property
    def shard_directory(self) -> str:
        """Sharded channel on which a shard's tag is published the first time it is added to `shards`."""
        return f"{self.prefix}:{{{DIRECTORY_SHARD}}}:directory"

    # pub/sub channels
    @property
    def options(self) -> str:
        return f"{self.prefix}:options"

    @property
    def underlying(self) -> str:
        return f"{self.prefix}:underlying"

    @property
    def orders(self) -> str:
        return f"{self.prefix}:orders"

    @property
    def chain(self) -> str:
        """Option chains' figures and changed rows, one JSON object per chain and interval."""
        return f"{self.prefix}:chain"

    # history (Redis Streams) and sequencing of the channels above; see core/tick_envelope.py
    @property
    def ticks_history(self) -> str:
        """Stream of every options and underlying message (one offset covers a tick subscription)."""
        return f"{self.prefix}:ticks:history"

    @property
    def chain_history(self) -> str:
        return f"{self.prefix}:chain:history"

    @property
    def orders_history(self) -> str:
        return f"{self.prefix}:orders:history"

    @property
    def sequence(self) -> str:
        """Hash channel -> last seq published on it, and `epoch` (new whenever the counts restart)."""
        return f"{self.prefix}:sequence"

    @property
    def control(self) -> str:
        return f"{self.namespace}:control"

    # keys
    @property
    def latest(self) -> str:
        """Hash token -> latest tick JSON, for late joiners and GET /quotes."""
        return f"{self.prefix}:latest"

    def oi_open(self, day: str) -> str:
        """Hash token -> the first OI the streamer saw on `day` (YYYY-MM-DD, IST) from 09:15."""
        return f"{self.prefix}:oi_open:{day}"

    def atm_iv(self, underlying: str, expiry: str) -> str:
        """Hash day (YYYY-MM-DD) -> that day's last ATM IV of one chain (expiry YYYY-MM-DD)."""
        return f"{self.prefix}:atm_iv:{underlying}:{expiry}"

    @property
    def orders_queue(self) -> str:
        return f"{self.namespace}:queue:{ORDERS_QUEUE_SUFFIX}"

    @property
    def default_queue(self) -> str:
        return f"{self.namespace}:queue:{DEFAULT_QUEUE_SUFFIX}"

    def queue_for(self, job_name: str) -> str:
        return self.orders_queue if job_name in ORDER_JOBS else self.default_queue

    def lease(self, account_id: str) -> str:
        return f"{self.namespace}:lease:{account_id}"

    def heartbeat(self, process: str) -> str:
        return f"{self.namespace}:heartbeat:{process}"

    def key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))


# --- control channel ---------------------------------------------------------------------------
ControlKind = Literal["subscriptions", "tokens", "instruments"]


class ControlMessage(BaseModel):
    """Published on `Names.control` when something the streamer holds has changed."""

    kind: ControlKind
    account_id: str | None = None
    tokens: list[int] = Field(default_factory=list)
    reason: str = ""


# `tokens` messages that report a problem with an account's token rather than a fix: a streamer
# reloads the account but does not try a token it saw refused again. Any other `tokens` message that
# names an account (a token stored, credentials saved) means "try this account again".
TOKEN_REFUSED_REASON = "access token refused by the Kite ticker"
LOGIN_REFUSED_REASON = "automated login refused by Kite"
TOKEN_PROBLEM_REASONS = frozenset({TOKEN_REFUSED_REASON, LOGIN_REFUSED_REASON})
