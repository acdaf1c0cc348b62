"""What the e-mail channel saw of its own sending, for IP reputation (app/ops/ip_reputation.py): the local
address of each SMTP connection (the address the server judges us by) and each message's outcome per
address and hour: `accepted`, `refused` (a 5xx, or every recipient refused) or `deferred` (a 4xx).

Kept in Redis with expiries (addresses 7 days, hourly counters 25 hours), written by every notification
worker at once with atomic increments. Recording is bookkeeping: a failure to record never fails a
delivery. A connection that never reached the server is not an outcome: it says nothing about reputation.
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta
from typing import Literal

from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc

log = logging.getLogger(__name__)

Outcome = Literal["accepted", "refused", "deferred"]
OUTCOMES: tuple[Outcome, ...] = ("accepted", "refused", "deferred")
SOURCES_KEY = f"{KEY_PREFIX}smtp:sources"
SOURCE_KEEP = timedelta(days=7)
HOURS = 24


def _hour_key(address: str, at: datetime) -> str:
    return f"{KEY_PREFIX}smtp:outcomes:{address}:{at:%Y%m%d%H}"


def local_address(sock: socket.socket | None) -> str | None:
    """The connection's local IP address, or None when there is no connected socket."""
    try:
        return sock.getsockname()[0] if sock is not None else None
    except OSError:
        return None


def record(settings: Settings, address: str | None, outcome: Outcome) -> None:
    """Count one message's outcome for the address it was sent from (best effort)."""
    if not address:
        return
    now = datetime.now(UTC)
    try:
        pipe = get_redis(settings).pipeline(transaction=False)
        pipe.hset(SOURCES_KEY, address, iso_utc(now))
        key = _hour_key(address, now)
        pipe.hincrby(key, outcome, 1)
        pipe.expire(key, (HOURS + 1) * 3600)
        pipe.execute()
    except Exception as exc:  # Redis away: the delivery still counts
        log.debug("could not record the SMTP outcome for %s: %s", address, exc)


def sources(settings: Settings) -> dict[str, str]:
    """Addresses seen in the last 7 days, newest first: address -> last seen (ISO 8601)."""
    seen = get_redis(settings).hgetall(SOURCES_KEY)
    cutoff = iso_utc(datetime.now(UTC) - SOURCE_KEEP)
    fresh = {a: t for a, t in seen.items() if t >= cutoff}
    return dict(sorted(fresh.items(), key=lambda kv: kv[1], reverse=True))


def outcomes_24h(settings: Settings, address: str) -> dict[str, int]:
    """The address's message outcomes over the last 24 hours (the current hour and the 23 before)."""
    now = datetime.now(UTC)
    pipe = get_redis(settings).pipeline(transaction=False)
    for h in range(HOURS):
        pipe.hgetall(_hour_key(address, now - timedelta(hours=h)))
    totals = dict.fromkeys(OUTCOMES, 0)
    for bucket in pipe.execute():
        for name in OUTCOMES:
            totals[name] += int(bucket.get(name, 0))
    return totals
