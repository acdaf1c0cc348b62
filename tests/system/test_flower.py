"""Flower behind a login, started as the Procfile starts it (`celery -A workers flower`, which reads
flowerconfig.py) against a real worker on a Redis database of its own: 401 without credentials, 200
with them, and a pool grown and shrunk through Flower's API with the same credentials (what its
pool buttons call), without FLOWER_UNAUTHENTICATED_API."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app.celery.app import create_celery
from app.jobs.registry import get_registry
from tests.helpers import API_KEY, worker_env
from tests.servers import ROOT, CeleryWorker, free_port, new_log, procfile, wait_for

LOGIN = ("vigil", API_KEY)
FLOWER_EVENTS_INTERVAL = 5  # seconds between Flower's enable_events broadcasts (flower.events.Events)


class Flower:
    """The Procfile's `flower` process on a free port."""

    def __init__(self, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in env.items() if k != "FLOWER_UNAUTHENTICATED_API"}
        self.env.update(FLOWER_PORT=str(self.port), VIGIL_HOST="127.0.0.1")
        self.log_path = new_log("vigil-flower-")
        program, *args = shlex.split(procfile()["flower"])
        assert program == "celery", f"the Procfile's flower process is not celery: {program}"
        self.command = [sys.executable, "-m", "celery", *args]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Flower:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"Flower exited:\n{self.log()}")
            try:
                return requests.get(self.url + "/healthcheck", timeout=2)
            except requests.ConnectionError:
                return None

        wait_for(up, 40, interval=0.2, what="Flower to listen")
        return self

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def env(redis_db):
    return worker_env(REDIS_URL=redis_db.url)


@pytest.fixture
def worker(env):
    w = CeleryWorker(env, "cleanup_service", ["cleanup"], concurrency=1).start()
    yield w
    w.stop()


@pytest.fixture
def flower(env, worker):
    f = Flower(env).start()
    yield f
    f.stop()


@pytest.mark.slow
def test_flower_needs_the_login_and_its_api_resizes_a_pool(flower, worker, redis_db, settings):
    anonymous = requests.get(flower.url + "/", timeout=5)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(flower.url + "/", auth=("vigil", "wrong"), timeout=5).status_code == 401
    assert requests.get(flower.url + "/workers", auth=("admin", API_KEY), timeout=5).status_code == 401
    page = requests.get(flower.url + "/", auth=LOGIN, timeout=5)
    assert page.status_code == 200 and "Flower" in page.text
    assert requests.get(flower.url + "/api/workers", timeout=5).status_code == 401

    def sees_worker():
        r = requests.get(flower.url + "/api/workers", params={"refresh": "1"}, auth=LOGIN, timeout=10)
        return r.status_code == 200 and worker.node in r.json()

    wait_for(sees_worker, 30, interval=0.5, what="Flower to list the worker")
    assert len(worker.pool_pids()) == 1

    # Flower's default broadcasts `enable_events` to every worker every 5 s; flowerconfig.py makes it
    # follow VIGIL_TASK_EVENTS (off), so a job the worker runs after one such interval sends Flower no
    # task event to list (with Flower's default it lists this job).
    time.sleep(FLOWER_EVENTS_INTERVAL + 2)
    on_worker_db = redis_db.settings(settings)
    done = create_celery(on_worker_db).send_task("vigil.cleanup.trim_registry", queue="cleanup")
    registry = get_registry(on_worker_db)
    wait_for(lambda: (registry.get(done.id) or {}).get("state") == "completed", 30, what="the worker to run a job")
    time.sleep(1)  # an event would reach Flower within this
    tasks = requests.get(flower.url + "/api/tasks", auth=LOGIN, timeout=10)
    assert tasks.status_code == 200 and tasks.json() == {}, tasks.text[:300]

    denied = requests.post(f"{flower.url}/api/worker/pool/grow/{worker.node}", params={"n": "1"}, timeout=10)
    assert denied.status_code == 401 and len(worker.pool_pids()) == 1

    grown = requests.post(f"{flower.url}/api/worker/pool/grow/{worker.node}", params={"n": "1"}, auth=LOGIN, timeout=10)
    assert grown.status_code == 200, grown.text
    wait_for(lambda: len(worker.pool_pids()) == 2, 20, interval=0.2, what="a second pool process")
    shrunk = requests.post(
        f"{flower.url}/api/worker/pool/shrink/{worker.node}", params={"n": "1"}, auth=LOGIN, timeout=10
    )
    assert shrunk.status_code == 200, shrunk.text
    wait_for(lambda: len(worker.pool_pids()) == 1, 20, interval=0.2, what="the pool back to one process")


@pytest.mark.slow
def test_flower_refuses_to_start_without_a_login(env, tmp_path):
    bare = {k: v for k, v in env.items() if k not in ("VIGIL_API_KEY", "FLOWER_BASIC_AUTH", "FLOWER_AUTH")}
    bare["VIGIL_VAR_DIR"] = str(tmp_path)  # no var/api_key there either
    flower = Flower(bare)
    run = subprocess.run(flower.command, cwd=ROOT, env=flower.env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "VIGIL_API_KEY" in run.stdout + run.stderr


@pytest.mark.slow
def test_the_key_make_run_stores_is_the_password_and_oauth_replaces_it(env, tmp_path):
    (tmp_path / "api_key").write_text("stored-key-0123\n")
    stored = Flower({**{k: v for k, v in env.items() if k != "VIGIL_API_KEY"}, "VIGIL_VAR_DIR": str(tmp_path)})
    stored.start()
    try:
        assert requests.get(stored.url + "/", auth=("vigil", "stored-key-0123"), timeout=5).status_code == 200
        assert requests.get(stored.url + "/", auth=LOGIN, timeout=5).status_code == 401
    finally:
        stored.stop()

    oauth = Flower(
        {
            **env,
            "FLOWER_AUTH": ".*@example.com",
            "FLOWER_AUTH_PROVIDER": "flower.views.auth.GithubLoginHandler",
            "FLOWER_OAUTH2_KEY": "client-id",
            "FLOWER_OAUTH2_SECRET": "client-secret",
            "FLOWER_OAUTH2_REDIRECT_URI": "http://localhost/login",
        }
    )
    oauth.start()
    try:
        page = requests.get(oauth.url + "/", auth=LOGIN, allow_redirects=False, timeout=5)
        assert page.status_code == 302 and "/login" in page.headers["Location"]  # the login page, not basic auth
        api = requests.get(oauth.url + "/api/workers", auth=LOGIN, allow_redirects=False, timeout=5)
        assert api.status_code in (302, 401, 403)  # the API key opens nothing here
    finally:
        oauth.stop()
