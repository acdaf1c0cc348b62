"""What the notification-preference tests share: stored events with a chosen risk, a quiet-hours period
around now, and a real local DNS server (dnslib) that lists some addresses."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from dnslib import PTR, QTYPE, RR, SOA, A, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from app.core.db import session_scope
from app.models import Camera
from tests.pipeline.resource_data import add_camera, add_event
from tests.servers import free_port


def level_of(risk: int) -> str:
    return "critical" if risk >= 85 else "high" if risk >= 60 else "medium" if risk >= 30 else "low"


def make_event(settings, camera: str, risk: int, level: str | None = None, started: datetime | None = None) -> int:
    """A stored event of `camera` (made if new) with one person detection; the risk level follows the
    score unless given."""
    with session_scope(settings) as session:
        known = session.get(Camera, camera) is not None
    if not known:
        add_camera(settings, camera)
    event_id, _batch, _detections = add_event(
        settings, camera, started=started or datetime.now(UTC), risk=risk, level=level or level_of(risk), batch=False
    )
    return event_id


def period_around_now(label: str = "Now", hours: int = 2) -> dict:
    """A quiet-hours body covering the current UTC time on every day (it may wrap midnight)."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=hours), now + timedelta(hours=hours)
    return {"label": label, "start_time": f"{start:%H:%M:%S}", "end_time": f"{end:%H:%M:%S}"}


def period_elsewhere(label: str = "Elsewhere") -> dict:
    """A period that does not cover the current UTC time: two hours, starting six hours from now."""
    now = datetime.now(UTC)
    start, end = now + timedelta(hours=6), now + timedelta(hours=8)
    return {"label": label, "start_time": f"{start:%H:%M}", "end_time": f"{end:%H:%M}", "days": ["monday", "sun"]}


class Dnsbl(BaseResolver):
    """A DNS server (dnslib, UDP on 127.0.0.1) for one blacklist zone: the `listed` addresses answer
    127.0.0.2 (TTL `ttl`), every other name NXDOMAIN with the zone's SOA; PTR names from `ptr`.
    `queries` records each name asked."""

    def __init__(self, zone: str, listed: list[str], ptr: dict[str, str] | None = None, ttl: int = 120):
        self.zone = zone
        self.listed = {".".join(reversed(a.split("."))) + f".{zone}." for a in listed}
        self.ptr = {".".join(reversed(a.split("."))) + ".in-addr.arpa.": name for a, name in (ptr or {}).items()}
        self.ttl = ttl
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self.port = free_port()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self.server = DNSServer(self, port=self.port, address="127.0.0.1", logger=quiet)

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        qname = str(request.q.qname)
        with self._lock:
            self.queries.append(qname)
        reply = request.reply()
        if request.q.qtype == QTYPE.A and qname in self.listed:
            reply.add_answer(RR(qname, QTYPE.A, rdata=A("127.0.0.2"), ttl=self.ttl))
        elif request.q.qtype == QTYPE.PTR and qname in self.ptr:
            reply.add_answer(RR(qname, QTYPE.PTR, rdata=PTR(self.ptr[qname]), ttl=self.ttl))
        else:
            reply.header.rcode = 3  # NXDOMAIN
            soa = SOA(f"ns.{self.zone}", f"hostmaster.{self.zone}", (1, 3600, 600, 86400, 90))
            reply.add_auth(RR(DNSLabel(self.zone), QTYPE.SOA, rdata=soa, ttl=90))
        return reply

    def start(self) -> Dnsbl:
        self.server.start_thread()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"
