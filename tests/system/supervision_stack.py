"""The whole system as `make run` starts it (`scripts/run`: supervisord, every Procfile process, a local Redis), on
free ports and a var directory of its own, for tests that kill its processes and watch it heal.

Nothing is started in-process: the API, every Celery worker group, beat, the service host and Flower are the
Procfile's commands under the supervisord that scripts/run configures. The test talks to it only through its API,
its Redis and supervisord's socket (`supervisorctl`'s XML-RPC), as an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import redis
import requests

from tests.servers import ROOT, free_port, wait_for

# Short delays so a crash loop takes seconds; three of them, so `max_restarts` is 3 here.
BACKOFF = (1.0, 1.5, 2.0)
STARTUP = 20.0  # seconds a Procfile process may take to come up on the shared 2-core machine
SUPERVISED = {
    "detection_worker",
    "analysis_worker",
    "notification_worker",
    "cleanup_service",
    "beat",
    "api",
    "flower",
    "service_host",
    "file_watcher",
}


def ts(value: str | None) -> float:
    """Epoch seconds of an ISO time the API wrote."""
    assert value, "no time"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Stack:
    """`scripts/run` in its own session; stopped with SIGINT, as Ctrl-C stops `make run`."""

    def __init__(self, base: Path, **env: str):
        self.base = base
        self.var = base / "var"
        self.api_port, self.flower_port, self.redis_port = free_port(), free_port(), free_port()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VIGIL_", "DATABASE_URL", "REDIS_URL", "CELERY_", "FLOWER_"))
        }
        self.env.update(
            {
                "VIGIL_VAR_DIR": str(self.var),
                "VIGIL_PORT": str(self.api_port),
                "FLOWER_PORT": str(self.flower_port),
                "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "VIGIL_HEARTBEAT_INTERVAL": "0.5",
                "VIGIL_SUPERVISOR_BACKOFF": ",".join(map(str, BACKOFF)),
                "VIGIL_SUPERVISOR_COMMAND_TIMEOUT": "30",
                "VIGIL_WATCHER_SETTLE_SECONDS": "0.3",
                "VIGIL_LOG_DB_LEVEL": "WARNING",
                "VIGIL_PROMETHEUS_URL": "",
                "PYTHONUNBUFFERED": "1",
                **env,
            }
        )
        self.log_path = base / "run.log"
        self.proc: subprocess.Popen | None = None
        self.key = ""
        self.http = requests.Session()

    # ---- life ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 150) -> Stack:
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["scripts/run"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"scripts/run exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            workers = self.workers()
            return SUPERVISED <= {n for n, w in workers.items() if w["status"] == "running"}

        wait_for(up, timeout, interval=0.5, what="every supervised process running")
        self.key = (self.var / "api_key").read_text().strip()
        return self

    def stop(self, timeout: float = 40) -> int:
        """Ctrl-C: SIGINT to the session (supervisord's children have process groups of their own)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """Everything, hard (a test that failed half-way must not leave processes behind)."""
        if self.proc is None:
            return
        try:
            tree = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def supervisord_log(self) -> str:
        return (self.var / "log" / "supervisord.log").read_text(errors="replace")

    # ---- the API ----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=kw.pop("timeout", 5), **kw)

    def post(self, path: str, json_body: Any = None, timeout: float = 40) -> requests.Response:
        return self.http.post(self.url + path, json=json_body, headers={"X-API-Key": self.key}, timeout=timeout)

    def workers(self) -> dict[str, dict[str, Any]]:
        r = self.get("/api/system/supervisor")
        r.raise_for_status()
        return {w["name"]: w for w in r.json()["workers"]}

    def worker(self, name: str) -> dict[str, Any]:
        return self.workers()[name]

    def history(self, name: str) -> list[dict[str, Any]]:
        r = self.get(f"/api/system/supervisor/restart-history?worker_name={name}&limit=100")
        r.raise_for_status()
        return list(reversed(r.json()["items"]))  # oldest first

    def act(self, name: str, action: str) -> dict[str, Any]:
        path = (
            f"/api/system/supervisor/reset/{name}"
            if action == "reset"
            else f"/api/system/supervisor/workers/{name}/{action}"
        )
        r = self.post(path)
        assert r.status_code == 200, (action, name, r.status_code, r.text, self.log()[-3000:])
        return r.json()

    def wait_worker(
        self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float, what: str, interval: float = 0.1
    ) -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            w = self.worker(name)
            return w if check(w) else None

        return wait_for(seen, timeout, interval=interval, what=f"{name}: {what}")

    # ---- Redis and Celery -------------------------------------------------------------------------------
    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, decode_responses=True)

    def heartbeat(self, node_prefix: str) -> dict[str, Any]:
        client = self.redis()
        for key in client.scan_iter(f"vigil:hb:{node_prefix}@*"):
            return json.loads(client.get(key) or "{}")
        return {}

    def canary(self, queue: str, **kwargs: Any) -> str:
        """A `vigil.system.canary` job on `queue`, published on the stack's broker."""
        from app.celery.app import create_celery
        from app.core.settings import Settings

        app = create_celery(Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0"}))
        job_id = f"canary-{uuid.uuid4().hex}"
        with app.connection_for_write() as conn:
            app.send_task("vigil.system.canary", kwargs=kwargs, queue=queue, task_id=job_id, connection=conn)
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        from app.jobs.registry import JobRegistry

        return JobRegistry(self.redis()).get(job_id) or {}

    def wait_job(self, job_id: str, state: str = "completed", timeout: float = 30) -> dict[str, Any]:
        return wait_for(
            lambda: (j := self.job(job_id)).get("state") == state and j,
            timeout,
            interval=0.1,
            what=f"job {job_id} {state}",
        )


def sigkill(pid: int) -> float:
    """SIGKILL one process (not its group: what the kernel's OOM killer does); the time it was sent."""
    os.kill(pid, signal.SIGKILL)
    return time.time()
