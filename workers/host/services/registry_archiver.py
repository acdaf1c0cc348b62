"""The registry archiver: copies finished jobs from the Redis index into the SQL `jobs` table.

A service in the service host, not a thread in each Celery worker: in a worker its SQL writes
competed with the worker's event loop for the interpreter lock, a fifth of the main process's time
in the P1 profile. A database outage only delays the copy: the backlog waits in Redis
(`vigil:jobs:archive`) and is flushed when the database answers again.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from app.core.db import get_sessionmaker
from app.jobs.registry import get_registry
from app.core.settings import Settings
from workers.host.service import Service

log = logging.getLogger(__name__)


class RegistryArchiver(Service):
    name = "registry_archiver"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.archived = 0
        self.last_error: str | None = None
        self._warned_at = 0.0

    def status(self) -> dict[str, Any]:
        return {"archived": self.archived, "last_error": self.last_error}

    def flush(self) -> int:
        written = get_registry(self.settings).flush_archive(get_sessionmaker(self.settings))
        self.archived += written
        return written

    def run(self, stop: threading.Event) -> None:
        while True:
            try:
                self.flush()
                self.last_error = None
            except Exception as exc:  # the database is away: the backlog waits in Redis
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if time.monotonic() - self._warned_at > 60:
                    self._warned_at = time.monotonic()
                    log.warning("job archive flush failed; will retry", exc_info=True)
            if stop.wait(self.settings.archive_interval):
                try:
                    self.flush()  # one last flush on the way out
                except Exception:
                    pass
                return
