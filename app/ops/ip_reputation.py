"""IP reputation of the e-mail channel (platform API "Get IP Reputation"): the addresses it sends from, their
DNS blacklist listings, and a score from the channel's own outcomes.

Addresses: `VIGIL_SMTP_SOURCE_IPS` when set, else the local addresses of the SMTP connections the
notification workers made in the last 7 days (app/alerts/smtp_stats.py), newest first.

Look-ups run off the request path: the service host's `dnsbl_monitor` (workers/host/services/
dnsbl_monitor.py) calls `refresh` every `VIGIL_DNSBL_INTERVAL` seconds, which asks again only the
answers whose DNS TTL ran out (NXDOMAIN answers live for the zone's negative TTL, a failed look-up
`FAILURE_TTL` seconds), through dnspython against `VIGIL_DNSBL_NAMESERVERS` (else the system's
resolvers). Each answer is cached in Redis with its expiry; the endpoint reads that cache only, so a
slow or dead resolver never holds a request up. A zone answering an address inside 127.0.0.0/8 lists it
(127.255.255.x is the zone refusing the query: `unknown`); NXDOMAIN or no A record is `clear`; a
timeout, no resolver or any other DNS failure is `unknown`, never an error.

Score (0-100): the share of the last 24 hours' messages the servers accepted, a deferral (4xx) counting
half (100 when there were none), minus `VIGIL_DNSBL_PENALTY` points per listing. Status: `critical`
when listed anywhere or the score is below `VIGIL_IP_REPUTATION_CRITICAL` (50), `warning` below
`VIGIL_IP_REPUTATION_WARNING` (80), `unknown` when a zone could not be checked (yet), else `good`.

`provider`: `VIGIL_SMTP_PROVIDER` when set, else the address's reverse DNS name (PTR, looked up and
cached like the listings), else null.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from app.alerts import smtp_stats
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc

log = logging.getLogger(__name__)

DEFAULT_TTL = 300  # an NXDOMAIN without a SOA to read the negative TTL from
FAILURE_TTL = 60  # a failed look-up is asked again this soon
MIN_TTL = 30  # a zone answering TTL 0 is not asked on every pass


def zones(settings: Settings) -> list[str]:
    return [z.strip().strip(".").lower() for z in settings.dnsbl_zones.split(",") if z.strip()]


def addresses(settings: Settings) -> list[tuple[str, str, str | None]]:
    """(address, source, last_seen): the configured addresses, else the ones the channel was seen using."""
    configured = [a.strip() for a in settings.smtp_source_ips.split(",") if a.strip()]
    if configured:
        return [(a, "configured", None) for a in dict.fromkeys(configured)]
    return [(a, "observed", seen) for a, seen in smtp_stats.sources(settings).items()]


def make_resolver(settings: Settings) -> dns.resolver.Resolver:
    """A resolver on the configured nameservers (`ip` or `ip:port`, `[v6]:port`), else the system's."""
    servers = [s.strip() for s in settings.dnsbl_nameservers.split(",") if s.strip()]
    resolver = dns.resolver.Resolver(configure=not servers)
    if servers:
        found = []
        for server in servers:
            host, port = server, 53
            if server.startswith("["):
                host, _, rest = server[1:].partition("]")
                port = int(rest.lstrip(":") or 53)
            elif server.count(":") == 1:
                host, _, p = server.partition(":")
                port = int(p)
            found.append(dns.nameserver.Do53Nameserver(host, port))
        resolver.nameservers = found
    resolver.timeout = settings.dnsbl_timeout
    resolver.lifetime = settings.dnsbl_timeout
    resolver.cache = None  # our own cache keeps the TTLs; two caches would double them
    return resolver


