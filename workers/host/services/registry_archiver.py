"""The registry archiver: copies finished jobs from the Redis index into the SQL `jobs` table.

A service in the service host, not a thread in each Celery worker: in a worker its SQL writes
competed with the worker's event loop for the interpreter lock, a fifth of the main process's time
in the P1 profile. A database outage only delays the copy: the backlog waits in Redis
(`vigil:jobs:archive`) and is flushed when the database answers again.
"""

from __future__ import annotations

from typing import Any

from app.core.db import get_sessionmaker
from app.core.settings import Settings
from app.jobs.registry import get_registry
from app.monitoring.rollups import record_jobs
from workers.host.service import PeriodicService


class RegistryArchiver(PeriodicService):
    name = "registry_archiver"
    failure_warning = "job archive flush failed; will retry"  # the database is away: the backlog waits in Redis

    def __init__(self, settings: Settings):
        super().__init__(settings.archive_interval)
        self.settings = settings
        self.archived = 0

    def status(self) -> dict[str, Any]:
        return {"archived": self.archived, "last_error": self.last_error}

    def flush(self) -> int:
        written = get_registry(self.settings).flush_archive(get_sessionmaker(self.settings), on_batch=record_jobs)
        self.archived += written
        return written

    def tick(self) -> None:
        self.flush()

    def finish(self) -> None:
        try:
            self.flush()  # one last flush on the way out
        except Exception:
            pass
