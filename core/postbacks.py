"""Kite's order postbacks: how a receiver knows one is genuine.

Pure: no I/O. Every order update Kite sends (over the ticker WebSocket and as an HTTP postback)
carries `checksum` = SHA-256 hex of order_id + order_timestamp + the app's api_secret. Only Kite and
we know the secret, so an update whose checksum we cannot recompute did not come from Kite (or was
changed on the way) and must not reach anyone who acts on order updates.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Literal

Rejection = Literal["missing_checksum", "bad_checksum", "malformed"]
REJECTIONS: tuple[Rejection, ...] = ("missing_checksum", "bad_checksum", "malformed")


_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    # surrogatepass: an update is untrusted input, and no text in it may make hashing it fail
    return hashlib.sha256(f"{order_id}{order_timestamp}{api_secret}".encode("utf-8", "surrogatepass")).hexdigest()


def check_postback(update: Any, api_secret: str) -> Rejection | None:
    """Why this order update is not genuine for the app with `api_secret`; None when it is."""
    if not isinstance(update, dict) or not update.get("order_id"):
        return "malformed"
    given = update.get("checksum")
    if not isinstance(given, str) or not given:
        return "missing_checksum"
    if not _HEX64.match(given):
        return "bad_checksum"
    expected = postback_checksum(str(update["order_id"]), str(update.get("order_timestamp") or ""), api_secret)
    return None if hmac.compare_digest(expected, given.lower()) else "bad_checksum"
