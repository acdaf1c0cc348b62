"""Infrastructure alerts: a service-host thread that checks the infrastructure every
`VIGIL_INFRA_CHECK_INTERVAL` seconds and raises or resolves alerts (app/ops/infrastructure.py).

It runs in the service host rather than as a beat task so that a check every 30 seconds is not a
broker message and a job record each time."""
from __future__ import annotations

import logging
import threading
from typing import Any

from app.ops.infrastructure import evaluate
from app.core.settings import Settings
from workers.host.service import Service

log = logging.getLogger(__name__)


class InfraMonitor(Service):
    name = "infra_monitor"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.last: dict[str, int] | None = None
        self.last_error: str | None = None

    def status(self) -> dict[str, Any]:
        return {"last": self.last, "last_error": self.last_error}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.last, self.last_error = evaluate(self.settings), None
            except Exception as exc:  # a check that cannot run is itself reported by the next one
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("infrastructure check failed", exc_info=True)
            stop.wait(self.settings.infra_check_interval)
