"""What the supervisor tests share: settings on a Redis database and a fresh database of their own, the API
on them, and a service host (the supervisor) started in-process with the services a test gives it."""

from __future__ import annotations

import pytest

# The application is imported inside the fixtures, not here: pytest imports the conftest files of the
# paths it is given (`pytest tests/ops/...`) before tests/conftest.py's pytest_configure writes the
# session's environment, and the settings (and the Celery app's broker) would be read without it.


@pytest.fixture
def ops_settings(settings, db_url, tmp_path, redis_db):
    """Settings on a Redis database of their own (no session workers there) and a fresh database."""
    return redis_db.settings(settings, database_url=db_url, camera_root=tmp_path / "cameras")


@pytest.fixture
def ops_client(redis_db):
    return redis_db.client(decode_responses=True)


@pytest.fixture
def api(ops_settings):
    from app import create_app

    return create_app(ops_settings).test_client()


@pytest.fixture
def host(ops_settings, ops_client, wait):
    """`host(services, **kw)` starts a service host and waits for its heartbeat; every one is stopped after."""
    from app.jobs import heartbeats
    from app.ops.supervisor import SUPERVISOR_GROUP
    from workers.host.supervisor import ServiceHost

    hosts = []

    def start(services=(), **kw) -> ServiceHost:
        h = ServiceHost(list(services), ops_settings, **kw)
        h.start()
        hosts.append(h)
        wait(
            lambda: any(b.get("group") == SUPERVISOR_GROUP for b in heartbeats.alive(ops_client, 5)),
            10,
            what="supervisor heartbeat",
        )
        return h

    yield start
    for h in hosts:
        h.stop()
