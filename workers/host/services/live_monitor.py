"""`live_monitor`: the service-host thread that announces camera status changes and overall health
changes on the live stream (app/ops/live_status.py), every VIGIL_LIVE_CHECK_INTERVAL seconds."""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings
from app.ops import live_status
from workers.host.service import PeriodicService


class LiveMonitor(PeriodicService):
    name = "live_monitor"
    failure_warning = "live status check failed"

    def __init__(self, settings: Settings):
        super().__init__(settings.live_check_interval)
        self.settings = settings
        self.published = 0

    def status(self) -> dict[str, Any]:
        return {"published": self.published, "last_error": self.last_error}

    def tick(self) -> None:
        self.published += len(live_status.check_cameras(self.settings))
        self.published += 1 if live_status.check_health(self.settings) else 0
