"""What test modules share besides servers and fixtures: the session's credentials, the environment a
subprocess of the session gets, and waiting for a job to finish.

Test modules import these from here, never from conftest.py or from another test module: a name a
second module needs is public and lives in one place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from tests.servers import wait_for

API_KEY = "test-api-key-0123456789"
JWT_SECRET = "test-jwt-secret-0123456789-abcdefghijklmnop"


def make_jwt(
    roles: Iterable[str], *, sub: str = "tester", expires_in: int = 300, secret: str = JWT_SECRET, **claims: Any
) -> str:
    """A token the session's API accepts (or, with another `secret` or a past expiry, refuses)."""
    import jwt

    payload = {"sub": sub, "roles": roles, "exp": int(time.time()) + expires_in, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def worker_env(**extra: str) -> dict[str, str]:
    """The session's environment (Redis, database, keys) for a subprocess, with `extra` on top:
    a worker on an isolated Redis database gets `REDIS_URL=redis_db.url` here."""
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", **extra})
    return env


def settled_job(job_id: str, timeout: float = 30, registry: Any = None) -> dict:
    """The job's record once it is `completed` or `failed`: a test asserts on the outcome, not on
    how long the worker took."""
    if registry is None:
        from app.jobs.registry import get_registry

        registry = get_registry()

    def settled():
        job = registry.get(job_id) or {}
        return job if job.get("state") in ("completed", "failed") else None

    return wait_for(settled, timeout, interval=0.05, what=f"job {job_id} to finish")


def unique_jpeg(photo: Any) -> bytes:
    """The photograph at `photo` re-encoded with a random 8x8 corner: content no other test uploaded, so the
    watcher's content dedupe (same bytes within VIGIL_WATCHER_DEDUP_SECONDS, earlier job still live) cannot
    drop it, whichever tests ran before in this session. The scene, and what the detector finds, stay."""
    import cv2

    image = cv2.imread(str(photo))
    image[:8, :8] = list(os.urandom(3))
    return cv2.imencode(".jpg", image)[1].tobytes()