def _query_name(address: str, zone: str) -> str:
    """`10.2.0.192.zen.spamhaus.org`: the address's reverse name without in-addr.arpa / ip6.arpa."""
    rev = dns.reversename.from_address(address)
    suffix = dns.reversename.ipv4_reverse_domain if ":" not in address else dns.reversename.ipv6_reverse_domain
    return f"{rev.relativize(suffix).to_text()}.{zone}"


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> int:
    try:
        for response in exc.responses().values():
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return max(MIN_TTL, min(rrset.ttl, rrset[0].minimum))
    except Exception:
        pass
    return DEFAULT_TTL


def lookup(resolver: dns.resolver.Resolver, address: str, zone: str) -> dict[str, Any]:
    """One DNSBL look-up: `status` listed / clear / unknown, the answer `codes`, its `ttl`, `error`."""
    try:
        qname = _query_name(address, zone)
    except (dns.exception.SyntaxError, ValueError) as exc:
        return {"status": "unknown", "codes": [], "ttl": DEFAULT_TTL, "error": f"not an IP address: {exc}"}
    try:
        answer = resolver.resolve(qname, "A", search=False)
    except dns.resolver.NXDOMAIN as exc:
        return {"status": "clear", "codes": [], "ttl": _negative_ttl(exc), "error": None}
    except dns.resolver.NoAnswer:
        return {"status": "clear", "codes": [], "ttl": DEFAULT_TTL, "error": None}
    except Exception as exc:  # timeout, no nameservers, no resolv.conf, ...: never a failure of the caller
        return {"status": "unknown", "codes": [], "ttl": FAILURE_TTL, "error": f"{type(exc).__name__}: {exc}"[:300]}
    codes = sorted(r.address for r in answer)
    loopback = [c for c in codes if ipaddress.ip_address(c) in ipaddress.ip_network("127.0.0.0/8")]
    ttl = max(MIN_TTL, answer.rrset.ttl if answer.rrset is not None else DEFAULT_TTL)
    if loopback and all(c.startswith("127.255.255.") for c in loopback):
        return {"status": "unknown", "codes": codes, "ttl": FAILURE_TTL, "error": "the zone refused the query"}
    if loopback:
        return {"status": "listed", "codes": codes, "ttl": ttl, "error": None}
    return {"status": "clear", "codes": codes, "ttl": ttl, "error": None}


def reverse_name(resolver: dns.resolver.Resolver, address: str) -> dict[str, Any]:
    """The PTR name (no trailing dot) or None, with the TTL to cache it for."""
    try:
        answer = resolver.resolve(dns.reversename.from_address(address), "PTR", search=False)
    except dns.resolver.NXDOMAIN as exc:
        return {"name": None, "ttl": _negative_ttl(exc), "error": None}
    except dns.resolver.NoAnswer:
        return {"name": None, "ttl": DEFAULT_TTL, "error": None}
    except Exception as exc:
        return {"name": None, "ttl": FAILURE_TTL, "error": f"{type(exc).__name__}: {exc}"[:300]}
    names = sorted(r.target.to_text().rstrip(".") for r in answer)
    return {"name": names[0] if names else None, "ttl": max(MIN_TTL, answer.rrset.ttl), "error": None}


def _key(kind: str, address: str, zone: str = "") -> str:
    return f"{KEY_PREFIX}ip_reputation:{kind}:{address}:{zone}"


def _store(settings: Settings, key: str, value: dict[str, Any], now: datetime) -> None:
    """Cached until its TTL runs out, and kept a little past it (two passes) so the endpoint still shows
    the last answer while the monitor asks again."""
    ttl = int(value["ttl"])
    entry = {**value, "checked_at": iso_utc(now), "expires_at": iso_utc(now + timedelta(seconds=ttl))}
    get_redis(settings).set(key, json.dumps(entry), ex=ttl + int(2 * max(settings.dnsbl_interval, 1)) + 5)


def _cached(settings: Settings, keys: list[str]) -> list[dict[str, Any] | None]:
    if not keys:
        return []
    return [json.loads(v) if v else None for v in get_redis(settings).mget(keys)]


