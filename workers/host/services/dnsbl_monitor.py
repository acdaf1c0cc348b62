"""DNSBL monitor: a service-host thread that keeps the e-mail channel's blacklist and reverse-DNS answers
fresh (app/ops/ip_reputation.py), every `VIGIL_DNSBL_INTERVAL` seconds, asking again only the answers
whose TTL ran out. It runs here, off the request path, so that GET .../infrastructure/ip-reputation
never waits on a resolver."""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings
from app.ops.ip_reputation import refresh
from workers.host.service import PeriodicService


class DnsblMonitor(PeriodicService):
    name = "dnsbl_monitor"
    failure_warning = "DNSBL refresh failed; will retry"

    def __init__(self, settings: Settings):
        super().__init__(settings.dnsbl_interval)
        self.settings = settings
        self.last: dict[str, int] | None = None

    def status(self) -> dict[str, Any]:
        return {"last": self.last, "last_error": self.last_error}

    def tick(self) -> None:
        self.last = refresh(self.settings)
