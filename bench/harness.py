"""What every benchmark needs: real servers on free ports, real workers, timing helpers.

A benchmark measures Vigil against a baseline *in the same run on the same machine* and reports
the ratio, so results do not depend on how fast the machine happens to be.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.core.stats import percentile
from tests.servers import ROOT, ApiServer, CeleryWorker, PostgresServer, RedisServer


@dataclass
class Result:
    benchmark: str  # "P1"
    metric: str  # what was measured
    value: float
    unit: str
    baseline: str | None = None  # what it was compared with
    baseline_value: float | None = None
    ratio: float | None = None  # value / baseline_value (see `better`)
    goal: str = ""
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)


def time_calls(fn: Callable[[], Any], n: int, warmup: int = 10) -> list[float]:
    """Seconds per call of `fn`, `n` sequential calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else None,
        "max_ms": round(max(ms), 3) if ms else None,
    }


class Context:
    """Servers and processes for one benchmark run; everything is torn down in `close`."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
        self._redis: RedisServer | None = None
        self._procs: list[Any] = []

    # ---- servers ----------------------------------------------------------------------------------
    def redis(self) -> RedisServer:
        if self._redis is None:
            self._redis = RedisServer().start()
        return self._redis

    def env(self, **extra: str) -> dict[str, str]:
        var = self.dir / "var"
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("VIGIL_", "DATABASE_URL", "REDIS_URL", "CELERY_"))
        }
        env.update(
            {
                "REDIS_URL": self.redis().url,
                "VIGIL_VAR_DIR": str(var),
                "DATABASE_URL": f"sqlite:///{var}/vigil.db",
                "VIGIL_API_KEY": "bench-key",
                "VIGIL_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def migrate(self, env: dict[str, str]) -> None:
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)

    def worker(
        self,
        group: str,
        queues: list[str],
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        app: str = "workers",
        extra: list[str] | None = None,
    ) -> CeleryWorker:
        w = CeleryWorker(
            env or self.env(),
            group,
            queues,
            concurrency=concurrency,
            extra=extra,
            log_path=str(self.dir / f"{group}-{len(self._procs)}.log"),
            app=app,
        )
        w.start()
        self._procs.append(w)
        return w

    def api(self, env: dict[str, str] | None = None, workers: int = 2, threads: int = 8) -> str:
        """gunicorn serving the API as `make run` does; returns its base URL."""
        api = ApiServer(
            env or self.env(), workers=workers, threads=threads, log_path=str(self.dir / f"api-{len(self._procs)}.log")
        ).start()
        self._procs.append(api)
        return api.url

    def spawn(self, argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        """Start a process in its own session (so `close` can stop it and every child it forks),
        logging to `<dir>/<name>.log`; `close` stops it, also when the benchmark fails."""
        log = open(self.dir / f"{name}.log", "wb")
        try:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()  # the child holds its own copy
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        """Stop everything this run started, newest first, whatever state each is in."""
        self.stop_processes()
        if self._redis:
            self._redis.cleanup()
            self._redis = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop_processes(self) -> None:
        """Stop every process started so far (not Redis), newest first."""
        for p in reversed(self._procs):
            try:
                if isinstance(p, subprocess.Popen):
                    _stop_group(p)
                elif isinstance(p, CeleryWorker):
                    p.kill()
                else:
                    p.stop()
            except Exception as exc:  # one that will not stop must not keep the others running
                print(f"  (could not stop {p!r}: {exc})", file=sys.stderr)
        self._procs.clear()


def _stop_group(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM the process's session (it and its children), SIGKILL what is left after `timeout`."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children the leader left behind, if any
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(5)


def machine() -> dict[str, Any]:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write_results(results: list[Result], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "results": [asdict(r) for r in results]}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (out / "latest.json", out / f"{stamp}.json"):
        path.write_text(json.dumps(payload, indent=2))


def fill(client, key: str, template: bytes, old_id: str, n: int, batch: int = 10_000) -> list[str]:
    """LPUSH `n` copies of a real kombu message into `key`, each with a fresh task id (so listing,
    deleting and parsing see distinct jobs). Returns the ids, oldest first."""
    import uuid

    ids = []
    for start in range(0, n, batch):
        with client.pipeline(transaction=False) as pipe:
            for _ in range(min(batch, n - start)):
                new = uuid.uuid4().hex
                ids.append(new)
                pipe.lpush(key, template.replace(old_id.encode(), new.encode()))
            pipe.execute()
    return ids


def drain_time(client, queue_keys: list[str], total: int, timeout: float = 300) -> float:
    """Seconds from the first message leaving `queue_keys` to all of them gone and acknowledged."""

    def waiting() -> int:
        with client.pipeline(transaction=False) as pipe:
            for key in queue_keys:
                pipe.llen(key)
            return sum(pipe.execute())

    deadline = time.monotonic() + timeout
    while waiting() >= total:
        if time.monotonic() > deadline:
            raise TimeoutError("nothing consumed")
        time.sleep(0.002)
    started = time.monotonic()
    while waiting() > 0 or client.hlen("unacked") > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("not drained")
        time.sleep(0.005)
    return time.monotonic() - started


@contextmanager
def postgres(name: str) -> Iterator[tuple[str, dict[str, Any]] | None]:
    """A database `name` on a PostgreSQL server of the benchmark's own: (SQLAlchemy URL, psycopg2 connect
    arguments), or None where this machine has no PostgreSQL binaries (the benchmark then reports SQLite
    alone, and says so). The server is stopped and removed after, also when the benchmark fails."""
    try:
        pg = PostgresServer().start()
    except Exception as exc:  # no PostgreSQL binaries here
        print(f"  (PostgreSQL skipped: {exc})")
        yield None
        return
    try:
        url = pg.create_database(name)
        yield url, {"host": "127.0.0.1", "port": pg.port, "user": "postgres", "dbname": name}
    finally:
        pg.cleanup()
