"""The batch closer: closes detection batches on time and hands them to analysis.

A service in the service host (`workers/host/supervisor.py`), not a beat entry: it checks every
`VIGIL_BATCH_CHECK_INTERVAL` seconds (1 s by default), which beat could only do by publishing a
Celery task every second, each one a broker message, a worker slot and a job-registry record, to
run two Redis calls. Closing is one atomic Lua call (app/pipeline/batches.py), so running more
than one service host is safe: each batch closes once and its analysis job is enqueued once.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from app.pipeline.batches import get_aggregator, handoff
from app.core.settings import Settings
from workers.host.service import Service

log = logging.getLogger(__name__)


class BatchCloser(Service):
    name = "batch_aggregator"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.closed = 0
        self.handed_off = 0
        self.last_error: str | None = None

    def status(self) -> dict[str, Any]:
        return {"closed": self.closed, "handed_off": self.handed_off, "last_error": self.last_error}

    def tick(self) -> None:
        aggregator = get_aggregator(self.settings)
        self.closed += len(aggregator.close_due())
        self.handed_off += len(handoff(self.settings, aggregator))

    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                self.tick()
                failures, self.last_error = 0, None
            except Exception as exc:  # Redis away: keep trying; batches wait in Redis, nothing is lost
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("batch closer tick failed (%d in a row)", failures, exc_info=failures == 1)
            stop.wait(self.settings.batch_check_interval)
