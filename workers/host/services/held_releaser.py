"""Held notifications: a service-host thread that sends the deliveries quiet hours held back once they
end (`VIGIL_QUIET_HOURS_HELD=send`; app/alerts/held.py), every `VIGIL_HELD_RELEASE_INTERVAL` seconds.

A service-host thread rather than a beat task for the reason infra_monitor gives: a check every 30 s
that usually finds nothing should not be a broker message and a job record each time."""

from __future__ import annotations

from typing import Any

from app.alerts.held import release_due
from app.core.settings import Settings
from workers.host.service import PeriodicService


class HeldReleaser(PeriodicService):
    name = "held_releaser"
    failure_warning = "releasing held notifications failed; will retry"

    def __init__(self, settings: Settings):
        super().__init__(settings.held_release_interval)
        self.settings = settings
        self.last: dict[str, int] | None = None

    def status(self) -> dict[str, Any]:
        return {"last": self.last, "last_error": self.last_error}

    def tick(self) -> None:
        self.last = release_due(self.settings)
