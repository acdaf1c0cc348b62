"""The performance monitor: stores a performance snapshot every `VIGIL_PERFORMANCE_INTERVAL` seconds
(the history behind GET /api/system/performance/history) and prunes snapshots past their retention."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.db import get_sessionmaker, session_scope
from app.core.settings import Settings
from app.ops import performance
from workers.host.service import PeriodicService

PRUNE_EVERY = 600.0


class PerformanceMonitor(PeriodicService):
    name = "performance_monitor"
    category = "monitoring"
    failure_warning = "could not store a performance snapshot; will keep trying"
    first_tick_waits = True  # the first CPU figure needs an interval since prepare() primed the counter

    def __init__(self, settings: Settings):
        super().__init__(settings.performance_interval)
        self.settings = settings
        self.snapshots = 0
        self.last: dict[str, Any] | None = None
        self._last_prune = 0.0

    def status(self) -> dict[str, Any]:
        return {"snapshots_written": self.snapshots}

    def prepare(self) -> None:
        performance.collect(self.settings, cpu_interval=None)  # primes psutil's CPU counter

    def tick(self) -> None:
        snapshot = performance.collect(self.settings, cpu_interval=None)
        with session_scope(self.settings) as session:
            performance.store(session, snapshot)
        self.snapshots += 1
        self.last = snapshot
        now = time.time()
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            cutoff = datetime.now(UTC) - timedelta(hours=self.settings.performance_retention_hours)
            performance.prune(get_sessionmaker(self.settings), cutoff)

    def snapshot_once(self) -> dict[str, Any] | None:
        """One tick as the loop runs it: the stored snapshot, or None when it could not be stored (a
        database outage is logged once a minute, not fatal)."""
        return self.last if self.attempt() else None
