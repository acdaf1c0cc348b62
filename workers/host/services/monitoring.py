"""The AI monitoring service: each tick resumes the agents whose pause reached its `resume_at` and
evaluates the metric alert rules (app/monitoring/alerts_store.py). In the service host, supervised like
every service, so a pause ends on time and rules are judged with no API request involved."""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings
from app.monitoring import alerts_store, controls
from workers.host.service import PeriodicService


class MonitoringService(PeriodicService):
    name = "ai_monitor"
    category = "monitoring"
    failure_warning = "AI monitoring tick failed; will retry"

    def __init__(self, settings: Settings):
        super().__init__(settings.monitoring_interval)
        self.settings = settings
        self.resumed = 0
        self.raised = 0
        self.resolved = 0

    def status(self) -> dict[str, Any]:
        return {
            "resumed": self.resumed,
            "raised": self.raised,
            "resolved": self.resolved,
            "last_error": self.last_error,
        }

    def tick(self) -> None:
        self.resumed += len(controls.resume_due(self.settings))
        stats = alerts_store.evaluate(self.settings)
        self.raised += stats["raised"]
        self.resolved += stats["resolved"]
