"""Infrastructure alerts: a service-host thread that checks the infrastructure every
`VIGIL_INFRA_CHECK_INTERVAL` seconds and raises or resolves alerts (app/ops/infrastructure.py).

It runs in the service host rather than as a beat task so that a check every 30 seconds is not a
broker message and a job record each time."""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings
from app.ops.infrastructure import evaluate
from workers.host.service import PeriodicService


class InfraMonitor(PeriodicService):
    name = "infra_monitor"
    warn_every = 0.0  # every failure: a check that cannot run is itself reported by the next one
    failure_warning = "infrastructure check failed"

    def __init__(self, settings: Settings):
        super().__init__(settings.infra_check_interval)
        self.settings = settings
        self.last: dict[str, int] | None = None

    def status(self) -> dict[str, Any]:
        return {"last": self.last, "last_error": self.last_error}

    def tick(self) -> None:
        self.last = evaluate(self.settings)