def refresh(settings: Settings) -> dict[str, int]:
    """Ask again every answer that is missing or expired; how many were asked and found listed / unknown."""
    now = datetime.now(UTC)
    resolver = None
    counts = {"asked": 0, "listed": 0, "unknown": 0, "cached": 0}
    want_ptr = not settings.smtp_provider
    for address, _, _ in addresses(settings):
        keys = [_key("dnsbl", address, z) for z in zones(settings)] + ([_key("ptr", address)] if want_ptr else [])
        for key, entry in zip(keys, _cached(settings, keys), strict=True):
            if entry is not None and entry["expires_at"] > iso_utc(now):
                counts["cached"] += 1
                continue
            resolver = resolver or make_resolver_safely(settings)
            counts["asked"] += 1
            if key.startswith(_key("ptr", address)):
                value = (
                    reverse_name(resolver, address)
                    if resolver
                    else {"name": None, "ttl": FAILURE_TTL, "error": "no resolver"}
                )
            else:
                zone = key.rsplit(":", 1)[1]
                value = lookup(resolver, address, zone) if resolver else _no_resolver()
                counts[value["status"]] = counts.get(value["status"], 0) + 1
            _store(settings, key, value, now)
    return counts


def _no_resolver() -> dict[str, Any]:
    return {"status": "unknown", "codes": [], "ttl": FAILURE_TTL, "error": "no DNS resolver configured"}


def make_resolver_safely(settings: Settings) -> dns.resolver.Resolver | None:
    """None when the system has no resolver configuration (no /etc/resolv.conf) or a nameserver is malformed."""
    try:
        return make_resolver(settings)
    except Exception as exc:
        log.warning("DNSBL resolver unavailable: %s", exc)
        return None


def _status(settings: Settings, score: int, listed: int, unknown: int) -> str:
    if listed or score < settings.ip_reputation_critical:
        return "critical"
    if score < settings.ip_reputation_warning:
        return "warning"
    return "unknown" if unknown else "good"


def report(settings: Settings) -> dict[str, Any]:
    """The endpoint's answer, from the cache and the outcome counters only (no DNS here)."""
    zone_list = zones(settings)
    out = []
    for address, source, last_seen in addresses(settings):
        keys = [_key("dnsbl", address, z) for z in zone_list]
        entries = _cached(settings, keys)
        checks = []
        for zone, entry in zip(zone_list, entries, strict=True):
            entry = entry or {"status": "unknown", "codes": [], "error": "not checked yet", "checked_at": None}
            checks.append(
                {
                    "zone": zone,
                    "status": entry["status"],
                    "codes": entry.get("codes") or [],
                    "checked_at": entry.get("checked_at"),
                    "expires_at": entry.get("expires_at"),
                    "error": entry.get("error"),
                }
            )
        listed = [c["zone"] for c in checks if c["status"] == "listed"]
        unknown = sum(1 for c in checks if c["status"] == "unknown")
        outcomes = smtp_stats.outcomes_24h(settings, address)
        volume = sum(outcomes.values())
        base = 100 if volume == 0 else round(100 * (outcomes["accepted"] + 0.5 * outcomes["deferred"]) / volume)
        score = max(0, min(100, base - settings.dnsbl_penalty * len(listed)))
        provider = settings.smtp_provider or None
        if provider is None:
            (ptr,) = _cached(settings, [_key("ptr", address)])
            provider = (ptr or {}).get("name")
        out.append(
            {
                "ip_address": address,
                "provider": provider,
                "reputation_score": score,
                "blacklists": listed,
                "daily_volume": volume,
                "status": _status(settings, score, len(listed), unknown),
                "source": source,
                "last_seen": last_seen,
                "outcomes_24h": outcomes,
                "checks": checks,
            }
        )
    return {
        "ips": out,
        "zones": zone_list,
        "thresholds": {
            "warning_below": settings.ip_reputation_warning,
            "critical_below": settings.ip_reputation_critical,
            "penalty_per_listing": settings.dnsbl_penalty,
        },
    }
