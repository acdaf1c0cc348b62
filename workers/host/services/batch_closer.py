"""The batch closer: closes detection batches on time and hands them to analysis.

A service in the service host (`workers/host/supervisor.py`), not a beat entry: it checks every
`VIGIL_BATCH_CHECK_INTERVAL` seconds (1 s by default), which beat could only do by publishing a
Celery task every second, each one a broker message, a worker slot and a job-registry record, to
run two Redis calls. Closing is one atomic Lua call (app/pipeline/batches.py), so running more
than one service host is safe: each batch closes once and its analysis job is enqueued once.
"""

from __future__ import annotations

import logging
from typing import Any

from app.core.settings import Settings
from app.pipeline.batches import get_aggregator, handoff
from workers.host.service import PeriodicService

log = logging.getLogger(__name__)


class BatchCloser(PeriodicService):
    name = "batch_aggregator"

    def __init__(self, settings: Settings):
        super().__init__(settings.batch_check_interval)
        self.settings = settings
        self.closed = 0
        self.handed_off = 0

    def status(self) -> dict[str, Any]:
        return {"closed": self.closed, "handed_off": self.handed_off, "last_error": self.last_error}

    def tick(self) -> None:
        aggregator = get_aggregator(self.settings)
        self.closed += len(aggregator.close_due())
        self.handed_off += len(handoff(self.settings, aggregator))

    def warn(self, exc: Exception) -> None:
        # Redis away: batches wait in Redis, nothing is lost. Every failure is counted in the log, but
        # a run of them carries one traceback, not one a second.
        log.warning("batch closer tick failed (%d in a row)", self.failures, exc_info=self.failures == 1)
