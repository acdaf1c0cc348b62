"""A running Vigil of a test module's own: the API under gunicorn as the Procfile starts it, real Celery
workers, a Redis database lent by the session server and a PostgreSQL database of its own.

The fuzzer, the generated client and the hostile-input tests talk to it over HTTP, so what they prove
holds for the process a deployment runs (gunicorn's own limits and errors included), not only for
Flask's test client. Everything it writes lives under its `var` directory, its PostgreSQL database
and its Redis database, so a test can check afterwards that nothing was written anywhere else.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from tests.helpers import API_KEY, worker_env
from tests.servers import ApiServer, CeleryWorker, PostgresServer, RedisDatabases, RedisDb

if TYPE_CHECKING:
    from app.core.settings import Settings

# The Procfile's groups: name -> queues (-Q).
GROUPS = {
    "detection_worker": ["detection:high", "detection"],
    "analysis_worker": ["analysis"],
    "notification_worker": ["notification:high", "notification"],
    "cleanup_service": ["cleanup"],
}


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    var: Path
    redis: RedisDb
    database_url: str
    api: ApiServer
    workers: dict[str, CeleryWorker] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)

    def settings(self) -> Settings:
        """The stack's settings, for reading or seeding its Redis and database from the test."""
        from app.core.settings import Settings

        return Settings.from_env(self.env)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": API_KEY}

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def send(self, method: str, path: str, **kwargs) -> requests.Response:
        """A mutating request with the API key."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.session.request(
            method, self.url + path, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs
        )


@contextlib.contextmanager
def live_stack(
    pg: PostgresServer, redis_databases: RedisDatabases, tmp: Path, groups: tuple[str, ...], **extra_env: str
) -> Iterator[Stack]:
    """Start the stack, yield it, stop every process it started."""
    from app.core.migrate import upgrade

    var = tmp / "var"
    var.mkdir(parents=True, exist_ok=True)
    name = "api_" + re.sub(r"[^a-z0-9]+", "_", tmp.name.lower())[:24] + "_" + uuid.uuid4().hex[:8]
    database_url = pg.create_database(name)
    upgrade(database_url)
    with redis_databases.lease() as db:
        env = worker_env(
            REDIS_URL=db.url,
            DATABASE_URL=database_url,
            VIGIL_VAR_DIR=str(var),
            VIGIL_PROMETHEUS_URL="",
            VIGIL_LOG_LEVEL="WARNING",
            **extra_env,
        )
        for key in (
            "CELERY_BROKER_URL",
            "CELERY_RESULT_BACKEND",
            "VIGIL_CAMERA_ROOT",
            "VIGIL_EXPORT_DIR",
            "VIGIL_THUMBNAIL_DIR",
            "VIGIL_CLIPS_DIR",
            "VIGIL_METRICS_DIR",
        ):
            if key not in extra_env:
                env.pop(key, None)
        workers = {g: CeleryWorker(env, g, GROUPS[g], concurrency=1) for g in groups}
        api = ApiServer(env, workers=2, threads=8)
        try:
            for w in workers.values():
                w.start(wait=False)
            api.start()
            for w in workers.values():
                w.wait_ready(60)
            yield Stack(api.url, env, var, db, database_url, api, workers)
        finally:
            api.stop()
            for w in workers.values():
                w.stop()
