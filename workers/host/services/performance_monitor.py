"""The performance monitor: stores a performance snapshot every `VIGIL_PERFORMANCE_INTERVAL` seconds
(the history behind GET /api/system/performance/history) and prunes snapshots past their retention."""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from app.core.db import get_sessionmaker, session_scope
from app.ops import performance
from app.core.settings import Settings
from workers.host.service import Service

log = logging.getLogger(__name__)

PRUNE_EVERY = 600.0


class PerformanceMonitor(Service):
    name = "performance_monitor"
    category = "monitoring"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.snapshots = 0
        self._last_prune = 0.0
        self._last_warning = 0.0

    def status(self) -> dict[str, Any]:
        return {"snapshots_written": self.snapshots}

    def run(self, stop: threading.Event) -> None:
        performance.collect(self.settings, cpu_interval=None)  # primes psutil's CPU counter
        while not stop.wait(self.settings.performance_interval):
            self.snapshot_once()

    def snapshot_once(self) -> dict[str, Any] | None:
        """Collect and store one snapshot; a database outage is logged (once a minute), not fatal."""
        snapshot = performance.collect(self.settings, cpu_interval=None)
        try:
            with session_scope(self.settings) as session:
                performance.store(session, snapshot)
            self.snapshots += 1
            now = time.time()
            if now - self._last_prune >= PRUNE_EVERY:
                self._last_prune = now
                cutoff = datetime.now(timezone.utc) - timedelta(hours=self.settings.performance_retention_hours)
                performance.prune(get_sessionmaker(self.settings), cutoff)
        except Exception:
            now = time.time()
            if now - self._last_warning > 60:
                self._last_warning = now
                log.warning("could not store a performance snapshot; will keep trying", exc_info=True)
            return None
        return snapshot
