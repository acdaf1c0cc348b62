"""Test session set-up: a real Redis (AOF on) and, on demand, a real PostgreSQL, both on free ports.

The session's environment is written before any test module imports the Celery app, so the app,
the API and every worker subprocess agree on where Redis and the database are.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import API_KEY, JWT_SECRET, worker_env
from tests.servers import (
    LOG_ROOT_ENV,
    CeleryWorker,
    PostgresServer,
    RedisDatabases,
    RedisDb,
    RedisServer,
    wait_for,
)

_servers: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    if LOG_ROOT_ENV not in os.environ:  # the first process of the run (xdist's workers inherit it)
        _servers["log_root"] = os.environ[LOG_ROOT_ENV] = tempfile.mkdtemp(prefix="vigil-test-logs-")
    redis_server = RedisServer().start()
    var_dir = tempfile.mkdtemp(prefix="vigil-var-")
    _servers["redis"] = redis_server
    _servers["redis_dbs"] = RedisDatabases(redis_server)
    _servers["var"] = var_dir
    os.environ.update(
        {
            "REDIS_URL": redis_server.url,
            "VIGIL_VAR_DIR": var_dir,
            "DATABASE_URL": f"sqlite:///{var_dir}/vigil.db",
            "VIGIL_API_KEY": API_KEY,
            "VIGIL_JWT_SECRET": JWT_SECRET,
            "VIGIL_HEARTBEAT_INTERVAL": "0.5",
            "VIGIL_ARCHIVE_INTERVAL": "0.2",
            "VIGIL_LOG_LEVEL": "WARNING",
        }
    )
    for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "VIGIL_AUTH_READS"):
        os.environ.pop(key, None)
    from app.core.migrate import upgrade

    upgrade(os.environ["DATABASE_URL"])


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop everything the session started, each step whatever the others did: a worker that will
    not stop must not leave the session's Redis running after pytest (it did, unnoticed)."""
    steps: list[tuple[str, Callable[[], object]]] = []
    if "archiver_stop" in _servers:
        steps.append(("archiver", _servers.pop("archiver_stop").set))
    steps += [(f"worker {w}", w.stop) for w in _servers.pop("workers", []) or []]
    if "pg" in _servers:
        steps.append(("postgresql", _servers.pop("pg").cleanup))
    if "redis" in _servers:
        steps.append(("redis", _servers.pop("redis").cleanup))
    if "var" in _servers:
        var = _servers.pop("var")
        steps.append(("var dir", lambda: shutil.rmtree(var, ignore_errors=True)))
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # reported, not raised: the tests' outcome is already decided
            sys.stderr.write(f"session teardown: stopping {name} failed: {exc!r}\n")
    # The servers' logs, in the run's first process, once xdist's workers have ended: gone after a passing
    # run (they piled up in /tmp), kept to read after a failure.
    if "log_root" in _servers:
        root = _servers.pop("log_root")
        if _servers.pop("exitstatus", None) == 0:
            shutil.rmtree(root, ignore_errors=True)
        else:
            sys.stderr.write(f"server logs of this run: {root}\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _servers["exitstatus"] = int(exitstatus)


# --- servers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    return _servers["redis"]


@pytest.fixture
def redis_client(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_databases() -> RedisDatabases:
    """The session server's spare databases; a module-scoped fixture takes one with `lease()`."""
    return _servers["redis_dbs"]


@pytest.fixture
def redis_db(redis_databases) -> Iterator[RedisDb]:
    """A Redis database of this test's own, empty, emptied again after: no session worker's
    heartbeats, queues or registry there. `redis_db.settings(settings, ...)` points Vigil at it; a
    subprocess gets it through `worker_env(REDIS_URL=redis_db.url)`."""
    with redis_databases.lease() as db:
        yield db


@pytest.fixture(scope="session")
def pg() -> PostgresServer:
    if "pg" not in _servers:
        _servers["pg"] = PostgresServer().start()
    return _servers["pg"]


def _db_name(nodeid: str) -> str:
    return ("t_" + re.sub(r"[^a-z0-9]+", "_", nodeid.lower()))[:40] + "_" + uuid.uuid4().hex[:8]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A freshly migrated database on each backend; every model test runs on both."""
    from app.core.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/test.db"
    else:
        url = request.getfixturevalue("pg").create_database(_db_name(request.node.nodeid))
    upgrade(url)
    return url


@pytest.fixture
def session_factory(db_url):
    from sqlalchemy.orm import sessionmaker

    from app.core.db import make_engine

    engine = make_engine(db_url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


# --- app -----------------------------------------------------------------------------------------------
@pytest.fixture
def settings():
    from app.core.settings import Settings

    return Settings.from_env()


@pytest.fixture
def app(settings):
    from app import create_app

    flask_app = create_app(settings)
    flask_app.testing = True
    return flask_app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def api_headers():
    return {"X-API-Key": API_KEY}


# --- workers ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def celery_workers() -> dict[str, CeleryWorker]:
    """The pipeline workers every readiness check wants, started once for the session.

    `analysis_worker` runs with concurrency 1, so a second job queued behind a slow one is
    observably `waiting` until the first finishes.
    """
    env = worker_env()
    workers = {
        "detection_worker": CeleryWorker(env, "detection_worker", ["detection:high", "detection"], concurrency=1),
        "analysis_worker": CeleryWorker(env, "analysis_worker", ["analysis"], concurrency=1),
    }
    for w in workers.values():
        w.start(wait=False)
    for w in workers.values():
        w.wait_ready()
    _servers.setdefault("workers", []).extend(workers.values())
    # In a deployment the service host archives finished jobs into SQL; the session has no host.
    import threading

    from app.core.settings import Settings
    from workers.host.services.registry_archiver import RegistryArchiver

    stop = threading.Event()
    threading.Thread(target=RegistryArchiver(Settings.from_env()).run, args=(stop,), daemon=True).start()
    _servers["archiver_stop"] = stop
    return workers


@pytest.fixture
def wait():
    return wait_for


# --- pipeline ---------------------------------------------------------------------------------
@pytest.fixture
def scripted_server():
    """Start real local HTTP servers whose answers the test scripts (tests/ai_servers.py)."""
    from tests.ai_servers import ScriptedServer

    started = []

    def start(respond):
        server = ScriptedServer(respond).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Real photographs from scikit-image's wheel as JPEG files: `astronaut` shows a person,
    `coffee` shows none. `astronaut_flipped` is the same scene with different bytes."""
    import cv2
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name, image in (
        ("astronaut", data.astronaut()),
        ("coffee", data.coffee()),
        ("astronaut_flipped", data.astronaut()[:, ::-1]),
    ):
        path = folder / f"{name}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        out[name] = path
    return out


@pytest.fixture
def reset_ai_breakers(settings):
    """Tests that drive the real `detector`/`analyser` breakers leave them closed for the others."""
    from app.pipeline.ai.breakers import SERVICES, breaker

    yield
    for name in SERVICES:
        breaker(name, settings).reset()


# --- observability ------------------------------------------------------------------------------
@pytest.fixture
def obs_settings(db_url, tmp_path):
    """Settings on the parametrised database, with a private export folder and a fast log sink."""
    from app.core.settings import Settings

    return Settings.from_env(database_url=db_url, export_dir=tmp_path / "exports", log_flush_interval=0.1)


@pytest.fixture
def obs_client(obs_settings):
    from app import create_app

    flask_app = create_app(obs_settings)
    flask_app.testing = True
    yield flask_app.test_client()
    from app.observability.logging_setup import db_sink

    sink = db_sink()
    if sink is not None:  # hand the process's sink back to the session database
        sink.flush(timeout=5)
        from app.core.settings import get_settings

        sink.retarget(get_settings().database_url)


@pytest.fixture
def cleanup_worker(obs_settings):
    """A real cleanup_service worker on the parametrised database (exports run on `cleanup`)."""
    env = worker_env(
        DATABASE_URL=obs_settings.database_url,
        VIGIL_EXPORT_DIR=str(obs_settings.export_dir),
        VIGIL_LOG_FLUSH_INTERVAL="0.1",
    )
    worker = CeleryWorker(env, "cleanup_service", ["cleanup"], concurrency=1).start()
    yield worker
    worker.stop()
